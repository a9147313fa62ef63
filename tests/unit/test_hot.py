"""Hot pixels: found where they stand far above every neighbour, and only there."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.noise import simulate
from fluoden_batch.restore.hot import find_hot, inpaint

A, B = 2.0, 25.0  # grey levels per photo-electron, read-out variance


def noisy(seed: int = 0, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A ramp with a bright disc under Poisson-Gaussian noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = 20 + 2 * xx + 400 * (((yy - 48) ** 2 + (xx - 40) ** 2) < 15**2)
    return simulate(clean.astype(np.float64), A, B, rng=np.random.default_rng(seed))


@pytest.mark.parametrize("where", [(40, 40), (0, 0), (0, 50), (95, 95), (50, 95)])
def test_a_defect_is_found_anywhere_even_at_the_edges(where):
    z = noisy()
    z[where] += 5000.0
    hot = find_hot(z, A, B, 100.0)
    assert hot[where] and hot.sum() == 1


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_noise_alone_is_never_hot_even_at_a_low_threshold(seed):
    assert not find_hot(noisy(seed), A, B, 8.0).any()


def test_structures_two_pixels_wide_are_not_hot():
    z = noisy()
    z[30:32, 60] += 5000.0  # two pixels: each has a bright neighbour
    z[70, 10:40] += 5000.0  # a bright line
    assert not find_hot(z, A, B, 100.0).any()


def test_the_threshold_is_in_noise_sigmas_at_the_neighbours_level():
    z = np.full((9, 9), 100.0)  # noise sigma sqrt(2 * 100 + 25) = 15 there
    z[4, 4] = 100.0 + 15.0 * 50
    assert find_hot(z, A, B, 49.0)[4, 4] and not find_hot(z, A, B, 51.0)[4, 4]


def test_no_noise_known_means_nothing_is_hot():
    z = noisy()
    z[10, 10] += 1e6
    assert not find_hot(z, 0.0, 0.0, 100.0).any()
    assert not find_hot(z[:2], A, B, 100.0).any()  # too thin to have 8 neighbours


def test_inpaint_replaces_only_the_hot_pixels_by_their_neighbours_median():
    z = noisy()
    z[40, 40] = 1e5
    hot = find_hot(z, A, B, 100.0)
    filled = inpaint(z, hot)
    ring = np.delete(z[39:42, 39:42].ravel(), 4)
    assert filled[40, 40] == np.sort(ring)[4]  # the upper of the middle two
    np.testing.assert_array_equal(filled[~hot], z[~hot])
    clean = noisy(1).astype(np.uint16)
    assert inpaint(clean, np.zeros(clean.shape, bool)).dtype == np.float64
    np.testing.assert_array_equal(inpaint(clean, np.zeros(clean.shape, bool)), clean)

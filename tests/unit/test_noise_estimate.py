"""Single-image Poisson-Gaussian estimation: accuracy on synthetic and real data, errors."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from fluoden_batch.errors import NoiseEstimationError
from fluoden_batch.noise import NoiseEstimate, estimate, simulate
from fluoden_batch.noise.reference import oracle_fit

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
FMD = DATA / "fmd_dev"


def phantom(seed: int, n: int = 384, peak: float = 3000.0) -> np.ndarray:
    """Fluorescence-like clean image: smooth background, blurred cells and small spots."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    background = ndimage.gaussian_filter(rng.standard_normal((n, n)), 30)
    img = 80.0 + 200.0 * (background - background.min()) / np.ptp(background)
    cells = np.zeros((n, n))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(15, 45)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        cells += rng.uniform(200, 0.5 * peak) * inside
    img += ndimage.gaussian_filter(cells, 2.0)
    spots = np.zeros((n, n))
    spots.flat[rng.integers(0, n * n, 150)] = rng.uniform(0.2 * peak, peak, 150) * 15
    img += ndimage.gaussian_filter(spots, 1.5)
    return np.clip(img, 0.0, peak)


@pytest.mark.parametrize(
    ("a", "b", "seed"),
    [(0.5, 100.0, 1), (2.0, 10.0, 2), (5.0, 0.0, 3), (20.0, 400.0, 4)],
)
def test_recovers_known_parameters(a: float, b: float, seed: int) -> None:
    y = phantom(seed)
    z = simulate(y, a, b, clip=(0.0, 4095.0), rng=seed)
    est = estimate(z)
    assert abs(est.a - a) <= 0.10 * a, est
    if b > a * y.mean() / 10:  # b matters: sqrt(b) within 20 %
        assert abs(math.sqrt(max(est.b, 0.0)) - math.sqrt(b)) <= 0.20 * math.sqrt(b), est
    assert est.a_std > 0 and est.b_std > 0 and est.n_levels >= 4


def test_clipped_data_are_modelled() -> None:
    y = phantom(5) * 0.03  # dim: 15-20 % of the pixels clip at 0
    z = simulate(y, 1.0, 60.0, clip=(0.0, 4095.0), rng=5)
    assert np.mean(z == 0) > 0.05
    est = estimate(z)
    assert est.clip == (0.0, math.inf)
    assert abs(est.a - 1.0) <= 0.15
    assert abs(math.sqrt(est.b) - math.sqrt(60.0)) <= 0.2 * math.sqrt(60.0)


def test_integer_input_and_pedestal() -> None:
    y = phantom(6) * 0.05
    z = np.round(simulate(y, 0.2, 0.0, rng=6) + 100.0).astype(np.uint16)  # offset 100
    est = estimate(z)
    assert est.clip is None
    assert abs(est.a - 0.2) <= 0.02
    # Var = a * (level - 100) + 1/12 (rounding): the pedestal makes b negative.
    assert est.b == pytest.approx(-0.2 * 100.0 + 1 / 12, abs=3.0)


def test_estimate_is_a_frozen_record_with_sigma_helper() -> None:
    est = estimate(simulate(phantom(7), 1.0, 25.0, rng=7))
    assert isinstance(est, NoiseEstimate)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.a = 2.0  # type: ignore[misc]
    np.testing.assert_allclose(est.sigma_at([0.0, 100.0]), np.sqrt([est.b, est.a * 100 + est.b]))
    assert est.levels.shape == est.variances.shape == est.counts.shape == (est.n_levels,)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((64, 64), np.nan), "NaN or infinite"),
        (np.where(np.eye(64) > 0, np.inf, 1.0), "64 NaN or infinite pixel"),
        (np.full((64, 64), 7.0), "constant"),
        (np.ones((16, 16)), "too small.*32x32"),
        (np.ones((200, 20)), "too small"),
        (np.zeros((0, 0)), "empty"),
        (np.zeros((0, 64)), "empty"),
        (np.ones((4, 64, 64)), "2-D"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_input_raises_a_clear_error(image: np.ndarray, message: str) -> None:
    with pytest.raises(NoiseEstimationError, match=message):
        estimate(image)


def test_flat_image_is_too_flat() -> None:
    z = simulate(np.full((128, 128), 300.0), 2.0, 10.0, rng=0)
    with pytest.raises(NoiseEstimationError, match="too flat"):
        estimate(z)


def test_bad_clip_bounds_are_rejected() -> None:
    with pytest.raises(NoiseEstimationError, match="clip"):
        estimate(simulate(phantom(8, n=64), 1.0, 1.0, rng=0), clip=(10.0, 0.0))


@pytest.mark.skipif(not FMD.is_dir(), reason=f"FMD sample data not found at {FMD}")
def test_real_confocal_image_matches_the_oracle_gain() -> None:
    from skimage import io

    raw = io.imread(FMD / "raw" / "Confocal_MICE_1.png")
    gt = io.imread(FMD / "gt" / "Confocal_MICE_1.png")
    oracle = oracle_fit(raw, gt)[0]
    est = estimate(raw)
    assert abs(est.a - oracle) <= 0.30 * oracle, (est, oracle)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_bins": 2}, "n_bins=2"), ({"max_leakage": 0.0}, "max_leakage=0.0")],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(NoiseEstimationError, match=message):
        estimate(np.zeros((64, 64)), **kwargs)


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64]),
        st.tuples(st.integers(32, 64), st.integers(32, 64)),
        elements={"allow_nan": False, "allow_infinity": False},
    )
)
def test_any_finite_plane_gives_finite_parameters_or_our_error(image: np.ndarray) -> None:
    try:
        est = estimate(image)
    except NoiseEstimationError:
        return
    assert np.isfinite([est.a, est.b, est.a_std, est.b_std]).all() and est.a >= 0

"""Groups of similar planes (:mod:`fluoden_batch.pipeline.groups`): who is grouped with
whom, and the plane stack a group is planned on."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.noise import simulate
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.pipeline.groups import (
    MAX_GROUPS,
    MAX_PLANES,
    PlaneGroups,
    PlaneStack,
    cluster_signatures,
    plane_groups,
    plane_signature,
)


def scene(seed: int, size: int = 96) -> np.ndarray:
    """A clean plane: a ramp and bright spots, data units 200..1000."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    return 200.0 + yy + xx + 600.0 * (rng.random((size, size)) > 0.995)


def confocal(seed: int) -> np.ndarray:
    """White Poisson-Gaussian noise (a = 2, b = 100): sigma about 26 at the median."""
    return simulate(scene(seed), 2.0, 100.0, rng=np.random.default_rng(seed))


def widefield(seed: int) -> np.ndarray:
    """Camera-like noise correlated between neighbours (lag-1 0.6), sigma about 60."""
    noise = correlate(np.random.default_rng(seed).normal(0, 60, (96, 96)), 0.6)
    return scene(seed) + noise


def test_signatures_tell_white_from_correlated_noise():
    sigma, ratio = plane_signature(confocal(1)[None], (0,))
    assert 20 < sigma < 32 and ratio == pytest.approx(1.0, abs=0.15)
    sigma, ratio = plane_signature(widefield(1)[None], (0,))
    assert ratio > 1.6
    assert np.isnan(plane_signature(np.full((1, 32, 32), 7.0), (0,))).all()


def test_clusters_split_on_sigma_and_on_correlation():
    same = np.array([[2.0, 1.0], [2.2, 1.05], [2.9, 1.1]])  # within 1.5x and 0.3
    assert cluster_signatures(same).tolist() == [0, 0, 0]
    by_sigma = np.array([[2.0, 1.0], [6.0, 1.0], [2.1, 1.0], [6.5, 1.0]])
    assert cluster_signatures(by_sigma).tolist() == [0, 1, 0, 1]
    by_ratio = np.array([[3.0, 2.4], [3.0, 1.0], [3.1, 2.5]])
    assert cluster_signatures(by_ratio).tolist() == [0, 1, 0]


def test_complete_linkage_does_not_chain():
    """Neighbours 1.4x apart, the ends 2.7x: not one group (single linkage would chain)."""
    chain = np.array([[1.4**k, 1.0] for k in range(4)])
    labels = cluster_signatures(chain)
    assert labels.max() >= 1
    for g in set(labels.tolist()):
        s = chain[labels == g, 0]
        assert s.max() / s.min() <= 1.5


def test_unreadable_planes_join_the_largest_group_and_groups_are_capped():
    sig = np.array([[5.0, 2.4], [np.nan, np.nan], [1.0, 1.0], [1.1, 1.0]])
    assert cluster_signatures(sig).tolist() == [0, 1, 1, 1]
    assert cluster_signatures(np.array([[np.nan, np.nan]] * 3)).tolist() == [0, 0, 0]
    spread = np.array([[2.0**k, 1.0] for k in range(12)])
    assert cluster_signatures(spread).max() == MAX_GROUPS - 1


def test_planes_of_two_microscopes_in_one_stack_are_two_groups():
    stack = np.stack([confocal(0), widefield(1), confocal(2), widefield(3)])
    notes: list[str] = []
    groups = plane_groups(stack, "zyx", notes)
    assert groups == PlaneGroups((4,), (0, 1, 0, 1))
    assert groups.members(1) == [(1,), (3,)]
    assert notes == [
        "planes: 2 groups of similar noise (each planned as a separate run over its planes "
        "would be): group 0: z=0,2; group 1: z=1,3"
    ]
    # one microscope's planes, and one plane: no groups, and no note
    assert plane_groups(np.stack([confocal(k) for k in range(4)]), "zyx", notes) is None
    assert plane_groups(stack[:1], "zyx", notes) is None and len(notes) == 1
    # the rows of a resumed run are reused as stored, not read again
    assert plane_groups(stack[:, :4, :4], "zyx", [], old=[0, 1, 0, 1]) == groups


def test_groups_are_numbered_channel_by_channel():
    """Channel 0 one microscope (one row), channel 1 two (rows 1 and 2)."""
    ch0 = [confocal(k) for k in range(3)]
    ch1 = [widefield(4), confocal(5), widefield(6)]
    groups = plane_groups(np.stack([ch0, ch1]), "czyx", [])
    assert groups is not None and groups.count == 3
    assert groups.rows == (0, 0, 0, 1, 2, 1)
    assert groups.row((1, 1)) == 2 and groups.members(2) == [(1, 1)]
    assert groups.describe("czyx") == "group 0: c=0 z=0-2; group 1: c=1 z=0,2; group 2: c=1 z=1"
    both = PlaneGroups((2, 2), (0, 1, 1, 1))
    assert both.describe("tzyx") == "group 0: t=0,z=0; group 1: t=0,z=1 t=1,z=0 t=1,z=1"


def test_a_long_axis_is_one_group_with_a_warning_where_cameras_differ():
    """More than MAX_PLANES planes: a z or t axis of one microscope, planned as one; a
    sample that reads as two cameras (white and correlated noise) is warned about, one
    camera whose noise level varies is not."""
    mixed = np.stack([confocal(0), widefield(1)] * (MAX_PLANES // 2 + 1))
    notes: list[str] = []
    assert plane_groups(mixed, "tyx", notes) is None
    assert len(notes) == 1 and re.match(
        f"warning: the noise of {MAX_PLANES} planes sampled from {MAX_PLANES + 2} reads as "
        r"more than one camera \(neighbour correlation ratio (0\.9|1\.0)\d at t=0, "
        r"2\.\d\d at t=1\)",
        notes[0],
    )
    assert notes[0].endswith(
        "put images from different microscopes along a c axis, or run them separately"
    )
    brighter = np.stack([confocal(0), 3 * confocal(1)] * (MAX_PLANES // 2 + 1))
    assert plane_groups(brighter, "tyx", notes) is None and len(notes) == 1


@settings(max_examples=25, deadline=None)
@given(
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    key=st.tuples(st.one_of(st.integers(0, 3), st.slices(4)), st.slices(12), st.slices(10)),
)
def test_a_plane_stack_slices_as_its_planes_stacked(picks, key):
    data = np.arange(2 * 3 * 12 * 10).reshape(2, 3, 12, 10)
    planes = [divmod(p, 3) for p in picks]
    stack = PlaneStack(data, planes)
    expected = np.stack([data[p] for p in planes])
    if isinstance(key[0], int) and key[0] >= len(planes):
        return
    assert stack.shape == expected.shape and stack.dtype == data.dtype
    np.testing.assert_array_equal(stack[key], expected[key])

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.models import DnCNN, FusedDnCNN
from fluoden_batch.restore.inference import Dihedral, infer_plane


def _model(seed: int = 0) -> FusedDnCNN:
    torch.manual_seed(seed)
    return FusedDnCNN(DnCNN(4, 6, batch_norm=False).eval())


def test_dihedral_is_the_mean_over_the_eight_transforms():
    model = _model()
    plane = np.random.default_rng(0).random((23, 31), dtype=np.float32)
    outs = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(plane[:, ::-1] if flip else plane, k)
            y = np.rot90(infer_plane(model, np.ascontiguousarray(x)), -k)
            outs.append(y[:, ::-1] if flip else y)
    expected = np.mean(outs, axis=0)
    got = infer_plane(Dihedral(model), plane)
    assert got.shape == plane.shape
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(got - infer_plane(model, plane)).max() > 1e-4  # it is not the plain pass


def test_dihedral_output_is_invariant_under_the_group():
    """TTA of a transformed plane is the transformed TTA of the plane."""
    tta = Dihedral(_model(1))
    plane = np.random.default_rng(1).random((20, 27), dtype=np.float32)
    base = infer_plane(tta, plane)
    rotated = infer_plane(tta, np.ascontiguousarray(np.rot90(plane)))
    flipped = infer_plane(tta, np.ascontiguousarray(plane[::-1]))
    assert np.abs(np.rot90(base) - rotated).max() < 1e-5
    assert np.abs(base[::-1] - flipped).max() < 1e-5


@settings(max_examples=10, deadline=None)
@given(h=st.integers(5, 90), w=st.integers(5, 90), tile=st.integers(8, 40))
def test_tiled_tta_equals_whole_plane_tta(h, w, tile):
    tta = Dihedral(_model(2))
    plane = np.random.default_rng(h * w).random((h, w), dtype=np.float32)
    whole = infer_plane(tta, plane)
    tiled = infer_plane(tta, plane, tile=tile)
    assert np.abs(whole - tiled).max() < 1e-5
    assert tta.receptive_radius == 4

"""Phase-split inference (``--phase-split``): the model on the four stride-2 phases."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import randomise
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.models import DnCNN
from fluoden_batch.models.ffdnet import FFDNet
from fluoden_batch.models.normalise import noise_sigma, phase_sigma
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.restore.inference import (
    Dihedral,
    PhaseSplit,
    infer_plane,
    inference_network,
)


def _model(seed: int = 0) -> DnCNN:
    return randomise(DnCNN(4, 6, batch_norm=False), seed)


def _interleaved(model: torch.nn.Module, plane: np.ndarray) -> np.ndarray:
    """The model on each phase of ``plane`` (even sides), written back in place."""
    out = np.empty(plane.shape, dtype=np.float32)
    for i in (0, 1):
        for j in (0, 1):
            out[i::2, j::2] = infer_plane(model, np.ascontiguousarray(plane[i::2, j::2]))
    return out


def test_phase_split_is_the_model_on_each_phase():
    model = _model()
    plane = np.random.default_rng(0).random((24, 30), dtype=np.float32)
    got = infer_plane(PhaseSplit(model), plane)
    np.testing.assert_allclose(got, _interleaved(model, plane), atol=1e-6)
    assert np.abs(got - infer_plane(model, plane)).max() > 1e-3  # not the plain pass


def test_odd_sides_are_the_replicate_padded_plane_cropped():
    model = _model(1)
    plane = np.random.default_rng(1).random((23, 31), dtype=np.float32)
    padded = np.pad(plane, ((0, 1), (0, 1)), mode="edge")
    got = infer_plane(PhaseSplit(model), plane)
    np.testing.assert_allclose(got, _interleaved(model, padded)[:23, :31], atol=1e-6)


@pytest.mark.parametrize(
    ("make", "channels"),
    [(lambda: _model(2), ()), (lambda: randomise(FFDNet(3, 8)), (2,))],  # FFDNet: + noise map
)
@settings(max_examples=8, deadline=None)
@given(h=st.integers(5, 90), w=st.integers(5, 90), tile=st.integers(8, 40), tta=st.booleans())
def test_tiled_equals_whole_plane(make, channels, h, w, tile, tta):
    net = inference_network(make(), tta=tta, phase_split=True)
    plane = np.random.default_rng(h * w).random((*channels, h, w), dtype=np.float32)
    np.testing.assert_allclose(
        infer_plane(net, plane, tile=tile), infer_plane(net, plane), atol=1e-5
    )


def test_receptive_radius_and_grid():
    model = _model(3)
    split = PhaseSplit(model)
    assert split.receptive_radius == 2 * model.receptive_radius + 2
    assert split.align == 2 and PhaseSplit(FFDNet(3, 8)).align == 4
    x = torch.zeros(1, 1, 61, 61)
    x[0, 0, 30, 30] = 1.0
    with torch.no_grad():
        changed = (split(x) - split(torch.zeros_like(x))).abs()[0, 0] > 0
    ys, xs = np.nonzero(changed.numpy())
    reach = max(abs(ys - 30).max(), abs(xs - 30).max())
    assert 2 * model.receptive_radius - 1 <= reach <= split.receptive_radius


def test_inference_network_wraps_in_order():
    model = _model()
    assert inference_network(model) is model
    assert isinstance(inference_network(model, tta=True), Dihedral)
    both = inference_network(model, tta=True, phase_split=True)
    assert isinstance(both, PhaseSplit) and isinstance(both.model, Dihedral)


def test_phase_sigma_sees_correlated_noise():
    rng = np.random.default_rng(4)
    white = rng.normal(0, 10, (256, 256))
    assert phase_sigma(white) == pytest.approx(noise_sigma(white), rel=0.1)
    camera = correlate(rng.normal(0, 10, (256, 256)), 0.6)
    assert camera.std() == pytest.approx(10, rel=0.1)
    assert noise_sigma(camera) < 0.6 * camera.std()  # the finest scale misses most of it
    assert phase_sigma(camera) > 1.5 * noise_sigma(camera)


def test_phase_split_needs_a_model(tmp_path):
    with pytest.raises(ValidationError, match="has no model"):
        DenoiseConfig(
            input=tmp_path / "in.zarr", output=tmp_path / "o", phase_split=True, protocol="nlm"
        )

"""Networks told the noise level: the noise map, DnCNN with a map input, grow(), FFDNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import randomise
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.models import Architecture, ModelMetadata, save_weights
from fluoden_batch.models.dncnn import DnCNN, grow
from fluoden_batch.models.ffdnet import FFDNet
from fluoden_batch.models.normalise import map_parameters, noise_map, normalise
from fluoden_batch.models.weights import load_model, load_trainable
from fluoden_batch.restore.inference import Dihedral, infer_plane
from fluoden_batch.restore.protocols import PlaneParams, whole
from fluoden_batch.restore.tiles import tile_windows


@given(
    a=st.floats(0.01, 20),
    b=st.floats(-50, 200),
    lo=st.floats(0, 100),
    span=st.floats(1, 1000),
)
def test_noise_map_is_the_poisson_gaussian_sigma_in_model_units(a, b, lo, span):
    x = np.linspace(0, 4000, 64).reshape(8, 8)
    hi = lo + span
    got = noise_map(normalise(x, lo, hi), *map_parameters(a, b, lo, hi))
    expected = np.sqrt(np.clip(a * x + b, 0, None)) / span
    # float32 model units: the variance is exact to ~1e-7 of its terms; the square root
    # magnifies that near zero variance
    atol = np.sqrt(1e-6 * (a * (lo + x.max()) + abs(b))) / span
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=atol)


@pytest.mark.parametrize("model", [DnCNN(4, 8, batch_norm=False, noise_map=True), FFDNet(3, 8)])
@given(
    h=st.integers(20, 90),
    w=st.integers(20, 90),
    tile=st.integers(16, 48),
    tta=st.booleans(),
)
def test_tiled_equals_whole_image(model, h, w, tile, tta):
    net = randomise(model)
    net = Dihedral(net) if tta else net
    rng = np.random.default_rng(h * w)
    x = rng.random((2, h, w)).astype(np.float32)
    whole_plane = infer_plane(net, x)
    np.testing.assert_allclose(infer_plane(net, x, tile=tile), whole_plane, atol=1e-5)


def test_ffdnet_tiles_start_on_the_two_pixel_grid():
    for window, dest in tile_windows((101, 77), 30, FFDNet(3, 8).receptive_radius, align=2):
        assert window.read[0].start % 2 == 0 and window.read[1].start % 2 == 0
        assert dest[0].start % 2 == 0 and dest[1].start % 2 == 0


def test_receptive_radius_is_the_reach_and_costs_are_counted():
    net = randomise(DnCNN(5, 8, batch_norm=False, noise_map=True))
    x = torch.zeros(1, 2, 41, 41)
    x[0, 0, 20, 20] = 1.0
    with torch.no_grad():
        changed = (net(x) - net(torch.zeros_like(x))).abs()[0, 0] > 0
    ys, xs = np.nonzero(changed.numpy())
    assert max(abs(ys - 20).max(), abs(xs - 20).max()) <= net.receptive_radius
    assert DnCNN(17, 32, batch_norm=False, noise_map=True).flops_per_pixel() == 278_208
    assert FFDNet(15, 64).flops_per_pixel() == 243_072


def test_grow_keeps_the_function(tmp_path):
    small = DnCNN(4, 8)
    small.train()
    for _ in range(3):  # batch-norm statistics that are not the defaults
        small(torch.rand(4, 1, 16, 16) * 3)
    small.eval()
    big = grow(small, 9, noise_map=True)
    assert (big.depth, big.batch_norm, big.noise_map) == (9, False, True)
    x = torch.rand(2, 1, 30, 30)
    with torch.no_grad():
        before = small(x)
        after = big(torch.cat([x, torch.rand_like(x)], dim=1))  # any map: zero weights
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot grow"):
        grow(big, 5, noise_map=True)


def test_map_models_round_trip_and_refuse_mismatches(tmp_path):
    model = randomise(DnCNN(4, 8, batch_norm=False, noise_map=True))
    meta = ModelMetadata(name="m", architecture=Architecture.of(model))
    assert meta.architecture.noise_map and "noise map" in meta.architecture.describe()
    save_weights(model, tmp_path / "m.safetensors", meta)
    loaded, again = load_trainable(tmp_path / "m.safetensors")
    assert again == meta and isinstance(loaded, DnCNN) and loaded.noise_map
    wrong = ModelMetadata(name="m", architecture=Architecture(depth=4, width=8, batch_norm=False))
    with pytest.raises(ModelError, match="does not match"):
        save_weights(model, tmp_path / "w.safetensors", wrong)
    with pytest.raises(ValueError, match="ffdnet has a noise map"):
        Architecture(name="ffdnet", depth=3, width=8, batch_norm=False, map_gain=40.0)
    ff = randomise(FFDNet(3, 8))
    save_weights(
        ff, tmp_path / "f.safetensors", ModelMetadata(name="f", architecture=Architecture.of(ff))
    )
    assert isinstance(load_model(tmp_path / "f.safetensors").module, FFDNet)


def test_whole_protocol_needs_the_noise_for_a_map_model():
    net = randomise(DnCNN(3, 8, batch_norm=False, noise_map=True))
    plane = np.random.default_rng(0).poisson(30, (40, 40)).astype(np.float64)
    with pytest.raises(InputError, match="noise parameters"):
        whole(net, plane, PlaneParams(0.0, 100.0))
    out = whole(net, plane, PlaneParams(0.0, 100.0, 1.0, 4.0))
    assert out.shape == plane.shape and np.isfinite(out).all()


def test_a_clean_input_is_left_nearly_alone_by_a_zero_residual(tmp_path: Path):
    """A grown model from a zero-residual DnCNN is the identity whatever the map says."""
    base = DnCNN(3, 8, batch_norm=False)
    for m in base.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    big = grow(base, 6, noise_map=True)
    x = np.random.default_rng(1).random((2, 33, 35)).astype(np.float32)
    np.testing.assert_array_equal(infer_plane(big, x), x[0])

"""Bright objects far beyond the training range (16-bit beads, nuclei): what lies beyond
``MODEL_RANGE`` normalisation windows goes around the network, exactly, tile by tile, in
the run and in training; the shipped default no longer spreads bright beads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import fluoden_batch as fb
import fluoden_batch.models.normalise as normalise_module
from conftest import make_tiny_weights
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import MODEL_RANGE, denormalise, normalise, split_range
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import PlaneParams, whole
from fluoden_batch.train.inference import denoise_whole


def scene(seed: int = 0, size: int = 128, peak: float = 30_000.0):
    """A dim cell (0-400 photons) with 12 beads of ``peak`` photons, Poisson noise plus
    read noise: (noisy, clean, distance to the nearest bead in px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cell = 40 + 360 * np.exp(-((yy - 64) ** 2 + (xx - 60) ** 2) / (2 * 30.0**2))
    cell += 200 * (np.sin(xx / 3.0) > 0.6) * (((yy - 64) ** 2 + (xx - 60) ** 2) < 40**2)
    beads = np.zeros_like(cell)
    beads.flat[rng.choice(cell.size, 12, replace=False)] = 1.0
    beads = ndimage.gaussian_filter(beads, 1.2)
    beads *= peak / beads.max()
    dist = ndimage.distance_transform_edt(beads <= 0.05 * peak)
    clean = cell + beads
    noisy = rng.poisson(clean) + rng.normal(0, 1.5, clean.shape)
    return noisy.astype(np.float32), clean, dist


def test_split_range_is_exact_and_changes_nothing_inside():
    x = np.array([-20.0, -8.0, -1.0, 0.0, 6.9, 8.0, 70.0], np.float32)
    inside, excess = split_range(x)
    np.testing.assert_array_equal(inside + excess, x)
    assert np.abs(inside).max() == MODEL_RANGE
    np.testing.assert_array_equal(excess[2:6], 0.0)


def test_the_network_never_sees_beyond_its_range(tmp_path):
    """``whole`` and ``denoise_whole`` (training's validation) feed the network the
    clipped plane and add the excess to its output."""
    weights = make_tiny_weights(tmp_path / "w.safetensors", normalisation="noise")
    net = load_model(weights).module
    noisy, _, _ = scene()
    params = PlaneParams(0.0, 400.0)
    seen: list[float] = []
    hook = net.register_forward_pre_hook(lambda _, args: seen.append(float(args[0].abs().max())))
    out = whole(inference_network(net), noisy, params)
    hook.remove()
    assert 0 < max(seen) <= MODEL_RANGE
    inside, excess = split_range(normalise(noisy, 0.0, 400.0))
    with torch.no_grad():
        y = net(torch.from_numpy(inside)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, denormalise(y + excess, 0.0, 400.0), rtol=0, atol=0.05)
    bright = noisy > 400 * MODEL_RANGE
    assert bright.any()
    train_out = denoise_whole(net, noisy, norm=(0.0, 400.0))
    np.testing.assert_allclose(train_out, out, rtol=0, atol=0.05)


@settings(max_examples=5, deadline=None)
@given(tile=st.sampled_from([32, 48, 80]), seed=st.integers(0, 1000))
def test_tiles_equal_the_whole_plane_with_bright_objects(tile, seed):
    with tempfile.TemporaryDirectory() as folder:
        weights = make_tiny_weights(Path(folder) / "w.safetensors")
        network = inference_network(load_model(weights).module)
    noisy, _, _ = scene(seed, 96)
    params = PlaneParams(0.0, 400.0)
    np.testing.assert_allclose(
        whole(network, noisy, params, tile=tile), whole(network, noisy, params), atol=1e-3
    )


def test_the_default_run_does_not_spread_bright_beads(monkeypatch):
    """The shipped default on a dim cell with beads 30 000 photons bright: 3-10 px from
    the beads it is above the input and near its output without the beads; with the
    network seeing everything (as before) it fell far below the input there."""
    noisy, clean, dist = scene()
    ring = (dist > 3) & (dist <= 10)

    def psnr(out: np.ndarray) -> float:
        err = np.mean((np.asarray(out, np.float64)[ring] - clean[ring]) ** 2)
        return float(10 * np.log10(400.0**2 / err))

    now = psnr(fb.denoise(noisy, dtype="float32"))
    assert now > psnr(noisy) + 1.0
    monkeypatch.setattr(normalise_module, "MODEL_RANGE", np.inf)
    before = psnr(fb.denoise(noisy, dtype="float32"))
    assert before < psnr(noisy) < now


@pytest.mark.parametrize("mode", ["n2n", "single"])
def test_fit_patches_are_in_the_networks_range(mode):
    from fluoden_batch.train.adapt import sample_patches

    noisy, _, _ = scene(size=160)
    stack = np.stack([noisy, noisy + 1])
    axes, data = ("tyx", stack) if mode == "n2n" else ("yx", noisy)
    patches, _ = sample_patches(data, axes, ((0.0, 400.0),), mode, np.random.default_rng(0), 20)
    assert np.abs(patches).max() <= MODEL_RANGE

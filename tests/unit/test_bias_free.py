"""Bias-free DnCNN (Mohan et al. 2020): homogeneity, warm start, weights, tiling, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.config.train import TrainConfig
from fluoden_batch.models import Architecture, ModelMetadata, save_weights
from fluoden_batch.models.dncnn import DnCNN, fold_batch_norm, without_biases
from fluoden_batch.models.fused import FusedDnCNN, fused_ops_available
from fluoden_batch.models.weights import load_model, load_trainable, shipped_models
from fluoden_batch.restore.inference import infer_plane
from fluoden_batch.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bias_free(depth: int = 4, width: int = 8, seed: int = 0) -> DnCNN:
    torch.manual_seed(seed)
    model = DnCNN(depth, width, batch_norm=False, bias=False)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.2)
    return model.eval()


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 5))
def test_output_scales_with_the_input(scale, seed):
    """f(s x) = s f(x) for s > 0: no bias anywhere, ReLUs are positively homogeneous."""
    model = _bias_free(seed=seed)
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        # float32 rounding grows with the intermediates, i.e. with the scale; a bias b would
        # leave (1 - s) b, far above this for any s away from 1
        atol = 1e-5 * max(scale, 1.0)
        torch.testing.assert_close(model(scale * x), scale * model(x), rtol=1e-4, atol=atol)


def test_a_model_with_biases_is_not_homogeneous():
    """The check above can fail: the same network with biases breaks it."""
    torch.manual_seed(0)
    model = DnCNN(4, 8, batch_norm=False).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.bias, std=0.3)
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert not torch.allclose(model(3 * x), 3 * model(x), rtol=1e-3, atol=1e-3)


def test_without_biases_keeps_the_folded_weights_and_drops_every_bias():
    start = DnCNN(4, 8)
    start.train()
    for _ in range(3):  # batch-norm statistics that are not the defaults
        start(torch.rand(4, 1, 16, 16) * 3)
    start.eval()
    folded = fold_batch_norm(start)
    free = without_biases(start)
    assert (free.batch_norm, free.bias) == (False, False)
    convs = [m for m in free.body if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    wanted = [m for m in folded.body if isinstance(m, torch.nn.Conv2d)]
    for got, want in zip(convs, wanted, strict=True):
        torch.testing.assert_close(got.weight, want.weight)
    assert "bias-free" in Architecture.of(free).describe()


def test_batch_norm_and_bias_free_are_refused_together():
    with pytest.raises(ValueError, match="bias-free DnCNN has no batch norm"):
        DnCNN(4, 8, batch_norm=True, bias=False)
    with pytest.raises(ValueError, match="bias-free dncnn has no batch norm"):
        Architecture(depth=4, width=8, batch_norm=True, bias=False)


def test_weights_round_trip_and_load_fused(tmp_path: Path):
    model = _bias_free()
    meta = ModelMetadata(name="bf", architecture=Architecture.of(model))
    assert meta.architecture.bias is False
    save_weights(model, tmp_path / "bf.safetensors", meta)
    again, meta2 = load_trainable(tmp_path / "bf.safetensors")
    assert meta2 == meta and again.bias is False
    loaded = load_model(tmp_path / "bf.safetensors")
    assert isinstance(loaded.module, FusedDnCNN) and loaded.module.bias is False
    x = torch.randn(1, 1, 33, 41)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), model(x), rtol=1e-5, atol=1e-5)
    if fused_ops_available():
        assert loaded.module._packed, "the fused path was not taken"


@settings(max_examples=15, deadline=None)
@given(h=st.integers(20, 80), w=st.integers(20, 80), tile=st.integers(16, 40))
def test_tiled_inference_equals_whole_plane(h, w, tile):
    model = _bias_free()
    plane = np.random.default_rng(h * w).random((h, w), dtype=np.float32)
    whole = infer_plane(model, plane)
    np.testing.assert_allclose(infer_plane(model, plane, tile), whole, rtol=1e-5, atol=1e-5)


def test_training_from_a_model_with_biases_starts_bias_free(tmp_path: Path):
    """bias: false with init_weights of a batch-norm DnCNN (the shipped dncnn-small) trains
    a bias-free network from its folded weights and stores it as such."""
    rng = np.random.default_rng(0)
    for d in ("noisy", "clean"):
        (tmp_path / d).mkdir()
    for k in range(3):
        clean = rng.uniform(20, 200, (40, 40)).astype(np.uint8)
        noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
        tifffile.imwrite(tmp_path / "noisy" / f"in_{k}.tif", noisy)
        tifffile.imwrite(tmp_path / "clean" / f"gt_{k}.tif", clean)
    config = TrainConfig(
        output=tmp_path / "bf.safetensors",
        depth=10,
        width=32,
        batch_norm=False,
        bias=False,
        init_weights=Path("dncnn-small"),
        noisy_dir=tmp_path / "noisy",
        noisy_glob="in_*.tif",
        clean_dir=tmp_path / "clean",
        clean_glob="gt_*.tif",
        steps=2,
        batch_size=2,
        patch_size=24,
        lr=1e-30,
        device="cpu",
    )
    result = train(config, progress=False)
    assert result.metadata is not None and result.metadata.architecture.bias is False
    start, _ = load_trainable(shipped_models()["dncnn-small"])
    expected = without_biases(start)
    got = result.model.state_dict()
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-12)

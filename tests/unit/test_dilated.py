"""Dilated DnCNN layers: the receptive radius is the dilations' sum and tiles with that
halo equal the whole plane; growing inserts dilated identity layers without changing the
function; the fused CPU path, the weights file and the training config carry them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import randomise
from fluoden_batch.config.train import TrainConfig
from fluoden_batch.errors import ModelError
from fluoden_batch.models import Architecture, FusedDnCNN, ModelMetadata, save_weights
from fluoden_batch.models.dncnn import DnCNN, grow, grown_dilations, kept_dilations
from fluoden_batch.models.fused import fused_ops_available
from fluoden_batch.models.weights import load_model, load_trainable
from fluoden_batch.restore.inference import infer_plane
from fluoden_batch.train.loop import _growable

dilation_lists = st.lists(st.integers(1, 4), min_size=2, max_size=5)


@settings(max_examples=20, deadline=None)
@given(dilations=dilation_lists)
def test_receptive_radius_is_the_sum_of_the_dilations(dilations):
    net = randomise(DnCNN(len(dilations), 4, batch_norm=False, dilations=dilations), std=0.3)
    radius, size = net.receptive_radius, 2 * sum(dilations) + 9
    assert radius == sum(dilations)
    x = torch.zeros(1, 1, size, size)
    centre = size // 2
    x[0, 0, centre, centre] = 1.0
    with torch.no_grad():
        changed = (net(x) - net(torch.zeros_like(x))).abs()[0, 0] > 0
    ys, xs = np.nonzero(changed.numpy())
    reach = max(abs(ys - centre).max(), abs(xs - centre).max())
    assert reach <= radius
    # every layer's outer tap lines up along the row: the reach is the full radius
    row = changed[centre].numpy()
    assert row[centre - radius] or row[centre + radius]


@settings(max_examples=20, deadline=None)
@given(
    dilations=dilation_lists,
    h=st.integers(20, 80),
    w=st.integers(20, 80),
    tile=st.integers(16, 40),
)
def test_tiled_equals_whole_image(dilations, h, w, tile):
    net = randomise(DnCNN(len(dilations), 6, batch_norm=False, dilations=dilations), std=0.3)
    x = np.random.default_rng(h * w).random((1, h, w)).astype(np.float32)
    np.testing.assert_allclose(infer_plane(net, x, tile=tile), infer_plane(net, x), atol=1e-5)


def test_grow_inserts_dilated_identity_layers_and_keeps_the_function():
    small = DnCNN(4, 8)
    small.train()
    for _ in range(3):  # batch-norm statistics that are not the defaults
        small(torch.rand(4, 1, 16, 16) * 3)
    small.eval()
    dilations = grown_dilations(small.dilations, (2, 3, 2))
    assert dilations == (1, 1, 2, 3, 2, 1, 1)
    assert kept_dilations(dilations, 4) == small.dilations
    big = grow(small, 7, noise_map=False, dilations=dilations)
    assert (big.dilations, big.receptive_radius, big.batch_norm) == (dilations, 11, False)
    x = torch.rand(2, 1, 40, 33)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not keep"):
        grow(small, 7, noise_map=False, dilations=(2, 1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="need 7 dilations"):
        DnCNN(7, 8, dilations=(1, 2))


@pytest.mark.skipif(not fused_ops_available(), reason="no oneDNN fused convolution")
def test_fused_dilated_equals_eager():
    eager = randomise(DnCNN(5, 8, batch_norm=False, dilations=(1, 2, 4, 2, 1)), std=0.3)
    fused = FusedDnCNN(eager)
    x = torch.randn(2, 1, 45, 38)
    with torch.inference_mode():
        expected, got = eager(x), fused(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert fused._packed, "the fused path was not taken"


def test_weights_round_trip_and_refuse_bad_dilations(tmp_path: Path):
    model = randomise(DnCNN(4, 8, batch_norm=False, dilations=(1, 3, 2, 1)), std=0.3)
    meta = ModelMetadata(name="d", architecture=Architecture.of(model))
    assert meta.architecture.dilations == (1, 3, 2, 1)
    assert "receptive radius 7 px" in meta.architecture.describe()
    save_weights(model, tmp_path / "d.safetensors", meta)
    loaded = load_model(tmp_path / "d.safetensors")
    assert loaded.receptive_radius == 7 and loaded.module.dilations == (1, 3, 2, 1)
    again, meta_again = load_trainable(tmp_path / "d.safetensors")
    assert meta_again == meta and again.dilations == model.dilations
    undilated = ModelMetadata(
        name="d", architecture=Architecture(depth=4, width=8, batch_norm=False)
    )
    with pytest.raises(ModelError, match="does not match"):
        save_weights(model, tmp_path / "u.safetensors", undilated)
    assert Architecture.of(DnCNN(4, 8)).dilations is None  # old files stay as they were
    for bad in [(1, 2), (1, 0, 1, 1), (1, 1, 1, 1)]:
        with pytest.raises(ValueError, match="dilations"):
            Architecture(depth=4, width=8, dilations=bad)


def test_train_config_dilations_and_what_can_grow(tmp_path: Path):
    base = {
        "output": tmp_path / "o.safetensors",
        "mode": "synthetic",
        "clean_dir": tmp_path,
        "a_range": (0.5, 2.0),
        "b_range": (0.0, 1.0),
    }
    config = TrainConfig(depth=4, width=8, batch_norm=False, dilations=[1, 2, 2, 1], **base)
    assert config.model_architecture.dilations == (1, 2, 2, 1)
    plain = TrainConfig(depth=4, width=8, dilations=[1, 1, 1, 1], **base)
    assert plain.model_architecture.dilations is None
    with pytest.raises(ValueError, match="one per convolution"):
        TrainConfig(depth=4, width=8, dilations=[1, 2], **base)
    old = Architecture(depth=4, width=8)
    assert _growable(
        old, Architecture(depth=6, width=8, batch_norm=False, dilations=(1, 1, 2, 3, 1, 1))
    )
    assert not _growable(
        old, Architecture(depth=6, width=8, batch_norm=False, dilations=(2, 1, 1, 1, 1, 1))
    )

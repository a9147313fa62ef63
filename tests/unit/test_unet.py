"""The U-Net denoiser: tiles on its pooling grid with its halo equal the whole plane, the
halo covers its reach, its cost is counted, and the weights file and the training config
carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fluoden_batch.config.train import TrainConfig
from fluoden_batch.errors import ModelError
from fluoden_batch.models import Architecture, ModelMetadata, UNet, save_weights
from fluoden_batch.models.weights import load_model, load_trainable
from fluoden_batch.restore.inference import Dihedral, PhaseSplit, infer_plane
from fluoden_batch.restore.tiles import tile_windows


def random_unet(levels: int, width: int = 4, seed: int = 0, std: float = 0.3) -> UNet:
    """A U-Net far from the identity: every weight and bias drawn at random, eval mode."""
    torch.manual_seed(seed)
    net = UNet(levels, width)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, std)
    return net.eval()


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_receptive_radius_covers_the_reach_at_every_offset_of_the_grid(levels):
    """An impulse changes outputs only within the receptive radius, wherever it sits in
    its pooling cells; the radius is within one grid step of the longest reach."""
    net = random_unet(levels)
    radius, size = net.receptive_radius, 2 * net.receptive_radius + 24
    reach = 0
    for offset in range(net.align):
        x = torch.zeros(1, 1, size, size)
        centre = size // 2 // net.align * net.align + offset
        x[0, 0, centre, centre] = 10.0
        with torch.no_grad():
            changed = (net(x) - net(torch.zeros_like(x))).abs()[0, 0] > 1e-6
        ys, xs = np.nonzero(changed.numpy())
        reach = max(reach, abs(ys - centre).max(), abs(xs - centre).max())
    assert reach <= radius
    assert radius - reach < net.align + 5  # the bound is not loose (measured: 9, 23, 51)
    assert radius % net.align == 0


@settings(max_examples=15, deadline=None)
@example(levels=1, h=72, w=144, tile=16, wrapper="none")  # rounding 2.8e-6 of the max
@given(
    levels=st.integers(1, 3),
    h=st.integers(20, 150),
    w=st.integers(20, 150),
    tile=st.integers(16, 64),
    wrapper=st.sampled_from(["none", "tta", "phase-split"]),
)
def test_tiled_equals_whole_image(levels, h, w, tile, wrapper):
    """Tiles start on the pooling grid (with --phase-split twice it) and read the halo:
    odd sizes, tiles smaller than the halo, and the flips of --tta included."""
    net = random_unet(levels)
    module = (
        Dihedral(net) if wrapper == "tta" else PhaseSplit(net) if wrapper == "phase-split" else net
    )
    x = np.random.default_rng(h * w).random((1, h, w)).astype(np.float32)
    whole = infer_plane(module, x)
    assert whole.shape == (h, w)
    # random weights reach outputs of thousands: float32 rounding of the different tile
    # shapes' convolutions (different summation orders) is relative to that (seen: 2.8e-6)
    atol = 1e-5 * max(1.0, float(np.abs(whole).max()))
    np.testing.assert_allclose(infer_plane(module, x, tile=tile), whole, rtol=0, atol=atol)


def test_tiles_start_on_the_pooling_grid():
    net = UNet(3, 4)
    assert net.align == 8
    for window, dest in tile_windows((101, 77), 30, net.receptive_radius, align=net.align):
        assert window.read[0].start % 8 == 0 and window.read[1].start % 8 == 0
        assert dest[0].start % 8 == 0 and dest[1].start % 8 == 0


def test_costs_are_counted_and_it_starts_as_the_identity():
    """FLOPs per pixel equal the multiply-adds torch runs (counted by hooks on a plane
    of a multiple of the grid); an untrained U-Net returns its input."""
    net = UNet(3, 32)
    assert net.flops_per_pixel() == 280_192  # the 17x32 dilated DnCNN: 277 632
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.ConvTranspose2d):
            macs.append(inputs[0].numel() * module.out_channels * 4)
        else:
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] ** 2)

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            m.register_forward_hook(count)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        y = net(x)
    assert 2 * sum(macs) == net.flops_per_pixel() * 64 * 64
    torch.testing.assert_close(y, x)
    assert UNet(2, 8).flops_per_pixel() < UNet(3, 8).flops_per_pixel()


def test_weights_round_trip_and_mismatches_are_refused(tmp_path: Path):
    net = random_unet(2, width=6)
    arch = Architecture.of(net)
    assert (arch.name, arch.levels, arch.width, arch.depth) == ("unet", 2, 6, 13)
    assert arch.describe() == "U-Net 2 levels x6"
    meta = ModelMetadata(name="u", architecture=arch)
    save_weights(net, tmp_path / "u.safetensors", meta)
    again, read = load_trainable(tmp_path / "u.safetensors")
    assert read == meta and isinstance(again, UNet)
    x = torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), net(x))
    loaded = load_model(tmp_path / "u.safetensors")
    assert isinstance(loaded.module, UNet) and not loaded.module.training
    wrong = ModelMetadata(name="u", architecture=Architecture.of(random_unet(3, width=6)))
    with pytest.raises(ModelError, match="does not match"):
        save_weights(net, tmp_path / "w.safetensors", wrong)
    for bad in (
        {"name": "unet", "depth": 13, "width": 6, "batch_norm": False},  # no levels
        {"name": "unet", "depth": 12, "width": 6, "batch_norm": False, "levels": 2},
        {
            "name": "unet",
            "depth": 13,
            "width": 6,
            "batch_norm": False,
            "levels": 2,
            "noise_map": True,
        },
        {"name": "unet", "depth": 13, "width": 6, "levels": 2},  # batch norm
        {"depth": 13, "width": 6, "levels": 2},  # a dncnn's levels
    ):
        with pytest.raises(ValueError, match="unet"):
            Architecture(**bad)


def test_train_config_builds_a_unet(tmp_path: Path):
    base = {
        "output": tmp_path / "o.safetensors",
        "mode": "synthetic",
        "clean_dir": tmp_path,
        "a_range": (0.5, 2.0),
        "b_range": (0.0, 1.0),
    }
    arch = TrainConfig(architecture="unet", levels=2, width=8, **base).model_architecture
    assert (arch.name, arch.levels, arch.width, arch.batch_norm) == ("unet", 2, 8, False)
    with pytest.raises(ValueError, match="no noise map and no dilations"):
        TrainConfig(architecture="unet", noise_map=True, **base)

"""Self-supervised (Noise2Void) training: blind-spot masking never lets a masked pixel see
its own value, the loss falls, and a run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from pydantic import ValidationError

from conftest import blobs
from fluoden_batch.models import DnCNN, load_trainable
from fluoden_batch.noise import simulate
from fluoden_batch.train import TrainConfig, train
from fluoden_batch.train.blindspot import (
    BlindSpotSampler,
    apply_blind_spot,
    blind_spot,
    grid_step,
)

SIZE = 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("patch", "fraction", "radius"),
    [(32, 0.02, 2), (8, 0.25, 1), (17, 0.1, 1), (64, 0.005, 3), (24, 0.25, 2)],
)
def test_replacement_is_an_unmasked_neighbour_never_itself(
    patch: int, fraction: float, radius: int
) -> None:
    g = grid_step(fraction)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        spot = blind_spot((6, 1, patch, patch), fraction, radius, rng)
        masked = np.zeros((6, patch, patch), bool)
        masked[spot.batch, spot.y, spot.x] = True
        # one masked pixel per g x g cell of every patch
        cells = -(-patch // g)
        assert masked.sum() == spot.y.size == 6 * cells * cells
        assert np.array_equal(np.bincount(spot.batch), np.full(6, cells * cells))
        cell_ids = spot.batch * cells * cells + (spot.y // g) * cells + spot.x // g
        assert np.unique(cell_ids).size == cell_ids.size
        # the source is in the window, in the patch, not the pixel, not any masked pixel
        dy, dx = spot.src_y - spot.y, spot.src_x - spot.x
        assert not np.any((dy == 0) & (dx == 0))
        assert np.abs(dy).max() <= radius and np.abs(dx).max() <= radius
        assert spot.src_y.min() >= 0 and spot.src_y.max() < patch
        assert spot.src_x.min() >= 0 and spot.src_x.max() < patch
        assert not masked[spot.batch, spot.src_y, spot.src_x].any()
        # applied: each masked pixel holds its source's value, every other pixel is kept
        patches = rng.normal(size=(6, 1, patch, patch)).astype(np.float32)
        inputs = apply_blind_spot(patches, spot)
        assert np.array_equal(inputs[:, 0][~masked], patches[:, 0][~masked])
        assert np.array_equal(
            inputs[spot.batch, 0, spot.y, spot.x], patches[spot.batch, 0, spot.src_y, spot.src_x]
        )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_masked_prediction_is_blind_to_its_own_value(mode: str) -> None:
    """Through the receptive field: with the blind-spot input, the network output at every
    masked pixel does not depend on the ORIGINAL value at any masked pixel (its own
    included): the gradient of the loss (target held fixed) w.r.t. those values is exactly
    zero, and changing them leaves the masked outputs bit-identical. Batch norm in train
    mode (batch statistics) included."""
    torch.manual_seed(0)
    model = DnCNN(depth=5, width=4, batch_norm=True)  # receptive radius 5 > mask radius
    model.train(mode == "train")
    rng = np.random.default_rng(1)
    shape = (3, 1, 20, 20)
    spot = blind_spot(shape, 0.1, 2, rng)
    at = (spot.batch, 0, spot.y, spot.x)
    original = torch.tensor(rng.normal(size=shape), dtype=torch.float32, requires_grad=True)
    target = original.detach().clone()  # the loss target: the same noisy values, held fixed

    prediction = model(apply_blind_spot(original, spot))
    loss = ((prediction[at] - target[at]) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, original)
    assert torch.all(grad[at] == 0), "a masked pixel's own value reached its prediction"
    assert grad.abs().sum() > 0  # the loss does depend on the (unmasked) input

    changed = original.detach().clone()
    changed[at] += torch.randn(spot.y.size) * 10
    again = model(apply_blind_spot(changed, spot))
    assert torch.equal(again[at], prediction[at].detach())

    # control: without the blind spot the same check fails, so it can detect a leak
    plain = original.detach().clone().requires_grad_(True)
    leak = ((model(plain)[at] - target[at]) ** 2).mean()
    (grad_plain,) = torch.autograd.grad(leak, plain)
    assert torch.count_nonzero(grad_plain[at]) == spot.y.size


def test_sampler_targets_are_the_unmasked_noisy_patches() -> None:
    rng = np.random.default_rng(2)
    images = [rng.uniform(0, 255, (40, 50)).astype(np.float32) for _ in range(2)]
    sampler = BlindSpotSampler(images, 16, 0.05, 2)
    inputs, targets, mask = sampler.sample(4, np.random.default_rng(0))
    assert inputs.shape == targets.shape == mask.shape == (4, 1, 16, 16)
    assert np.array_equal(inputs[mask == 0], targets[mask == 0])
    assert mask.sum() == 4 * sampler.masked_share * 16 * 16
    again = sampler.sample(4, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip((inputs, targets, mask), again, strict=True))


@pytest.fixture(scope="module")
def noisy_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five uint8 noisy images raw/n_<k>.tif and their clean references gt/n_<k>.tif."""
    root = tmp_path_factory.mktemp("selfsup")
    rng = np.random.default_rng(11)
    for sub in ("raw", "gt"):
        (root / sub).mkdir()
    for k in range(5):
        clean = np.clip(blobs(rng, SIZE), 0, 255)
        noisy = np.clip(np.rint(simulate(clean, 6.0, 60.0, rng=rng)), 0, 255)
        tifffile.imwrite(root / "raw" / f"n_{k}.tif", noisy.astype(np.uint8))
        tifffile.imwrite(root / "gt" / f"n_{k}.tif", np.rint(clean).astype(np.uint8))
    return root / "raw", root / "gt"


def _config(dirs: tuple[Path, Path], tmp_path: Path, **update: object) -> TrainConfig:
    fields: dict[str, object] = {
        "output": tmp_path / "n2v.safetensors",
        "mode": "self_supervised",
        "noisy_dir": dirs[0],
        "noisy_glob": "n_*.tif",
        "depth": 4,
        "width": 16,
        "steps": 60,
        "batch_size": 8,
        "patch_size": 32,
        "mask_fraction": 0.04,
        "lr": 3e-3,
        "device": "cpu",
        "channels_last": True,
    }
    fields.update(update)
    return TrainConfig(**fields)


def test_self_supervised_loss_falls_and_denoises(
    noisy_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """No clean image enters training; the references only score the validation image."""
    config = _config(
        noisy_dirs, tmp_path, clean_dir=noisy_dirs[1], clean_glob="n_*.tif", val_keys=["4"]
    )
    result = train(config, progress=False)
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.75 * first, (first, last)
    meta = result.metadata
    assert meta is not None and meta.training["mode"] == "self_supervised"
    assert meta.training["clean"] is None and meta.training["train_images"] == 4
    assert meta.noise_model["self_supervised"] == "noise2void"
    assert meta.training["final_val_psnr_db"] > meta.training["val_noisy_psnr_db"] + 1.0
    model, _ = load_trainable(config.output)
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_self_supervised_resumes_bit_identically(
    noisy_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    straight = train(_config(noisy_dirs, tmp_path / "a", steps=6), progress=False)
    split = _config(
        noisy_dirs, tmp_path / "b", steps=6, checkpoint_dir=tmp_path / "ck", checkpoint_every=3
    )
    assert train(split, progress=False, stop_at=3).output is None
    resumed = train(split, progress=False)
    assert resumed.losses == straight.losses
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_references_only_score_never_train(noisy_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """Clean references (val_in_training: scoring the training images themselves) leave
    the trained weights bit-identical to a run that never saw them."""
    blind = train(_config(noisy_dirs, tmp_path / "a", steps=6), progress=False)
    scored = train(
        _config(
            noisy_dirs,
            tmp_path / "b",
            steps=6,
            clean_dir=noisy_dirs[1],
            clean_glob="n_*.tif",
            val_keys=[str(k) for k in range(5)],
            val_in_training=True,
            val_every=2,
        ),
        progress=False,
    )
    assert [s for s, _ in scored.val_psnr] == [2, 4, 6] and not blind.val_psnr
    assert scored.losses == blind.losses
    a, b = blind.model.state_dict(), scored.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_self_supervised_config_errors(noisy_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs noisy_dir"):
        _config(noisy_dirs, tmp_path, noisy_dir=None)
    with pytest.raises(ValidationError, match="need clean_dir"):
        _config(noisy_dirs, tmp_path, val_keys=["4"])
    with pytest.raises(ValidationError, match="mask_fraction"):
        _config(noisy_dirs, tmp_path, mask_fraction=0.5)
    with pytest.raises(ValidationError, match="val_in_training"):
        TrainConfig(
            output=tmp_path / "x.safetensors",
            clean_dir=noisy_dirs[1],
            noisy_dir=noisy_dirs[0],
            val_in_training=True,
        )

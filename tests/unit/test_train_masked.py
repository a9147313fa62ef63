"""Masked training: patches are parts of the masked protocol, K = 1 is plain supervised
sampling, patch labels equal whole-image labels, and a masked run trains and says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from fluoden_batch.clustering.masked import band, masked_labels, smooth
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import normalise, percentile_range
from fluoden_batch.noise import simulate
from fluoden_batch.train import TrainConfig, train
from fluoden_batch.train.data import PatchSampler, load_pairs
from fluoden_batch.train.masked import MaskedDenoiser, MaskedPatchSampler, fit_centres, patch_masks

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clean_image(rng: np.random.Generator) -> np.ndarray:
    """uint8 plane of three intensity populations in smooth regions."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.full((SIZE, SIZE), 20.0)
    for _ in range(5):
        (cy, cx), r = rng.uniform(0, SIZE, 2), rng.uniform(4, 10)
        image += rng.choice([90.0, 180.0]) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("masked_pairs")
    rng = np.random.default_rng(11)
    for sub in ("noisy", "clean"):
        (root / sub).mkdir()
    for k in range(5):
        clean = _clean_image(rng)
        noisy = np.clip(np.rint(simulate(clean, 3.0, 20.0, rng=rng)), 0, 255).astype(np.uint8)
        tifffile.imwrite(root / "noisy" / f"in_{k}.tif", noisy)
        tifffile.imwrite(root / "clean" / f"gt_{k}.tif", clean)
    return root / "noisy", root / "clean"


def _images(pair_dirs: tuple[Path, Path]):
    return load_pairs(pair_dirs[0], "in_*.tif", pair_dirs[1], "gt_*.tif")


def test_one_cluster_gives_exactly_the_supervised_patches(pair_dirs) -> None:
    images = _images(pair_dirs)
    plain = PatchSampler(images, 32).sample(6, np.random.default_rng(3))
    masked = MaskedPatchSampler(images, 32, clusters=[1], sigma=1.0).sample(
        6, np.random.default_rng(3)
    )
    for a, b in zip(plain, masked, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_patch_labels_equal_the_whole_image_labels(pair_dirs, sigma: float) -> None:
    image = _images(pair_dirs)[0]
    centres = fit_centres(image.noisy, 3)
    whole = masked_labels(image.noisy, centres, sigma)
    whole_s = smooth(image.noisy, sigma)
    for y, x in ((0, 0), (5, 17), (SIZE - 20, SIZE - 20), (30, 0)):
        labels, smoothed = patch_masks(image.noisy, y, x, 20, centres, sigma)
        np.testing.assert_array_equal(labels, whole[y : y + 20, x : x + 20])
        np.testing.assert_allclose(smoothed, whole_s[y : y + 20, x : x + 20], rtol=1e-12)


def test_masked_patches_are_one_cluster_part_with_the_band_fill_outside(pair_dirs) -> None:
    """Full-size patches (no crop, so each is a flip/rotation of the image): outside the
    part's cluster input and target both hold the same fill (the noisy image smoothed and
    clipped to the cluster's band); inside, the input is the noisy image and the target
    the clean one, under the noisy image's map."""
    image = _images(pair_dirs)[0]
    sampler = MaskedPatchSampler([image], SIZE, clusters=[3], sigma=1.0)
    centres = sampler.centres(0, 3, synthetic=False)
    labels = masked_labels(image.noisy, centres, 1.0)
    smoothed = smooth(image.noisy, 1.0)
    lo, hi = percentile_range(image.noisy, 0.1, 99.9)
    inputs, targets = sampler.sample(12, np.random.default_rng(0))
    seen = set()
    for inp, tgt in zip(inputs[:, 0], targets[:, 0], strict=True):
        found = None
        for k in range(len(centres)):
            fill = np.clip(smoothed, *band(centres, k)).astype(np.float32)
            want_in = normalise(np.where(labels == k, image.noisy, fill), lo, hi)
            want_tgt = normalise(np.where(labels == k, image.clean, fill), lo, hi)
            for flip in (False, True):
                for r in range(4):

                    def orient(a, r=r, flip=flip):
                        return np.rot90(a[:, ::-1] if flip else a, r)

                    if np.allclose(inp, orient(want_in), atol=1e-6):
                        found = (k, orient(want_tgt), orient(labels) != k)
        assert found is not None
        k, want_tgt, outside = found
        np.testing.assert_allclose(tgt, want_tgt, atol=1e-6)
        assert outside.mean() > 0.05  # a part, not the whole image
        np.testing.assert_array_equal(inp[outside], tgt[outside])  # the same fill
        seen.add(k)
    assert len(seen) >= 2  # parts of several clusters are drawn


def test_masked_training_runs_and_records_its_protocol(pair_dirs, tmp_path: Path) -> None:
    noisy, clean = pair_dirs
    config = TrainConfig(
        output=tmp_path / "m.safetensors",
        depth=3,
        width=8,
        mode="masked",
        noisy_dir=noisy,
        noisy_glob="in_*.tif",
        clean_dir=clean,
        clean_glob="gt_*.tif",
        val_keys=["4"],
        clusters=[2, 3],
        mask_sigma=0.5,
        steps=40,
        batch_size=4,
        patch_size=32,
        lr=3e-3,
        device="cpu",
        val_every=20,
    )
    result = train(config, progress=False)
    assert np.mean(result.losses[-8:]) < 0.5 * np.mean(result.losses[:8])
    meta = load_model(config.output).metadata
    assert meta.protocol == "masked"
    assert meta.training["clusters"] == [2, 3] and meta.training["mask_sigma"] == 0.5
    assert len(result.val_psnr) == 2 and all(np.isfinite(v) for _, v in result.val_psnr)
    # validation is the masked protocol on the whole image, as users run it
    image = _images(pair_dirs)[4]
    out = MaskedDenoiser(config.val_clusters, 0.5)(
        load_model(config.output).module, image.noisy, clip=(0, 255)
    )
    assert out.shape == image.noisy.shape and out.min() >= 0 and out.max() <= 255


def test_masked_options_belong_to_masked_mode(pair_dirs, tmp_path: Path) -> None:
    noisy, clean = pair_dirs
    base = dict(output=tmp_path / "m.safetensors", clean_dir=clean, clean_glob="gt_*.tif")
    with pytest.raises(ValidationError, match="for mode 'masked' only"):
        TrainConfig(**base, mode="supervised", noisy_dir=noisy, clusters=[2])
    with pytest.raises(ValidationError, match="distinct"):
        TrainConfig(**base, mode="masked", noisy_dir=noisy, clusters=[2, 2])
    with pytest.raises(ValidationError, match=r"1\.\.16"):
        TrainConfig(**base, mode="masked", noisy_dir=noisy, clusters=[0, 3])
    with pytest.raises(ValidationError, match="a_range and b_range"):
        TrainConfig(**base, mode="masked")

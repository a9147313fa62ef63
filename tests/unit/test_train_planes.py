"""Training images from image arrays: Zarr arrays pair plane by plane, a TIFF time series
gives Noise2Noise captures, keys name the planes, and bad arrays get clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from conftest import blobs
from fluoden_batch.errors import InputError
from fluoden_batch.noise import simulate
from fluoden_batch.train import TrainConfig, planes, train
from fluoden_batch.train.data import load_pairs, match_pairs
from fluoden_batch.train.planes import keyed_images, plane_key

SIZE = 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _zarr(path: Path, data: np.ndarray) -> Path:
    arr = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=data.shape)
    arr[...] = data
    return path


@pytest.fixture(scope="module")
def zarr_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """Noisy and clean uint8 Zarr arrays of shape (c=2, z=3, 40, 40) (axes czyx)."""
    root = tmp_path_factory.mktemp("zarr_pair")
    rng = np.random.default_rng(2)
    clean = np.stack(
        [np.stack([blobs(rng, SIZE, count=4, radius=(3, 6)) for _ in range(3)]) for _ in range(2)]
    )
    noisy = np.clip(np.rint(simulate(clean, 4.0, 40.0, rng=rng)), 0, 255).astype(np.uint8)
    clean8 = np.rint(clean).astype(np.uint8)
    return _zarr(root / "noisy.zarr", noisy), _zarr(root / "clean.zarr", clean8), noisy


def test_plane_keys_put_time_last() -> None:
    assert plane_key("tczyx", (3, 0, 5)) == "c0_z5_t3"
    assert plane_key("zyx", (7,)) == "z7"
    assert plane_key("yx", ()) == "0"


def test_zarr_arrays_pair_plane_by_plane(zarr_pair: tuple[Path, Path, np.ndarray]) -> None:
    noisy_path, clean_path, noisy = zarr_pair
    pairs = match_pairs(noisy_path, "*.tif", clean_path, "*.tif")
    assert [k for k, _, _ in pairs] == [f"c{c}_z{z}" for c in range(2) for z in range(3)]
    assert pairs[4][1].where == f"{noisy_path} plane c1_z1"
    images = load_pairs(noisy_path, "*.tif", clean_path, "*.tif")
    np.testing.assert_array_equal(images[4].noisy, noisy[1, 1].astype(np.float32))
    assert images[4].clip == (0.0, 255.0) and images[4].source == f"{clean_path} plane c1_z1"


def test_supervised_training_on_zarr_arrays(
    zarr_pair: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    noisy_path, clean_path, _ = zarr_pair
    config = TrainConfig(
        output=tmp_path / "z.safetensors",
        noisy_dir=noisy_path,
        clean_dir=clean_path,
        val_keys=["c1_z2"],
        depth=4,
        width=16,
        steps=40,
        batch_size=8,
        patch_size=32,
        lr=3e-3,
        device="cpu",
        val_every=40,
    )
    result = train(config, progress=False)
    assert np.mean(result.losses[-10:]) < 0.75 * np.mean(result.losses[:10])
    meta = result.metadata
    assert meta is not None and meta.training["train_images"] == 5
    assert meta.training["noisy"] == str(noisy_path)  # an array: no glob
    assert meta.training["final_val_psnr_db"] > meta.training["val_noisy_psnr_db"]


def test_tiff_time_series_gives_noise2noise_captures(tmp_path: Path) -> None:
    """Four frames of one scene in a TYX stack: keys t0..t3, one field of view."""
    rng = np.random.default_rng(4)
    scene = blobs(rng, SIZE, count=4, radius=(3, 6))
    frames = np.stack([simulate(scene, 4.0, 40.0, rng=rng) for _ in range(4)])
    stack = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    path = tmp_path / "series.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "TYX"})
    assert list(keyed_images(path, "*.tif")) == ["t0", "t1", "t2", "t3"]
    config = TrainConfig(
        output=tmp_path / "n2n.safetensors",
        mode="noise2noise",
        noisy_dir=path,
        depth=3,
        width=8,
        steps=3,
        batch_size=4,
        patch_size=32,
        device="cpu",
    )
    result = train(config, progress=False)
    assert result.metadata is not None and result.metadata.training["train_images"] == 4


def test_array_errors_name_the_problem(
    zarr_pair: tuple[Path, Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noisy_path, _, noisy = zarr_pair
    other = _zarr(tmp_path / "other.zarr", noisy[:, :2])
    with pytest.raises(InputError, match=r"2 images have no partner .*keys \['c0_z2', 'c1_z2'\]"):
        match_pairs(noisy_path, "*.tif", other, "*.tif")
    monkeypatch.setattr(planes, "MAX_TRAIN_BYTES", 1000)
    with pytest.raises(InputError, match=r"noisy.zarr: 6 planes of 40x40 .* in memory"):
        keyed_images(noisy_path, "*.tif")
    monkeypatch.undo()
    with pytest.raises(InputError, match="not a folder, TIFF stack or Zarr store"):
        keyed_images(tmp_path / "missing", "*.tif")
    folder = tmp_path / "stacks"
    folder.mkdir()
    tifffile.imwrite(folder / "a_1.tif", noisy[0], photometric="minisblack")
    with pytest.raises(InputError, match=r"a_1.tif: expected a 2-D .* TIFF stack"):
        load_pairs(folder, "*.tif", folder, "*.tif")

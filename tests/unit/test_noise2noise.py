"""Noise2Noise training on repeated captures: grouping by field of view, targets that
never contain the input's own noise, clear errors, and a run whose loss falls and that
denoises without a clean image in the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from conftest import blobs
from fluoden_batch.errors import InputError
from fluoden_batch.noise import simulate
from fluoden_batch.train import TrainConfig, train
from fluoden_batch.train.captures import capture_targets, group_captures

SIZE = 48
CAPTURES = 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two fields of view, three uint8 noisy captures each (raw/fov<f>_<c>.tif), and the
    clean references gt/fov<f>_<c>.tif (the same image for every capture of a field)."""
    root = tmp_path_factory.mktemp("n2n")
    rng = np.random.default_rng(5)
    for sub in ("raw", "gt"):
        (root / sub).mkdir()
    for f in range(2):
        clean = np.clip(blobs(rng, SIZE), 0, 255)
        for c in range(1, CAPTURES + 1):
            noisy = np.clip(np.rint(simulate(clean, 6.0, 60.0, rng=rng)), 0, 255)
            tifffile.imwrite(root / "raw" / f"fov{f}_{c}.tif", noisy.astype(np.uint8))
            tifffile.imwrite(root / "gt" / f"fov{f}_{c}.tif", np.rint(clean).astype(np.uint8))
    return root / "raw", root / "gt"


def _config(dirs: tuple[Path, Path], tmp_path: Path, **update: object) -> TrainConfig:
    fields: dict[str, object] = {
        "output": tmp_path / "n2n.safetensors",
        "mode": "noise2noise",
        "noisy_dir": dirs[0],
        "noisy_glob": "*.tif",
        "depth": 4,
        "width": 16,
        "steps": 60,
        "batch_size": 8,
        "patch_size": 32,
        "lr": 3e-3,
        "device": "cpu",
        "channels_last": True,
    }
    fields.update(update)
    return TrainConfig(**fields)


def test_default_pattern_drops_the_trailing_capture_number() -> None:
    keys = ["cell_2", "cell_10", "dish-1", "dish-2", "3", "4"]
    assert group_captures(keys, TrainConfig.model_fields["capture_pattern"].default) == {
        "": ["3", "4"],
        "cell": ["cell_10", "cell_2"],
        "dish": ["dish-1", "dish-2"],
    }


def test_grouping_errors_name_the_keys() -> None:
    with pytest.raises(InputError, match=r"one only for \['solo_1'\]"):
        group_captures(["a_1", "a_2", "solo_1"], r"(.*?)_\d+")
    with pytest.raises(InputError, match=r"does not match the image keys \['b'\]"):
        group_captures(["a_1", "a_2", "b"], r"(.*?)_\d+")


def test_target_is_the_mean_of_the_other_captures() -> None:
    """No capture's own values enter its target: each target equals the mean of the others
    exactly, and changing a capture changes every target but its own."""
    rng = np.random.default_rng(0)
    stack = rng.uniform(0, 255, (4, 8, 8)).astype(np.float32)
    items = [(f"f_{i}", stack[i], f"f_{i}.tif") for i in range(4)]
    images = capture_targets(items, r"(.*?)_\d+")
    assert [im.key for im in images] == ["f_0", "f_1", "f_2", "f_3"]
    for i, im in enumerate(images):
        np.testing.assert_array_equal(im.noisy, stack[i])
        np.testing.assert_allclose(im.clean, np.delete(stack, i, 0).mean(0), rtol=1e-6)
    changed = stack.copy()
    changed[2] += 7.0
    again = capture_targets([(k, changed[i], p) for i, (k, _, p) in enumerate(items)], "(.*)_.")
    for i in range(4):
        same = np.array_equal(again[i].clean, images[i].clean)
        assert same == (i == 2), i


def test_averaged_inputs_against_the_mean_of_the_rest() -> None:
    """capture_levels [1, 2]: 4 single captures and 4 cyclic pairs; every input and its
    target average disjoint captures that together are all of them."""
    rng = np.random.default_rng(1)
    stack = rng.uniform(0, 255, (4, 6, 6)).astype(np.float32)
    items = [(f"f_{i}", stack[i], f"f_{i}.tif") for i in range(4)]
    images = capture_targets(items, r"(.*?)_\d+", levels=(1, 2))
    pairs = {"f_0+f_1": (0, 1), "f_1+f_2": (1, 2), "f_2+f_3": (2, 3), "f_3+f_0": (3, 0)}
    assert sorted(im.key for im in images) == sorted([f"f_{i}" for i in range(4)] + list(pairs))
    for im in images:
        chosen = pairs.get(im.key, (int(im.key[-1]),))
        rest = [i for i in range(4) if i not in chosen]
        np.testing.assert_allclose(im.noisy, stack[list(chosen)].mean(0), rtol=1e-6)
        np.testing.assert_allclose(im.clean, stack[rest].mean(0), rtol=1e-6)
    assert images[1].noisy_source == "f_0.tif + f_1.tif"  # sorted keys: f_0, f_0+f_1, ...
    with pytest.raises(InputError, match=r"'f' has 4 captures, so each level must be 1..3"):
        capture_targets(items, r"(.*?)_\d+", levels=(1, 4))


def test_capture_errors_name_the_files() -> None:
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(InputError, match=r"x_1.tif and x_2.tif are identical"):
        capture_targets([("x_1", a, "x_1.tif"), ("x_2", a.copy(), "x_2.tif")], r"(.*?)_\d+")
    with pytest.raises(InputError, match=r"differ in shape: x_1.tif \(8, 8\), x_2.tif \(8, 9\)"):
        capture_targets(
            [("x_1", a, "x_1.tif"), ("x_2", np.ones((8, 9), np.float32), "x_2.tif")],
            r"(.*?)_\d+",
        )


def test_noise2noise_loss_falls_and_denoises(captures: tuple[Path, Path], tmp_path: Path) -> None:
    """Trains on the noisy captures only; the held-out capture fov1_3 is scored against its
    reference and left out of training (also as a target)."""
    config = _config(
        captures, tmp_path, clean_dir=captures[1], clean_glob="*.tif", val_keys=["fov1_3"]
    )
    result = train(config, progress=False)
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.75 * first, (first, last)
    meta = result.metadata
    assert meta is not None and meta.training["mode"] == "noise2noise"
    assert meta.training["clean"] is None and meta.training["train_images"] == 5
    assert meta.noise_model["self_supervised"] == "noise2noise"
    assert meta.training["final_val_psnr_db"] > meta.training["val_noisy_psnr_db"] + 2.0


def test_references_only_score_never_train(captures: tuple[Path, Path], tmp_path: Path) -> None:
    blind = train(_config(captures, tmp_path / "a", steps=4), progress=False)
    scored = train(
        _config(
            captures,
            tmp_path / "b",
            steps=4,
            clean_dir=captures[1],
            clean_glob="*.tif",
            val_keys=["fov0_1", "fov1_1"],
            val_in_training=True,
            val_every=2,
        ),
        progress=False,
    )
    assert [s for s, _ in scored.val_psnr] == [2, 4] and scored.losses == blind.losses


def test_noise2noise_config_errors(captures: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs noisy_dir"):
        _config(captures, tmp_path, noisy_dir=None)
    with pytest.raises(ValidationError, match="need clean_dir"):
        _config(captures, tmp_path, val_keys=["fov0_1"])
    with pytest.raises(ValidationError, match="needs a group"):
        _config(captures, tmp_path, capture_pattern=r"fov\d_\d")
    with pytest.raises(ValidationError, match="not a regular expression"):
        _config(captures, tmp_path, capture_pattern="(fov")
    with pytest.raises(ValidationError, match="capture_pattern: for mode 'noise2noise' only"):
        _config(captures, tmp_path, mode="self_supervised", capture_pattern=r"(.*)_\d")
    with pytest.raises(ValidationError, match="capture_levels must be distinct counts"):
        _config(captures, tmp_path, capture_levels=[1, 1])
    with pytest.raises(ValidationError, match="capture_levels: for mode 'noise2noise' only"):
        _config(captures, tmp_path, mode="self_supervised", capture_levels=[2])
    with pytest.raises(InputError, match="one only for"):
        train(_config(captures, tmp_path, capture_pattern=r"(.*)"), progress=False)

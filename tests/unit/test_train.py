"""Training library: data pairing and normalisation, loss falls, exact resume, weights I/O."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from pydantic import ValidationError
from safetensors.torch import save_file
from skimage import io

from conftest import DATA, make_tiny_weights
from fluoden_batch.config.train import TrainConfigError, load_train_config
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.metrics import psnr
from fluoden_batch.models import (
    DnCNN,
    ModelMetadata,
    Normalisation,
    load_model,
    load_trainable,
    read_metadata,
    save_weights,
)
from fluoden_batch.models.ffdnet import FFDNet
from fluoden_batch.models.normalise import (
    denormalise,
    map_parameters,
    normalisation_range,
    normalise,
    percentile_range,
    with_noise_map,
)
from fluoden_batch.models.unet import UNet
from fluoden_batch.models.weights import METADATA_KEY, Architecture, file_digest, shipped_models
from fluoden_batch.noise import simulate
from fluoden_batch.train import TrainConfig, denoise_whole, train, validation_psnr
from fluoden_batch.train.data import (
    PatchSampler,
    load_images,
    load_pairs,
    match_brightness,
    match_pairs,
)
from fluoden_batch.train.sources import load_data

SIZE = 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clean_image(rng: np.random.Generator) -> np.ndarray:
    """Smooth uint8 blobs on a dim background, shape (SIZE, SIZE)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.full((SIZE, SIZE), 10.0)
    for _ in range(4):
        (cy, cx), r = rng.uniform(0, SIZE, 2), rng.uniform(3, 8)
        image += rng.uniform(60, 180) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six uint8 pairs: noisy/in_<k>.tif and clean/gt_<k>.tif with k = 0..5."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(7)
    (root / "noisy").mkdir()
    (root / "clean").mkdir()
    for k in range(6):
        clean = _clean_image(rng)
        noisy = np.clip(np.rint(simulate(clean, 4.0, 25.0, rng=rng)), 0, 255).astype(np.uint8)
        tifffile.imwrite(root / "noisy" / f"in_{k}.tif", noisy)
        tifffile.imwrite(root / "clean" / f"gt_{k}.tif", clean)
    return root / "noisy", root / "clean"


def _config(pair_dirs: tuple[Path, Path], tmp_path: Path, **update: object) -> TrainConfig:
    noisy, clean = pair_dirs
    fields: dict[str, object] = {
        "output": tmp_path / "model.safetensors",
        "depth": 3,
        "width": 8,
        "mode": "supervised",
        "noisy_dir": noisy,
        "noisy_glob": "in_*.tif",
        "clean_dir": clean,
        "clean_glob": "gt_*.tif",
        "val_keys": ["5"],
        "synthetic_fraction": 0.5,
        "a_range": (1.0, 6.0),
        "b_range": (0.0, 30.0),
        "steps": 10,
        "batch_size": 4,
        "patch_size": 24,
        "lr": 3e-3,
        "device": "cpu",
        "val_every": 5,
    }
    fields.update(update)
    return TrainConfig(**fields)


def test_pairs_match_by_wildcard(pair_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    noisy, clean = pair_dirs
    pairs = match_pairs(noisy, "in_*.tif", clean, "gt_*.tif")
    assert [k for k, _, _ in pairs] == [str(k) for k in range(6)]
    assert all(
        n.where == str(noisy / f"in_{k}.tif") and c.where == str(clean / f"gt_{k}.tif")
        for k, n, c in pairs
    )
    (tmp_path / "gt_9.tif").write_bytes((clean / "gt_0.tif").read_bytes())
    with pytest.raises(InputError, match="no partner"):
        match_pairs(noisy, "in_*.tif", tmp_path, "gt_*.tif")


def test_png_images_load_with_dtype_range(tmp_path: Path) -> None:
    image = _clean_image(np.random.default_rng(3))
    io.imsave(tmp_path / "cell_a.png", image, check_contrast=False)
    (loaded,) = load_images(tmp_path, "cell_*.png")
    assert loaded.key == "a" and loaded.noisy is None and loaded.clip == (0.0, 255.0)
    np.testing.assert_array_equal(loaded.clean, image.astype(np.float32))


def test_patches_use_noisy_image_percentiles(pair_dirs: tuple[Path, Path]) -> None:
    """A full-size patch is a flip/rotation of the normalised noisy image, and the target
    went through the same map (percentiles of the NOISY image, 0.1/99.9)."""
    image = load_pairs(pair_dirs[0], "in_*.tif", pair_dirs[1], "gt_*.tif")[0]
    lo, hi = percentile_range(image.noisy, 0.1, 99.9)
    sampler = PatchSampler([image], SIZE)
    inputs, targets = sampler.sample(8, np.random.default_rng(0))
    for got, ref in ((inputs, image.noisy), (targets, image.clean)):
        ref_n = normalise(ref, lo, hi)
        dihedral = [np.rot90(r, k) for r in (ref_n, ref_n[:, ::-1]) for k in range(4)]
        for patch in got[:, 0]:
            assert any(np.array_equal(patch, d) for d in dihedral)


def test_config_rejects_bad_fields(pair_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        _config(pair_dirs, tmp_path, epochs=3)
    with pytest.raises(ValidationError, match="a_range"):
        _config(pair_dirs, tmp_path, a_range=None)
    with pytest.raises(ValidationError, match="noisy_dir"):
        _config(pair_dirs, tmp_path, mode="synthetic")


def _scaled_pairs(root: Path, gain: float, offset: float) -> tuple[Path, Path]:
    """Three uint8 pairs whose noisy image shows ``gain * clean + offset`` (Poisson-Gaussian,
    clipped to 0..255): references stretched apart from their inputs."""
    rng = np.random.default_rng(11)
    (root / "noisy").mkdir(parents=True)
    (root / "clean").mkdir()
    for k in range(3):
        clean = _clean_image(rng)
        shown = gain * clean.astype(np.float64) + offset
        noisy = np.clip(np.rint(simulate(shown, 2.0, 16.0, rng=rng)), 0, 255).astype(np.uint8)
        tifffile.imwrite(root / "noisy" / f"in_{k}.tif", noisy)
        tifffile.imwrite(root / "clean" / f"gt_{k}.tif", clean)
    return root / "noisy", root / "clean"


def test_match_brightness_fits_gain_and_offset(tmp_path: Path) -> None:
    """References stretched apart from their inputs come back to the inputs' brightness;
    without ``match`` they load as stored."""
    noisy_dir, clean_dir = _scaled_pairs(tmp_path, 0.6, 14.0)
    plain = load_pairs(noisy_dir, "in_*.tif", clean_dir, "gt_*.tif")
    matched = load_pairs(noisy_dir, "in_*.tif", clean_dir, "gt_*.tif", match=True)
    for before, after in zip(plain, matched, strict=True):
        gain, offset = np.polyfit(before.clean.ravel(), after.clean.ravel(), 1)
        assert gain == pytest.approx(0.6, abs=0.02) and offset == pytest.approx(14.0, abs=1.5)
        np.testing.assert_array_equal(after.noisy, before.noisy)


def test_match_brightness_leaves_saturated_pixels_out(tmp_path: Path) -> None:
    """Where the noisy image saturates (its blobs shown 2.5x as bright), the fit that leaves
    pixels at the dtype's limits out finds the gain; one that keeps them finds it low."""
    noisy_dir, clean_dir = _scaled_pairs(tmp_path, 2.5, 5.0)
    image = load_pairs(noisy_dir, "in_*.tif", clean_dir, "gt_*.tif")[0]
    assert (image.noisy == 255).mean() > 0.01
    gains = [
        np.polyfit(
            image.clean.ravel(), match_brightness(image.clean, image.noisy, clip).ravel(), 1
        )[0]
        for clip in ((0.0, 255.0), None)
    ]
    assert gains[0] == pytest.approx(2.5, abs=0.05) and gains[1] < 2.3


def test_match_brightness_refuses_an_unrelated_reference(tmp_path: Path) -> None:
    noisy_dir, clean_dir = _scaled_pairs(tmp_path, 0.6, 14.0)
    inverted = 255 - tifffile.imread(clean_dir / "gt_1.tif")
    tifffile.imwrite(clean_dir / "gt_1.tif", inverted)
    with pytest.raises(InputError, match=r"gt_1\.tif: its brightness does not follow"):
        load_pairs(noisy_dir, "in_*.tif", clean_dir, "gt_*.tif", match=True)


def test_training_with_match_brightness_validates_on_matched_references(
    tmp_path: Path,
) -> None:
    """``match_brightness``: validation scores against the matched reference too (the noisy
    input scores higher against it than against the stretched one), and the option is
    refused without pairs."""
    pairs = _scaled_pairs(tmp_path / "pairs", 0.6, 14.0)
    noisy_db = {}
    for match in (False, True):
        config = _config(
            pairs, tmp_path, match_brightness=match, val_keys=["2"], steps=2, val_every=2
        )
        result = train(config, progress=False)
        assert result.metadata is not None
        noisy_db[match] = result.metadata.training["val_noisy_psnr_db"]
    assert noisy_db[True] > noisy_db[False] + 3
    with pytest.raises(ValidationError, match="match_brightness needs noisy/clean pairs"):
        _config(pairs, tmp_path, mode="synthetic", noisy_dir=None, match_brightness=True)


def test_correlated_synthetic_noise_is_drawn_and_recorded(
    pair_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """noise_correlation: every synthetic patch's noise is correlated between neighbours
    (a clean image of one grey level makes the patch its noise), the map models get the
    estimator's view of it, and the range is stored in the weights' noise model."""
    flat = load_pairs(pair_dirs[0], "in_*.tif", pair_dirs[1], "gt_*.tif")[0]
    flat = replace(flat, clean=np.full_like(flat.clean, 100.0), noisy=None)
    lags = []
    for rho in ((0.0, 0.0), (0.6, 0.6)):
        sampler = PatchSampler(
            [flat], SIZE, a_range=(1.0, 1.0), b_range=(25.0, 25.0), correlation_range=rho
        )
        inputs, _ = sampler.sample(64, np.random.default_rng(0))
        n = inputs[:, 0] - inputs[:, 0].mean(axis=(1, 2), keepdims=True)
        lags.append(float(np.mean(n[:, :, 1:] * n[:, :, :-1]) / np.mean(n * n)))
    assert lags[0] == pytest.approx(0.0, abs=0.05) and lags[1] == pytest.approx(0.6, abs=0.05)
    config = _config(pair_dirs, tmp_path, noise_correlation=(0.0, 0.6), steps=2, val_every=2)
    result = train(config, progress=False)
    assert result.metadata is not None
    assert result.metadata.noise_model["correlation_range"] == [0.0, 0.6]
    for bad in ((0.2, 0.1), (0.0, 0.8)):
        with pytest.raises(ValidationError, match="noise_correlation"):
            _config(pair_dirs, tmp_path, noise_correlation=bad)
    with pytest.raises(ValidationError, match="noise_correlation"):
        _config(pair_dirs, tmp_path, noise_correlation=(0.0, 0.6), synthetic_fraction=0.0)


def test_loss_falls_on_synthetic_data(pair_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    config = _config(pair_dirs, tmp_path, mode="synthetic", noisy_dir=None, steps=40, val_every=40)
    result = train(config, progress=False)
    first, last = np.mean(result.losses[:8]), np.mean(result.losses[-8:])
    assert last < 0.5 * first, (first, last)
    assert result.output == config.output and config.output.is_file()
    assert result.metadata is not None
    assert result.metadata.training["steps"] == 40
    assert result.metadata.noise_model["kind"] == "poisson-gaussian"
    assert result.metadata.training["final_val_psnr_db"] == result.val_psnr[-1][1]


def test_noise_normalisation_is_trained_validated_and_stored(
    pair_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    config = _config(pair_dirs, tmp_path, normalisation="noise", steps=6, val_every=6)
    result = train(config, progress=False)
    noise = Normalisation(method="noise")
    assert result.metadata is not None and result.metadata.normalisation == noise
    assert read_metadata(result.output).normalisation == noise
    _, _, val_images = load_data(config)
    by_noise = validation_psnr(
        result.model, val_images, denoise=partial(denoise_whole, normalisation=noise)
    )
    assert result.val_psnr[-1][1] == pytest.approx(by_noise, abs=1e-9)
    by_percentile = validation_psnr(result.model, val_images)
    assert by_percentile != pytest.approx(by_noise, abs=1e-6)  # the two really differ


class _Box(torch.nn.Module):
    """A parameterless 5 x 5 box mean: no ``receptive_radius``, so one pass over the plane."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 5, 1, 2, count_include_pad=False)


@pytest.mark.parametrize(
    "model",
    [
        DnCNN(depth=6, width=8, dilations=[1, 3, 5, 3, 1, 1]),
        FFDNet(depth=4, width=8),
        UNet(levels=3, width=4),
        _Box(),
    ],
    ids=["dilated DnCNN", "FFDNet with a noise map", "U-Net", "no receptive radius"],
)
def test_denoise_whole_in_pieces_equals_one_pass(model: torch.nn.Module) -> None:
    """Validation runs planes in pieces of TILE px with the model's receptive radius as
    halo (odd sizes, both axes over TILE, FFDNet's 2-pixel grid, the U-Net's 8-pixel one):
    the plane's one pass."""
    torch.manual_seed(0)
    std = 0.15 if isinstance(model, UNet) else 0.3  # 18 layers, widths doubling: smaller
    for p in model.parameters():  # a network far from the identity
        torch.nn.init.normal_(p, 0.0, std)
    model.eval()
    rng = np.random.default_rng(0)
    image = rng.poisson(50.0, (301, 527)).astype(np.float32)
    noise = (1.0, 4.0)
    norm = Normalisation()
    lo, hi = normalisation_range(image, norm)
    x = normalise(image, lo, hi)
    if getattr(model, "noise_map", False):
        x = with_noise_map(x, *map_parameters(*noise, lo, hi))
    with torch.no_grad():
        whole = model(torch.from_numpy(x).reshape(1, -1, *image.shape))[0, 0].numpy()
    out = denoise_whole(model, image, normalisation=norm, noise=noise)
    np.testing.assert_allclose(out, denormalise(whole, lo, hi), rtol=0, atol=1e-4 * (hi - lo))
    model.train()
    denoise_whole(model, image, normalisation=norm, noise=noise)
    assert model.training  # its mode is restored


@pytest.mark.parametrize(
    "network", [{}, {"architecture": "unet", "levels": 2}], ids=["DnCNN", "U-Net"]
)
def test_checkpoint_resumes_bit_identically(
    pair_dirs: tuple[Path, Path], tmp_path: Path, network: dict[str, object]
) -> None:
    straight = train(_config(pair_dirs, tmp_path / "a", **network), progress=False)
    assert isinstance(straight.model, UNet) == bool(network)
    split = _config(
        pair_dirs, tmp_path / "b", checkpoint_dir=tmp_path / "ckpt", checkpoint_every=5, **network
    )
    first = train(split, progress=False, stop_at=5)
    assert first.step == 5 and first.output is None
    resumed = train(split, progress=False)
    assert resumed.step == 10
    assert resumed.losses == straight.losses
    assert resumed.val_psnr == straight.val_psnr
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ModelError, match="different configuration"):
        train(split.model_copy(update={"lr": 1e-2}), progress=False)


def test_saved_weights_load_back_bit_identically(
    pair_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    result = train(_config(pair_dirs, tmp_path, steps=3), progress=False)
    model, metadata = load_trainable(result.output)
    assert metadata == result.metadata
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    again = tmp_path / "again.safetensors"
    save_weights(model, again, metadata)
    assert again.read_bytes() == result.output.read_bytes()


def _write(path: Path, model: DnCNN, architecture: Architecture, drop: str | None = None) -> Path:
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != drop}
    meta = ModelMetadata(name="t", architecture=architecture)
    save_file(tensors, str(path), metadata={METADATA_KEY: meta.model_dump_json()})
    return path


def test_mismatched_weights_raise_model_error(tmp_path: Path) -> None:
    model = DnCNN(3, 8)
    with pytest.raises(ModelError, match="does not match the model"):
        save_weights(model, tmp_path / "x.safetensors", ModelMetadata(name="t"))
    wrong_depth = _write(tmp_path / "depth.safetensors", model, Architecture(depth=4, width=8))
    with pytest.raises(ModelError, match="do not match architecture"):
        load_trainable(wrong_depth)
    wrong_width = _write(tmp_path / "width.safetensors", model, Architecture(depth=3, width=16))
    with pytest.raises(ModelError, match="shapes do not match"):
        load_trainable(wrong_width)
    missing = _write(
        tmp_path / "missing.safetensors", model, Architecture(depth=3, width=8), "body.0.weight"
    )
    with pytest.raises(ModelError, match=r"missing \['body.0.weight'\]"):
        load_trainable(missing)
    pickled = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(ModelError, match="pickle"):
        load_trainable(pickled)


@pytest.mark.parametrize(("name", "gain_db"), [("dncnn-small", 1.0), ("dncnn-fmd", 3.0)])
def test_shipped_models_improve_fmd_raw(name: str, gain_db: float) -> None:
    """Whole-image inference of a shipped model on one real FMD raw image, under the
    normalisation its metadata names (``dncnn-fmd`` was trained on fmd_dev's types, so for
    it this is a smoke test of the shipped file; its out-of-fold figures are in README)."""
    raw_path = DATA / "fmd_dev" / "raw" / "Confocal_BPAE_B_1.png"
    if not raw_path.is_file():
        pytest.skip(f"real data not found at {DATA} (set FLUODEN_DATA)")
    if name not in shipped_models():
        pytest.skip(f"shipped weights {name}.safetensors not present")
    raw = io.imread(raw_path).astype(np.float32)
    gt = io.imread(DATA / "fmd_dev" / "gt" / raw_path.name).astype(np.float32)
    loaded = load_model(name)
    norm = loaded.metadata.normalisation
    out = denoise_whole(loaded.module, raw, clip=(0.0, 255.0), normalisation=norm)
    assert psnr(out, gt, 255) > psnr(raw, gt, 255) + gain_db


def test_fine_tuning_starts_from_the_weights(
    pair_dirs: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """init_weights: zero learning rate keeps the start exactly; another architecture is
    refused by name; another input normalisation is trained but warned about."""
    start = make_tiny_weights(tmp_path / "start.safetensors", depth=3, width=8)
    frozen = train(
        _config(pair_dirs, tmp_path / "a", init_weights=start, steps=2, lr=1e-30, val_keys=[]),
        progress=False,
    )
    expected, _ = load_trainable(start)
    got = frozen.model.state_dict()
    for key, value in expected.state_dict().items():
        if "running" not in key and "num_batches" not in key:  # batch norm stats move
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-20)
    with pytest.raises(TrainConfigError, match=r"start\.safetensors is DnCNN 3x8, batch norm"):
        train(_config(pair_dirs, tmp_path / "b", init_weights=start, depth=4), progress=False)
    with caplog.at_level("WARNING", logger="fluoden_batch.train.loop"):
        train(
            _config(pair_dirs, tmp_path / "c", init_weights=start, steps=1, normalisation="noise"),
            progress=False,
        )
    assert "trained with 'percentile' input normalisation, this run uses 'noise'" in caplog.text
    # batch_norm = false: the start's batch norm folded, deeper or not (the inserted layers
    # dilated or not), the same function
    for depth, dilations in ((3, None), (5, None), (5, [1, 2, 3, 1, 1])):
        grown = train(
            _config(pair_dirs, tmp_path / f"g{depth}{dilations}", init_weights=start, steps=1,
                    lr=1e-30, val_keys=[], depth=depth, batch_norm=False, dilations=dilations),
            progress=False,
        )  # fmt: skip
        assert grown.model.receptive_radius == sum(dilations or [1] * depth)
        x = torch.rand(1, 1, 20, 20)
        with torch.no_grad():
            torch.testing.assert_close(grown.model.eval()(x), expected.eval()(x))


def test_fine_tuning_from_a_shipped_model_name(
    pair_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """init_weights = "dncnn-small" in a config file stays a name (no file of that name
    beside the config) and trains from the shipped file; an unknown name is refused."""
    config_file = tmp_path / "ft.yaml"
    config_file.write_text(
        f"output: out.safetensors\nnoisy_dir: {pair_dirs[0]}\nnoisy_glob: 'in_*.tif'\n"
        f"clean_dir: {pair_dirs[1]}\nclean_glob: 'gt_*.tif'\ninit_weights: dncnn-small\n"
        "depth: 10\nwidth: 32\nsteps: 1\nbatch_size: 2\npatch_size: 24\ndevice: cpu\n"
    )
    config = load_train_config(config_file)
    assert config.init_weights == Path("dncnn-small")
    result = train(config, progress=False)
    assert result.metadata is not None
    start = result.metadata.training["init_weights"]
    assert start["digest"] == file_digest(shipped_models()["dncnn-small"])
    with pytest.raises(ModelError, match="'no-such-model' is neither a file nor a shipped"):
        train(config.model_copy(update={"init_weights": Path("no-such-model")}), progress=False)

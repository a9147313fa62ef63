"""Train the shipped default model on FMD and W2S pairs, with leave-types-out folds.

The six ``fmd_dev`` sample types are split into two groups, one type of each microscope
in each group:

- group A: Confocal_MICE, TwoPhoton_BPAE_G, WideField_BPAE_B
- group B: Confocal_BPAE_B, TwoPhoton_BPAE_R, WideField_BPAE_G

``--fold A`` trains on group A and is scored (``eval_fmd.py --types``) on group B only;
``--fold B`` the other way round; ``--fold all`` trains on all six types: that is the
shipped model, and its honest quality estimate on unseen sample types is the pair of
out-of-fold scores (the hidden half of FMD's twelve types is never in ``fmd_dev``).

Training data of one run (supervised, DnCNN, percentile normalisation per image):

- FMD pairs of the fold's types: every noise level (raw, avg2, avg4, avg8, avg16) of the
  four captures -> ``gt`` (so the model also sees nearly clean inputs and learns to leave
  them alone), except ``raw/<Type>_4`` of each type, held out for validation;
- W2S widefield pairs, channel 0 of FOV 001-040: ``avg1`` -> ``avg400``;
- a share ``--synthetic`` of the patches gets simulated Poisson-Gaussian noise on the
  clean image instead (a log-uniform in (0.05, 8), b uniform in (0, 50), grey levels).

``--noise-map`` (a DnCNN given the noise map sqrt(a x + b) as a second input channel, no
batch norm, grown from ``--init`` by :func:`fluoden_batch.models.dncnn.grow`) and
``--arch ffdnet`` (the bias-free FFDNet of :mod:`fluoden_batch.models.ffdnet`) use a wider
recipe, fixed before any out-of-fold score was seen (``--wide-data`` gives it to any
network, with ``--synthetic 0.4`` as those runs had):

- W2S pairs of channels 0, 1 and 2 of FOV 001-036 (FOV 037-040 are held out of every
  run and scored by ``eval_w2s.py``);
- synthetic patches on a wider noise range, a log-uniform in (0.02, 16), b uniform in
  (0, 200) grey levels squared, on 40 % of the patches;
- the normalisation and initialisation given on the command line.

``--correlated RHO`` (any recipe) gives the synthetic noise a lag-1 spatial correlation
drawn uniformly in ``(0, RHO)`` per patch (:func:`fluoden_batch.noise.simulate.correlate`):
FMD's widefield captures have 0.57-0.62, which the single-image noise estimator (and so
the noise map and the noise normalisation) sees as about a fifth of their variance.

``--camera-noise [SHARE]`` (any recipe; not with ``--correlated``) filters the noise of
a share SHARE (default 1: every one) of the synthetic patches by a random separable camera
kernel (:func:`camera_kernel`): a generic family of
pixel crosstalk and blur, ``w0 delta + w1 G(s1) + w2 G(s2)`` per axis with weights from a
flat Dirichlet, ``s1`` uniform in (0.5, 1) px and ``s2`` in (1.5, 3) px, normalised to
keep each pixel's variance: white noise, short (lag-1 only) and long correlations and
their mixtures, so a model meets more than the one camera of its fold.

``--camera-reading`` (DnCNN; with ``--grow`` from a DnCNN of the same width) tells the
network how correlated each plane's noise is: a second input channel, constant over the
plane, holds :func:`camera_reading` (how much more noise the wavelet estimator reads at
stride 2 than at stride 1), computed on the whole noisy plane in training and at inference
alike; the channel's input weights start at zero (the grown network starts as ``--init``).
Benchmark-only: :func:`use_camera_reading` routes the noise-map input of the training
sampler and of whole-image inference to it.

``--vst`` (any DnCNN recipe; benchmark-only) trains in the variance-stabilised domain:
each plane's Poisson-Gaussian ``(a, b)`` (estimated from the noisy plane as inference
would, :func:`~fluoden_batch.models.normalise.plane_noise`; a synthetic plane's own draw)
gives its generalized Anscombe transform, and the model sees the transformed plane under
the recipe's normalisation (window taken on the transformed noisy plane), noisy input and
clean target alike: the noise is then the same at every pixel. :func:`vst_denoise_whole`
maps the output back by the algebraic inverse (the target is the transformed clean
image): ``fluoden denoise --protocol vst`` but for the inverse. :func:`use_vst` routes the
training sampler and whole-image inference (validation, ``eval_fmd``) to it, for this
process.

``--fold A-cam`` / ``B-cam``: the fold's types without its widefield type, which is left
for ``eval_camera_gate.py`` to score as an unseen camera inside the training fold (the
gate for camera-noise recipes; the fold validation holds only the fold's own cameras).

``--grow --dilate D ...`` (with ``--init`` of a shallower DnCNN and ``--depth``): the
identity layers that growing inserts are dilated by ``D ...`` (one per layer), so the
grown network sees further (receptive radius: the sum of the dilations) at the cost of
the undilated one.

Usage (the commands that produced the shipped weights are in results/train_fmd_*.md)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/train_fmd.py --fold A \\
        runs/dncnn-fmd-A.safetensors --steps 4000 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy import ndimage

from fluoden_batch.config.train import PairSource
from fluoden_batch.models.dncnn import grown_dilations
from fluoden_batch.models.normalise import (
    noise_sigma,
    normalisation_range,
    normalise,
    plane_noise,
)
from fluoden_batch.models.weights import Architecture, read_metadata
from fluoden_batch.noise.anscombe import gat_forward, gat_inverse
from fluoden_batch.noise.simulate import as_rng, simulate
from fluoden_batch.pipeline.statistics import gat_parameters
from fluoden_batch.train import TrainConfig, train
from fluoden_batch.train import data as train_data
from fluoden_batch.train import inference as train_inference
from fluoden_batch.train import loop as train_loop
from fluoden_batch.train import sources as train_sources
from fluoden_batch.train.inference import denoise_whole as plain_denoise_whole

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
LEVELS = ["raw", "avg2", "avg4", "avg8", "avg16"]
GROUPS = {
    "A": ["Confocal_MICE", "TwoPhoton_BPAE_G", "WideField_BPAE_B"],
    "B": ["Confocal_BPAE_B", "TwoPhoton_BPAE_R", "WideField_BPAE_G"],
}
CAMERA_TYPES = {"A-cam": ("A", "WideField_BPAE_B"), "B-cam": ("B", "WideField_BPAE_G")}
RESULTS = Path(__file__).resolve().parent / "results"
W2S_HELD_OUT = ["037", "038", "039", "040"]  # FOVs no run of the wide recipe trains on


def fold_types(fold: str) -> list[str]:
    """The FMD sample types a fold trains on."""
    if fold in CAMERA_TYPES:
        base, camera = CAMERA_TYPES[fold]
        return [kind for kind in GROUPS[base] if kind != camera]
    return GROUPS["A"] + GROUPS["B"] if fold == "all" else GROUPS[fold]


def held_out_types(fold: str) -> list[str]:
    """The FMD sample types a fold never sees (empty for ``all``; a ``-cam`` fold: the
    other group's and its own widefield type)."""
    if fold in CAMERA_TYPES:
        base, camera = CAMERA_TYPES[fold]
        return [*held_out_types(base), camera]
    return [] if fold == "all" else GROUPS["B" if fold == "A" else "A"]


def camera_kernel(rng: np.random.Generator, radius: int = 8) -> np.ndarray:
    """A random 1-D camera kernel of unit energy, shape (2 radius + 1,): ``w0 delta +
    w1 G(s1) + w2 G(s2)`` (``G(s)``: a Gaussian of sigma ``s`` px summing to 1; weights
    from a flat Dirichlet; ``s1`` uniform in (0.5, 1), ``s2`` in (1.5, 3))."""
    w = rng.dirichlet([1.0, 1.0, 1.0])
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.where(x == 0, w[0], 0.0)
    for weight, sigma in zip(w[1:], (rng.uniform(0.5, 1.0), rng.uniform(1.5, 3.0)), strict=True):
        g = np.exp(-0.5 * (x / sigma) ** 2)
        kernel += weight * g / g.sum()
    return kernel / np.sqrt((kernel**2).sum())


def camera_simulate(y, a, b, *, clip=None, rng=None, correlation=0.0, share=1.0):
    """:func:`fluoden_batch.noise.simulate.simulate` of independent pixels, then, with
    probability ``share``, the noise filtered by one :func:`camera_kernel` along Y and
    along X (``correlation`` unused: the kernel is drawn from ``rng``), then clipped."""
    gen = as_rng(rng)
    z = simulate(y, a, b, rng=gen)
    if share >= 1.0 or gen.random() < share:  # share 1: no draw (the first runs)
        kernel = camera_kernel(gen)
        noise = z - y
        for axis in (-2, -1):
            noise = ndimage.correlate1d(noise, kernel, axis=axis, mode="reflect")
        z = y + noise
    return z if clip is None else np.clip(z, clip[0], clip[1])


def camera_reading(z: np.ndarray) -> float:
    """How correlated a plane's noise reads: the mean wavelet noise sigma
    (:func:`~fluoden_batch.models.normalise.noise_sigma`) of the four stride-2 phases of
    ``z`` (shape (H, W)) over that of ``z``, minus 1, clipped to [0, 3] (0 where the
    estimator reads no noise). White noise reads about 0, camera-correlated noise more (its
    variance sits at coarser scales); invariant to the plane's gain and offset."""
    fine = noise_sigma(z)
    if fine <= 0.0:
        return 0.0
    coarse = np.mean([noise_sigma(z[i::2, j::2]) for i in (0, 1) for j in (0, 1)])
    return float(np.clip(coarse / fine - 1.0, 0.0, 3.0))


def _reading_noise(z: np.ndarray) -> tuple[float, float]:
    return camera_reading(z), 0.0


def _constant_map(x: np.ndarray, reading: float, _: float) -> np.ndarray:
    return np.full(np.shape(x), reading, np.float32)


class ReadingSampler(train_data.PatchSampler):
    """The patch sampler whose noise-map channel is the whole noisy plane's
    :func:`camera_reading` (synthetic patches: that of the whole simulated plane)."""

    def draw(self, rng: np.random.Generator) -> train_data.PatchDraw:
        d = super().draw(rng)
        return dataclasses.replace(d, noise=_reading_noise(d.noisy)) if d.synthetic else d


def use_camera_reading() -> None:
    """Route the noise-map input of noise-map DnCNNs to :func:`camera_reading`, in the
    training sampler and in whole-image inference (``denoise_whole``, used by validation
    and by ``eval_fmd``), for this process."""
    train_sources.PatchSampler = ReadingSampler
    for module in (train_data, train_inference):
        module.plane_noise = _reading_noise
        module.map_parameters = lambda reading, _b, _lo, _hi: (reading, 0.0)
    train_data.noise_map = _constant_map
    train_inference.with_noise_map = lambda x, reading, _: np.stack(
        [np.asarray(x, np.float32), _constant_map(x, reading, 0.0)]
    )


def vst_params(z: np.ndarray) -> tuple[float, float]:
    """Poisson-Gaussian ``(a, b)`` of a noisy plane for the GAT: the single-image estimate
    (:func:`~fluoden_batch.models.normalise.plane_noise`) with ``a`` floored as
    ``--protocol vst`` floors it (:func:`~fluoden_batch.pipeline.statistics.gat_parameters`)."""
    a, b = plane_noise(z)
    return gat_parameters(SimpleNamespace(a=a, b=b))


class VSTSampler(train_data.PatchSampler):
    """The patch sampler in the stabilised domain (``--vst``): input and target patches
    are the GAT of ``x`` under the noisy plane's ``(a, b)``, normalised as the recipe says with
    the window of the transformed noisy plane."""

    def __init__(self, images, patch_size, **kwargs) -> None:
        super().__init__(images, patch_size, **kwargs)
        self._vst = []
        for im in images:
            if im.noisy is None:
                self._vst.append(None)
                continue
            a, b = vst_params(im.noisy)
            g = gat_forward(im.noisy, a, b)
            self._vst.append((a, b, *normalisation_range(g, self.normalisation)))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch_size
        inputs = np.empty((batch_size, 1, p, p), np.float32)
        targets = np.empty((batch_size, 1, p, p), np.float32)
        for i in range(batch_size):
            d = self.draw(rng)
            if d.synthetic:  # its own draw: a from the recipe's a_range, above 0
                a, b = d.noise  # type: ignore[misc]
                lo, hi = normalisation_range(gat_forward(d.noisy, a, b), self.normalisation)
            else:
                a, b, lo, hi = self._vst[d.index]  # type: ignore[misc]
            window = (slice(d.y, d.y + p), slice(d.x, d.x + p))
            for src, dst in ((d.noisy, inputs), (self.images[d.index].clean, targets)):
                dst[i, 0] = normalise(gat_forward(d.orient(src[window]), a, b), lo, hi)
        return inputs, targets


def vst_denoise_whole(model, image, *, clip=None, device="cpu", **kwargs) -> np.ndarray:
    """Whole-image inference of a ``--vst`` model (the signature of
    :func:`fluoden_batch.train.denoise_whole`): the plane's transform, the model under its
    normalisation, the algebraic inverse. The same as ``fluoden denoise --protocol vst``
    with each plane its own channel, but for the inverse."""
    a, b = vst_params(image)
    kwargs.pop("norm", None)  # a window in data units: the transformed plane has its own
    g = gat_forward(image, a, b).astype(np.float32)
    out = plain_denoise_whole(model, g, device=device, **kwargs).astype(np.float64)
    out = gat_inverse(np.maximum(out, 0.0), a, b, method="algebraic").astype(np.float32)
    return np.clip(out, *clip) if clip is not None else out


def use_vst() -> None:
    """Route the training sampler and whole-image inference (validation, ``eval_fmd``) to
    the stabilised domain, for this process."""
    train_sources.PatchSampler = VSTSampler
    train_loop.denoise_whole = vst_denoise_whole
    train_inference.denoise_whole = vst_denoise_whole
    module = sys.modules.get("eval_fmd")
    if module is not None:
        module.denoise_whole = vst_denoise_whole


def make_config(
    fold: str,
    output: Path,
    steps: int,
    checkpoint_dir: Path | None,
    *,
    depth: int,
    width: int,
    synthetic: float,
    init: Path | None = None,
    lr: float = 1e-3,
    normalisation: str = "percentile",
    arch: str = "dncnn",
    noise_map: bool = False,
    reading: bool = False,
    stabilised: bool = False,
    correlated: float = 0.0,
    camera: float = 0.0,
    bias_free: bool = False,
    match: bool = False,
    grown: bool = False,
    dilations: tuple[int, ...] | None = None,
    seed: int = 0,
    batch: int = 16,
    patch: int = 64,
    wide_data: bool = False,
    levels: int = 3,
) -> TrainConfig:
    """The training configuration of one fold (``init``: fine-tune from these weights,
    which must not have seen FMD outside the fold for the folds to stay honest; ``grown``:
    no batch norm, so that a shallower ``init`` is grown to ``depth``; ``batch`` patches of
    ``patch`` x ``patch`` pixels per step; ``wide_data``: the wider data recipe of the
    noise-map models for any network)."""
    fmd, w2s = DATA / "fmd_dev", DATA / "w2s_train"
    types = fold_types(fold)
    ffdnet = arch == "ffdnet"
    wide = ffdnet or noise_map or wide_data  # the wider data recipe of the noise-map models
    extra = [
        PairSource(
            name=f"{level}-{kind}",
            noisy_dir=fmd / level,
            noisy_glob=f"{kind}_*.png",
            clean_dir=fmd / "gt",
            clean_glob=f"{kind}_*.png",
        )
        for level in LEVELS
        for kind in types
    ]
    # W2S: channel 0 of FOV 001-040; wide: channels 0-2 of FOV 001-036: FOV 001-009 as the
    # main pair source, the others as extra sources (globs have no ranges)
    w2s_main = "00?_*" if wide else "*_0"
    if wide:
        extra += [
            PairSource(
                name=f"w2s-{fovs}",
                noisy_dir=w2s / "avg1",
                noisy_glob=f"input_avg1_{fovs}_*.tif",
                clean_dir=w2s / "avg400",
                clean_glob=f"target_avg400_{fovs}_*.tif",
            )
            for fovs in ["01?", "02?", *(f"{i:03d}" for i in range(30, 37))]
        ]
    unet = arch == "unet"
    label = "ffdnet" if ffdnet else "unet" if unet else "dncnn-map" if noise_map else "dncnn"
    label += "-reading" if reading else ""
    label += "-vst" if stabilised else ""
    net_kind = "FFDNet (bias-free, noise map)" if ffdnet else "U-Net" if unet else "DnCNN"
    net_kind = f"bias-free {net_kind}" if bias_free else net_kind
    shape = f"{levels} levels x{width}" if unet else f"{depth}x{width}"
    return TrainConfig(
        name=f"{label}-fmd" if fold == "all" else f"{label}-fmd-fold{fold}",
        description=(
            f"{net_kind}"
            f"{' with a noise-map input' if noise_map else ''}"
            f"{' told the camera reading of each plane' if reading else ''}"
            f" {shape} trained "
            f"on FMD pairs (all noise levels -> 50-frame mean) of {', '.join(types)} and W2S "
            f"widefield pairs, {synthetic:.0%} synthetic Poisson-Gaussian patches"
            f"{f' (lag-1 correlation 0..{correlated})' if correlated else ''}"
            f"{f' ({camera:.0%} filtered by random camera kernels)' if camera else ''}. "
            f"{'References fitted to the brightness of their inputs. ' if match else ''}"
            f"Whole-image protocol, "
            + (
                "generalized Anscombe transform under each plane's estimated (a, b), then "
                f"{normalisation} normalisation of the transformed plane; algebraic inverse "
                "(benchmarks/train_fmd.py --vst)."
                if stabilised
                else f"{normalisation} normalisation per plane."
            )
        ),
        output=output,
        architecture=arch,
        depth=depth,
        width=width,
        levels=levels,
        batch_norm=not (wide or bias_free or grown or unet),
        bias=not bias_free,
        noise_map=noise_map or reading,
        dilations=list(dilations) if dilations else None,
        mode="supervised",
        noisy_dir=w2s / "avg1",
        noisy_glob=f"input_avg1_{w2s_main}.tif",
        clean_dir=w2s / "avg400",
        clean_glob=f"target_avg400_{w2s_main}.tif",
        extra_pairs=extra,
        match_brightness=match,
        normalisation=normalisation,
        val_keys=[f"raw-{kind}/4" for kind in types],
        synthetic_fraction=synthetic,
        a_range=(0.02, 16.0) if wide else (0.05, 8.0),
        b_range=(0.0, 200.0) if wide else (0.0, 50.0),
        noise_correlation=(0.0, correlated) if correlated else None,
        steps=steps,
        batch_size=batch,
        patch_size=patch,
        lr=lr,
        lr_schedule="cosine",
        init_weights=init,
        lr_min_ratio=0.02,
        seed=seed,
        device="auto",
        channels_last=True,
        val_every=250,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=250,
    )


OUTPUT_LINE = "- Output: `{}`"  # a record's line naming its weights file (then its digest)


def record_path(path: Path, output: Path) -> Path:
    """``path``, or where a record there already names another output (a second run of
    the same recipe: a control, a smoke run) ``path`` with that output's file stem
    appended, so a committed record is never overwritten by another run's."""
    if path.exists() and OUTPUT_LINE.format(output) not in path.read_text():
        return path.with_name(f"{path.stem}_{Path(output).stem}.md")
    return path


def write_report(
    fold: str,
    config: TrainConfig,
    result,
    command: str,
    wall: float,
    camera: float = 0.0,
    reading: bool = False,
    stabilised: bool = False,
    wide_data: bool = False,
) -> Path:
    """Write results/train_fmd_<fold>[_<normalisation>][_<depth>x<width>].md (see
    :func:`record_path`); its path."""
    t = result.metadata.training if result.metadata else {}
    rows = "\n".join(f"| {s} | {v:.2f} |" for s, v in result.val_psnr)
    held = held_out_types(fold)
    suffix = "" if config.normalisation == "percentile" else f"_{config.normalisation}"
    ffdnet, unet = config.architecture == "ffdnet", config.architecture == "unet"
    wide = ffdnet or (config.noise_map and not reading)
    suffix += "_ffdnet" if ffdnet else "_unet" if unet else ""
    suffix += "_reading" if reading else "_map" if wide and not ffdnet else ""
    suffix += "_vst" if stabilised else ""
    suffix += "_wide" if wide_data and not wide else ""
    suffix += "_corr" if config.noise_correlation else ""
    suffix += ("_camera" if camera == 1.0 else f"_camera{camera:g}") if camera else ""
    suffix += "_biasfree" if not config.bias else ""
    suffix += "_matched" if config.match_brightness else ""
    suffix += "_grown" if config.bias and not (wide or unet) and not config.batch_norm else ""
    suffix += "_dilated" if config.dilations else ""
    suffix += f"_seed{config.seed}" if config.seed else ""
    suffix += f"_patch{config.patch_size}" if config.patch_size != 64 else ""
    if unet:
        suffix += f"_{config.levels}x{config.width}"
    elif (config.depth, config.width) != (10, 32):
        suffix += f"_{config.depth}x{config.width}"
    path = record_path(RESULTS / f"train_fmd_{fold}{suffix}.md", config.output)
    arch_text = (
        f"FFDNet (bias-free, noise map, 2x2 pixel unshuffle) depth {config.depth}, width "
        f"{config.width}"
        if ffdnet
        else f"U-Net (residual, max pooling, transposed convolutions) of {config.levels} "
        f"levels, width {config.width} at full resolution, doubled at each level"
        if unet
        else f"DnCNN depth {config.depth}, width {config.width}, camera-reading input (a "
        "constant channel), no batch norm (grown from the initial weights)"
        if reading
        else f"DnCNN depth {config.depth}, width {config.width}, noise-map input, no batch "
        "norm (grown from the initial weights)"
        if config.noise_map
        else f"bias-free DnCNN depth {config.depth}, width {config.width}, no batch norm "
        "(the initial weights with batch norm folded in and their biases dropped)"
        if not config.bias
        else f"DnCNN depth {config.depth}, width {config.width}, no batch norm (grown from the "
        "initial weights)"
        if not config.batch_norm
        else f"DnCNN depth {config.depth}, width {config.width}, batch norm (folded at load)"
    )
    norm_text = (
        "generalized Anscombe transform per plane (`--vst`)"
        if stabilised
        else f"{config.normalisation} (`models.weights.Normalisation`)"
    )
    w2s_text = "channels 0-2 of FOV 001-036" if wide or wide_data else "channel 0 of FOV 001-040"
    path.write_text(
        f"""# Training `{config.name}` (fold {fold})

Command (repository root):

```
{command}
```

{OUTPUT_LINE.format(config.output)} ({result.digest})
- Architecture: {arch_text}
- Input normalisation: {norm_text}
- Initialisation: {f"fine-tuned from `{config.init_weights}`" if config.init_weights else "random"}
- FMD types trained on: {", ".join(fold_types(fold))}; held out: {", ".join(held) or "none"}
- Data: {t.get("train_images")} training images (FMD levels raw..avg16 -> gt of those types,
  W2S pairs avg1 -> avg400, {w2s_text}); {config.synthetic_fraction:.0%} of the patches get
  synthetic Poisson-Gaussian noise on the clean image instead (a {config.a_range}
  log-uniform, b {config.b_range} uniform, grey levels, clipped to 0..255; lag-1
  correlation {config.noise_correlation or "none"})
- Validation (held out, real raw frame): {", ".join(config.val_keys)}
- Steps {result.step}, batch {config.batch_size} x {config.patch_size}x{config.patch_size},
  Adam lr {config.lr} with cosine decay to {config.lr * config.lr_min_ratio:g}, seed {config.seed}
- Device {t.get("device")}, torch threads {torch.get_num_threads()}
- Time in the training loop: {result.seconds / 60:.1f} min (whole script {wall / 60:.1f} min)
- Final training loss (mean of last 50 steps): {t.get("final_loss", float("nan")):.5f}
- Validation PSNR (whole 512x512 images, 0..255): noisy input
  {t.get("val_noisy_psnr_db", 0):.2f} dB, denoised {t.get("final_val_psnr_db", 0):.2f} dB

| step | val PSNR (dB) |
|---:|---:|
{rows}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="weights file (.safetensors)")
    parser.add_argument("--fold", choices=["A", "B", "all", *CAMERA_TYPES], required=True)
    parser.add_argument("--steps", type=int, required=True, help="optimisation steps")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--synthetic", type=float, default=0.3, help="synthetic patch share")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--init", type=Path, default=None, help="fine-tune from these weights")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="resume from here")
    parser.add_argument(
        "--normalisation",
        choices=["percentile", "noise"],
        default="percentile",
        help="model input normalisation (noise: the window is 40 noise sigmas)",
    )
    parser.add_argument(
        "--arch",
        choices=["dncnn", "ffdnet", "unet"],
        default="dncnn",
        help="ffdnet: wide data; unet: --levels poolings, --width features at full resolution",
    )
    parser.add_argument("--levels", type=int, default=3, help="unet: pooling steps")
    parser.add_argument(
        "--noise-map", action="store_true", help="DnCNN with a noise-map input (wide data)"
    )
    parser.add_argument(
        "--camera-reading",
        action="store_true",
        help="DnCNN told each plane's camera_reading as a constant second input channel",
    )
    parser.add_argument(
        "--vst",
        action="store_true",
        help="train in the variance-stabilised domain (each plane's GAT; DnCNN, no noise map)",
    )
    parser.add_argument(
        "--correlated",
        type=float,
        default=0.0,
        metavar="RHO",
        help="synthetic noise with lag-1 correlation uniform in (0, RHO) (camera-like)",
    )
    parser.add_argument(
        "--camera-noise",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="SHARE",
        help="this share (default 1) of the synthetic patches' noise filtered by a random "
        "camera kernel (camera_kernel)",
    )
    parser.add_argument(
        "--bias-free",
        action="store_true",
        help="a bias-free DnCNN (no biases, no batch norm; Mohan et al. 2020)",
    )
    parser.add_argument(
        "--match-brightness",
        action="store_true",
        help="fit each reference's gain and offset to its input (W2S's 8-bit pairs were "
        "stretched one by one)",
    )
    parser.add_argument(
        "--grow",
        action="store_true",
        help="no batch norm: a shallower --init is grown to --depth (identity layers)",
    )
    parser.add_argument(
        "--dilate",
        type=int,
        nargs="+",
        default=None,
        metavar="D",
        help="with --grow: dilations of the inserted layers (one per layer), e.g. 2 3 4 5 4 3 2",
    )
    parser.add_argument(
        "--wide-data",
        action="store_true",
        help="the wider data recipe of the noise-map models (W2S channels 0-2 of FOV "
        "001-036, synthetic a in (0.02, 16), b in (0, 200)) for any network",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the run")
    parser.add_argument("--batch", type=int, default=16, help="patches per step")
    parser.add_argument("--patch", type=int, default=64, help="patch side, pixels")
    parser.add_argument("--no-progress", action="store_true", help="log lines only")
    args = parser.parse_args()
    if not (DATA / "fmd_dev" / "gt").is_dir():
        raise SystemExit(f"FMD data not found under {DATA} (set FLUODEN_DATA)")

    dilations = None
    if args.dilate and not (args.grow and args.init):
        raise SystemExit("--dilate dilates the layers --grow inserts into --init")
    if args.grow and args.init:
        # the init's own dilations are kept (a dilated model continued at its depth)
        start = read_metadata(args.init).architecture
        if args.depth < start.depth:
            raise SystemExit(f"--grow: --depth {args.depth} is under {args.init}'s {start.depth}")
        inserted = args.dilate or [1] * (args.depth - start.depth)
        dilations = grown_dilations(start.dilations or (1,) * start.depth, inserted)
        if len(dilations) != args.depth:
            raise SystemExit(
                f"--dilate: {len(inserted)} layers, but --depth {args.depth} inserts "
                f"{args.depth - start.depth} into {args.init}"
            )
        dilations = Architecture.stored_dilations(dilations)

    if args.camera_noise:
        if args.correlated:
            raise SystemExit("--camera-noise and --correlated both shape the synthetic noise")
        # the patch sampler's noise source
        train_data.simulate = functools.partial(camera_simulate, share=args.camera_noise)

    if args.camera_reading:
        if args.noise_map or args.arch != "dncnn":
            raise SystemExit("--camera-reading is a DnCNN's second input, not with a noise map")
        use_camera_reading()

    if args.vst:
        if args.noise_map or args.camera_reading or args.arch != "dncnn":
            raise SystemExit("--vst is a one-channel DnCNN's input domain")
        use_vst()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = make_config(
        args.fold,
        args.output,
        args.steps,
        args.checkpoint_dir,
        depth=args.depth,
        width=args.width,
        synthetic=args.synthetic,
        init=args.init,
        lr=args.lr,
        normalisation=args.normalisation,
        arch=args.arch,
        noise_map=args.noise_map,
        reading=args.camera_reading,
        stabilised=args.vst,
        correlated=args.correlated,
        camera=args.camera_noise,
        bias_free=args.bias_free,
        match=args.match_brightness,
        grown=args.grow,
        dilations=dilations,
        seed=args.seed,
        batch=args.batch,
        patch=args.patch,
        wide_data=args.wide_data,
        levels=args.levels,
    )
    result = train(config, progress=not args.no_progress)
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/train_fmd.py "
        f"{args.output} --fold {args.fold} --steps {args.steps} "
        + ("" if args.arch == "unet" else f"--depth {args.depth} ")  # a U-Net has levels
        + f"--width {args.width} --synthetic {args.synthetic} --threads {args.threads}"
        + (f" --init {args.init} --lr {args.lr}" if args.init else f" --lr {args.lr}")
        + (f" --normalisation {args.normalisation}" if args.normalisation != "percentile" else "")
        + (f" --arch {args.arch}" if args.arch != "dncnn" else "")
        + (f" --levels {args.levels}" if args.arch == "unet" else "")
        + (" --noise-map" if args.noise_map else "")
        + (" --camera-reading" if args.camera_reading else "")
        + (" --vst" if args.vst else "")
        + (f" --correlated {args.correlated}" if args.correlated else "")
        + (f" --camera-noise {args.camera_noise:g}" if args.camera_noise else "")
        + (" --bias-free" if args.bias_free else "")
        + (" --match-brightness" if args.match_brightness else "")
        + (" --grow" if args.grow else "")
        + (f" --dilate {' '.join(map(str, args.dilate))}" if args.dilate else "")
        + (f" --seed {args.seed}" if args.seed else "")
        + (f" --batch {args.batch}" if args.batch != 16 else "")
        + (f" --patch {args.patch}" if args.patch != 64 else "")
        + (" --wide-data" if args.wide_data else "")
    )
    wall = time.perf_counter() - started
    path = write_report(
        args.fold, config, result, command, wall, args.camera_noise, args.camera_reading, args.vst,
        args.wide_data,
    )  # fmt: skip
    logging.info("done: %s", path)


if __name__ == "__main__":
    main()

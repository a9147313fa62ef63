"""Fit a model to the data it is about to denoise, without a clean reference.

``fluoden denoise --adapt`` fine-tunes the run's model on patches of the input itself
before any block is denoised (orchestration: :mod:`fluoden_batch.pipeline.adapt`). Two
self-supervised losses, neither of which sees a clean image:

- ``n2n`` (Noise2Noise; Lehtinen et al. 2018): where the ``t`` axis holds repeated
  captures of a still sample, the input is the mean of k frames of a patch (k from 1 to
  F-1: several noise levels) and the target the mean of the other frames at the same
  place (their noise is independent of the input's, so the expected loss is minimised by
  the clean image).
- ``single`` (Neighbor2Neighbor; Huang et al., CVPR 2021): from one noisy frame, two
  half-resolution images are drawn by taking two different neighbours of every 2 x 2 cell;
  the network maps one to the other, with the paper's regulariser (gamma = 2) that ties
  the result to the full-resolution output. No blind spot, no repeats needed.

Which weights are kept is decided on held-out patches, the starting model's included (a
fit can make things worse): ``n2n`` by its own loss (an unbiased stand-in for the error
against the truth), ``single`` by Monte-Carlo SURE of the full-resolution output under
the channel's Poisson-Gaussian noise (Neighbor2Neighbor's loss on half-resolution pairs
did not see a fit that lowered three FMD types by 0.2-1.0 dB).

Patches are read from the input array (a Zarr array: only the chunks under each patch)
at positions spread over the whole dataset (every plane, every channel), a fixed number
of them (:data:`POOL`), so memory does not grow with the dataset. Arrays in, weights out:
opening the store and running on a Dask worker is :mod:`fluoden_batch.pipeline.adapt`'s.
Everything is seeded: the same input, model, settings and thread count give the same
weights, bit for bit, on the CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from skimage.registration import phase_cross_correlation

from fluoden_batch import __version__
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.io.ngff import channel_count
from fluoden_batch.models.normalise import in_range, map_parameters
from fluoden_batch.models.weights import (
    Architecture,
    ModelMetadata,
    file_digest,
    load_trainable,
    weights_bytes,
)
from fluoden_batch.restore.detail import lag1_correlation, sure_risk
from fluoden_batch.restore.hot import REACH as HOT_REACH
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.train.inference import resolve_device

__all__ = [
    "AdaptSettings",
    "Adapted",
    "RepeatCheck",
    "adapt_model",
    "check_repeats",
    "choose_mode",
    "held_out_loss",
    "held_out_sure",
    "neighbour_pair",
    "patch_size",
    "pilot_variance",
    "probe_input",
    "residual_correlation",
    "sample_patches",
]

Mode = Literal["n2n", "single"]

PATCH = {"n2n": 64, "single": 128}  # single: Neighbor2Neighbor trains on 64 x 64 halves
MIN_PATCH = 64  # smaller planes are refused; single uses less than 128 on smaller planes
POOL = 512  # patch positions read from the whole dataset
VAL = 48  # of them held out to score the fit (never trained on)
CHECKS = 8  # held-out scores during the fit (and one of the model it starts from)
# the fit stops after this many held-out scores in a row not below the best so far (FMD
# single raw frames: every check of the fit was above the start's SURE, so the last 5/8 of
# the steps only confirmed it)
PATIENCE = 3
MAX_FRAMES = 8  # n2n: frames read at each position (input + targets)
BATCH = 16
# pixels per forward pass without gradient (held-out scores, Neighbor2Neighbor's full-size
# pass): 16 patches of 128 px at once give activations of 32 MiB per layer, which glibc
# maps and unmaps on every call, so page faults took half of each pass (48 patches, 17x32
# network, 2 threads: 3.1 s at once, 1.2 s in passes of 2 patches)
SCORE_PIXELS = 1 << 15
LR = 3e-4
GAMMA = 2.0  # Neighbor2Neighbor regulariser weight
SHIFT_LIMIT = 1.5  # px: median shift between repeats above which the sample moves
SHIFT_TILE = 128  # px: tiles of the shift estimate
# single: above this lag-1 correlation of the starting model's residual, the noise is taken
# as spatially correlated and the fit is skipped (FMD: widefield 0.57-0.68, confocal and
# two-photon -0.03-0.15, raw..avg16)
CORRELATED = 0.3
# the 2 x 2 cell's pixels are 0 1 / 2 3; ordered pairs of horizontal or vertical neighbours
_PAIRS = torch.tensor([(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)])


@dataclass(frozen=True)
class RepeatCheck:
    """Whether the ``t`` axis holds repeated captures of a still sample.

    Attributes
    ----------
    frames : int
        Length of the ``t`` axis.
    shift_px : float
        Median over 128-pixel tiles and frame pairs of the shift between frames
        (phase correlation, pixels; 0 for a perfectly still sample, noise reads about
        0.1-0.7 px on FMD's still captures).
    identical : tuple of int or None
        Two frames that are exact copies of each other (a Noise2Noise pair without
        independent noise), else None.
    """

    frames: int
    shift_px: float
    identical: tuple[int, int] | None

    @property
    def still(self) -> bool:
        """Whether the frames repeat a still sample (median shift under 1.5 px)."""
        return self.shift_px < SHIFT_LIMIT


def _plane(array: Any, axes: str, fixed: dict[str, int], crop: int = 1024) -> np.ndarray:
    """One Y/X plane (the other axes at ``fixed``, else 0), its central ``crop`` square,
    as float64."""
    h, w = array.shape[-2:]
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    index = tuple(fixed.get(a, 0) for a in axes[:-2])
    return np.asarray(array[(*index, slice(y0, y0 + crop), slice(x0, x0 + crop))], np.float64)


def check_repeats(array: Any, axes: str) -> RepeatCheck | None:
    """Look at the ``t`` frames of ``array`` (first, middle and last; the other axes at
    their first index): None without a ``t`` axis of at least 2 frames."""
    if "t" not in axes or array.shape[axes.index("t")] < 2:
        return None
    n = array.shape[axes.index("t")]
    picks = sorted({0, n // 2, n - 1})
    frames = [_plane(array, axes, {"t": t}) for t in picks]
    identical = None
    shifts = []
    for i in range(len(picks)):
        for j in range(i + 1, len(picks)):
            if np.array_equal(frames[i], frames[j]):
                identical = identical or (picks[i], picks[j])
                continue
            shifts.append(_median_shift(frames[i], frames[j]))
    return RepeatCheck(n, float(np.median(shifts)) if shifts else 0.0, identical)


def _median_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Median over ``SHIFT_TILE`` tiles of the shift between ``a`` and ``b`` (pixels)."""
    n = min(SHIFT_TILE, *a.shape)
    out = []
    for y in range(0, a.shape[0] - n + 1, n):
        for x in range(0, a.shape[1] - n + 1, n):
            ta, tb = a[y : y + n, x : x + n], b[y : y + n, x : x + n]
            if np.ptp(ta) == 0 or np.ptp(tb) == 0:
                continue  # a flat tile has no shift to measure
            shift, _, _ = phase_cross_correlation(ta, tb, upsample_factor=10, normalization=None)
            out.append(float(np.hypot(*shift)))
    return float(np.median(out)) if out else 0.0


def choose_mode(
    requested: Literal["auto", "n2n", "single"],
    check: RepeatCheck | None,
    name: str,
    axes: str,
    notes: list[str],
) -> Mode:
    """The fit's mode: ``requested``, or for ``auto`` ``n2n`` where ``check`` finds still
    repeats along ``t`` and ``single`` otherwise; appends notes saying why.

    Raises
    ------
    InputError
        ``n2n`` without a ``t`` axis of at least 2 frames, or with identical frames
        (``auto`` too: copies are not captures, and ``single`` would not tell).
    """
    if check is not None and check.identical is not None:
        i, j = check.identical
        raise InputError(
            f"{name}: t frames {i} and {j} are identical copies, not repeated captures "
            "(no independent noise to fit); remove the copies, or use --adapt single on "
            "data without them"
        )
    if requested == "n2n" and check is None:
        raise InputError(
            f"--adapt n2n needs repeated captures along a t axis of 2 or more frames; "
            f"{name} has axes {axes!r}. Use --adapt single (one frame at a time) or --axes "
            "to name the repeats t"
        )
    if requested == "single":
        notes.append("adapt: single (Neighbor2Neighbor on single frames)")
        return "single"
    if check is None:
        notes.append(f"adapt: single (auto: no t axis of 2 or more frames in axes {axes!r})")
        return "single"
    moving = (
        f"the t frames move: median shift {check.shift_px:.2f} px between frames "
        f"(phase correlation over {SHIFT_TILE}-px tiles; still captures read under "
        f"{SHIFT_LIMIT} px)"
    )
    if requested == "n2n":
        if not check.still:
            notes.append(
                f"warning: {moving}; Noise2Noise assumes a still sample and will blur "
                "what moves (--adapt single does not)"
            )
        notes.append(f"adapt: n2n on {check.frames} repeated frames along t")
        return "n2n"
    if not check.still:
        notes.append(f"warning: {moving}: adapt: single instead of n2n (auto)")
        return "single"
    notes.append(
        f"adapt: n2n (auto: {check.frames} frames along t, median shift "
        f"{check.shift_px:.2f} px: a still sample)"
    )
    return "n2n"


def probe_input(array: Any, axes: str, mode: Mode, name: str) -> None:
    """Refuse, before anything is written, an input the fit cannot learn from.

    Raises
    ------
    InputError
        Planes smaller than the training patch, or a channel whose sampled planes are
        constant.
    """
    h, w = array.shape[-2:]
    if min(h, w) < MIN_PATCH:
        raise InputError(
            f"{name}: planes of {h} x {w} pixels are smaller than the {MIN_PATCH} x "
            f"{MIN_PATCH} patches --adapt {mode} trains on"
        )
    c = axes.find("c")
    for ch in range(channel_count(array.shape, axes)):
        fixed = {"c": ch} if c >= 0 else {}
        for axis in "tz":
            if axis in axes:
                fixed[axis] = array.shape[axes.index(axis)] // 2
        plane = _plane(array, axes, fixed)
        finite = plane[np.isfinite(plane)]
        if finite.size == 0 or np.ptp(finite) == 0:
            value = f"every sampled pixel is {finite[0]:g}" if finite.size else "no finite pixel"
            where = f"channel {ch}" if c >= 0 else "the image"
            raise InputError(f"{name}: {where} is constant ({value}): there is nothing to fit")


def patch_size(mode: Mode, shape: tuple[int, ...]) -> int:
    """Side of the training patches of ``mode`` on planes of ``shape[-2:]``: ``PATCH[mode]``,
    or for ``single`` on planes under 128 pixels the largest even size that fits."""
    fits = min(shape[-2:]) // 2 * 2
    return min(PATCH[mode], fits) if mode == "single" else PATCH[mode]


def sample_patches(
    array: Any,
    axes: str,
    ranges: tuple[tuple[float, float], ...],
    mode: Mode,
    rng: np.random.Generator,
    count: int = POOL,
    hot: tuple[float, tuple[tuple[float, float, float] | None, ...]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` normalised patches from places spread over all of ``array``.

    Each patch is read on its own from the store (only the chunks under it), at a random
    index of every axis but Y/X (and, for ``n2n``, of up to :data:`MAX_FRAMES` frames of
    ``t`` at the same place) and a random Y/X corner; it is normalised with its channel's
    model window ``ranges[c]`` as inference will be. ``hot``: the hot pixels' threshold
    (sigmas) and each channel's noise ``(a, b, floor)``; found hot pixels are replaced by
    their neighbours' median (:mod:`fluoden_batch.restore.hot`), each frame read with one
    more pixel around it where the image has it, so the fit sees what the model sees in
    the run (a channel whose noise is None is read as it is).

    Returns
    -------
    patches : ndarray, float32, shape (count, F, P, P)
        F frames (1 for ``single``), P = :func:`patch_size`.
    channels : ndarray, int, shape (count,)
        The channel of each patch (0 without a ``c`` axis).
    """
    p = patch_size(mode, array.shape)
    shape = array.shape
    h, w = shape[-2:]
    c = axes.find("c")
    frames = min(shape[axes.index("t")], MAX_FRAMES) if mode == "n2n" else 1
    out = np.empty((count, frames, p, p), np.float32)
    channels = np.zeros(count, int)
    for i in range(count):
        index: list[Any] = []
        for axis, size in zip(axes[:-2], shape[:-2], strict=True):
            if mode == "n2n" and axis == "t":
                index.append(np.sort(rng.choice(size, frames, replace=False)).tolist())
            else:
                index.append(int(rng.integers(size)))
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        channels[i] = index[c] if c >= 0 else 0
        lo, hi = ranges[channels[i]]
        region = [*index, slice(y, y + p), slice(x, x + p)]
        noise = None if hot is None else hot[1][channels[i]]
        if mode == "n2n":
            t = axes.index("t")
            stack = [
                _frame(array, [*region[:t], f, *region[t + 1 :]], noise, hot) for f in index[t]
            ]
            out[i] = in_range(np.stack(stack), lo, hi)
        else:
            out[i, 0] = in_range(_frame(array, region, noise, hot), lo, hi)
    return out, channels


def _frame(
    array: Any, region: list[Any], noise: tuple[float, float, float] | None, hot: Any
) -> np.ndarray:
    """The Y/X patch ``region`` (its last two entries slices) of ``array``; with ``noise``
    (and ``hot``'s threshold), its hot pixels replaced as a block of the run replaces
    them (read with up to :data:`~fluoden_batch.restore.hot.REACH` more pixels around)."""
    if noise is None:
        return np.asarray(array[tuple(region)])
    (ys, xs), (h, w) = region[-2:], array.shape[-2:]
    y0, x0 = max(ys.start - HOT_REACH, 0), max(xs.start - HOT_REACH, 0)
    y1, x1 = min(ys.stop + HOT_REACH, h), min(xs.stop + HOT_REACH, w)
    wide = np.asarray(array[(*region[:-2], slice(y0, y1), slice(x0, x1))], dtype=np.float64)
    clean = inpaint(wide, find_hot(wide, noise[0], noise[1], hot[0]))
    return clean[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def neighbour_pair(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Neighbor2Neighbor's sub-sampler: from ``x`` (N, 1, 2H, 2W), two (N, 1, H, W) images
    taking, in every 2 x 2 cell, two different horizontal or vertical neighbours drawn at
    random; also the two index maps (N, 1, H, W, 1) to sub-sample other images alike."""
    n, _, h2, w2 = x.shape
    cells = _cells(x)
    choice = torch.randint(len(_PAIRS), (n, 1, h2 // 2, w2 // 2), generator=generator)
    first = _PAIRS[choice, 0].unsqueeze(-1).to(x.device)
    second = _PAIRS[choice, 1].unsqueeze(-1).to(x.device)
    return (
        cells.gather(-1, first).squeeze(-1),
        cells.gather(-1, second).squeeze(-1),
        first,
        second,
    )


def _cells(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 2H, 2W) as (N, 1, H, W, 4): the pixels of each 2 x 2 cell, row-major."""
    n, ch, h2, w2 = x.shape
    cells = x.reshape(n, ch, h2 // 2, 2, w2 // 2, 2).permute(0, 1, 2, 4, 3, 5)
    return cells.reshape(n, ch, h2 // 2, w2 // 2, 4)


def _orient(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``batch`` (N, F, P, P) with one random flip/rotation of the square per patch."""
    out = np.empty_like(batch)
    for i, patch in enumerate(batch):
        turned = np.rot90(patch, int(rng.integers(4)), axes=(-2, -1))
        out[i] = turned[..., ::-1] if rng.random() < 0.5 else turned
    return out


def _n2n_batch(batch: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Noise pairs from (N, F, P, P) frames: the mean of k of the frames (k drawn
    from 1 .. F-1 per patch) and the mean of the other F-k as its target, so the model
    meets several noise levels of the data (the input's and cleaner) and does not
    specialise to one."""
    n, f = batch.shape[:2]
    inputs = np.empty((n, 1, *batch.shape[2:]), np.float32)
    targets = np.empty_like(inputs)
    for i in range(n):
        k = int(rng.integers(1, f))
        chosen = np.zeros(f, bool)
        chosen[rng.choice(f, k, replace=False)] = True
        inputs[i, 0] = batch[i, chosen].mean(axis=0)
        targets[i, 0] = batch[i, ~chosen].mean(axis=0)
    return inputs, targets


def _score_chunks(val: np.ndarray | torch.Tensor) -> range:
    """Starts of the slices of ``val`` (N, F, P, P) run through the model in one forward
    pass without gradient each (:data:`SCORE_PIXELS`; on CPU the outputs are bitwise those
    of one pass over all of them: measured)."""
    return range(0, len(val), max(1, SCORE_PIXELS // (val.shape[-1] * val.shape[-2])))


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` without gradient for ``x`` (N, 1, P, P), in passes of
    :func:`_score_chunks`."""
    starts = _score_chunks(x)
    with torch.no_grad():
        return torch.cat([model(x[i : i + starts.step]) for i in starts])


def residual_correlation(model: torch.nn.Module, val: np.ndarray, device: torch.device) -> float:
    """Lag-1 autocorrelation (mean of Y and X, pooled over the patches:
    :func:`~fluoden_batch.restore.detail.lag1_correlation`) of what ``model`` removes from
    the patches ``val`` (N, F, P, P; first frame): the residual of a decent denoiser is
    mostly noise, so this reads the noise's spatial correlation (FMD, against the truth's:
    widefield 0.57-0.61 read 0.57-0.68; confocal and two-photon 0.02-0.10 read
    -0.03-0.15)."""
    x = torch.from_numpy(np.ascontiguousarray(val[:, :1])).to(device)
    return lag1_correlation((x - _forward(model, x)).cpu().numpy())


def held_out_loss(
    model: torch.nn.Module, val: np.ndarray, mode: Mode, device: torch.device
) -> float:
    """The fit's loss on the held-out patches ``val`` (N, F, P, P), without augmentation.

    ``n2n``: every frame against the mean of the others. Its expectation is the MSE to
    the clean image plus the targets' noise variance, which does not depend on the model:
    a lower held-out loss is a lower error against the truth (Noise2Noise's argument), so
    it can choose between models without a clean reference. ``single``: Neighbor2Neighbor's
    first term on fixed neighbour draws; the same argument holds only where the noise of
    neighbouring pixels is independent (not for the spatially correlated noise of many
    cameras), so it catches gross failures, not small ones.
    """
    total, count = 0.0, 0
    generator = torch.Generator().manual_seed(0)
    starts = _score_chunks(val)
    with torch.no_grad():
        for start in starts:
            x = torch.from_numpy(np.ascontiguousarray(val[start : start + starts.step]))
            x = x.to(device)
            if mode == "n2n":
                f = x.shape[1]
                for i in range(f):
                    target = (x.sum(dim=1, keepdim=True) - x[:, i : i + 1]) / (f - 1)
                    total += float(((model(x[:, i : i + 1]) - target) ** 2).sum())
                    count += target.numel()
            else:
                g1, g2, _, _ = neighbour_pair(x, generator)
                total += float(((model(g1) - g2) ** 2).sum())
                count += g2.numel()
    return total / count


def pilot_variance(
    model: torch.nn.Module, val: np.ndarray, noise: np.ndarray, device: torch.device
) -> np.ndarray:
    """The noise variance ``a d + b`` of every held-out pixel, ``d`` the output of ``model``
    (the model the fit starts from) on the first frame of ``val`` (N, F, P, P), ``noise``
    (N, 2) the ``(a, b)`` of each patch in model units; shape (N, 1, P, P), float64, at
    least ``1e-12``. :func:`held_out_sure` charges every candidate this same variance: read
    from each candidate's own output, a fit that darkens its output would be charged less
    noise and could look better than it is.
    """
    z = torch.from_numpy(np.ascontiguousarray(val[:, :1])).to(device)
    d = _forward(model, z).double().cpu()
    ab = torch.from_numpy(noise).double().view(-1, 2, 1, 1, 1)
    return torch.clamp(ab[:, 0] * d + ab[:, 1], min=1e-12).numpy()


def held_out_sure(
    model: torch.nn.Module, val: np.ndarray, variance: np.ndarray, device: torch.device
) -> float:
    """Monte-Carlo SURE of ``model``'s output on the held-out patches ``val`` (N, F, P, P;
    first frame), mean per pixel, model units squared: in expectation the mean squared
    error against the noise-free patches (:func:`~fluoden_batch.restore.detail.sure_risk`),
    for spatially white noise of per-pixel ``variance`` (N, 1, P, P; the same for every
    candidate: :func:`pilot_variance`). One Rademacher probe per pixel (seeded: every
    candidate meets the same probes) and a second forward pass at ``0.05`` noise sigmas
    along it give the divergence term.
    """
    generator = torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    starts = _score_chunks(val)
    with torch.no_grad():
        for start in starts:
            z = torch.from_numpy(np.ascontiguousarray(val[start : start + starts.step, :1]))
            probe = torch.randint(0, 2, z.shape, generator=generator).float() * 2 - 1
            v = torch.from_numpy(variance[start : start + starts.step])
            d = model(z.to(device)).double().cpu()
            eps = 0.05 * v.mean(dim=(1, 2, 3), keepdim=True).sqrt()
            shifted = model((z.double() + eps * probe).float().to(device)).double().cpu()
            jp = (shifted - d) / eps
            args = (z.double(), d, jp, v * probe)
            total += sure_risk(*(t.numpy() for t in args), float(v.sum()))
            count += z.numel()
    return total / count


@dataclass(frozen=True)
class AdaptSettings:
    """What to fit (small picklable values: the fit may run on a Dask worker).

    Attributes
    ----------
    input_name : str
        The input, as errors and the weights' metadata name it.
    axes : str
        Its axis names.
    ranges : tuple of (float, float)
        The run's normalisation window per channel (data units).
    mode : {"n2n", "single"}
        The loss (:func:`choose_mode`).
    steps : int
        Optimisation steps (batch :data:`BATCH`).
    minutes : float or None
        Stop earlier when the fit has run this long (the steps then vary with speed).
    seed : int
        Seeds the patch positions, batches and torch.
    model_path, model_digest : str
        The model to start from and its expected digest.
    device : str
        Torch device (``auto``: CUDA where present).
    noise : tuple of (float, float, float) or None
        Poisson-Gaussian ``(a, b)`` per channel, data units (``Var[z | y] = a y + b``),
        and the channel's zero-signal intensity (unused here: SURE needs the variance
        only; :func:`~fluoden_batch.pipeline.params.planned_noise`); ``single`` needs it
        to choose its weights (:func:`held_out_sure`), and the hot pixels' test its
        ``(a, b)`` (a channel's entry None: not looked for there).
    hot : (str, float) or None
        ``--hot-pixels`` and its threshold (:mod:`fluoden_batch.restore.hot`): the
        patches' hot pixels are replaced as the run's blocks replace them.
    """

    input_name: str
    axes: str
    ranges: tuple[tuple[float, float], ...]
    mode: Mode
    steps: int
    minutes: float | None
    seed: int
    model_path: str
    model_digest: str
    device: str
    noise: tuple[tuple[float, float, float] | None, ...] | None = None
    hot: tuple[str, float] | None = None


@dataclass(frozen=True)
class Adapted:
    """A finished fit: the weights file's bytes and what went into it."""

    data: bytes
    steps: int
    seconds: float
    final_loss: float
    train_mpx: float  # megapixels of distinct training data read (the patch pool)
    device: str
    kept_step: int  # the step whose weights were kept (0: the starting model's)
    held_out: tuple[float, float]  # held-out score of the starting and of the kept weights
    skipped: str | None  # why the fit did not run (single on correlated noise), else None
    criterion: str  # what the held-out score is ("loss" or "SURE")
    stopped: str | None = None  # why the fit ended before its steps, else None


def adapt_model(
    array: Any, job: AdaptSettings, on_step: Callable[[int, int], None] | None = None
) -> Adapted:
    """Fine-tune ``job``'s model on ``array`` (a Zarr, NumPy or Dask array with axes
    ``job.axes``; see the module notes) and return the new weights file's bytes;
    ``on_step(step, steps)`` after each step.

    Batch norm layers keep the statistics of the model's training (evaluated, not
    re-estimated on the input), Adam at ``LR`` with cosine decay to 1 % of it. :data:`VAL`
    of the patch positions are held out and scored before the fit and :data:`CHECKS`
    times during it (``n2n``: :func:`held_out_loss`; ``single``: :func:`held_out_sure`
    with ``job.noise``); the weights with the lowest score are kept, which may be the
    starting model's own (then the fit changed nothing). The fit stops early after
    :data:`PATIENCE` scores in a row that do not beat the best. ``single`` is not run where the
    noise is spatially correlated (:func:`residual_correlation` over :data:`CORRELATED`):
    the starting model is kept, with the reason in the metadata.

    Raises
    ------
    ModelError
        The model file changed since the run was planned.
    ValueError
        ``single`` without ``job.noise``.
    """
    if file_digest(Path(job.model_path)) != job.model_digest:
        raise ModelError(f"{job.model_path} changed since the run was planned (digest differs)")
    if job.mode == "single" and job.noise is None:
        raise ValueError("adapt single needs the channels' noise (a, b) to choose its weights")
    device = resolve_device(job.device)
    torch.manual_seed(job.seed)
    rng = np.random.default_rng(job.seed)
    generator = torch.Generator().manual_seed(job.seed)
    hot = None if job.hot is None or job.noise is None else (job.hot[1], job.noise)
    pool, channels = sample_patches(array, job.axes, job.ranges, job.mode, rng, hot=hot)
    pool, val = pool[:-VAL], pool[-VAL:]
    model, base = load_trainable(Path(job.model_path))
    model = model.to(device).eval()  # eval: batch norm keeps its trained statistics
    if job.mode == "single":
        assert job.noise is not None
        units = [
            map_parameters(a, b, lo, hi)
            for (a, b, _), (lo, hi) in zip(job.noise, job.ranges, strict=True)
        ]
        variance = pilot_variance(model, val, np.array(units)[channels[-VAL:]], device)

        def score(m: torch.nn.Module) -> float:
            return held_out_sure(m, val, variance, device)

    else:

        def score(m: torch.nn.Module) -> float:
            return held_out_loss(m, val, job.mode, device)

    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, job.steps, LR * 0.01)
    losses: list[float] = []
    started = time.perf_counter()
    step, every = 0, max(1, job.steps // CHECKS)
    scores = [(0, score(model))]
    best = (scores[0][1], 0, copy.deepcopy(model.state_dict()))
    stopped, since_best = None, 0
    correlation = residual_correlation(model, val, device)
    skipped = None
    if job.mode == "single" and correlation > CORRELATED:
        skipped = (
            f"the noise is spatially correlated (lag-1 {correlation:.2f} in the starting "
            f"model's residual, over {CORRELATED}): Neighbor2Neighbor would learn to keep "
            "it, so the starting model is kept; repeated captures along t (--adapt n2n) "
            "do not have this limit"
        )
    while step < job.steps and skipped is None:
        if job.minutes is not None and time.perf_counter() - started > 60 * job.minutes:
            break
        batch = _orient(pool[rng.integers(len(pool), size=BATCH)], rng)
        loss = _loss(model, batch, job.mode, rng, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        step += 1
        if on_step is not None:
            on_step(step, job.steps)
        if step % every == 0 or step == job.steps:
            scores.append((step, score(model)))
            if scores[-1][1] < best[0]:
                best = (scores[-1][1], step, copy.deepcopy(model.state_dict()))
                since_best = 0
            else:
                since_best += 1
            if since_best >= PATIENCE and step < job.steps:
                stopped = (
                    f"stopped at step {step} of {job.steps}: {PATIENCE} held-out scores in a "
                    f"row not below the best (step {best[1]})"
                )
                break
    seconds = time.perf_counter() - started
    model.load_state_dict(best[2])
    model = model.cpu()
    p = pool.shape[-1]
    training = {
        "mode": f"adapt-{job.mode}",
        "method": "Noise2Noise (mean of k frames, k = 1 .. F-1, against the mean of the others)"
        if job.mode == "n2n"
        else f"Neighbor2Neighbor (gamma {GAMMA})",
        "base_model": {"name": base.name, "digest": job.model_digest},
        "input": job.input_name,
        "patches": f"{POOL} positions of {p} x {p} pixels"
        + (f" x up to {MAX_FRAMES} frames" if job.mode == "n2n" else ""),
        "steps": step,
        "batch_size": BATCH,
        "optimizer": f"Adam lr={LR}, cosine to {LR * 0.01:g}",
        "batch_norm": "frozen (trained statistics)",
        "seed": job.seed,  # (no wall time here: the same fit gives the same file)
        "device": str(device),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "residual_correlation": round(correlation, 4),
        "skipped": skipped,
        "stopped_early": stopped,
        "held_out": {
            "patches": VAL,
            "criterion": _CRITERION[job.mode][1],
            "loss": [[k, float(f"{v:.8g}")] for k, v in scores],
            "kept_step": best[1],
            "rule": "the weights of the lowest held-out score, step 0 (the model it started "
            f"from) included; the fit stops after {PATIENCE} scores in a row not below the best",
        },
        "software": f"fluoden-batch {__version__}, torch {torch.__version__}",
    }
    metadata = ModelMetadata(
        name=f"{base.name}-adapted",
        description=f"{base.name} fitted to {job.input_name} by fluoden denoise --adapt",
        architecture=Architecture.of(model),
        normalisation=base.normalisation,
        protocol=base.protocol,
        training=training,
        noise_model=base.noise_model,
    )
    return Adapted(
        weights_bytes(model, metadata),
        step,
        seconds,
        training["final_loss"] or float("nan"),
        (pool.size + val.size) / 1e6,
        str(device),
        best[1],
        (scores[0][1], best[0]),
        skipped,
        _CRITERION[job.mode][0],
        stopped,
    )


# the held-out score of each mode: its short name and its description in the metadata
_CRITERION = {
    "n2n": ("loss", "Noise2Noise loss (every frame against the mean of the others)"),
    "single": (
        "SURE",
        "Monte-Carlo SURE of the full-resolution output, white Poisson-Gaussian noise of the "
        "channel's (a, b), its variance read from the starting model's output",
    ),
}


def _loss(
    model: torch.nn.Module,
    batch: np.ndarray,
    mode: Mode,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The step's loss on ``batch`` (N, F, P, P): Noise2Noise or Neighbor2Neighbor."""
    if mode == "n2n":
        inputs, targets = (torch.from_numpy(a).to(device) for a in _n2n_batch(batch, rng))
        return ((model(inputs) - targets) ** 2).mean()
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    g1, g2, first, second = neighbour_pair(x, generator)
    full = _cells(_forward(model, x))
    offset = full.gather(-1, first).squeeze(-1) - full.gather(-1, second).squeeze(-1)
    diff = model(g1) - g2
    return (diff**2).mean() + GAMMA * ((diff - offset) ** 2).mean()

"""Per-run statistics taken once on the client from a deterministic sample of blocks.

Normalisation must be the same for every tile of a plane (otherwise tiling would not be
exact), so the normalisation range (percentiles, or a percentile and the noise level) is
computed once per channel from up to ``max_blocks`` blocks spread evenly over the plan,
and stored in the output's provenance. The ``vst`` protocol
needs the noise parameters ``(a, b)`` for the same reason: one estimate per channel, pooled
from a spread of regions over all of its planes (:func:`channel_noise`), and the
percentiles of the *transformed* sample (``channel_ranges(..., noise=...)``). K-means
intensity centres (``fluoden segment``, the ``masked`` protocol and ``--save-labels``) are
fitted once per channel on a pooled sample for the same reason (:func:`channel_centres`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import zarr

from fluoden_batch.clustering import BackendChoice, ClusterBackend, cluster_image
from fluoden_batch.errors import InputError, NoiseEstimationError
from fluoden_batch.io.ngff import channel_count, channel_planes_at
from fluoden_batch.models.normalise import (
    noise_sigma,
    normalisation_window,
    percentile_range,
    phase_sigma,
)
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.noise import NoiseEstimate, gat_forward
from fluoden_batch.noise.estimate import MAX_LEAKAGE
from fluoden_batch.noise.planes import estimate_region, plane_regions, pool_estimates, spread
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.restore.tiles import Block

MAX_VALUES = 1 << 22
NOISE_SIDE = 1024  # side of the regions sampled for a channel's noise estimate
NOISE_PLANES = 4  # planes per sampled block in the noise normalisation's estimate
A_FLOOR = 1e-4  # a is floored at A_FLOOR * sqrt(b) for the GAT (purely Gaussian noise)


def _spread(blocks: list[Block], n: int) -> list[Block]:
    return spread(blocks, n)


def _sample_blocks(
    array: zarr.Array, blocks: list[Block], channel_slice: tuple, name: str | None = None
) -> list[np.ndarray]:
    """The readable ``blocks`` of ``array`` (restricted by ``channel_slice``), as arrays;
    ``name`` names the input in the error when none can be read."""
    parts, errors = [], []
    for b in blocks:
        region = tuple(
            cs if cs is not None else s for cs, s in zip(channel_slice, b.slices, strict=True)
        )
        try:
            parts.append(np.asarray(array[region]))
        except Exception as exc:  # a corrupt chunk: its block's task will fail by name
            errors.append(f"block {b.id}: {type(exc).__name__}: {exc}")
    if not parts:
        raise InputError(
            f"{name or array}: no sampled block could be read ({'; '.join(errors[:3])})"
        )
    return parts


def _noise_view(part: np.ndarray) -> np.ndarray:
    """At most ``NOISE_PLANES`` planes (evenly spread) of a sampled block, cropped to the
    central ``NOISE_SIDE`` square: enough pixels for a wavelet noise estimate."""
    planes = part.reshape(-1, *part.shape[-2:])
    planes = planes[np.unique(np.linspace(0, len(planes) - 1, NOISE_PLANES).round().astype(int))]
    h, w = planes.shape[-2:]
    y, x = max(0, (h - NOISE_SIDE) // 2), max(0, (w - NOISE_SIDE) // 2)
    return planes[:, y : y + NOISE_SIDE, x : x + NOISE_SIDE]


def _pool(parts: list[np.ndarray]) -> np.ndarray:
    """The values of ``parts``, flattened and thinned to at most about ``MAX_VALUES``."""
    values = np.concatenate([p.ravel() for p in parts])
    return values[:: max(1, values.size // MAX_VALUES)]


def _sample(
    array: zarr.Array, blocks: list[Block], channel_slice: tuple, name: str | None = None
) -> np.ndarray:
    return _pool(_sample_blocks(array, blocks, channel_slice, name))


def channel_ranges(
    array: zarr.Array,
    axes: str,
    blocks: list[Block],
    norm: Normalisation,
    max_blocks: int = 8,
    noise: tuple[tuple[float, float], ...] | None = None,
    name: str | None = None,
    phase_split: bool = False,
    hot: tuple[float, tuple[tuple[float, float, float] | None, ...]] | None = None,
) -> tuple[tuple[float, float], ...]:
    """Normalisation (lo, hi) per channel from a sample of blocks.

    ``percentile``: the percentiles of the pooled sample. ``noise``: ``lo`` its ``low``
    percentile and ``hi = lo + scale * sigma``, ``sigma`` the median over the sampled
    planes (up to ``NOISE_PLANES`` of each sampled block) of their
    :func:`~fluoden_batch.models.normalise.noise_sigma` (y, x are the last two axes),
    floored by :func:`~fluoden_batch.models.normalise.normalisation_window`.

    Parameters
    ----------
    array : zarr.Array
        The input (level 0).
    axes : str
        Its axis names; one range per index of the ``c`` axis, or one range if none.
    blocks : list of Block
        The run's block plan.
    norm : Normalisation
        The model's normalisation (its weights' metadata).
    max_blocks : int
        Blocks sampled per channel.
    noise : tuple of (a, b, floor), optional
        Per channel: take the range of ``gat_forward(sample, a, b)`` (``vst``).
    name : str, optional
        Names the input in errors (default: the array's repr).
    phase_split : bool
        ``noise``: each block's sigma by :func:`~fluoden_batch.models.normalise.phase_sigma`,
        that of the phases the model sees under ``--phase-split``.
    hot : (float, tuple of (a, b, floor) or None), optional
        ``--hot-pixels``: the threshold (sigmas) and each channel's noise; every sampled
        plane's hot pixels are replaced first (:mod:`fluoden_batch.restore.hot`), as the
        blocks will replace them (a channel whose noise is None: as it is).
    """
    c = axes.find("c")
    n_channels = channel_count(array.shape, axes)
    ranges = []
    for ch in range(n_channels):
        sel = [None] * len(axes)
        pool = blocks
        if c >= 0:
            sel[c] = slice(ch, ch + 1)
            pool = [b for b in blocks if b.start[c] <= ch < b.stop[c]]
        parts = _sample_blocks(array, _spread(pool, max_blocks), tuple(sel), name)
        if hot is not None and hot[1][ch] is not None:
            a, b, _ = hot[1][ch]
            parts = [_without_hot(p, a, b, hot[0]) for p in parts]
        if noise is not None:
            parts = [gat_forward(p, *noise[ch][:2]) for p in parts]
        lo, hi = percentile_range(_pool(parts), norm.low, norm.high)
        sigma = 0.0
        if norm.method == "noise":
            sigma_of = phase_sigma if phase_split else noise_sigma
            # the median over the sampled planes, not over blocks of several planes: a
            # chunking that groups planes otherwise (a Dask array's) gives the same sigma
            sigma = float(np.median([sigma_of(q) for p in parts for q in _noise_view(p)]))
        ranges.append(normalisation_window(lo, hi, sigma, norm))
    return tuple(ranges)


def _without_hot(part: np.ndarray, a: float, b: float, sigmas: float) -> np.ndarray:
    """``part`` (planes ``(..., H, W)``) with each plane's hot pixels replaced
    (:func:`~fluoden_batch.restore.hot.inpaint`); ``part`` itself where there are none."""
    planes = part.reshape(-1, *part.shape[-2:])
    found = [find_hot(q, a, b, sigmas) for q in planes]
    if not any(f.any() for f in found):
        return part
    fixed = [inpaint(q, f) for q, f in zip(planes, found, strict=True)]
    return np.stack(fixed).reshape(part.shape)


def channel_centres(
    array: zarr.Array,
    axes: str,
    blocks: list[Block],
    k: int,
    backend: BackendChoice | ClusterBackend = "cpu",
    max_blocks: int = 8,
    name: str | None = None,
) -> tuple[tuple[float, ...], ...]:
    """K-means intensity centres per channel, increasing, from a pooled sample of blocks.

    The intensities of up to ``max_blocks`` blocks per channel, spread evenly over the
    plan, are pooled (:func:`_sample`) and clustered once with K-means (intensity only,
    seed 0: deterministic). Nearest-centre labels then do not depend on the block.

    Parameters
    ----------
    array : zarr.Array
        The input (level 0).
    axes : str
        Its axis names; one tuple per index of the ``c`` axis, or one tuple if none.
    blocks : list of Block
        The run's block plan.
    k : int
        Clusters asked for, >= 1.
    backend : {"auto", "gpu", "cpu"} or ClusterBackend
        Clustering backend (see :func:`fluoden_batch.clustering.select_backend`).
    max_blocks : int
        Blocks sampled per channel.
    name : str, optional
        Names the input in errors (default: the array's repr).

    Returns
    -------
    tuple of tuple of float
        Per channel, strictly increasing centres in data units; fewer than ``k`` where
        the sample holds fewer distinct levels (one for a constant channel).
    """
    centres = []
    for values in _channel_samples(array, axes, blocks, max_blocks, name):
        fit = cluster_image(values.reshape(1, -1), "kmeans", k=k, backend=backend, seed=0)
        centres.append(tuple(float(m) for m in np.unique(fit.means)))
    return tuple(centres)


def _channel_samples(
    array: zarr.Array, axes: str, blocks: list[Block], max_blocks: int, name: str | None
) -> Iterator[np.ndarray]:
    """Per channel: the pooled values of up to ``max_blocks`` of its blocks (:func:`_sample`)."""
    c = axes.find("c")
    for ch in range(channel_count(array.shape, axes)):
        sel = tuple(slice(ch, ch + 1) if i == c else None for i in range(len(axes)))
        pool = [b for b in blocks if c < 0 or b.start[c] <= ch < b.stop[c]]
        yield _sample(array, _spread(pool, max_blocks), sel, name)


def channel_noise(
    array: zarr.Array,
    axes: str,
    max_blocks: int = 8,
    side: int = NOISE_SIDE,
    name: str | None = None,
    phase_split: bool = False,
    max_leakage: float = MAX_LEAKAGE,
    channels: Sequence[int] | None = None,
) -> tuple[NoiseEstimate, ...]:
    """One Poisson-Gaussian estimate per channel (of ``channels``, default every one),
    pooled from a spread of regions (with
    ``phase_split``, each region's from its four stride-2 phases:
    :func:`~fluoden_batch.noise.planes.estimate_region`; ``max_leakage``: the estimator's
    smoothness screen, :func:`~fluoden_batch.noise.estimate.estimate`).

    The Y/X planes of a channel (every ``t``/``z``) are cut into regions of at most
    ``side`` pixels a side; up to ``max_blocks`` of them, spread evenly over that list,
    are estimated and their level sets pooled
    (:func:`fluoden_batch.noise.planes.pool_estimates`). Deterministic: the same input
    gives the same values. ``name`` names the input in error messages.

    Raises
    ------
    InputError
        When no sampled region of a channel can be estimated (too small, flat, NaN), with
        the estimator's reason.
    """
    c = axes.find("c")
    n_channels = channel_count(array.shape, axes)
    result = []
    for ch in range(n_channels) if channels is None else channels:
        tasks = channel_regions(array, axes, ch, max_blocks, side)
        found = [estimate_region(array, t, phase_split, max_leakage) for t in tasks]
        good = [e for e in found if isinstance(e, NoiseEstimate)]
        try:
            est = pool_estimates(good)
        except NoiseEstimationError:
            reason = next((e for e in found if isinstance(e, str)), "no region")
            where = f"channel {ch} of " if c >= 0 else ""
            raise InputError(
                f"{where}{name or array}: cannot estimate the noise ({reason})"
            ) from None
        result.append(est)
    return tuple(result)


def channel_regions(
    array: zarr.Array, axes: str, channel: int, count: int, side: int
) -> list[tuple]:
    """Up to ``count`` index tuples of Y/X regions of at most ``side`` pixels a side of
    ``channel`` (every leading axis an int), spread evenly over all its planes and places:
    a deterministic sample that does not depend on the block layout."""
    lead = channel_planes_at(array.shape, axes, channel)
    regions = plane_regions(array.shape, side)
    return spread([(*idx, *r) for idx in lead for r in regions], count)


def channel_planes(
    array: zarr.Array,
    axes: str,
    channel: int,
    count: int = 4,
    side: int = 512,
    name: str | None = None,
) -> list[np.ndarray]:
    """The regions of :func:`channel_regions` (as :func:`channel_noise` samples them),
    read: a small sample to run the model on at planning. Unreadable regions are skipped;
    ``name`` names the input in the error when none can be read. Constant regions (blank
    frames or planes past the sample, zero-filled: no noise, nothing to learn from) are
    replaced by others of a wider spread (up to ``4 count`` regions read in all), and kept
    only where the channel has no other; ``count`` regions are then returned where it
    has as many non-constant ones."""
    planes, constant, errors = [], [], []
    first = channel_regions(array, axes, channel, count, side)
    wider = [t for t in channel_regions(array, axes, channel, 4 * count, side) if t not in first]
    for task in first + wider:
        if len(planes) == count or (task not in first and not constant):
            break
        try:
            region = np.asarray(array[task])
        except Exception as exc:  # a corrupt chunk: the blocks over it fail by name
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finite = region[np.isfinite(region)]  # NaN: its blocks fail by name
        flat = finite.size == 0 or bool(finite.max() == finite.min())
        (constant if flat else planes).append(region)
    if not planes and not constant:
        raise InputError(f"{name or array}: no sampled region could be read ({errors[0]})")
    return planes or constant


def channel_levels(
    array: zarr.Array,
    axes: str,
    blocks: list[Block],
    max_blocks: int = 8,
    name: str | None = None,
) -> tuple[float, ...]:
    """The median intensity of each channel in a sample of ``blocks`` (data units): where
    the plain classical denoisers take their noise std, ``sqrt(a * level + b)``; ``name``
    names the input in errors."""
    samples = _channel_samples(array, axes, blocks, max_blocks, name)
    return tuple(float(np.median(values)) for values in samples)


def gat_parameters(est: NoiseEstimate) -> tuple[float, float]:
    """``(a, b)`` for the GAT from an estimate: ``a`` floored where the noise is Gaussian.

    The estimator returns ``a >= 0``; the GAT needs ``a > 0``. For ``a`` below
    ``A_FLOOR * sqrt(b)`` the transform is affine to within float precision anyway.
    """
    floor = A_FLOOR * np.sqrt(max(est.b, 0.0)) or 1e-12 * max(abs(est.b), 1.0)
    return max(est.a, float(floor)), est.b


def signal_floor(est: NoiseEstimate) -> float:
    """The zero-signal intensity the GAT's inverse is to take for an estimate's channel
    (:func:`~fluoden_batch.noise.gat_inverse`'s ``floor``, data units): its lowest level
    set's mean intensity where that is below 0 (background-subtracted data, whose clean
    background the inverse would otherwise clip at 0), else 0; 0 where the estimate has
    no level sets."""
    levels = np.asarray(est.levels, dtype=np.float64)
    return min(float(levels.min()), 0.0) if levels.size else 0.0


def peak_to_peak(
    array: zarr.Array, blocks: list[Block], max_blocks: int = 8, name: str | None = None
) -> float:
    """max - min of a sample of blocks (0.0 where it is constant): the default
    ``data_range`` for PSNR/SSIM (``name`` names the array in the error when no sampled
    block can be read)."""
    values = _sample(array, _spread(blocks, max_blocks), (None,) * array.ndim, name)
    return float(np.nanmax(values)) - float(np.nanmin(values))

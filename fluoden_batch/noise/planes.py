"""Noise parameters of whole images: per plane, and pooled per channel, block by block.

A plane is split into an even grid of regions of at most ``side`` pixels a side; up to
``max_blocks`` of them, spread evenly over the plane, are estimated independently with
:func:`~fluoden_batch.noise.estimate` (one Dask task each in
:func:`fluoden_batch.pipeline.noise.estimate_planes`). The
regions' level sets (mean intensity, detail variance, count) are then *pooled* and
``var = a * level + b`` is fitted once to all of them with the same robust fit the
single-image estimator uses. Pooling weighs every region by the information it holds
(a flat or tiny region contributes few level sets, a failed one none) and keeps the
strong correlation between ``a`` and ``b`` of each region, which a mean of per-region
``(a, b)`` would ignore. A plane that fits in one region gets exactly
:func:`~fluoden_batch.noise.estimate` of the whole plane.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fluoden_batch.errors import InputError, NoiseEstimationError
from fluoden_batch.noise.estimate import MAX_LEAKAGE, NoiseEstimate, estimate
from fluoden_batch.noise.fit import fit_variance_model

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "REGION_SIDE",
    "estimate_region",
    "plan_tasks",
    "plane_regions",
    "plane_rows",
    "pool_estimates",
    "spread",
]

REGION_SIDE = 2048  # largest region side estimated in one piece (one task)
DEFAULT_MAX_BLOCKS = 8  # regions per plane (estimate-noise) or per channel (vst)

Region = tuple[slice, ...]


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` items taken evenly from ``items`` (first and last included), in order."""
    if n < 1:
        raise InputError(f"need at least one block to sample, got {n}")
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _even_cuts(n: int, side: int) -> list[slice]:
    parts = max(1, math.ceil(n / side))
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def plane_regions(shape: tuple[int, ...], side: int = REGION_SIDE) -> list[tuple[slice, slice]]:
    """An even grid of Y/X regions of at most ``side`` pixels a side covering a plane.

    Regions have sides between ``side / 2`` and ``side`` (no thin slivers at the edges),
    except along a plane side shorter than ``side``.
    """
    if side < 1:
        raise InputError(f"region side must be positive, got {side}")
    return list(itertools.product(_even_cuts(shape[-2], side), _even_cuts(shape[-1], side)))


def _leading(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def stride_phases(x: np.ndarray) -> list[np.ndarray]:
    """The four stride-2 phases ``x[..., i::2, j::2]`` of ``x`` (shape ``(..., H, W)``),
    i, j in 0, 1 in row-major order: the images ``--phase-split`` feeds a model."""
    return [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]


def estimate_region(
    array: Any, region: Region, phase_split: bool = False, max_leakage: float = MAX_LEAKAGE
) -> NoiseEstimate | str:
    """Estimate one 2-D region of ``array`` (leading axes indexed by ints or length-1 slices).

    Returns the estimate, or the reason it could not be made (unreadable, too small,
    flat) as a string, so that one bad region never fails a Dask task or a whole plane.
    ``phase_split``: the noise as ``--phase-split`` feeds it to a model, one estimate
    pooled (:func:`pool_estimates`) from the region's four stride-2 phases; for noise
    correlated between neighbouring pixels it is the variance of a pixel, which the full
    region's finest scale under-reads. ``max_leakage``: the estimator's smoothness screen
    (:func:`~fluoden_batch.noise.estimate.estimate`).
    """
    try:
        plane = np.asarray(array[region], dtype=np.float64)
    except Exception as exc:  # codec errors of a corrupt chunk: this region only
        return f"cannot read it ({type(exc).__name__}: {exc})"
    plane = plane.reshape(plane.shape[-2:])
    parts = stride_phases(plane) if phase_split else [plane]
    try:
        return pool_estimates([estimate(p, max_leakage=max_leakage) for p in parts])
    except NoiseEstimationError as exc:
        return str(exc)


def _bounds(estimates: Sequence[NoiseEstimate]) -> tuple[float, float] | None:
    """Widest finite clipping bound detected on each side (``-inf``/``inf`` where none)."""
    clips = [e.clip for e in estimates if e.clip is not None]
    lows = [c[0] for c in clips if math.isfinite(c[0])]
    highs = [c[1] for c in clips if math.isfinite(c[1])]
    if not lows and not highs:
        return None
    return (min(lows) if lows else -math.inf), (max(highs) if highs else math.inf)


def pool_estimates(estimates: Sequence[NoiseEstimate]) -> NoiseEstimate:
    """One ``(a, b)`` from the level sets of several estimates of the same noise.

    The level sets of all estimates are fitted together (robust weighted least squares,
    clipping bounds: the widest of those detected); a single estimate is returned as is.

    Raises
    ------
    NoiseEstimationError
        If ``estimates`` is empty.
    """
    if not estimates:
        raise NoiseEstimationError("no region could be estimated")
    if len(estimates) == 1:
        return estimates[0]
    levels = np.concatenate([e.levels for e in estimates])
    variances = np.concatenate([e.variances for e in estimates])
    counts = np.concatenate([np.asarray(e.counts, dtype=np.float64) for e in estimates])
    clip = _bounds(estimates)
    # Fit in scale-free units z' = (z - centre) / half, as the single-image estimator does.
    finite = [levels.min(), levels.max(), *(c for c in clip or () if math.isfinite(c))]
    lo, hi = float(min(finite)), float(max(finite))
    centre, half = 0.5 * (lo + hi), max(0.5 * (hi - lo), 1e-300)
    bounds = None if clip is None else ((clip[0] - centre) / half, (clip[1] - centre) / half)
    theta, cov = fit_variance_model((levels - centre) / half, variances / half**2, counts, bounds)
    jac = np.array([[half, 0.0], [-centre * half, half * half]])
    a, b = jac @ theta
    cov = jac @ cov @ jac.T
    if not np.isfinite([a, b]).all():
        raise NoiseEstimationError(f"pooled fit is not finite (a={a:g}, b={b:g})")
    return NoiseEstimate(
        a=float(a),
        b=float(b),
        a_std=math.sqrt(max(cov[0, 0], 0.0)),
        b_std=math.sqrt(max(cov[1, 1], 0.0)),
        n_levels=len(levels),
        clip=clip,
        levels=levels,
        variances=variances,
        counts=counts,
    )


def _row(
    axes: str, lead: tuple[int, ...], results: list[NoiseEstimate | str], pixels: list[int]
) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(axes[:-2], lead, strict=True))
    good = [r for r in results if isinstance(r, NoiseEstimate)]
    errors = [r for r in results if isinstance(r, str)]
    row.update(
        a=None, b=None, a_std=None, b_std=None, n_levels=0, blocks=len(good),
        blocks_failed=len(errors),
        pixels=sum(p for p, r in zip(pixels, results, strict=True) if not isinstance(r, str)),
        error=None,
    )  # fmt: skip
    try:
        est = pool_estimates(good)
    except NoiseEstimationError as exc:
        row["error"] = errors[0] if errors else str(exc)
        return row
    for key in ("a", "b", "a_std", "b_std"):
        value = float(getattr(est, key))
        row[key] = value if math.isfinite(value) else None  # JSON has no NaN/Inf
    row["n_levels"] = est.n_levels
    return row


def plan_tasks(
    shape: tuple[int, ...], max_blocks: int, side: int = REGION_SIDE
) -> list[tuple[tuple[int, ...], Region]]:
    """(plane index, region) pairs: up to ``max_blocks`` regions of every plane."""
    regions = spread(plane_regions(shape, side), max_blocks)
    return [(lead, (*lead, *r)) for lead in _leading(shape) for r in regions]


def plane_rows(
    axes: str,
    shape: tuple[int, ...],
    tasks: list[tuple[tuple[int, ...], Region]],
    results: list[NoiseEstimate | str],
) -> list[dict[str, Any]]:
    """One row per Y/X plane (C order of the leading axes) from the results of
    :func:`plan_tasks`' regions: the plane's index on each leading axis (keys ``"t"``,
    ``"c"``, ``"z"`` as present), ``a``, ``b``, ``a_std``, ``b_std``, ``n_levels`` (pooled
    level sets), ``blocks`` / ``blocks_failed`` (regions estimated / too small or flat),
    ``pixels`` (in the estimated regions) and ``error`` (why a plane has no estimate,
    else None; then ``a`` ... are None)."""
    by_plane: dict[tuple[int, ...], tuple[list, list]] = {}
    for (lead, region), result in zip(tasks, results, strict=True):
        res, pix = by_plane.setdefault(lead, ([], []))
        res.append(result)
        pix.append(math.prod(s.stop - s.start for s in region[-2:]))
    return [_row(axes, lead, *by_plane[lead]) for lead in _leading(shape)]

"""Per-run statistics taken once on the client from a deterministic sample of blocks.

Normalisation must be the same for every tile of a plane (otherwise tiling would not be
exact), so the percentiles are computed once per channel from up to ``max_blocks`` blocks
spread evenly over the plan, and stored in the output's provenance. The ``vst`` protocol
needs the noise parameters ``(a, b)`` for the same reason: one estimate per channel, pooled
from a spread of regions over all of its planes (:func:`channel_noise`), and the
percentiles of the *transformed* sample (``channel_ranges(..., noise=...)``). K-means
intensity centres (``fluoden segment``, the ``masked`` protocol and ``--save-labels``) are
fitted once per channel on a pooled sample for the same reason (:func:`channel_centres`).
"""

from __future__ import annotations

import numpy as np
import zarr

from fluoden_batch.clustering import BackendChoice, ClusterBackend, cluster_image
from fluoden_batch.errors import InputError, NoiseEstimationError
from fluoden_batch.models.normalise import percentile_range
from fluoden_batch.noise import NoiseEstimate, gat_forward
from fluoden_batch.noise.planes import estimate_region, plane_regions, pool_estimates, spread
from fluoden_batch.restore.tiles import Block

MAX_VALUES = 1 << 22
NOISE_SIDE = 1024  # side of the regions sampled for a channel's noise estimate
A_FLOOR = 1e-4  # a is floored at A_FLOOR * sqrt(b) for the GAT (purely Gaussian noise)


def _spread(blocks: list[Block], n: int) -> list[Block]:
    return spread(blocks, n)


def _sample(array: zarr.Array, blocks: list[Block], channel_slice: tuple) -> np.ndarray:
    parts, errors = [], []
    for b in blocks:
        region = tuple(
            cs if cs is not None else s for cs, s in zip(channel_slice, b.slices, strict=True)
        )
        try:
            parts.append(np.asarray(array[region]).ravel())
        except Exception as exc:  # a corrupt chunk: its block's task will fail by name
            errors.append(f"block {b.id}: {type(exc).__name__}: {exc}")
    if not parts:
        raise InputError(f"{array}: no sampled block could be read ({'; '.join(errors)})")
    values = np.concatenate(parts)
    step = max(1, values.size // MAX_VALUES)
    return values[::step]


def channel_ranges(
    array: zarr.Array,
    axes: str,
    blocks: list[Block],
    low: float,
    high: float,
    max_blocks: int = 8,
    noise: tuple[tuple[float, float], ...] | None = None,
) -> tuple[tuple[float, float], ...]:
    """Normalisation (lo, hi) per channel from a sample of blocks.

    Parameters
    ----------
    array : zarr.Array
        The input (level 0).
    axes : str
        Its axis names; one range per index of the ``c`` axis, or one range if none.
    blocks : list of Block
        The run's block plan.
    low, high : float
        Percentiles in %.
    max_blocks : int
        Blocks sampled per channel.
    noise : tuple of (a, b), optional
        Per channel: take the percentiles of ``gat_forward(sample, a, b)`` (``vst``).
    """
    c = axes.find("c")
    n_channels = array.shape[c] if c >= 0 else 1
    ranges = []
    for ch in range(n_channels):
        sel = [None] * len(axes)
        pool = blocks
        if c >= 0:
            sel[c] = slice(ch, ch + 1)
            pool = [b for b in blocks if b.start[c] <= ch < b.stop[c]]
        values = _sample(array, _spread(pool, max_blocks), tuple(sel))
        if noise is not None:
            values = gat_forward(values, *noise[ch])
        ranges.append(percentile_range(values, low, high))
    return tuple(ranges)


def channel_centres(
    array: zarr.Array,
    axes: str,
    blocks: list[Block],
    k: int,
    backend: BackendChoice | ClusterBackend = "cpu",
    max_blocks: int = 8,
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

    Returns
    -------
    tuple of tuple of float
        Per channel, strictly increasing centres in data units; fewer than ``k`` where
        the sample holds fewer distinct levels (one for a constant channel).
    """
    c = axes.find("c")
    n_channels = array.shape[c] if c >= 0 else 1
    centres = []
    for ch in range(n_channels):
        sel = tuple(slice(ch, ch + 1) if i == c else None for i in range(len(axes)))
        pool = [b for b in blocks if c < 0 or b.start[c] <= ch < b.stop[c]]
        values = _sample(array, _spread(pool, max_blocks), sel)
        fit = cluster_image(values.reshape(1, -1), "kmeans", k=k, backend=backend, seed=0)
        centres.append(tuple(float(m) for m in np.unique(fit.means)))
    return tuple(centres)


def channel_noise(
    array: zarr.Array,
    axes: str,
    max_blocks: int = 8,
    side: int = NOISE_SIDE,
    name: str | None = None,
) -> tuple[NoiseEstimate, ...]:
    """One Poisson-Gaussian estimate per channel, pooled from a spread of regions.

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
    n_channels = array.shape[c] if c >= 0 else 1
    lead = list(np.ndindex(*array.shape[:-2]))
    regions = plane_regions(array.shape, side)
    result = []
    for ch in range(n_channels):
        planes = [idx for idx in lead if c < 0 or idx[c] == ch]
        tasks = spread([(*idx, *r) for idx in planes for r in regions], max_blocks)
        found = [estimate_region(array, t) for t in tasks]
        good = [e for e in found if isinstance(e, NoiseEstimate)]
        try:
            est = pool_estimates(good)
        except NoiseEstimationError:
            reason = next((e for e in found if isinstance(e, str)), "no region")
            where = f"channel {ch} of " if c >= 0 else ""
            raise InputError(
                f"{where}{name or array}: cannot estimate the noise for --protocol vst ({reason}); "
                "use --protocol whole"
            ) from None
        result.append(est)
    return tuple(result)


def gat_parameters(est: NoiseEstimate) -> tuple[float, float]:
    """``(a, b)`` for the GAT from an estimate: ``a`` floored where the noise is Gaussian.

    The estimator returns ``a >= 0``; the GAT needs ``a > 0``. For ``a`` below
    ``A_FLOOR * sqrt(b)`` the transform is affine to within float precision anyway.
    """
    floor = A_FLOOR * np.sqrt(max(est.b, 0.0)) or 1e-12 * max(abs(est.b), 1.0)
    return max(est.a, float(floor)), est.b


def peak_to_peak(array: zarr.Array, blocks: list[Block], max_blocks: int = 8) -> float:
    """max - min of a sample of blocks: the default ``data_range`` for PSNR/SSIM."""
    values = _sample(array, _spread(blocks, max_blocks), (None,) * array.ndim)
    span = float(np.nanmax(values)) - float(np.nanmin(values))
    return span if span > 0 else 1.0

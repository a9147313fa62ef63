"""Per-run statistics taken once on the client from a deterministic sample of blocks.

Normalisation must be the same for every tile of a plane (otherwise tiling would not be
exact), so the percentiles are computed once per channel from up to ``max_blocks`` blocks
spread evenly over the plan, and stored in the output's provenance.
"""

from __future__ import annotations

import numpy as np
import zarr

from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import percentile_range
from fluoden_batch.restore.tiles import Block

MAX_VALUES = 1 << 22


def _spread(blocks: list[Block], n: int) -> list[Block]:
    if len(blocks) <= n:
        return blocks
    idx = np.linspace(0, len(blocks) - 1, n).round().astype(int)
    return [blocks[i] for i in sorted(set(idx.tolist()))]


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
        ranges.append(
            percentile_range(_sample(array, _spread(pool, max_blocks), tuple(sel)), low, high)
        )
    return tuple(ranges)


def peak_to_peak(array: zarr.Array, blocks: list[Block], max_blocks: int = 8) -> float:
    """max - min of a sample of blocks: the default ``data_range`` for PSNR/SSIM."""
    values = _sample(array, _spread(blocks, max_blocks), (None,) * array.ndim)
    span = float(np.nanmax(values)) - float(np.nanmin(values))
    return span if span > 0 else 1.0

"""Denoise a NumPy or Dask array without a store: array in, array out.

The blocks, their halo windows, the per-channel values and the per-block computation are
those of a store run (:func:`~fluoden_batch.pipeline.planning.plan`,
:func:`~fluoden_batch.restore.block.denoise_region`), so an array gives the pixels a
store with the same chunks gives. A NumPy array is denoised here, block after block, into
a NumPy array; a Dask array becomes a lazy Dask array with one task per block (computed
by whatever scheduler or :class:`distributed.Client` is active when the caller computes
it). Nothing is written and nothing resumes: for that, give paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np

from fluoden_batch.config import DenoiseOptions
from fluoden_batch.errors import InputError
from fluoden_batch.io.ngff import default_axes, validate_axes
from fluoden_batch.io.source import SUPPORTED_DTYPES
from fluoden_batch.pipeline.params import choose_method, grouped_values, tested_noise
from fluoden_batch.pipeline.worker import JobSpec
from fluoden_batch.restore.block import cast_output, check_finite
from fluoden_batch.restore.tiles import Block, BlockGrid, block_shape, plan_blocks

__all__ = ["array_axes", "default_chunks", "denoise_array", "map_planned_blocks"]

log = logging.getLogger(__name__)


def array_axes(array: Any, axes: str | None) -> str:
    """Validated axis names of an array: ``axes``, or the last ``ndim`` letters of
    ``tczyx`` (2-D ``yx``, 3-D ``zyx``, 4-D ``czyx``), as for a stored array without
    metadata (:func:`~fluoden_batch.io.ngff.default_axes`,
    :func:`~fluoden_batch.io.ngff.validate_axes`)."""
    ndim = getattr(array, "ndim", None)
    if ndim is None:
        raise InputError(f"expected an array (..., y, x), got {type(array).__name__}")
    names = axes.lower() if axes is not None else default_axes(array.shape)
    if len(names) != ndim:
        raise InputError(f"axes {names!r} do not fit an array of shape {array.shape}")
    validate_axes(names)
    if np.dtype(array.dtype).type not in SUPPORTED_DTYPES:
        supported = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
        raise InputError(f"array dtype {array.dtype} is not supported ({supported})")
    return names


def default_chunks(array: Any) -> tuple[int, ...]:
    """The chunks an array's blocks are planned on: a Dask array's, one whole plane for
    any other array."""
    if isinstance(array, da.Array):
        return tuple(array.chunksize)
    return (1,) * (array.ndim - 2) + tuple(array.shape[-2:])


def denoise_array(
    array: Any, options: DenoiseOptions, chunks: tuple[int, ...] | None = None
) -> np.ndarray | da.Array:
    """Denoise every Y/X plane of a NumPy or Dask array.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array, shape (..., Y, X)
        The noisy data (uint8, uint16, int16, uint32, int32, float32 or float64), axes
        ``options.axes`` or the last ``ndim`` letters of ``tczyx``.
    options : DenoiseOptions
        Model, protocol, tiles, dtype ... as for a store run.
    chunks : tuple of int, optional
        The chunks the blocks are planned on, as a store's (e.g. those of the store a
        NumPy array was read from). Default: a Dask array's, one plane for NumPy.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Same shape; dtype ``options.dtype`` (``same``: the input's). NumPy in, NumPy out;
        Dask in, a lazy Dask array out (one task per block).

    Notes
    -----
    The planning notes a store run prints (the noise parameters, the ``--detail`` choice,
    warnings) go to this module's logger, warnings at WARNING, the rest at INFO.
    """
    axes = array_axes(array, options.axes)
    notes: list[str] = []
    method = choose_method(options, notes)
    chunks = chunks or default_chunks(array)
    blocks = plan_blocks(array.shape, block_shape(array.shape, chunks, options.block_min))
    name = "the array"
    values, detail, groups = grouped_values(
        options, array, axes, name, blocks, method, adapting=False, notes=notes
    )
    tested = tested_noise(options, values)
    for note in notes:  # what a store run prints at planning
        (log.warning if note.startswith("warning") else log.info)(note)
    dtype = np.dtype(array.dtype if options.dtype == "same" else options.dtype)
    job = JobSpec(
        source=None,
        output=None,
        axes=axes,
        model_path=method.path,
        model_digest=method.digest,
        device=options.device,
        channel_ranges=values.ranges,
        tile=options.tile,
        out_dtype=dtype.name,
        precision=options.precision,
        protocol=options.protocol,
        channel_noise=tested,
        channel_centres=values.centres,
        channel_levels=values.levels,
        mask_sigma=options.mask_sigma,
        tta=options.tta,
        phase_split=options.phase_split,
        channel_detail=detail,
        plane_groups=groups,
        hot=options.hot,
    )
    model = job.model()  # the halo is the model's receptive radius

    def arguments(block: Block) -> tuple[Any, ...]:
        w = job.window(model, block, array.shape[-2:])
        return job, block, array[(*block.slices[:-2], *w.read)], w.crop

    return map_planned_blocks(array, blocks, dtype, _block, arguments)


def map_planned_blocks(
    array: Any,
    blocks: BlockGrid,
    dtype: np.dtype | type,
    compute: Callable[..., np.ndarray],
    arguments: Callable[[Block], tuple[Any, ...]],
) -> np.ndarray | da.Array:
    """``compute(*arguments(block))`` for every block, put together in ``array``'s shape.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array
        The input; its type says how the blocks run.
    blocks : BlockGrid
        The planned blocks, covering ``array``.
    dtype : numpy dtype
        Of every block's result (of the block's shape).
    compute : callable
        One block's result from ``arguments(block)`` (for Dask: a module-level function,
        its arguments picklable, as a worker runs it).
    arguments : callable
        A block's arguments to ``compute`` (e.g. its region read with its halo: a Dask
        slice stays lazy).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        NumPy in: every block computed here, in order. Dask in: a lazy array of one task
        per block.
    """
    if not isinstance(array, da.Array):
        out = np.empty(array.shape, dtype=dtype)
        for block in blocks:
            out[block.slices] = compute(*arguments(block))
        return out
    grid = np.empty([max(b.index[i] for b in blocks) + 1 for i in range(array.ndim)], object)
    for block in blocks:
        task = dask.delayed(compute, pure=True)(*arguments(block))
        grid[block.index] = da.from_delayed(task, block.shape, dtype=dtype)
    return da.block(grid.tolist())


def _block(job: JobSpec, block: Block, region: Any, crop: tuple[slice, slice]) -> np.ndarray:
    """One block of the output: denoised from its halo region, cast to the output dtype."""
    region = np.asarray(region)
    check_finite(region, f"the array, block {block.id} (start {block.start})")
    out = job.denoise(job.model(), block, region, crop)
    return cast_output(out.denoised, np.dtype(job.out_dtype))

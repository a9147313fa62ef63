"""Denoise a NumPy or Dask array without a store: array in, array out.

The blocks, their halo windows, the per-channel values and the per-block computation are
those of a store run (:func:`~fluoden_batch.pipeline.plan.plan`,
:func:`~fluoden_batch.restore.block.denoise_region`), so an array gives the pixels a
store with the same chunks gives. A NumPy array is denoised here, block after block, into
a NumPy array; a Dask array becomes a lazy Dask array with one task per block (computed
by whatever scheduler or :class:`distributed.Client` is active when the caller computes
it). Nothing is written and nothing resumes: for that, give paths.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np

from fluoden_batch.clustering.masked import smoothing_radius
from fluoden_batch.config import DenoiseOptions
from fluoden_batch.errors import InputError
from fluoden_batch.io.source import SUPPORTED_DTYPES
from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights
from fluoden_batch.pipeline.params import ChannelValues, channel_values, choose_model
from fluoden_batch.pipeline.worker import worker_model
from fluoden_batch.restore.block import cast_output, denoise_region
from fluoden_batch.restore.inference import Dihedral, align
from fluoden_batch.restore.protocols import PlaneParams, get_protocol
from fluoden_batch.restore.tiles import Block, block_shape, halo_window, plan_blocks

__all__ = ["array_axes", "denoise_array"]

AXES = "tczyx"


def array_axes(array: Any, axes: str | None) -> str:
    """Validated axis names of an array: ``axes``, or the last ``ndim`` letters of
    ``tczyx`` (2-D ``yx``, 3-D ``zyx``, 4-D ``czyx``)."""
    ndim = getattr(array, "ndim", None)
    if ndim is None or not 2 <= ndim <= 5:
        raise InputError(f"expected an array of 2 to 5 dimensions (..., y, x), got ndim {ndim}")
    axes = (axes or AXES[-ndim:]).lower()
    if len(axes) != ndim or not axes.endswith("yx") or len(set(axes)) != ndim:
        raise InputError(f"axes {axes!r} do not fit an array of shape {array.shape}")
    if set(axes) - set(AXES):
        raise InputError(f"axes {axes!r}: use letters of {AXES!r}")
    if np.dtype(array.dtype).type not in SUPPORTED_DTYPES:
        names = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
        raise InputError(f"array dtype {array.dtype} is not supported ({names})")
    return axes


def _block_function(
    model: str, digest: str, options: DenoiseOptions, values: ChannelValues, axes: str
) -> Any:
    """``fn(region, block, crop) -> block of the output dtype`` for this run."""
    c_axis = axes.find("c")
    protocol = get_protocol(options.protocol)

    def run(region: np.ndarray, block: Block, crop: tuple[slice, slice], dtype: str) -> Any:
        loaded = worker_model(model, digest, options.device)
        network = Dihedral(loaded.module) if options.tta else loaded.module

        def params(idx: tuple[int, ...]) -> PlaneParams:
            ch = block.start[c_axis] + idx[c_axis] if c_axis >= 0 else 0
            noise = values.noise[ch] if values.noise is not None else (None, None)
            centres = values.centres[ch] if values.centres is not None else None
            return PlaneParams(*values.ranges[ch], *noise, centres, options.mask_sigma)

        out = denoise_region(
            np.asarray(region),
            crop,
            network,
            protocol,
            params,
            tile=options.tile,
            precision=options.precision,
        )
        return cast_output(out.denoised, np.dtype(dtype))

    return run


def denoise_array(array: Any, options: DenoiseOptions) -> np.ndarray | da.Array:
    """Denoise every Y/X plane of a NumPy or Dask array.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array, shape (..., Y, X)
        The noisy data (uint8, uint16, float32 or float64), axes ``options.axes`` or the
        last ``ndim`` letters of ``tczyx``.
    options : DenoiseOptions
        Model, protocol, tiles, dtype ... as for a store run.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Same shape; dtype ``options.dtype`` (``same``: the input's). NumPy in, NumPy out;
        Dask in, a lazy Dask array out (one task per block).
    """
    axes = array_axes(array, options.axes)
    model, notes = choose_model(options)
    path = resolve_weights(model)
    metadata, digest = read_metadata(path), file_digest(path)
    lazy = isinstance(array, da.Array)
    chunks = array.chunksize if lazy else (1,) * (array.ndim - 2) + array.shape[-2:]
    blocks = plan_blocks(array.shape, block_shape(array.shape, chunks, options.block_min))
    values = channel_values(options, array, axes, "the array", blocks, metadata, notes)
    dtype = np.dtype(array.dtype if options.dtype == "same" else options.dtype)
    run = _block_function(str(path), digest, options, values, axes)
    loaded = worker_model(str(path), digest, options.device)
    halo = loaded.receptive_radius  # masked: plus the label smoothing's reach
    halo += 0 if values.centres is None else smoothing_radius(options.mask_sigma)
    grid = align(loaded.module)

    def window(block: Block) -> tuple[tuple[slice, ...], tuple[slice, slice]]:
        w = halo_window(block.start[-2:], block.stop[-2:], array.shape[-2:], halo, grid)
        return (*block.slices[:-2], *w.read), w.crop

    if not lazy:
        out = np.empty(array.shape, dtype=dtype)
        for block in blocks:
            read, crop = window(block)
            out[block.slices] = run(array[read], block, crop, dtype.name)
        return out
    counts = [max(b.index[i] for b in blocks) + 1 for i in range(array.ndim)]
    grid_of = np.empty(counts, dtype=object)
    for block in blocks:
        read, crop = window(block)
        task = dask.delayed(run, pure=True)(array[read], block, crop, dtype.name)
        grid_of[block.index] = da.from_delayed(task, block.shape, dtype=dtype)
    return da.block(grid_of.tolist())

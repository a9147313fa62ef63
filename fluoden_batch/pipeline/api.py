"""The public Python API: :func:`denoise`, :func:`segment`, :func:`estimate_noise`.

The CLI commands are thin wrappers over the same runs; a path in and a path out give the
CLI's output byte for byte. Options are the config fields (:mod:`fluoden_batch.config`),
as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

from fluoden_batch.config import (
    DenoiseConfig,
    DenoiseOptions,
    NoiseConfig,
    SegmentConfig,
    SegmentOptions,
    load_options,
)
from fluoden_batch.errors import InputError
from fluoden_batch.io.source import AxesView, open_image
from fluoden_batch.pipeline.arrays import array_axes, denoise_array
from fluoden_batch.pipeline.execution import IN_PROCESS_PIXELS, run_denoise
from fluoden_batch.pipeline.noise import estimate_array, run_estimate_noise
from fluoden_batch.pipeline.progress import ConsoleReporter, Reporter
from fluoden_batch.pipeline.run import RunResult
from fluoden_batch.pipeline.segment import run_segment, segment_array

__all__ = ["denoise", "estimate_noise", "segment"]

Source = str | Path | np.ndarray | da.Array


def _is_path(source: Any) -> bool:
    return isinstance(source, str | Path)


def _reporter(progress: bool | Reporter | None) -> Reporter | None:
    if isinstance(progress, Reporter):
        return progress
    return ConsoleReporter() if progress else None


def _open_array(
    source: str | Path, axes: str | None, series: int
) -> tuple[np.ndarray | da.Array, str, tuple[int, ...]]:
    """A stored image as an array (in memory up to ``IN_PROCESS_PIXELS``, else lazy), its
    axes (from its metadata) and its chunks, or shards where it has them (the blocks of a
    store run follow them)."""
    image = open_image(source, axes, series=series)
    found = image.meta.axes, image.shards or image.chunks
    if np.prod(image.shape) <= IN_PROCESS_PIXELS:
        return np.asarray(image.array[...]), *found
    if isinstance(image.array, AxesView):  # a TIFF read in NGFF order; name=False: no hashing
        return da.from_array(image.array, chunks=image.chunks, name=False), *found
    return da.from_zarr(image.array), *found


def _check_array_options(options: dict[str, Any], run: type, array: type) -> None:
    """Refuse, by name, an option of a stored run (``run``'s fields) that a call without
    an output path (``array``'s fields) has no use for."""
    only = sorted(set(options) & (set(run.model_fields) - set(array.model_fields)))
    if only:
        raise InputError(
            f"{only[0]}= is for runs with an output path (a stored input written to OUT); "
            "without one the array is denoised in this process, or by the Dask scheduler "
            "that computes the Dask array returned"
        )


def _run_on_array(fn: Callable[..., Any], source: Source, opts: Any) -> np.ndarray | da.Array:
    """``fn(array, opts[, chunks])`` (:func:`denoise_array`, :func:`segment_array`) of an
    array, or of a stored image read as one with its own axes and chunks (or shards)."""
    if not _is_path(source):
        if opts.series:
            raise InputError("series= picks an image series of a TIFF file; an array is one image")
        return fn(source, opts)
    array, axes, chunks = _open_array(source, opts.axes, opts.series)
    return fn(array, opts.model_copy(update={"axes": axes}), chunks)


def denoise(
    source: Source,
    output: str | Path | None = None,
    *,
    model: str | None = None,
    protocol: str | None = None,
    client: Client | None = None,
    progress: bool | Reporter | None = None,
    config: str | Path | None = None,
    **options: Any,
) -> RunResult | np.ndarray | da.Array:
    """Denoise every Y/X plane of an image.

    Parameters
    ----------
    source : path, numpy.ndarray or dask.array.Array
        A Zarr array, OME-Zarr image or TIFF file; or an array of 2 to 5 dimensions
        (``..., y, x``) with axes ``axes=`` or the last ``ndim`` letters of ``tczyx``.
    output : path, optional
        Write the resumable OME-Zarr here (``source`` must then be a path) and return the
        run's :class:`~fluoden_batch.pipeline.run.RunResult`; equal, byte for byte, to
        ``fluoden denoise SOURCE OUTPUT`` with the same options. None: return the
        denoised array (NumPy for a NumPy input or a small stored image, a lazy Dask array
        for a Dask input or a large stored image).
    model : str, optional
        Shipped model name or ``.safetensors`` path (default: the protocol's default).
    protocol : str, optional
        Per-plane protocol: ``whole`` (default), ``vst``, ``masked``, or a classical
        baseline without a model (``nlm``, ``vst-nlm``, ``bm3d``, ``vst-bm3d``).
    client : distributed.Client, optional
        With ``output``: run the blocks on this cluster and leave it open. Default: small
        inputs run in this process, larger ones on a local cluster started and closed here
        (or ``scheduler=``, ``profile=``). Arrays are computed here, or by the caller.
    progress : bool or Reporter
        Print the plan and a progress bar (or batch log lines) to stderr.
    config : path, optional
        TOML/YAML file of options; keyword arguments override it (``output`` only).
    **options
        Any other field of :class:`~fluoden_batch.config.DenoiseConfig` (``tile``,
        ``tta``, ``dtype``, ``axes`` ...); those of a stored run (``workers``,
        ``reference``, ``adapt`` ...: not in :class:`~fluoden_batch.config.DenoiseOptions`)
        only with ``output``.

    Returns
    -------
    RunResult, numpy.ndarray or dask.array.Array

    Raises
    ------
    FluodenError
        Invalid options or input (one line naming the option, file or value).
    """
    if output is not None:
        if not _is_path(source):
            raise InputError(
                "an output path needs a stored input (Zarr, OME-Zarr or TIFF); save the "
                "array with zarr first, or leave output=None to get the denoised array back"
            )
        cfg = load_options(
            DenoiseConfig,
            Path(config) if config is not None else None,
            input=source,
            output=output,
            model=model,
            protocol=protocol,
            **options,
        )
        return run_denoise(cfg, client=client, reporter=_reporter(progress))
    if config is not None:
        raise InputError("config= is for runs with an output path; pass options as arguments")
    if options.get("adapt", "none") != "none":
        raise InputError(
            "adapt= needs a stored input and an output path: the fitted weights are kept in "
            "OUT (OUT/.fluoden/adapted.safetensors) and reused on resume; then pass "
            "model=OUT to denoise arrays with them"
        )
    _check_array_options(options, DenoiseConfig, DenoiseOptions)
    opts = load_options(DenoiseOptions, None, model=model, protocol=protocol, **options)
    return _run_on_array(denoise_array, source, opts)


def segment(
    source: Source,
    output: str | Path | None = None,
    *,
    clusters: int = 3,
    method: str = "kmeans",
    client: Client | None = None,
    progress: bool | Reporter | None = None,
    **options: Any,
) -> RunResult | np.ndarray | da.Array:
    """Segment every Y/X plane of an image by clustering its pixels (``fluoden segment``;
    the options of :class:`~fluoden_batch.config.SegmentConfig`).

    With ``output`` (``source`` a path): an OME-Zarr copy of the image with the labels
    under it, ``output/labels/clusters`` (one per channel: ``clusters-c0``, ...), and the
    run's :class:`~fluoden_batch.pipeline.run.RunResult`; ``client``: run on it and leave
    it open. Without: the int32 labels of ``source`` (a path, a NumPy or a Dask array),
    planned as a store run plans them (:func:`~fluoden_batch.pipeline.segment.segment_array`;
    the options of :class:`~fluoden_batch.config.SegmentOptions`): NumPy for a NumPy
    input or a small stored image, lazy Dask for a Dask input or a large stored image.
    """
    if output is None:
        _check_array_options(options, SegmentConfig, SegmentOptions)
        opts = load_options(SegmentOptions, None, clusters=clusters, method=method, **options)
        return _run_on_array(segment_array, source, opts)
    if not _is_path(source):
        raise InputError(
            "an output path needs a stored input (Zarr, OME-Zarr or TIFF); save the array "
            "with zarr first, or leave output=None to get the labels back"
        )
    cfg = load_options(
        SegmentConfig, None, input=source, output=output, clusters=clusters, method=method,
        **options,
    )  # fmt: skip
    return run_segment(cfg, client=client, reporter=_reporter(progress))


def estimate_noise(
    source: Source,
    *,
    axes: str | None = None,
    max_blocks: int = 8,
    client: Client | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Poisson-Gaussian ``(a, b)`` of every Y/X plane (``Var[z | y] = a y + b``).

    ``source``: a stored image (regions estimated on ``client``, on a cluster from the
    options, or here when small) or a NumPy array (each plane estimated here as one region
    up to 2048 px a side). Returns one row per plane
    (:func:`~fluoden_batch.pipeline.noise.estimate_array`). ``options``: the other fields
    of :class:`~fluoden_batch.config.NoiseConfig` (``series``, ``workers`` ...), for a
    stored image.
    """
    if _is_path(source):
        cfg = load_options(
            NoiseConfig, None, input=source, axes=axes, max_blocks=max_blocks, **options
        )
        return run_estimate_noise(cfg, client=client)
    if options or client is not None:
        given = ", ".join(f"{k}=" for k in [*options, *(["client"] if client else [])])
        raise InputError(f"{given} apply to a stored image; an array is estimated here")
    array = np.asarray(source)
    return estimate_array(array, array_axes(array, axes), max_blocks)

"""Convert a TIFF / OME-TIFF stack into an OME-Zarr image, plane by plane (bounded memory)."""

from __future__ import annotations

import itertools
from pathlib import Path

import zarr

from fluoden_batch.io.ngff import NGFFVersion, write_attrs
from fluoden_batch.io.source import open_image
from fluoden_batch.io.store import LEVEL0, check_output_path


def ingest(
    tiff: Path,
    out: Path,
    *,
    chunks: tuple[int, int] = (512, 512),
    ngff_version: NGFFVersion = "0.5",
    axes: str | None = None,
) -> Path:
    """Write ``tiff`` as a single-level OME-Zarr image at ``out``.

    Parameters
    ----------
    tiff : Path
        A ``.tif``/``.tiff`` file (OME-TIFF physical sizes are carried into the scales).
    out : Path
        New OME-Zarr group; must not exist.
    chunks : (int, int)
        Chunk size in Y/X; other axes get chunks of 1 (one plane per chunk).
    ngff_version : {"0.5", "0.4"}
        NGFF version (0.4 writes Zarr v2, readable by Fiji's N5/OME-Zarr readers).
    axes : str, optional
        Axis names when the TIFF does not carry usable ones.
    """
    source = open_image(tiff, axes)
    out = check_output_path(out, [tiff])
    zarr_format = 3 if ngff_version == "0.5" else 2
    group = zarr.open_group(str(out), mode="w-", zarr_format=zarr_format)
    shape = source.shape
    chunk_shape = (1,) * (len(shape) - 2) + tuple(
        min(c, s) for c, s in zip(chunks, shape[-2:], strict=True)
    )
    array = group.create_array(
        LEVEL0,
        shape=shape,
        chunks=chunk_shape,
        dtype=source.dtype,
        fill_value=0,
        dimension_names=list(source.meta.axes) if zarr_format == 3 else None,
    )
    for lead in itertools.product(*(range(n) for n in shape[:-2])):
        array[lead] = source.array[lead]
    meta = source.meta
    meta.name = tiff.stem
    group.attrs.update(write_attrs(meta, ngff_version, LEVEL0))
    return out

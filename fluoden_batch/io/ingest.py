"""Convert a TIFF / OME-TIFF stack into an OME-Zarr image, plane by plane (bounded memory)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import zarr

from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.io.ngff import NGFFVersion, write_attrs
from fluoden_batch.io.source import ImageSource, open_image
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
        A ``.tif``/``.tiff`` file. An OME-TIFF's physical sizes and time increment become
        the scales and axis units, its channel names and colours the ``omero`` channels
        (with display windows sampled from the data, see :mod:`fluoden_batch.io.ome`).
    out : Path
        New OME-Zarr group; must not exist. Removed again when the conversion fails
        (an unreadable plane, a full disk, an interrupt), so a rerun starts afresh.
    chunks : (int, int)
        Chunk size in Y/X; other axes get chunks of 1 (one plane per chunk).
    ngff_version : {"0.5", "0.4"}
        NGFF version (0.4 writes Zarr v2, readable by Fiji's N5/OME-Zarr readers).
    axes : str, optional
        Axis names when the TIFF does not carry usable ones.

    Raises
    ------
    InputError, OutputError
        An unreadable or truncated TIFF, or an ``out`` that exists or lies inside it.
    """
    source = open_image(tiff, axes)
    out = check_output_path(out, [tiff])
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} already exists; ingest writes a new image (choose another OUT)")
    try:
        _write(source, tiff, out, chunks, ngff_version)
    except BaseException as exc:
        shutil.rmtree(out, ignore_errors=True)  # created here: a rerun starts afresh
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
        raise
    return out


def _write(
    source: ImageSource, tiff: Path, out: Path, chunks: tuple[int, int], version: NGFFVersion
) -> None:
    """Create ``out`` and copy ``source`` into it plane by plane."""
    zarr_format = 3 if version == "0.5" else 2
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
        try:
            plane = source.array[lead]
        except Exception as exc:  # tifffile's and the codecs' errors of a corrupt plane
            where = f"plane {lead}" if lead else "its plane"
            raise InputError(f"{tiff}: cannot read {where} ({type(exc).__name__}: {exc})") from exc
        array[lead] = plane
    meta = source.meta
    meta.name = tiff.stem
    group.attrs.update(write_attrs(meta, version, LEVEL0))

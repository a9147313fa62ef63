"""Write an image (a denoised OME-Zarr output, or any image fluoden reads) as one
OME-TIFF file, plane by plane (bounded memory): the counterpart of
:mod:`fluoden_batch.io.ingest`, for Fiji, ImageJ and other tools that read TIFF.

The axes, physical pixel sizes and time increment (with their units) and the channels'
names and colours travel in the file's OME-XML, written by tifffile; `fluoden ingest` of
the file gives the same array and metadata back.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from ome_types.model import UnitsLength, UnitsTime

from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.io.ome import describe_ngff
from fluoden_batch.io.source import TIFF_SUFFIXES, ImageSource, open_image
from fluoden_batch.io.store import check_output_path, read_provenance

__all__ = ["export_tiff"]

# planes up to this many pixels are written whole (one TIFF page each); larger ones in
# TILE x TILE tiles, so memory stays within about one tile of the plane
PAGE_PIXELS = 4096 * 4096
TILE = 1024
# BigTIFF (64-bit offsets) above this size: a classic TIFF addresses at most 4 GiB
BIGTIFF_BYTES = 2**32 - 2**25


def export_tiff(image: Path, out: Path, *, compression: str = "none", series: int = 0) -> Path:
    """Write ``image`` as the OME-TIFF ``out``.

    Parameters
    ----------
    image : Path
        An OME-Zarr image (a `fluoden denoise` output), a Zarr array or a TIFF; its level
        0 is written.
    out : Path
        New ``.ome.tif`` / ``.tif`` / ``.tiff`` file; must not exist. Written beside
        itself under a temporary name and renamed when complete, so a failed or
        interrupted export leaves nothing at ``out``.
    compression : {"none", "zlib"}
        ``"none"``: uncompressed (read by every TIFF reader); ``"zlib"``: deflate,
        lossless, read by Fiji (Bio-Formats), tifffile and most others.
    series : int
        Of a TIFF input holding several image series, the one to write.

    Returns
    -------
    Path
        ``out``, resolved.

    Raises
    ------
    InputError, OutputError
        An input fluoden does not read, or a fluoden output whose run has not finished
        (its missing blocks would read as 0); an ``out`` that is not a TIFF name, exists, or
        lies inside the input, an unknown ``compression``, or a write that fails (a full
        disk: named, nothing left at ``out``).
    """
    if compression not in ("none", "zlib"):
        raise InputError(f"--compression {compression!r}: use none or zlib")
    if Path(out).suffix.lower() not in TIFF_SUFFIXES:
        raise OutputError(f"{out}: an OME-TIFF is written: give a name ending .ome.tif or .tif")
    source = open_image(Path(image), series=series)
    if (read_provenance(Path(image)) or {}).get("complete") is False:
        raise InputError(
            f"{image}: the run writing it has not finished (blocks not yet denoised read as "
            "0): run its command again to finish it, then export"
        )
    out = check_output_path(Path(out), [Path(image)], zarr_output=False)
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} already exists; export writes a new file (choose another OUT)")
    partial = out.with_name(f".{out.name}.partial")
    try:
        _write(source, partial, compression)
        os.replace(partial, out)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
        raise
    return out


def _write(source: ImageSource, path: Path, compression: str) -> None:
    shape, dtype = source.shape, source.dtype
    h, w = shape[-2:]
    tiled = h * w > PAGE_PIXELS
    nbytes = math.prod(shape) * dtype.itemsize
    with tifffile.TiffWriter(path, bigtiff=nbytes > BIGTIFF_BYTES, ome=True) as tif:
        tif.write(
            _pieces(source.array, shape, tiled),
            shape=shape,
            dtype=dtype,
            photometric="minisblack",
            tile=(TILE, TILE) if tiled else None,
            compression=None if compression == "none" else compression,
            metadata=_ome_metadata(source),
        )


def _pieces(array: Any, shape: tuple[int, ...], tiled: bool) -> Iterator[np.ndarray]:
    """The planes of ``array`` in C order, whole or (``tiled``) as tiles of ``TILE``
    pixels, row by row, those on the right and bottom edges cut short (tifffile pads
    them)."""
    h, w = shape[-2:]
    for lead in itertools.product(*(range(n) for n in shape[:-2])):
        if not tiled:
            yield np.asarray(array[lead])
            continue
        for y, x in itertools.product(range(0, h, TILE), range(0, w, TILE)):
            yield np.asarray(array[(*lead, slice(y, y + TILE), slice(x, x + TILE))])


def _ome_metadata(source: ImageSource) -> dict[str, Any]:
    """tifffile's OME metadata of ``source``: axes (NGFF order), physical sizes and time
    increment with their OME units, the channels' names and colours."""
    meta = source.meta
    description = describe_ngff(meta)
    metadata: dict[str, Any] = {"axes": meta.axes.upper()}
    if meta.name:
        metadata["Name"] = meta.name
    for axis, size in description.physical.items():
        key = "TimeIncrement" if axis == "t" else f"PhysicalSize{axis.upper()}"
        metadata[key] = size.value
        unit = _ome_unit(axis, size.unit)
        if unit is not None:
            metadata[f"{key}Unit"] = unit
    if "c" in meta.axes and description.channels:
        count = source.shape[meta.axes.index("c")]
        channels = description.channels[:count]
        if len(channels) == count:
            metadata["Channel"] = {
                "Name": [c.label(i) for i, c in enumerate(channels)],
                "Color": [c.color for c in channels],
            }
    return metadata


def _ome_unit(axis: str, ngff: str | None) -> str | None:
    """The OME symbol (``µm``, ``s``) of the NGFF unit name ``ngff`` (``micrometer``,
    ``second``), or None where OME has none."""
    if ngff is None:
        return None
    units = UnitsTime if axis == "t" else UnitsLength
    try:
        return units[ngff.upper()].value
    except KeyError:
        return None

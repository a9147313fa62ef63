"""Convert images into an OME-Zarr image, plane by plane (bounded memory): a TIFF /
OME-TIFF stack, or 2-D image files (PNG, JPEG, TIFF, ...: what imagecodecs reads) stacked
along one axis."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
import zarr

from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.io.ngff import ImageMeta, NGFFVersion, validate_axes, write_attrs
from fluoden_batch.io.ome import channel_windows
from fluoden_batch.io.source import (
    IMAGE_SUFFIXES,
    SUPPORTED_DTYPES,
    TIFF_SUFFIXES,
    ImageSource,
    convert_hint,
    open_image,
)
from fluoden_batch.io.store import LEVEL0, check_output_path

_RGB = ("red", "green", "blue")  # the omero channels of colour files
_RGB_COLOURS = ("FF0000", "00FF00", "0000FF")


def ingest(
    sources: Path | Sequence[Path],
    out: Path,
    *,
    chunks: tuple[int, int] = (512, 512),
    ngff_version: NGFFVersion = "0.5",
    axes: str | None = None,
    series: int = 0,
    shards: tuple[int, int] | None = None,
) -> Path:
    """Write ``sources`` as a single-level OME-Zarr image at ``out``.

    Parameters
    ----------
    sources : Path or sequence of Path
        One ``.tif``/``.tiff`` file: its stack as it is. An OME-TIFF's physical sizes and
        time increment become the scales and axis units, its channel names and colours the
        ``omero`` channels (with display windows sampled from the data, see
        :mod:`fluoden_batch.io.ome`). Otherwise 2-D image files of one shape and dtype
        (PNG, JPEG, TIFF, ...), or folders of them (their files with an
        :data:`~fluoden_batch.io.source.IMAGE_SUFFIXES` suffix), in natural order of
        their names (``img_2`` before ``img_10``): a ``(planes, Y, X)`` stack, axes ``zyx``
        unless ``axes`` says otherwise (``tyx``, ``cyx``); a single file is a ``yx`` image.
        RGB files (and RGBA files that are opaque everywhere) give their three colours as
        a ``c`` axis (``cyx``; ``czyx`` or, given ``tcyx``, a time series; the ``omero``
        channels red, green, blue), as an RGB TIFF does.
    out : Path
        New OME-Zarr group; must not exist. Removed again when the conversion fails
        (an unreadable plane, a full disk, an interrupt), so a rerun starts afresh.
    chunks : (int, int)
        Chunk size in Y/X; other axes get chunks of 1 (one plane per chunk).
    ngff_version : {"0.5", "0.4"}
        NGFF version (0.4 writes Zarr v2, readable by Fiji's N5/OME-Zarr readers).
    axes : str, optional
        Axis names when the TIFF does not carry usable ones, or of a stack of files.
    series : int
        Of one TIFF file that holds several image series (a multi-position acquisition),
        the one to convert, counted from 0.
    shards : (int, int), optional
        Shard size in Y/X (NGFF 0.5 only: Zarr v3 shards, each a file of whole chunks, one
        plane deep), a multiple of ``chunks``; None: one file per chunk.

    Raises
    ------
    InputError, OutputError
        An unreadable or truncated file, files of different shapes or dtypes, an RGBA
        image that is not opaque everywhere, a series the file does not hold (or given
        for a stack of files), shards that are not whole chunks or with NGFF 0.4, or an
        ``out`` that exists or lies inside an input.
    """
    if shards is not None:
        if ngff_version == "0.4":
            raise InputError("--shards needs NGFF 0.5 (Zarr v3); NGFF 0.4 (Zarr v2) has none")
        if any(s <= 0 or s % c for s, c in zip(shards, chunks, strict=True)):
            raise InputError(f"--shards {shards} must be whole multiples of --chunks {chunks}")
    paths = [Path(sources)] if isinstance(sources, str | Path) else [Path(s) for s in sources]
    files = image_files(paths)
    if len(files) == 1 and files[0].suffix.lower() in TIFF_SUFFIXES:
        source: ImageSource | _Files = open_image(files[0], axes, series=series)
    elif series:
        raise InputError(
            f"--series {series} picks an image series of one TIFF file; {len(files)} image "
            "files are a stack of planes"
        )
    else:
        source = _Files(files, axes)
    out = check_output_path(out, files)
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} already exists; ingest writes a new image (choose another OUT)")
    name = paths[0].name if len(paths) == 1 and paths[0].is_dir() else files[0].stem
    try:
        _write(source, name, out, chunks, ngff_version, shards)
    except BaseException as exc:
        shutil.rmtree(out, ignore_errors=True)  # created here: a rerun starts afresh
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
        raise
    return out


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files ``paths`` name, each folder replaced by its image files; naturally sorted
    where more than one (a shell's ``*.png`` lists ``img_10`` before ``img_2``)."""
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if p.is_dir():
            found = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise InputError(f"{p}: a folder without image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    files = [f.resolve() for f in files]
    return [Path(f) for f in tifffile.natural_sorted(map(str, files))] if len(files) > 1 else files


class _Files:
    """2-D image files as one ``(planes, Y, X)`` image (``(Y, X)`` for one file), read
    one file at a time; the first file fixes shape and dtype, the others are checked
    against it as they are read. Colour (RGB) files add a ``c`` axis of their three
    channels before Y/X: ``(planes, 3, Y, X)``, ``(3, Y, X)`` for one file."""

    def __init__(self, files: list[Path], axes: str | None) -> None:
        self.files = files
        first = self.read(0)
        self.plane_shape, self.dtype = first.shape, first.dtype
        self.colour = first.ndim == 3
        if self.dtype not in SUPPORTED_DTYPES:
            supported = ", ".join(np.dtype(t).name for t in SUPPORTED_DTYPES)
            raise InputError(f"{files[0]}: dtype {self.dtype} is not supported ({supported})")
        names = axes or ("c" if self.colour else "") + ("" if len(files) == 1 else "z") + "yx"
        validate_axes(names)
        ndim = 2 + self.colour + (len(files) > 1)
        if len(names) != ndim or (self.colour and "c" not in names):
            kind = "RGB images (their colours a 'c' axis)" if self.colour else "2-D images"
            raise InputError(
                f"axes {names!r} given for {len(files)} file(s) of {kind}, an image of "
                f"{ndim} dimensions"
            )
        self.lead = names[:-2]  # the stack's axis and (colour) the channels', in NGFF order
        self.shape = (*(3 if a == "c" and self.colour else len(files) for a in self.lead),
                      *first.shape[-2:])  # fmt: skip
        self.meta = ImageMeta(axes=names, scale=[1.0] * len(names))

    def read(self, i: int) -> np.ndarray:
        f = self.files[i]
        try:
            if f.suffix.lower() in TIFF_SUFFIXES:
                plane = np.squeeze(tifffile.imread(f))
            else:
                plane = np.asarray(imagecodecs.imread(f))
        except Exception as exc:  # the codecs' many error types; imagecodecs' lists each
            if f.suffix.lower() not in IMAGE_SUFFIXES:  # a vendor format (CZI, ND2, ...)
                raise InputError(
                    f"{f}: a {f.suffix or 'suffix-less'} file is not an image format ingest "
                    f"reads ({', '.join(IMAGE_SUFFIXES)}); {convert_hint(f)}"
                ) from exc
            first = str(exc).splitlines()[0] if str(exc) else ""  # codec's: one line here
            raise InputError(f"{f}: not a readable image ({type(exc).__name__}: {first})") from exc
        if plane.ndim == 3 and plane.shape[-1] in (3, 4):  # colour: its channels first
            if plane.shape[-1] == 4:
                alpha = plane[..., 3]
                if alpha.min() != alpha.max():
                    raise InputError(
                        f"{f}: an RGBA image whose alpha (transparency) varies "
                        f"({alpha.min()}..{alpha.max()}); save it as RGB or grey"
                    )
            plane = np.moveaxis(plane[..., :3], -1, 0)
        elif plane.ndim != 2:
            raise InputError(
                f"{f}: {plane.ndim} dimensions {plane.shape}; a stack of files takes 2-D "
                "images (ingest a multi-plane TIFF on its own)"
            )
        if i and (plane.shape, plane.dtype) != (self.plane_shape, self.dtype):
            raise InputError(
                f"{f}: {plane.shape} {plane.dtype}, but {self.files[0].name} is "
                f"{self.plane_shape} {self.dtype}: a stack needs planes of one shape and dtype"
            )
        return plane

    def planes(self) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        for i in range(len(self.files)):
            plane = self.read(i)
            for c, channel in enumerate(plane if self.colour else [plane]):
                yield tuple(c if a == "c" and self.colour else i for a in self.lead), channel


def _tiff_planes(source: ImageSource) -> Iterator[tuple[tuple[int, ...], Any]]:
    for lead in itertools.product(*(range(n) for n in source.shape[:-2])):
        try:
            plane = source.array[lead]
        except Exception as exc:  # tifffile's and the codecs' errors of a corrupt plane
            where = f"plane {lead}" if lead else "its plane"
            raise InputError(
                f"{source.spec.path}: cannot read {where} ({type(exc).__name__}: {exc})"
            ) from exc
        yield lead, plane


def _write(
    source: ImageSource | _Files,
    name: str,
    out: Path,
    chunks: tuple[int, int],
    version: NGFFVersion,
    shards: tuple[int, int] | None,
) -> None:
    """Create ``out`` and copy ``source`` into it plane by plane (whole shards each)."""
    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(str(out), mode="w-", zarr_format=zarr_format)
    shape = source.shape
    lead = (1,) * (len(shape) - 2)
    chunk_shape = lead + tuple(min(c, s) for c, s in zip(chunks, shape[-2:], strict=True))
    shard_shape = None
    if shards is not None:  # no larger than the chunks that cover the plane
        yx = zip(shards, chunk_shape[-2:], shape[-2:], strict=True)
        shard_shape = lead + tuple(min(h, c * -(-s // c)) for h, c, s in yx)
    array = group.create_array(
        LEVEL0,
        shape=shape,
        chunks=chunk_shape,
        shards=shard_shape,
        dtype=source.dtype,
        fill_value=0,
        dimension_names=list(source.meta.axes) if zarr_format == 3 else None,
    )
    planes = source.planes() if isinstance(source, _Files) else _tiff_planes(source)
    for lead, plane in planes:
        array[lead] = plane
    meta = source.meta
    meta.name = name
    if isinstance(source, _Files) and source.colour:
        windows = channel_windows(array, meta.axes)
        meta.omero = {
            "channels": [
                {"label": label, "color": color, "window": window, "active": True}
                for label, color, window in zip(_RGB, _RGB_COLOURS, windows, strict=True)
            ]
        }
    group.attrs.update(write_attrs(meta, version, LEVEL0))

"""Open the input: a Zarr (v2/v3) array, an OME-Zarr image (NGFF 0.4/0.5) or a TIFF stack.

:func:`open_image` validates everything it can before any work is scheduled and returns an
:class:`ImageSource`; its small, picklable :class:`SourceSpec` is what tasks carry to
reopen the same array on a worker.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
import zarr
from zarr.core.sync import sync

from fluoden_batch.errors import InputError
from fluoden_batch.io.ngff import (
    AXIS_ORDER,
    ImageMeta,
    NGFFVersion,
    default_axes,
    level0_path,
    multiscales_block,
    read_meta,
    validate_axes,
)
from fluoden_batch.io.ome import OmeDescription, describe_ngff, ngff_meta, read_ome_xml

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
TIFF_SUFFIXES = (".tif", ".tiff")
MAX_CHUNK_BYTES = 1 << 30  # a chunk larger than this when decoded is refused (memory bound)
# the 2-D image files `fluoden ingest` takes from a folder (imagecodecs or tifffile read them)
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".jp2")
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
_OME_XML_SYNTAX = "OME series raised ParseError"  # tifffile's log of malformed OME-XML
_log = logging.getLogger(__name__)
# the warning of a TIFF file that holds several image series (`fluoden info` lists them
# in its table instead and filters this message out)
SERIES_WARNING = (
    "warning: %s: holds %d image series; fluoden reads series %d, %s, and not %s "
    "(--series N reads another)"
)


@dataclass(frozen=True)
class SourceSpec:
    """How to reopen an input array anywhere (picklable, a few strings).

    Attributes
    ----------
    kind : {"zarr", "tiff"}
        Storage kind.
    path : str
        Absolute path of the Zarr store root or of the TIFF file.
    array_path : str
        Path of the array inside the store ("" for a bare array).
    order : tuple of int
        A TIFF whose axes are not in NGFF order (ImageJ's ``ZCYX`` hyperstacks, an RGB
        image's ``YXS``): the stored axis of each axis in NGFF order, read through an
        :class:`AxesView`; empty: as stored.
    series : int
        The image series of a TIFF file that holds several (0: the first).
    """

    kind: Literal["zarr", "tiff"]
    path: str
    array_path: str = ""
    order: tuple[int, ...] = ()
    series: int = 0

    def open(self) -> zarr.Array | AxesView:
        """Open the array read-only (cached per process)."""
        return _open_cached(self)

    def describe(self) -> str:
        """Human-readable name used in error messages."""
        if self.series:
            return f"{self.path} (series {self.series})"
        return f"{self.path}/{self.array_path}" if self.array_path else self.path

    def missing_chunks(self, region: tuple[slice, ...]) -> int:
        """Number of stored chunks (shards) under ``region`` that do not exist.

        Zarr returns the fill value for a missing chunk without a word; that is normal
        for empty chunks written with ``write_empty_chunks=False``, and a sign of an
        incomplete copy otherwise, so the pipeline counts them per block.
        """
        if self.kind == "tiff":
            return 0
        array = self.open()
        grid = getattr(array, "shards", None) or array.chunks
        ranges = [range(r.start // g, -(-r.stop // g)) for r, g in zip(region, grid, strict=True)]
        store, root = array.store_path.store, array.store_path.path
        missing = 0
        for coords in itertools.product(*ranges):
            key = array.metadata.encode_chunk_key(coords)
            if not sync(store.exists(f"{root}/{key}" if root else key)):
                missing += 1
        return missing


class AxesView:
    """A stored array read with its axes in another order: ``view[key]`` (integers and
    slices, in the view's order) reads the stored array and transposes the result.

    Parameters
    ----------
    array : array-like
        The stored array (basic indexing, ``shape``, ``chunks``, ``dtype``).
    order : tuple of int
        The stored axis of each axis of the view.
    """

    def __init__(self, array: Any, order: tuple[int, ...]) -> None:
        self.array, self.order = array, order
        self.shape = tuple(array.shape[o] for o in order)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(order)
        # one plane per chunk along the leading axes: a block reads one stored page
        stored = tuple(array.chunks[o] for o in order)
        self.chunks = (1,) * (self.ndim - 2) + stored[-2:]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = (*key[:i], *(slice(None),) * (self.ndim - len(key) + 1), *key[i + 1 :])
        key = (*key, *(slice(None),) * (self.ndim - len(key)))
        stored: list[Any] = [slice(None)] * self.ndim
        for axis, k in zip(self.order, key, strict=True):
            stored[axis] = k
        data = np.asarray(self.array[tuple(stored)])
        kept = [o for o, k in zip(self.order, key, strict=True) if isinstance(k, slice)]
        return data.transpose([sorted(kept).index(o) for o in kept])

    def __repr__(self) -> str:
        return f"AxesView({self.array!r}, order={self.order})"


@functools.lru_cache(maxsize=16)
def _open_cached(spec: SourceSpec) -> zarr.Array | AxesView:
    if spec.kind == "tiff":
        # open_image warned about malformed OME-XML once; its reopening (on each worker,
        # maybe in several threads) leaves tifffile's log of it out, and nothing else
        tiff_logger = logging.getLogger("tifffile")
        tiff_logger.addFilter(_not_ome_syntax)
        try:
            store = tifffile.imread(spec.path, aszarr=True, series=spec.series)
        finally:
            tiff_logger.removeFilter(_not_ome_syntax)
        array = zarr.open_array(store, mode="r")
        return AxesView(array, spec.order) if spec.order else array
    return zarr.open_array(spec.path, path=spec.array_path or None, mode="r")


@dataclass
class ImageSource:
    """A validated input image and its metadata.

    Attributes
    ----------
    spec : SourceSpec
        How workers reopen it.
    array : zarr.Array or AxesView
        The level-0 array (read-only), its axes in NGFF order.
    meta : ImageMeta
        Axes, scales, units, channel metadata.
    ngff_version : str or None
        NGFF version of an OME-Zarr input, None for plain arrays and TIFF.
    attrs : dict
        The input group's other attributes (carried into the output's provenance).
    series : tuple of str
        Of a TIFF file that holds several image series: each one's shape and axes (e.g.
        ``"(3, 512, 512) ZYX"``), in file order; empty otherwise.
    """

    spec: SourceSpec
    array: zarr.Array | AxesView
    meta: ImageMeta
    ngff_version: NGFFVersion | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    series: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the stored array (the default chunking of the output)."""
        return tuple(self.array.chunks)

    @property
    def shards(self) -> tuple[int, ...] | None:
        """Shard shape of a sharded Zarr v3 array (the default sharding of an NGFF 0.5
        output), else None."""
        shards = getattr(self.array, "shards", None)
        return None if shards is None else tuple(shards)

    @property
    def description(self) -> OmeDescription:
        """Channels and physical sizes as one typed OME description (any input kind)."""
        return describe_ngff(self.meta)


def convert_hint(p: Path) -> str:
    """How to make ``p`` (a file fluoden does not read as it is) readable: ``fluoden
    ingest`` for the 2-D image formats it reads, else a converter to OME-TIFF / OME-Zarr
    (microscope vendors' formats: CZI, ND2, LIF, ...)."""
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return (
            "convert it with `fluoden ingest FILE... OUT.ome.zarr`, or pass its pixels to "
            "fluoden_batch.denoise as an array"
        )
    return (
        "convert it to OME-TIFF or OME-Zarr first (Fiji: Bio-Formats, File > Save As > "
        "OME-TIFF; or bioformats2raw), or pass its pixels to fluoden_batch.denoise as an array"
    )


def open_image(
    path: str | Path,
    axes: str | None = None,
    dtypes: tuple[type, ...] | None = SUPPORTED_DTYPES,
    *,
    series: int = 0,
) -> ImageSource:
    """Open and validate an input image.

    Parameters
    ----------
    path : str or Path
        A Zarr array, an OME-Zarr image group, or a ``.tif``/``.tiff`` file.
    axes : str, optional
        Axis names for inputs without metadata (plain arrays, TIFF without axes), e.g.
        ``"cyx"``. Default: the last ``ndim`` letters of ``tczyx``.
    dtypes : tuple of numpy types, optional
        Accepted dtypes (default: what the denoiser takes); None accepts any, e.g. to
        inspect a label image.
    series : int
        Of a TIFF file that holds several image series (a multi-position acquisition),
        the one to read, counted from 0; a warning names the others. A Zarr store holds
        one image per group instead: pass the group's path.

    Raises
    ------
    InputError
        Missing path, unreadable store, unsupported dtype, dimensionality or axes, a
        series the file does not hold.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{path}: no such file or directory")
    p = p.resolve()
    if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES:
        source = _open_tiff(p, axes, series)
    elif p.is_file():  # a Zarr store is a folder (a zipped one: unzip it first)
        raise InputError(
            f"{p}: a {p.suffix or 'suffix-less'} file is not an image fluoden reads (a Zarr "
            f"array or OME-Zarr image folder, a .tif/.tiff file); {convert_hint(p)}"
        )
    elif series:
        raise InputError(
            f"{p}: --series {series} picks an image series of a TIFF file; a Zarr store "
            "holds one image per group: pass that group's path instead"
        )
    else:
        source = _open_zarr(p, axes)
    _validate(source, dtypes)
    return source


def _open_zarr(p: Path, axes: str | None) -> ImageSource:
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:  # zarr raises several types for a non-store path
        images = p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())
        hint = "; a folder of image files: stack them with `fluoden ingest`" if images else ""
        raise InputError(f"{p}: not a readable Zarr array or group ({exc}){hint}") from exc
    if isinstance(node, zarr.Array):
        meta = _plain_meta(node.shape, axes, p)
        return ImageSource(SourceSpec("zarr", str(p)), node, meta)
    attrs = dict(node.attrs)
    meta, level0, version = _group_meta(attrs, node, p)
    if axes is not None and axes != meta.axes:
        raise InputError(f"{p}: --axes {axes!r} contradicts the NGFF axes {meta.axes!r}")
    array = node[level0]
    assert isinstance(array, zarr.Array)  # checked by _group_meta
    return ImageSource(SourceSpec("zarr", str(p), level0), array, meta, version, attrs)


def _group_meta(
    attrs: dict[str, Any], group: zarr.Group, p: Path
) -> tuple[ImageMeta, str, NGFFVersion]:
    try:
        found = multiscales_block(attrs)
        if found is None:
            raise InputError(
                f"a Zarr group without NGFF 'multiscales' metadata; {_inside(group, p)}"
            )
        level0 = level0_path(found[0])
        if level0 not in group:
            raise InputError(f"NGFF level-0 array {level0!r} is missing from the group")
        array = group[level0]
        if not isinstance(array, zarr.Array):
            raise InputError(f"NGFF level-0 path {level0!r} is not an array")
        return read_meta(attrs, array.ndim)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None


def _inside(group: zarr.Group, p: Path) -> str:
    """What to pass instead of ``group``: the images (NGFF groups) and arrays it holds
    (a bioformats2raw conversion holds one image per series, a plate one per field)."""
    images: list[str] = []
    arrays: list[str] = []
    members = dict(group.members(max_depth=2))  # plates: row/column/field
    for name in tifffile.natural_sorted(members):
        if any(name.startswith(f"{image}/") for image in images):
            continue  # an image's levels and labels
        if isinstance(members[name], zarr.Array):
            arrays.append(name)
        elif multiscales_block(dict(members[name].attrs)) is not None:
            images.append(name)
    listed = [
        f"{kind} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        for kind, names in (("images", images), ("arrays", arrays))
        if names
    ]
    if not listed:
        return "it holds no array"
    return f"it holds the {' and the '.join(listed)}: pass one, e.g. {p / (images or arrays)[0]}"


def _plain_meta(shape: tuple[int, ...], axes: str | None, p: Path) -> ImageMeta:
    ndim = len(shape)
    try:
        names = axes if axes is not None else default_axes(shape)
        validate_axes(names)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from exc
    if len(names) != ndim:
        raise InputError(f"{p}: axes {names!r} given for an array of {ndim} dimensions")
    return ImageMeta(axes=names, scale=[1.0] * ndim)


def _open_tiff(p: Path, axes: str | None, index: int) -> ImageSource:
    try:
        with _tifffile_log() as log, tifffile.TiffFile(p) as tf:
            listing = tuple(f"{s.shape} {s.axes}" for s in tf.series)
            if index >= len(listing):
                raise InputError(
                    f"{p}: --series {index}: the file holds {len(listing)} image series "
                    f"(0 to {len(listing) - 1})"
                )
            series = tf.series[index]
            tiff_axes, ome_xml = series.axes, tf.ome_metadata
            _check_tiff_complete(p, series.pages, tf.filehandle.size, log)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable TIFF file ({exc})") from exc
    if len(listing) > 1:  # multi-position acquisitions: one series per position
        others = ", ".join(f"{i}: {s}" for i, s in enumerate(listing) if i != index)
        _log.warning(SERIES_WARNING, p, len(listing), index, listing[index], others)
    order: tuple[int, ...] = ()
    if axes is None:
        axes, order = _tiff_axes(tiff_axes, p)
    spec = SourceSpec("tiff", str(p), order=order, series=index)
    array = spec.open()
    meta = _plain_meta(array.shape, axes, p)
    try:
        description = read_ome_xml(ome_xml, str(p), index) if ome_xml else None
        if description is not None:
            scale, units, omero = ngff_meta(description, meta.axes, array, str(p))
            meta = ImageMeta(meta.axes, scale, units=units, omero=omero)
    except InputError as exc:
        raise InputError(f"{p}: OME-XML physical sizes: {exc}") from None
    return ImageSource(spec, array, meta, series=listing if len(listing) > 1 else ())


def _not_ome_syntax(record: logging.LogRecord) -> bool:
    """Logging filter: False for tifffile's record of malformed OME-XML."""
    return _OME_XML_SYNTAX not in record.getMessage()


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[logging.LogRecord]]:
    """Collect what tifffile logs (it logs broken files instead of raising); on exit,
    pass on to its logger what :func:`_check_tiff_complete` did not turn into an error.

    Malformed OME-XML is left out: tifffile logs it at each open and falls back to a
    generic series; :func:`fluoden_batch.io.ome.read_ome_xml` warns about it once.
    """
    logger = logging.getLogger("tifffile")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(_not_ome_syntax)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    for record in records:
        logger.handle(record)


def _check_tiff_complete(p: Path, pages: Any, size: int, log: list[logging.LogRecord]) -> None:
    """Refuse a truncated or structurally broken TIFF by name, before any work: tifffile
    logs a page list cut short (and then reads fewer planes, without an error), and
    reports data past the end of the file only when a plane is read."""
    broken = [
        r.getMessage()
        for r in log
        if r.levelno >= logging.ERROR or "failed to reshape" in r.getMessage()
    ]
    if broken:
        raise InputError(f"{p}: truncated or corrupt TIFF ({broken[0][:200]})")
    for index, page in enumerate(pages):
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
        if ends and max(ends) > size:
            raise InputError(
                f"{p}: truncated TIFF: plane {index} needs {max(ends)} bytes, the file has {size}"
            )


def _tiff_axes(tiff_axes: str, p: Path) -> tuple[str, tuple[int, ...]]:
    """NGFF axes of a TIFF from tifffile's axes (``TZCYX``, ``YXS`` ...), and the stored
    axis of each (empty where stored in NGFF order already). Letters tifffile uses for
    unknown or generic axes (``Q``, ``I``) and a file without axes give the last letters
    of ``tczyx``, as for a plain array; a single unknown axis beside known ones is ``z``.

    Raises
    ------
    InputError
        Two axes that map to one NGFF axis (a channel axis ``C`` and colour samples
        ``S``), or axes that cannot be put in NGFF order.
    """
    mapped = [_TIFF_AXES.get(a) for a in tiff_axes]
    unknown = [i for i, a in enumerate(mapped) if a is None]
    if len(unknown) == 1 and "z" not in mapped and len(mapped) > 2:
        mapped[unknown[0]] = "z"
    elif unknown:
        return default_axes((1,) * len(tiff_axes)), ()  # colour samples are tifffile's S
    letters = "".join(a for a in mapped if a is not None)
    if len(set(letters)) < len(letters):
        raise InputError(
            f"{p}: TIFF axes {tiff_axes!r} give two {_repeated(letters)!r} axes (a channel "
            "axis C beside colour samples S?); fluoden takes one channel axis: save each "
            "channel or colour as a file of its own"
        )
    order = tuple(sorted(range(len(letters)), key=lambda i: AXIS_ORDER.find(letters[i])))
    axes = "".join(letters[i] for i in order)
    if not _valid(axes):
        raise InputError(
            f"{p}: TIFF axes {tiff_axes!r} do not fit NGFF's tczyx (read as {axes!r}: "
            "2 to 5 axes, y and x among them)"
        )
    return axes, () if order == tuple(range(len(order))) else order


def _repeated(letters: str) -> str:
    return next(a for a in letters if letters.count(a) > 1)


def _valid(axes: str) -> bool:
    try:
        validate_axes(axes)
    except InputError:
        return False
    return True


def _validate(source: ImageSource, dtypes: tuple[type, ...] | None) -> None:
    name = source.spec.describe()
    if dtypes is not None and source.dtype not in [np.dtype(d) for d in dtypes]:
        supported = ", ".join(np.dtype(d).name for d in dtypes)
        raise InputError(
            f"{name}: dtype {source.dtype} is not supported (use one of {supported}); "
            "convert it first, e.g. with dask.array .astype('float32') and to_zarr"
        )
    if any(s == 0 for s in source.shape):
        raise InputError(f"{name}: empty array of shape {source.shape}")
    if any(c <= 0 for c in source.chunks):
        raise InputError(f"{name}: invalid chunk shape {source.chunks}")
    grid = getattr(source.array, "shards", None) or source.chunks
    stored = int(np.prod([min(g, s) for g, s in zip(grid, source.shape, strict=True)]))
    if stored * source.dtype.itemsize > MAX_CHUNK_BYTES:
        raise InputError(
            f"{name}: one stored chunk {tuple(grid)} decompresses to "
            f"{stored * source.dtype.itemsize / 2**20:.0f} MiB (limit "
            f"{MAX_CHUNK_BYTES // 2**20} MiB); rechunk it (e.g. `fluoden ingest` or "
            "zarr/dask rechunk) to keep worker memory bounded"
        )

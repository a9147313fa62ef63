"""OME-NGFF (0.4 and 0.5) image metadata: read it from a group's attributes, write it back.

Only what the pipeline needs is modelled: the axes (names, types, units) of the
``multiscales`` entry, the scale/translation of level 0, the ``omero`` channel block, and
the dataset paths. Everything else in the input's attributes is carried over untouched.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fluoden_batch.errors import InputError

NGFFVersion = Literal["0.4", "0.5"]
AXIS_ORDER = "tczyx"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


@dataclass
class ImageMeta:
    """Axes and physical metadata of one image (level 0).

    Attributes
    ----------
    axes : str
        Axis names in array order, a subsequence of ``"tczyx"`` ending in ``"yx"``.
    scale : list of float
        Physical pixel size per axis (1.0 where unknown), same order as ``axes``.
    translation : list of float or None
        Physical offset per axis of level 0, if the input had one.
    units : dict
        Unit per axis name (e.g. ``{"y": "micrometer"}``), only for axes that had one.
    omero : dict or None
        The NGFF ``omero`` block (channel names, colours, windows), copied as is.
    name : str or None
        The multiscales name.
    """

    axes: str
    scale: list[float]
    translation: list[float] | None = None
    units: dict[str, str] = field(default_factory=dict)
    omero: dict[str, Any] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        validate_axes(self.axes)
        if len(self.scale) != len(self.axes):
            raise InputError(
                f"scale {self.scale} has {len(self.scale)} entries for axes {self.axes!r}"
            )
        if not all(s > 0 and math.isfinite(s) for s in self.scale):
            raise InputError(f"scale {self.scale} must be positive and finite")
        if self.translation is not None and not all(math.isfinite(t) for t in self.translation):
            raise InputError(f"translation {self.translation} must be finite")


def validate_axes(axes: str) -> None:
    """Check that ``axes`` is an ordered subset of ``tczyx`` ending in ``yx``.

    Raises
    ------
    InputError
        Naming the offending axes string.
    """
    if not 2 <= len(axes) <= 5 or not axes.endswith("yx"):
        raise InputError(f"axes {axes!r}: need 2 to 5 axes ending in 'yx' (NGFF order tczyx)")
    positions = [AXIS_ORDER.find(a) for a in axes]
    if -1 in positions or positions != sorted(set(positions)):
        raise InputError(f"axes {axes!r}: each of t, c, z, y, x at most once, in that order")


def default_axes(shape: tuple[int, ...]) -> str:
    """Axes assumed for a plain array of ``shape`` without metadata: the last ``ndim`` of
    ``tczyx``. An array shaped as a colour image with its colours last (``(..., Y, X, 3)``
    or ``4``, Y and X at least 16: what imageio and scikit-image give for an RGB file) is
    refused: read as ``zyx`` it would be planes 3 pixels wide, denoised as such."""
    ndim = len(shape)
    if not 2 <= ndim <= 5:
        raise InputError(f"arrays must have 2 to 5 dimensions, got {ndim}")
    if ndim in (3, 4) and shape[-1] in (3, 4) and min(shape[-3:-1]) >= 16:
        raise InputError(
            f"shape {tuple(shape)} looks like a colour image with its colours last (y, x, "
            "rgb); fluoden takes channels before y, x (axes 'cyx'): move them there "
            "(numpy.moveaxis(image, -1, -3)), or give the axes (--axes / axes=, e.g. 'zyx') "
            f"if these are planes {shape[-1]} pixels wide"
        )
    return AXIS_ORDER[-ndim:]


def channel_count(shape: tuple[int, ...], axes: str) -> int:
    """Length of the ``c`` axis of an array of ``shape`` with axis names ``axes``; 1 where
    it has none."""
    c = axes.find("c")
    return shape[c] if c >= 0 else 1


def channel_planes_at(shape: tuple[int, ...], axes: str, channel: int) -> list[tuple[int, ...]]:
    """The Y/X planes of channel ``channel`` of an array of ``shape`` with axis names
    ``axes``: their indices on the leading (non-Y/X) axes, in C order (every plane where
    there is no ``c`` axis)."""
    c = axes.find("c")
    return [idx for idx in np.ndindex(*shape[:-2]) if c < 0 or idx[c] == channel]


def _short(value: Any) -> str:
    """``repr`` of a metadata value, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def multiscales_block(attrs: dict[str, Any]) -> tuple[dict[str, Any], NGFFVersion] | None:
    """Return the first ``multiscales`` entry and the NGFF version, or None if absent.

    Raises
    ------
    InputError
        ``multiscales`` is there but not a non-empty list of objects, or the version is
        not 0.4 or 0.5.
    """
    ome = attrs.get("ome")
    if ome is not None and not isinstance(ome, dict):
        raise InputError(f"NGFF 'ome' attributes must be an object, got {_short(ome)}")
    if ome is not None and "multiscales" in ome:
        entries, version = ome["multiscales"], "0.5"
    elif "multiscales" in attrs:
        entries, version = attrs["multiscales"], "0.4"
    else:
        return None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise InputError(
            f"NGFF 'multiscales' must be a non-empty list of objects, got {_short(entries)}"
        )
    ms = entries[0]
    if version == "0.4" and str(ms.get("version", "0.4")) not in ("0.4", "0.5"):
        raise InputError(
            f"unsupported NGFF version {str(ms.get('version'))!r} (supported: 0.4, 0.5)"
        )
    return ms, version


def level0_path(ms: dict[str, Any]) -> str:
    """The dataset path of level 0 of a ``multiscales`` entry: a relative path inside
    the group (no ``..``, not absolute).

    Raises
    ------
    InputError
        ``datasets`` is not a non-empty list of objects with a string ``path``, or the path
        would leave the group.
    """
    datasets = ms.get("datasets")
    first = datasets[0] if isinstance(datasets, list) and datasets else None
    if not isinstance(first, dict) or not isinstance(first.get("path"), str):
        raise InputError(
            "NGFF multiscales 'datasets' must be a non-empty list of objects with a "
            f"string 'path', got {_short(datasets)}"
        )
    path = first["path"]
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise InputError(f"NGFF level-0 path {path!r} must be a relative path inside it")
    return path


def _numbers(value: Any, what: str, ndim: int) -> list[float]:
    """``value`` as ``ndim`` finite floats (NGFF scale or translation)."""
    if (
        not isinstance(value, list)
        or len(value) != ndim
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise InputError(f"NGFF {what} must be a list of {ndim} numbers, got {_short(value)}")
    numbers = [float(v) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise InputError(f"NGFF {what} {numbers} must be finite")
    return numbers


def _axis_names(axes: Any) -> str:
    """The axis names of a ``multiscales`` entry (objects with a ``name``, or strings)."""
    if not isinstance(axes, list):
        raise InputError(f"NGFF multiscales 'axes' must be a list, got {_short(axes)}")
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    if not names or not all(isinstance(n, str) for n in names):
        raise InputError(f"NGFF multiscales 'axes' must list named axes, got {_short(axes)}")
    return "".join(names)


def read_meta(attrs: dict[str, Any], ndim: int) -> tuple[ImageMeta, str, NGFFVersion]:
    """Parse NGFF group attributes into :class:`ImageMeta`.

    Returns
    -------
    meta, level0_path, version
        The metadata of level 0, the dataset path of level 0, and the NGFF version.

    Raises
    ------
    InputError
        Missing or malformed metadata, naming the entry and the value at fault.
    """
    found = multiscales_block(attrs)
    if found is None:
        raise InputError("group has no NGFF 'multiscales' metadata")
    ms, version = found
    path = level0_path(ms)
    axes_list = ms.get("axes")
    names = _axis_names(axes_list)
    if len(names) != ndim:
        raise InputError(f"NGFF axes {names!r} do not match the array's {ndim} dimensions")
    units = {
        a["name"]: a["unit"]
        for a in axes_list
        if isinstance(a, dict) and isinstance(a.get("unit"), str) and a["unit"]
    }
    scale = [1.0] * ndim
    translation = None
    transforms = ms["datasets"][0].get("coordinateTransformations", [])
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise InputError(
            f"NGFF coordinateTransformations must be a list of objects, got {_short(transforms)}"
        )
    for transform in transforms:
        kind = transform.get("type")
        if kind in ("scale", "translation") and kind not in transform:
            raise InputError(f"NGFF {kind} transformation without an inline {kind!r} list")
        if kind == "scale":
            scale = _numbers(transform["scale"], "scale", ndim)
        elif kind == "translation":
            translation = _numbers(transform["translation"], "translation", ndim)
    omero = (attrs["ome"] if version == "0.5" else attrs).get("omero")
    try:  # copied into the output: it must stay standard JSON (zarr writes NaN as is)
        json.dumps(omero, allow_nan=False)
    except ValueError:
        raise InputError("NGFF 'omero' metadata holds NaN or Infinity") from None
    name = ms.get("name")
    meta = ImageMeta(
        axes=names,
        scale=scale,
        translation=translation,
        units=units,
        omero=copy.deepcopy(omero) if isinstance(omero, dict) else None,
        name=name if isinstance(name, str) else None,
    )
    return meta, path, version


def write_attrs(meta: ImageMeta, version: NGFFVersion, path: str = "0") -> dict[str, Any]:
    """Build the group attributes of a single-level NGFF image for ``meta``."""
    axes = []
    for a in meta.axes:
        entry: dict[str, Any] = {"name": a, "type": AXIS_TYPES[a]}
        if a in meta.units:
            entry["unit"] = meta.units[a]
        axes.append(entry)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": list(meta.scale)}]
    if meta.translation is not None:
        transforms.append({"type": "translation", "translation": list(meta.translation)})
    ms: dict[str, Any] = {
        "axes": axes,
        "datasets": [{"path": path, "coordinateTransformations": transforms}],
        "name": meta.name or "image",
    }
    if version == "0.4":
        ms["version"] = "0.4"
        attrs: dict[str, Any] = {"multiscales": [ms]}
        if meta.omero is not None:
            attrs["omero"] = copy.deepcopy(meta.omero)
        return attrs
    ome: dict[str, Any] = {"version": "0.5", "multiscales": [ms]}
    if meta.omero is not None:
        ome["omero"] = copy.deepcopy(meta.omero)
    return {"ome": ome}


# Multiscale pyramids: level shapes, the Zarr chunk key encoding of each NGFF version, and
# the per-level datasets of the ``multiscales`` entry.

PYRAMID_MAX_SIDE = 512  # default pyramids halve Y/X until the longest side is at most this


def auto_levels(shape: tuple[int, ...]) -> int:
    """Default number of pyramid levels (level 0 included) of an image of ``shape``: Y/X
    are halved until the longest side is at most :data:`PYRAMID_MAX_SIDE` (so the
    smallest level of a large image is 257 to 512 pixels on its longest side)."""
    side, levels = max(shape[-2:]), 1
    while side > PYRAMID_MAX_SIDE:
        side, levels = -(-side // 2), levels + 1
    return levels


def level_shapes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Shapes of pyramid levels 0..levels-1: each halves Y/X (rounded up) of the one
    before; the other axes are kept."""
    shapes = [tuple(shape)]
    for _ in range(levels - 1):
        *lead, y, x = shapes[-1]
        shapes.append((*lead, -(-y // 2), -(-x // 2)))
    return shapes


def chunk_key_encoding(version: NGFFVersion) -> dict[str, str]:
    """The Zarr chunk key encoding NGFF ``version`` prescribes, from ome-zarr-py's format
    (0.4: zarr v2 with ``dimension_separator`` "/", i.e. nested keys ``0/0/0``; 0.5: zarr
    v3 default keys ``c/0/0/0``)."""
    from ome_zarr.format import format_from_version

    return dict(format_from_version(version).chunk_key_encoding)


def pyramid_datasets(meta: ImageMeta, levels: int) -> list[dict[str, Any]]:
    """The ``datasets`` of a pyramid of ``levels`` levels (paths ``"0"``, ``"1"``, ...).

    Level ``l`` is a 2^l x 2^l mean (or mode) of level 0 in Y/X: its scale is level 0's
    times 2^l there, and its translation moves its pixel centres to the centres of the
    windows they summarise, (2^l - 1) / 2 level-0 pixels (as ome-zarr-py's
    ``generate_coordinate_transformations`` does), so viewers overlay the levels exactly.
    Built here rather than with ome-zarr-py's ``write_multiscales_metadata``, which writes
    into a group: the output's attributes are written once, with the provenance, when OUT
    is created (before any level holds data).
    """
    yx = [i for i, a in enumerate(meta.axes) if a in "yx"]
    datasets = []
    for level in range(levels):
        factor = 2**level
        scale = [s * factor if i in yx else s for i, s in enumerate(meta.scale)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if meta.translation is not None or level > 0:
            shift = list(meta.translation or [0.0] * len(meta.axes))
            for i in yx:
                shift[i] += (factor - 1) / 2 * meta.scale[i]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return datasets


def pyramid_attrs(meta: ImageMeta, version: NGFFVersion, levels: int) -> dict[str, Any]:
    """The group attributes of an NGFF image of ``levels`` pyramid levels
    (:func:`write_attrs` with the datasets of :func:`pyramid_datasets`)."""
    attrs = write_attrs(meta, version, "0")
    ms = (attrs["ome"] if version == "0.5" else attrs)["multiscales"][0]
    ms["datasets"] = pyramid_datasets(meta, levels)
    return attrs

"""OME-NGFF (0.4 and 0.5) image metadata: read it from a group's attributes, write it back.

Only what the pipeline needs is modelled: the axes (names, types, units) of the
``multiscales`` entry, the scale/translation of level 0, the ``omero`` channel block, and
the dataset paths. Everything else in the input's attributes is carried over untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

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
        if any(not s > 0 for s in self.scale):
            raise InputError(f"scale {self.scale} must be positive")


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


def default_axes(ndim: int) -> str:
    """Axes assumed for a plain array without metadata: the last ``ndim`` of ``tczyx``."""
    if not 2 <= ndim <= 5:
        raise InputError(f"arrays must have 2 to 5 dimensions, got {ndim}")
    return AXIS_ORDER[-ndim:]


def multiscales_block(attrs: dict[str, Any]) -> tuple[dict[str, Any], NGFFVersion] | None:
    """Return the first ``multiscales`` entry and the NGFF version, or None if absent."""
    if "ome" in attrs and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"][0], "0.5"
    if "multiscales" in attrs:
        ms = attrs["multiscales"][0]
        version = str(ms.get("version", "0.4"))
        if version not in ("0.4", "0.5"):
            raise InputError(f"unsupported NGFF version {version!r} (supported: 0.4, 0.5)")
        return ms, "0.4"
    return None


def read_meta(attrs: dict[str, Any], ndim: int) -> tuple[ImageMeta, str, NGFFVersion]:
    """Parse NGFF group attributes into :class:`ImageMeta`.

    Returns
    -------
    meta, level0_path, version
        The metadata of level 0, the dataset path of level 0, and the NGFF version.
    """
    found = multiscales_block(attrs)
    if found is None:
        raise InputError("group has no NGFF 'multiscales' metadata")
    ms, version = found
    try:
        axes_list = ms["axes"]
        names = "".join(a["name"] if isinstance(a, dict) else a for a in axes_list)
        dataset = ms["datasets"][0]
        path = str(dataset["path"])
    except (KeyError, IndexError, TypeError) as exc:
        raise InputError(f"malformed NGFF multiscales metadata: missing {exc}") from exc
    if len(names) != ndim:
        raise InputError(f"NGFF axes {names!r} do not match the array's {ndim} dimensions")
    units = {a["name"]: a["unit"] for a in axes_list if isinstance(a, dict) and a.get("unit")}
    scale = [1.0] * ndim
    translation = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(s) for s in transform["scale"]]
        elif transform.get("type") == "translation":
            translation = [float(t) for t in transform["translation"]]
    omero = attrs.get("ome", {}).get("omero") if version == "0.5" else attrs.get("omero")
    meta = ImageMeta(
        axes=names,
        scale=scale,
        translation=translation,
        units=units,
        omero=copy.deepcopy(omero),
        name=ms.get("name"),
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

"""OME metadata of an image as one typed description, from OME-XML or from NGFF attributes.

An OME-TIFF's OME-XML is read with the OME data model of ``ome-types`` (never by hand):
channel names, colours and emission wavelengths, the physical pixel sizes in X/Y/Z and the
time increment, each with its unit. :func:`ngff_meta` turns that description into the
scales, axis units and the NGFF ``omero`` block of an output; the display window of each
channel is sampled from the data (:func:`channel_windows`).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import numpy as np
import ome_types
from ome_types.model import Channel, Pixels
from ome_types.model.simple_types import Color
from ome_zarr.axes import KNOWN_SPATIAL_UNITS, KNOWN_TEMPORAL_UNITS
from pydantic import ValidationError

from fluoden_batch.errors import InputError
from fluoden_batch.io.ngff import ImageMeta

log = logging.getLogger(__name__)

WINDOW_PERCENTILES = (0.1, 99.9)  # display window start/end, in percent of the sample
SAMPLE_PLANES = 3  # planes per channel read for the window: first, middle and last
SAMPLE_YX = 1024  # ... each cut to its central SAMPLE_YX x SAMPLE_YX pixels

# OME attribute of each Pixels field that sets a scale; a wrong value there is refused.
_SCALE_FIELDS = {
    "physical_size_x": "PhysicalSizeX",
    "physical_size_y": "PhysicalSizeY",
    "physical_size_z": "PhysicalSizeZ",
    "time_increment": "TimeIncrement",
}
_NGFF_UNITS = frozenset(KNOWN_SPATIAL_UNITS) | frozenset(KNOWN_TEMPORAL_UNITS)


@dataclass(frozen=True)
class Quantity:
    """A value and its unit.

    Attributes
    ----------
    value : float
        The number.
    unit : str or None
        The unit as NGFF (UDUNITS-2) names it (``"micrometer"``, ``"second"``), or None
        where NGFF has no name for the OME unit (``pixel``, ``reference frame``, ...).
    """

    value: float
    unit: str | None


@dataclass(frozen=True)
class ChannelInfo:
    """One channel as OME describes it.

    Attributes
    ----------
    name : str or None
        The channel's name, if it has one.
    color : int
        Display colour as OME stores it: a signed 32-bit RGBA integer (white, -1, when the
        file names none, as OME's default).
    emission_wavelength : Quantity or None
        Emission wavelength, if recorded.
    """

    name: str | None = None
    color: int = -1
    emission_wavelength: Quantity | None = None

    @property
    def hex(self) -> str:
        """The colour as six hex digits ``RRGGBB`` (NGFF ``omero`` style)."""
        return f"{(self.color >> 8) & 0xFFFFFF:06X}"

    def label(self, index: int) -> str:
        """Name to show: the channel's name, else its emission wavelength, else its index."""
        if self.name:
            return self.name
        if self.emission_wavelength is not None:
            unit = self.emission_wavelength.unit or ""
            symbol = {"nanometer": "nm", "micrometer": "µm"}.get(unit, unit)
            return f"{self.emission_wavelength.value:g} {symbol}".strip()
        return f"Channel {index}"


@dataclass(frozen=True)
class OmeDescription:
    """What OME says about an image, independent of where it was read.

    Attributes
    ----------
    channels : tuple of ChannelInfo
        One entry per channel, in order (empty if unknown).
    physical : dict
        Pixel size per axis name: ``x``, ``y``, ``z`` (physical sizes) and ``t`` (time
        increment); an axis without a recorded size is absent.
    """

    channels: tuple[ChannelInfo, ...] = ()
    physical: dict[str, Quantity] = field(default_factory=dict)


def read_ome_xml(xml: str, where: str, image: int = 0) -> OmeDescription | None:
    """Parse OME-XML into an :class:`OmeDescription` of one of its images.

    Parameters
    ----------
    xml : str
        The OME-XML text (e.g. ``tifffile.TiffFile.ome_metadata``).
    where : str
        Name of the file, for the warning.
    image : int
        Which ``Image`` of the document (0: the first), e.g. the image series of a
        multi-position OME-TIFF read (tifffile's series follow the images in order).

    Returns
    -------
    OmeDescription or None
        The description. Where the model cannot read part of the document (a bad colour,
        an odd instrument entry), one warning, and what it can read of the image's
        pixels: with its channels, else without them. None (after one warning) when the
        text is not XML or holds no image: the caller keeps its defaults.

    Raises
    ------
    InputError
        A physical size or time increment (or its unit) that is present but not a valid
        positive number: written into the output's scales it would be wrong, so it is
        refused by name.
    """
    try:
        return _describe(_image_pixels(xml, image))
    except ValidationError as exc:
        _refuse_bad_scale(exc)
        problem = _first_error(exc)
    except Exception as exc:  # XML syntax, no image, a value a field's own type refuses
        problem = str(exc).splitlines()[0][:200]
    try:
        reduced = [
            (_pixels_only(xml, image, channels=True), "pixel sizes and channels"),
            (_pixels_only(xml, image, channels=False), "pixel sizes only (unnamed channels)"),
        ]
    except (ElementTree.ParseError, ValueError):  # not XML, or no image to fall back to
        return _unreadable(where, problem)
    for text, kept in reduced:
        try:
            description = _describe(_image_pixels(text, 0))
        except ValidationError as exc:
            _refuse_bad_scale(exc)
            continue
        except Exception:  # e.g. a colour: the next, smaller document leaves it out
            continue
        log.warning("%s: OME-XML partly unreadable (%s); using its %s", where, problem, kept)
        return description
    return _unreadable(where, problem)


def _image_pixels(xml: str, image: int) -> Pixels:
    """The ``Pixels`` of image ``image``, through the OME model (pydantic validation)."""
    with warnings.catch_warnings():  # xsdata warns per bad value before pydantic raises
        warnings.simplefilter("ignore")
        ome = ome_types.from_xml(xml)
    if len(ome.images) <= image:
        raise ValueError(f"it describes {len(ome.images)} images, not an image {image}")
    return ome.images[image].pixels


def _pixels_only(xml: str, image: int, channels: bool) -> str:
    """The document cut to one image (``image``: its index), holding only its ``Pixels``
    element (attributes only), with or without its ``Channel`` elements (attributes only):
    the part this module reads."""
    root = ElementTree.fromstring(xml)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    images = root.findall(f"{ns}Image")
    if len(images) <= image:
        raise ValueError(f"it describes {len(images)} images, not an image {image}")
    kept = images[image]
    pixels = kept.find(f"{ns}Pixels")
    if pixels is None:
        raise ValueError(f"its image {image} has no pixels")
    out = ElementTree.Element(root.tag, root.attrib)
    out_image = ElementTree.SubElement(out, kept.tag, kept.attrib)
    out_pixels = ElementTree.SubElement(out_image, pixels.tag, pixels.attrib)
    for channel in pixels.findall(f"{ns}Channel") if channels else []:
        ElementTree.SubElement(out_pixels, channel.tag, channel.attrib)
    return ElementTree.tostring(out, encoding="unicode")


def _first_error(exc: ValidationError) -> str:
    """The first error as ``Model.field: message``."""
    error = exc.errors()[0]
    where = ".".join([exc.title, *(str(part) for part in error["loc"])])
    return f"{where}: {error['msg']}"


def _refuse_bad_scale(exc: ValidationError) -> None:
    """Raise :class:`InputError` for the first error on a field that sets a scale."""
    for error in exc.errors():
        name = str(error["loc"][-1]) if error["loc"] else ""
        base = name.removesuffix("_unit")
        if base in _SCALE_FIELDS:
            attribute = _SCALE_FIELDS[base] + ("Unit" if name.endswith("_unit") else "")
            value = error.get("input")
            if error["type"] == "float_parsing":
                raise InputError(f"{attribute} {value!r} is not a number")
            if error["type"] == "enum":
                raise InputError(f"{attribute} {value!r} is not a unit the OME schema knows")
            raise InputError(f"{attribute} {value!r}: {error['msg'].lower()}")


def _unreadable(where: str, why: str) -> None:
    log.warning(
        "%s: OME-XML not readable (%s); using defaults (no physical sizes, unnamed channels)",
        where,
        why,
    )


def _describe(pixels: Pixels) -> OmeDescription:
    physical: dict[str, Quantity] = {}
    for axis in "xyz":
        size = getattr(pixels, f"physical_size_{axis}")
        if size is not None:
            physical[axis] = _quantity(size, getattr(pixels, f"physical_size_{axis}_unit"))
    if pixels.time_increment is not None:
        physical["t"] = _quantity(pixels.time_increment, pixels.time_increment_unit)
    return OmeDescription(tuple(_channel(c) for c in pixels.channels), physical)


def _quantity(value: float, unit: Any) -> Quantity:
    """A value with its OME unit enum, the unit translated to its NGFF name."""
    name = unit.name.lower()
    return Quantity(float(value), name if name in _NGFF_UNITS else None)


def _channel(channel: Channel) -> ChannelInfo:
    wavelength = channel.emission_wavelength
    return ChannelInfo(
        name=channel.name or None,
        color=channel.color.as_int32(),
        emission_wavelength=(
            None if wavelength is None else _quantity(wavelength, channel.emission_wavelength_unit)
        ),
    )


def describe_ngff(meta: ImageMeta) -> OmeDescription:
    """The :class:`OmeDescription` of an NGFF image's metadata (an OME-Zarr input).

    Channels come from the ``omero`` block (``label``, ``color``); physical sizes from
    the level-0 scale of the x/y/z/t axes that have a unit.
    """
    channels = []
    omero_channels = (meta.omero or {}).get("channels")
    for entry in omero_channels if isinstance(omero_channels, list) else []:
        entry = entry if isinstance(entry, dict) else {}
        label, color = entry.get("label"), entry.get("color")
        try:
            rgba = Color(f"#{color}").as_int32() if isinstance(color, str) else -1
        except ValueError:
            rgba = -1
        channels.append(ChannelInfo(label if isinstance(label, str) else None, rgba))
    physical = {
        a: Quantity(s, meta.units[a])
        for a, s in zip(meta.axes, meta.scale, strict=True)
        if a in meta.units and a != "c"
    }
    return OmeDescription(tuple(channels), physical)


def ngff_meta(
    description: OmeDescription, axes: str, array: Any, where: str
) -> tuple[list[float], dict[str, str], dict[str, Any]]:
    """Scales, units and ``omero`` block of an NGFF image described by ``description``.

    Parameters
    ----------
    description : OmeDescription
        What OME says about the image.
    axes : str
        The array's axis names (NGFF order).
    array : array-like
        The level-0 data, for the display windows (sampled, see :func:`channel_windows`).
    where : str
        Name of the input, for the warning on a channel count that does not match.

    Returns
    -------
    scale, units, omero
        Scale per axis (1.0 where OME records none), the NGFF unit per axis that has one,
        and the ``omero`` block with one channel per entry of the ``c`` axis (one channel
        without a ``c`` axis).
    """
    scale, units = [], {}
    for axis in axes:
        size = description.physical.get(axis)
        scale.append(size.value if size is not None else 1.0)
        if size is not None and size.unit is not None:
            units[axis] = size.unit
    n_channels = array.shape[axes.index("c")] if "c" in axes else 1
    channels = description.channels
    if len(channels) != n_channels:
        if channels:
            log.warning(
                "%s: OME-XML describes %d channel(s) for %d in the data; channel names and "
                "colours are not used",
                where,
                len(channels),
                n_channels,
            )
        channels = (ChannelInfo(),) * n_channels
    omero = {
        "channels": [
            {"label": info.label(i), "color": info.hex, "window": window, "active": True}
            for i, (info, window) in enumerate(
                zip(channels, channel_windows(array, axes), strict=True)
            )
        ]
    }
    return scale, units, omero


def channel_windows(array: Any, axes: str) -> list[dict[str, float]]:
    """Display window of each channel, from a small sample of the data.

    Per channel, up to :data:`SAMPLE_PLANES` planes (the first, middle and last of the
    other leading axes), each cut to its central :data:`SAMPLE_YX` square, are read;
    ``start``/``end`` are the :data:`WINDOW_PERCENTILES` of their finite values and
    ``min``/``max`` their extremes. A channel with no readable sample gets the dtype's
    range (0 to 1 for floating point).
    """
    shape = array.shape
    lead = [i for i, a in enumerate(axes[:-2]) if a != "c"]
    lead_shape = [shape[i] for i in lead]
    count = math.prod(lead_shape)
    picks = sorted({0, count // 2, count - 1})[:SAMPLE_PLANES]
    crop = tuple(
        slice(max(0, (n - SAMPLE_YX) // 2), max(0, (n - SAMPLE_YX) // 2) + SAMPLE_YX)
        for n in shape[-2:]
    )
    windows = []
    for ch in range(shape[axes.index("c")] if "c" in axes else 1):
        values = []
        for flat in picks:
            index = dict(zip(lead, np.unravel_index(flat, lead_shape), strict=True))
            key = tuple(ch if a == "c" else int(index[i]) for i, a in enumerate(axes[:-2]))
            try:
                plane = np.asarray(array[key + crop], dtype=np.float64).ravel()
            except Exception:  # a corrupt plane is reported by name where the run reads it
                continue
            values.append(plane[np.isfinite(plane)])
        sample = np.concatenate(values) if values else np.empty(0)
        windows.append(_window(sample, np.dtype(array.dtype)))
    return windows


def _window(sample: np.ndarray, dtype: np.dtype) -> dict[str, float]:
    if sample.size == 0:
        high = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
        return {"start": 0.0, "end": high, "min": 0.0, "max": high}
    start, end = (float(v) for v in np.percentile(sample, WINDOW_PERCENTILES))
    low, high = float(sample.min()), float(sample.max())
    if end <= start:  # a constant channel: a window of width 1, inside [min, max]
        end = start + 1.0
        high = max(high, end)
    return {"start": start, "end": end, "min": low, "max": high}

"""Where training images come from: a folder of 2-D image files, or the Y/X planes of one
image array (a Zarr array, an OME-Zarr image or a TIFF stack, opened as ``fluoden
denoise`` opens its input).

Every image has a key. In a folder it is the text the glob's wildcards stand for
(``in_*.tif``: ``in_007.tif`` -> ``"007"``). In an array it names the plane by its
non-spatial indices, the time index last: ``"c0_z5_t3"`` (a 2-D array has the single key
``"0"``). Time goes last so that the frames of a time series share everything but a
trailing number, which the default ``capture_pattern`` of noise2noise training groups.
Folders and arrays pair with each other by key, so a noisy Zarr array pairs with a clean
one of the same shape, plane by plane.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from skimage import io as skio

from fluoden_batch.errors import InputError
from fluoden_batch.io.source import TIFF_SUFFIXES, ImageSource, open_image

__all__ = ["ImageRef", "describe_location", "is_array", "keyed_images", "plane_key", "read_image"]

MAX_TRAIN_BYTES = 8 << 30  # training keeps its images in memory (float32)
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


@dataclass(frozen=True)
class ImageRef:
    """One 2-D training image, not yet read.

    Attributes
    ----------
    where : str
        The file, or ``"<array> plane <key>"``, for messages and metadata.
    read : callable
        Returns the image as stored (dtype kept), shape (H, W).
    """

    where: str
    read: Callable[[], np.ndarray]


def read_image(path: Path) -> np.ndarray:
    """Read a 2-D grayscale image (TIFF via tifffile, PNG and others via scikit-image).

    Returns the array as stored (dtype kept), shape (H, W).
    """
    try:
        image = tifffile.imread(path) if path.suffix.lower() in TIFF_SUFFIXES else skio.imread(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(
            f"{path}: expected a 2-D grayscale image, got shape {image.shape} (a stack? name "
            "the file itself as the folder: every Y/X plane of a TIFF stack is then an image)"
        )
    return image


def is_array(location: Path) -> bool:
    """Whether ``location`` is an image array (a TIFF file or a Zarr store), not a folder."""
    if location.is_file():
        return location.suffix.lower() in TIFF_SUFFIXES
    return any((location / marker).exists() for marker in _ZARR_MARKERS)


def describe_location(location: Path, glob: str) -> str:
    """``folder/glob`` for a folder, the array's path for an array (its glob is unused)."""
    return str(location) if is_array(location) else f"{location}/{glob}"


def plane_key(axes: str, index: tuple[int, ...]) -> str:
    """Key of the plane at ``index`` (one integer per non-spatial axis of ``axes``).

    >>> plane_key("tczyx", (3, 0, 5))
    'c0_z5_t3'
    """
    named = [f"{a}{i}" for a, i in zip(axes[:-2], index, strict=True) if a != "t"]
    named += [f"t{i}" for a, i in zip(axes[:-2], index, strict=True) if a == "t"]
    return "_".join(named) or "0"


def _read_plane(source: ImageSource, index: tuple[int, ...]) -> np.ndarray:
    return np.asarray(source.array[index])


def _array_planes(location: Path) -> dict[str, ImageRef]:
    source = open_image(location)
    axes, shape = source.meta.axes, source.shape
    planes = int(np.prod(shape[:-2]))
    size = planes * shape[-2] * shape[-1] * 4
    if size > MAX_TRAIN_BYTES:
        raise InputError(
            f"{location}: {planes} planes of {shape[-2]}x{shape[-1]} take {size / 2**30:.1f} GiB "
            f"as float32; training keeps its images in memory (limit "
            f"{MAX_TRAIN_BYTES >> 30} GiB): train on a subset (e.g. a cropped copy)"
        )
    refs = {}
    for index in itertools.product(*(range(n) for n in shape[:-2])):
        key = plane_key(axes, index)
        refs[key] = ImageRef(
            f"{location} plane {key}", functools.partial(_read_plane, source, index)
        )
    return refs


def _glob_regex(glob: str) -> re.Pattern[str]:
    """Regex that matches a file name like ``glob`` and captures its wildcard parts."""
    if "[" in glob:
        raise InputError(f"glob {glob!r}: character classes are not supported for pairing")
    parts = [("(.*)" if c == "*" else "(.)" if c == "?" else re.escape(c)) for c in glob]
    return re.compile("".join(parts) + r"\Z")


def _folder_files(folder: Path, glob: str) -> dict[str, ImageRef]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder, TIFF stack or Zarr store")
    regex = _glob_regex(glob)
    files: dict[str, ImageRef] = {}
    for path in sorted(folder.glob(glob)):
        match = regex.match(path.name)
        if match and path.is_file():
            key = "/".join(match.groups()) or path.stem
            files[key] = ImageRef(str(path), functools.partial(read_image, path))
    if not files:
        raise InputError(f"{folder}: no file matches {glob!r}")
    return files


def keyed_images(location: Path, glob: str) -> dict[str, ImageRef]:
    """The training images at ``location``, by key, sorted by key.

    Parameters
    ----------
    location : Path
        A folder of 2-D images (those matching ``glob``), or an image array: a TIFF stack
        or a Zarr / OME-Zarr store (every Y/X plane is an image; ``glob`` is unused).
    glob : str
        File pattern inside a folder; its wildcards make the keys.

    Raises
    ------
    InputError
        Missing location, no matching file, an unreadable or too large array.
    """
    refs = _array_planes(location) if is_array(location) else _folder_files(location, glob)
    return dict(sorted(refs.items()))

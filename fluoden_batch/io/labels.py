"""OME-NGFF label images, registered under the image they describe.

``fluoden denoise --save-labels`` writes the labels of OUT, and ``fluoden segment`` those of
its OUT (an image holding a copy of IN's intensities), as NGFF label images
``OUT/labels/NAME``: the ``labels`` group lists NAME, and NAME carries ``multiscales`` (the
same levels as the image) and ``image-label`` metadata (colours, ``source`` ``../..``). In
NGFF 0.5 the metadata sits in ``attrs["ome"]`` (whose ``version`` applies), in 0.4 at the
top level with its own ``version``.

Label images have no channel axis. The labels are computed per channel, so an image with
a ``c`` axis of more than one channel gets one label image per channel (``NAME-c0``,
``NAME-c1``, ...) with the image's other axes, and a single-channel image one (``NAME``)
with its ``c`` axis dropped. This is what viewers expect: napari (napari-ome-zarr) splits
an image along its channel axis into one layer per channel and squeezes a label image's
channel axis away, which fails for more than one channel; a label image of the same
dimensions as each channel layer lines up with it. NGFF leaves multi-channel labels open
(ome/ngff#19), and its ``image-label`` colours are per label value, not per channel.

Label 0 (the darkest cluster: background) and -1 (noise, DBSCAN/HDBSCAN) are transparent;
labels 1, 2, ... get the colours of :data:`PALETTE`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fluoden_batch.io.ngff import ImageMeta, NGFFVersion
from fluoden_batch.io.store import LEVEL0, OutputSpec, create_levels

__all__ = [
    "PALETTE",
    "LabelSet",
    "create_label_images",
    "label_meta",
    "label_names",
    "label_set",
    "set_image_label",
]

PALETTE = bytes.fromhex("e6194b3cb44bffe1194363d8f58231911eb446f0f0f032e6bcf60cfabebe")  # RGB
TRANSPARENT = [0, 0, 0, 0]


def _set_ome(group: zarr.Group, version: NGFFVersion, key: str, value: object) -> None:
    """Set one NGFF metadata entry of ``group`` where its version keeps it."""
    if version == "0.4":
        group.attrs[key] = value
    else:
        ome = dict(group.attrs.get("ome", {"version": "0.5"}))
        group.attrs["ome"] = {**ome, key: value}


def label_names(name: str, axes: str, shape: tuple[int, ...]) -> list[str]:
    """The label images of an image of ``axes`` and ``shape``: ``name`` alone, or
    ``name-c0``, ``name-c1``, ... for more than one channel."""
    c = axes.find("c")
    if c < 0 or shape[c] == 1:
        return [name]
    return [f"{name}-c{i}" for i in range(shape[c])]


def label_meta(meta: ImageMeta, name: str) -> ImageMeta:
    """The metadata of a label image of the image ``meta``: its axes, scales, translation
    and units without the channel axis, no ``omero`` block, named ``name``."""
    keep = [i for i, a in enumerate(meta.axes) if a != "c"]
    return replace(
        meta,
        axes="".join(meta.axes[i] for i in keep),
        scale=[meta.scale[i] for i in keep],
        translation=None if meta.translation is None else [meta.translation[i] for i in keep],
        units={a: u for a, u in meta.units.items() if a != "c"},
        omero=None,
        name=name,
    )


@dataclass(frozen=True)
class LabelSet:
    """Where a block's labels go (picklable): one label image per channel (``c`` is the
    image's channel axis, -1 when it has none)."""

    specs: tuple[OutputSpec, ...]
    c: int

    def write(self, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write the labels ``data`` of the image's ``region`` (whole chunks), each
        channel's into its own label image, without the channel axis."""
        if self.c < 0:
            self.specs[0].write(region, data)
            return
        inner = region[: self.c] + region[self.c + 1 :]
        for i, channel in enumerate(range(*region[self.c].indices(len(self.specs)))):
            self.specs[channel].write(inner, np.take(data, i, axis=self.c))


def label_set(image: Path, name: str, axes: str, shape: tuple[int, ...], owner: str) -> LabelSet:
    """The :class:`LabelSet` of the label images ``name`` of ``image`` (level 0 of each),
    checking OUT's lock ``owner`` on every write."""
    specs = tuple(
        OutputSpec(str(image), f"labels/{n}/{LEVEL0}", owner)
        for n in label_names(name, axes, shape)
    )
    return LabelSet(specs, axes.find("c"))


def set_image_label(
    group_path: Path, version: NGFFVersion, n_labels: int, noise: bool = True
) -> None:
    """Write NGFF ``image-label`` metadata into the label image group ``group_path``
    (``IMAGE/labels/NAME``): colours of labels 0..n_labels-1 (0 transparent; 1, 2, ...
    from :data:`PALETTE`, repeating after 10), -1 transparent where ``noise``, and the
    ``source`` image ``../..``."""
    colors = [{"label-value": -1, "rgba": TRANSPARENT}] if noise else []
    colors.append({"label-value": 0, "rgba": TRANSPARENT})
    colors += [
        {"label-value": i, "rgba": [*PALETTE[(i - 1) % 10 * 3 :][:3], 255]}
        for i in range(1, n_labels)
    ]
    label: dict[str, Any] = {"colors": colors, "source": {"image": "../.."}}
    if version == "0.4":
        label = {"version": "0.4", **label}
    _set_ome(zarr.open_group(str(group_path), mode="r+"), version, "image-label", label)


def create_label_images(
    image: Path,
    name: str,
    meta: ImageMeta,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    version: NGFFVersion,
    n_labels: int,
    *,
    dtype: str = "uint8",
    levels: int = 1,
    noise: bool = False,
    owner: str = "",
    shards: tuple[int, ...] | None = None,
) -> LabelSet:
    """Create the empty label images ``image/labels/NAME...`` of the image ``image``
    (:func:`label_names`; ``levels`` pyramid levels each and ``shards``, like the image),
    list them in the ``labels`` group and give each ``image-label`` metadata.

    Returns
    -------
    LabelSet
        Where the tasks write the labels of level 0 (whole chunks each).
    """
    names = label_names(name, meta.axes, shape)
    c = meta.axes.find("c")
    drop = (lambda t: t[:c] + t[c + 1 :]) if c >= 0 else (lambda t: t)
    labels = zarr.open_group(str(image), mode="r+").require_group("labels")
    _set_ome(labels, version, "labels", names)
    for n in names:
        group = labels.create_group(n)
        attrs = create_levels(
            group, label_meta(meta, n), drop(shape), drop(chunks), np.dtype(dtype), version,
            levels, None if shards is None else drop(shards),
        )  # fmt: skip
        group.attrs.update(attrs)
        set_image_label(image / "labels" / n, version, n_labels, noise=noise)
    return label_set(image, name, meta.axes, shape, owner)

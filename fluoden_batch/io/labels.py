"""OME-NGFF label images: ``image-label`` metadata and labels stored beside an image.

Two layouts use it: ``fluoden segment`` writes OUT itself as a label image of IN, and
``fluoden denoise --save-labels`` writes ``OUT/labels/<name>`` (NGFF "labels" group) as a
label image of OUT. In NGFF 0.5 the metadata sits in ``attrs["ome"]`` (whose ``version``
applies), in 0.4 at the top level with its own ``version``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import zarr

from fluoden_batch.io.ngff import ImageMeta, NGFFVersion, write_attrs
from fluoden_batch.io.store import LEVEL0, OutputSpec

__all__ = ["PALETTE", "create_label_image", "set_image_label"]

PALETTE = bytes.fromhex("e6194b3cb44bffe1194363d8f58231911eb446f0f0f032e6bcf60cfabebe")  # RGB


def _set_ome(group: zarr.Group, version: NGFFVersion, key: str, value: object) -> None:
    """Set one NGFF metadata entry of ``group`` where its version keeps it."""
    if version == "0.4":
        group.attrs[key] = value
    else:
        ome = dict(group.attrs.get("ome", {"version": "0.5"}))
        group.attrs["ome"] = {**ome, key: value}


def set_image_label(
    out: Path, version: NGFFVersion, n_labels: int, image: Path, noise: bool = True
) -> None:
    """Write NGFF ``image-label`` metadata into the label image group ``out``.

    Parameters
    ----------
    out : Path
        The label image group (it already holds its multiscales metadata).
    version : {"0.4", "0.5"}
        Its NGFF version.
    n_labels : int
        Labels 0..n_labels-1 get a colour from :data:`PALETTE` (repeating after 10).
    image : Path
        The image the labels describe; stored relative to ``out``.
    noise : bool
        Also list label -1 (noise) as transparent.
    """
    colors = [{"label-value": -1, "rgba": [0, 0, 0, 0]}] if noise else []
    colors += [
        {"label-value": i, "rgba": [*PALETTE[i % 10 * 3 :][:3], 255]} for i in range(n_labels)
    ]
    source = {"image": os.path.relpath(image.expanduser().resolve(), out)}
    label: dict[str, object] = {"colors": colors, "source": source}
    if version == "0.4":
        label = {"version": "0.4", **label}
    _set_ome(zarr.open_group(str(out), mode="r+"), version, "image-label", label)


def create_label_image(
    image: Path,
    name: str,
    meta: ImageMeta,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    version: NGFFVersion,
    n_labels: int,
    dtype: str = "uint8",
) -> OutputSpec:
    """Create the empty label image ``image/labels/name`` (level 0 only) of an image.

    The ``labels`` group lists ``name``; the label group carries ``meta``'s axes and
    scales (no channel metadata) and ``image-label`` metadata pointing back at ``image``
    (``../..``), so ome-zarr-py reads it as a label of the image. Chunks are written by
    tasks, each exactly its own; ``write_empty_chunks`` is on, as for the image.

    Returns
    -------
    OutputSpec
        Opens the label array for writing (``array_path`` ``labels/<name>/0``).
    """
    zarr_format = 3 if version == "0.5" else 2
    labels = zarr.open_group(str(image), mode="r+").require_group("labels")
    _set_ome(labels, version, "labels", [name])
    group = labels.create_group(name)
    group.create_array(
        LEVEL0,
        shape=shape,
        chunks=chunks,
        dtype=np.dtype(dtype),
        fill_value=0,
        dimension_names=list(meta.axes) if zarr_format == 3 else None,
        config={"write_empty_chunks": True},
    )
    group.attrs.update(write_attrs(replace(meta, omero=None, name=name), version, LEVEL0))
    set_image_label(image / "labels" / name, version, n_labels, image, noise=False)
    return OutputSpec(str(image), f"labels/{name}/{LEVEL0}")

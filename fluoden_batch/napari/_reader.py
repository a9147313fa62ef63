"""Open a fluoden output in napari: the denoised image with its pyramid, one layer per
channel (names, colours and contrast from ``omero``), its label images, and the per-block
metrics table in the image layers' metadata (``layer.metadata["fluoden"]["metrics"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import zarr

from fluoden_batch.io.ngff import ImageMeta, multiscales_block, read_meta
from fluoden_batch.io.store import LEVEL0, PROVENANCE_KEY, read_provenance

__all__ = ["get_reader", "read_output"]

LayerData = tuple[Any, dict[str, Any], str]
METRICS_FILE = "metrics.parquet"


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of ``path`` when it is one fluoden output directory, else None (napari
    then asks the other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.is_dir() or read_provenance(p) is None:
        return None
    return read_output


def _levels(group: zarr.Group) -> tuple[list[da.Array], ImageMeta]:
    """The pyramid levels (lazy, level 0 first) and the level-0 metadata of an NGFF image."""
    attrs = group.attrs.asdict()
    found = multiscales_block(attrs)
    paths = [d["path"] for d in found[0]["datasets"]] if found else [LEVEL0]
    levels = [da.from_zarr(group[p]) for p in paths]
    meta, _, _ = read_meta(attrs, levels[0].ndim)
    return levels, meta


def _colormap(hex_colour: str) -> dict[str, Any]:
    """A napari colormap (``Colormap`` fields) from black to ``hex_colour`` (``RRGGBB``)."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    colours = np.array([[0.0, 0.0, 0.0, 1.0], [*rgb, 1.0]])
    return {"name": f"#{hex_colour.upper()}", "colors": colours}


def _channel_kwargs(meta: ImageMeta, index: int | None) -> dict[str, Any]:
    """Name, colour, contrast limits and visibility of channel ``index`` from ``omero``."""
    channels = (meta.omero or {}).get("channels") or []
    info = channels[index or 0] if len(channels) > (index or 0) else {}
    default = f"c{index}" if index is not None else None
    kwargs: dict[str, Any] = {"name": info.get("label") or default}
    colour = info.get("color")
    if isinstance(colour, str) and len(colour) == 6:
        kwargs["colormap"] = _colormap(colour)
    window = info.get("window") or {}
    start, end = window.get("start"), window.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float) and end > start:
        kwargs["contrast_limits"] = [float(start), float(end)]
    if "active" in info:
        kwargs["visible"] = bool(info["active"])
    return {k: v for k, v in kwargs.items() if v is not None}


def _placement(meta: ImageMeta, drop: int | None) -> dict[str, Any]:
    """``scale`` and ``translate`` of level 0 without axis ``drop`` (the channel axis)."""
    keep = [i for i in range(len(meta.axes)) if i != drop]
    out: dict[str, Any] = {"scale": [meta.scale[i] for i in keep]}
    if meta.translation is not None:
        out["translate"] = [meta.translation[i] for i in keep]
    return out


def _multiscale(levels: list[Any]) -> tuple[Any, bool]:
    """The layer data of a pyramid: the list of levels, or the array for a single level."""
    return (levels, True) if len(levels) > 1 else (levels[0], False)


def _image_layers(out: Path, group: zarr.Group) -> list[LayerData]:
    levels, meta = _levels(group)
    provenance = dict(group.attrs[PROVENANCE_KEY])
    metrics_path = out / METRICS_FILE
    metrics = pd.read_parquet(metrics_path) if metrics_path.is_file() else None
    c = meta.axes.find("c")
    channels = range(levels[0].shape[c]) if c >= 0 else [None]
    layers = []
    for index in channels:
        data = [lv[(slice(None),) * c + (index,)] for lv in levels] if index is not None else levels
        payload, multiscale = _multiscale(data)
        fluoden = {
            "path": str(out),
            "axes": meta.axes.replace("c", "") if index is not None else meta.axes,
            "channel": index,
            "provenance": provenance,
            "metrics": metrics,
        }
        kwargs = {
            **_channel_kwargs(meta, index),
            **_placement(meta, c if c >= 0 else None),
            "multiscale": multiscale,
            "blending": "additive" if index is not None else "translucent",
            "metadata": {"fluoden": fluoden},
        }
        kwargs.setdefault("name", meta.name or out.name)
        layers.append((payload, kwargs, "image"))
    return layers


def _label_colours(group: zarr.Group) -> dict[int | None, list[float]] | None:
    """The ``image-label`` colours of a label image as napari's ``{value: RGBA}``, with
    unlisted values transparent (None key), or None without colours."""
    attrs = group.attrs.asdict()
    label_meta = attrs.get("ome", attrs).get("image-label") or {}
    colours = {
        int(c["label-value"]): [v / 255 for v in c["rgba"]]
        for c in label_meta.get("colors", [])
        if isinstance(c, dict) and "label-value" in c and len(c.get("rgba", [])) == 4
    }
    return {None: [0.0, 0.0, 0.0, 0.0], **colours} if colours else None


def _label_layers(out: Path, group: zarr.Group) -> list[LayerData]:
    if "labels" not in group:
        return []
    labels = group["labels"]
    attrs = labels.attrs.asdict()
    names = attrs.get("ome", attrs).get("labels") or []
    layers = []
    for name in names:
        levels, meta = _levels(labels[name])
        payload, multiscale = _multiscale(levels)
        kwargs: dict[str, Any] = {
            "name": name,
            **_placement(meta, None),
            "multiscale": multiscale,
            "metadata": {"fluoden": {"path": str(out / "labels" / name), "axes": meta.axes}},
        }
        colours = _label_colours(labels[name])
        if colours is not None:
            kwargs["colormap"] = colours
        layers.append((payload, kwargs, "labels"))
    return layers


def read_output(path: str | list[str]) -> list[LayerData]:
    """The napari layers of a fluoden output: one image layer per channel (lazy pyramid),
    then one labels layer per label image (lazy pyramid).

    Parameters
    ----------
    path : str or list of one str
        The output directory (``fluoden denoise IN OUT``'s ``OUT``).

    Returns
    -------
    list of (data, kwargs, layer_type)
        napari layer data tuples; each image layer's ``metadata["fluoden"]`` holds the
        output's ``path``, its ``axes`` (without ``c``), its ``channel``, the run's
        ``provenance`` and the per-block ``metrics`` (a pandas DataFrame, or None before
        a run wrote it).
    """
    out = Path(path[0] if isinstance(path, list) else path)
    group = zarr.open_group(str(out), mode="r")
    return [*_image_layers(out, group), *_label_layers(out, group)]

"""``fluoden ingest``, ``fluoden export`` and ``fluoden info``: images in, images out,
and what an image holds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fluoden_batch.cli.common import errors, out
from fluoden_batch.config.denoise import SERIES_HELP, parse_yx
from fluoden_batch.errors import FluodenError

__all__ = ["export", "info", "ingest"]

_SERIES = f"{SERIES_HELP[0].upper()}{SERIES_HELP[1:]}."


def ingest(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="A TIFF or OME-TIFF stack; or 2-D image files (PNG, JPEG, TIFF, ...) or "
            "folders of them, stacked in natural order of their names.",
            metavar="INPUT...",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Argument(help="New OME-Zarr image to write.")],
    chunks: Annotated[str, typer.Option(help="Chunk size in Y/X as 'Y,X'.")] = "512,512",
    ngff_version: Annotated[str, typer.Option(help="NGFF version: 0.5 or 0.4.")] = "0.5",
    axes: Annotated[
        str | None,
        typer.Option(
            help="Axis names if the TIFF has none usable, e.g. 'zyx'; of a stack of files: "
            "'zyx' (default), 'tyx' or 'cyx'; of RGB files (their colours a c axis): 'cyx', "
            "'czyx' (default) or 'tcyx'."
        ),
    ] = None,
    series: Annotated[int, typer.Option(min=0, help=_SERIES)] = 0,
    shards: Annotated[
        str | None,
        typer.Option(
            help="Shard size in Y/X as 'Y,X', whole multiples of --chunks (NGFF 0.5 only): "
            "each shard one file of many chunks, for fewer files on cluster file systems; "
            "fluoden denoise and segment keep the shards in their outputs.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Convert images to an OME-Zarr image (plane by plane): a TIFF / OME-TIFF stack, or
    a stack of 2-D image files.

    An OME-TIFF keeps its axes, physical sizes and channels; a Fiji hyperstack or an
    OME-TIFF of another dimension order is stored in NGFF order (tczyx). Image files are
    stacked in natural order (img_2 before img_10, whatever order the shell lists them
    in); a folder stands for its image files.

    Examples:
      fluoden ingest stack.ome.tif stack.ome.zarr
      fluoden ingest raw/*.png raw.ome.zarr --axes tyx   # a time series
      fluoden ingest raw/ raw.ome.zarr                   # each image in raw/
      fluoden ingest big.ome.tif big.ome.zarr --shards 4096,4096   # fewer files
    """
    from fluoden_batch.io.ingest import ingest as do_ingest

    with errors():
        if ngff_version not in ("0.4", "0.5"):
            raise FluodenError(f"--ngff-version {ngff_version!r}: use 0.4 or 0.5")
        path = do_ingest(
            inputs,
            output,
            chunks=_chunks(chunks, "--chunks"),
            ngff_version=ngff_version,
            axes=axes,
            series=series,
            shards=None if shards is None else _chunks(shards, "--shards"),
        )
        out.print(f"wrote {path}")


def export(
    image: Annotated[
        Path, typer.Argument(help="OME-Zarr image (e.g. a denoised OUT), Zarr array or TIFF.")
    ],
    output: Annotated[Path, typer.Argument(help="New OME-TIFF file (.ome.tif).")],
    compression: Annotated[
        str,
        typer.Option(
            help="none, or zlib (lossless deflate; Fiji/Bio-Formats and tifffile read it)."
        ),
    ] = "none",
    series: Annotated[int, typer.Option(min=0, help=_SERIES)] = 0,
) -> None:
    """Write an image (a denoised OUT) as one OME-TIFF file, plane by plane: for Fiji,
    ImageJ and other tools that read TIFF.

    Axes, physical pixel sizes, the time increment and the channels' names and colours
    go into the file's OME-XML; `fluoden ingest` of the file gives the same image back.
    Large planes are written in tiles, files over 4 GiB as BigTIFF. An output whose
    denoise run has not finished is refused (rerun that command first).

    Examples:
      fluoden export denoised.ome.zarr denoised.ome.tif
      fluoden export denoised.ome.zarr denoised.ome.tif --compression zlib
    """
    from fluoden_batch.io.export import export_tiff

    with errors():
        out.print(f"wrote {export_tiff(image, output, compression=compression, series=series)}")


def info(
    path: Annotated[Path, typer.Argument(help="Array, OME-Zarr image or TIFF.")],
    series: Annotated[int, typer.Option(min=0, help=_SERIES)] = 0,
) -> None:
    """Show shape, dtype, chunks (and shards), axes, scales and any fluoden provenance of
    an image (of a TIFF file that holds several image series: each one's shape and axes)."""
    from fluoden_batch.io import source
    from fluoden_batch.io.store import read_provenance

    with errors():
        source_log = logging.getLogger(source.__name__)
        source_log.addFilter(_no_series_warning)  # the table lists every series
        try:
            src = source.open_image(path, dtypes=None, series=series)
        finally:
            source_log.removeFilter(_no_series_warning)
        table = Table(title=str(path), show_header=False)
        if src.series:
            listed = "; ".join(f"{i}: {s}" for i, s in enumerate(src.series))
            table.add_row("series", f"{listed} (shown: {series}; --series N shows another)")
        table.add_row("shape", str(src.shape))
        table.add_row("dtype", str(src.dtype))
        table.add_row("chunks", str(src.chunks))
        if src.shards is not None:
            table.add_row("shards", str(src.shards))
        axes = src.meta.axes
        if src.spec.order:  # a TIFF stored in another order, read in NGFF's
            stored = "".join(axes[src.spec.order.index(i)] for i in range(len(axes)))
            axes = f"{axes} (stored as {stored}, read in NGFF order)"
        table.add_row("axes", axes)
        table.add_row("scale", str(src.meta.scale))
        table.add_row("units", str(src.meta.units or "-"))
        channels = src.description.channels
        if channels:
            names = [f"{c.name or f'channel {i}'} (#{c.hex})" for i, c in enumerate(channels)]
            table.add_row("channels", ", ".join(names))
        table.add_row("NGFF version", str(src.ngff_version or "-"))
        prov = read_provenance(Path(path))
        if prov:
            table.add_row(
                "written by", f"fluoden-batch {prov.get('version')} ({prov.get('created')})"
            )
            if "model" in prov:
                model = prov["model"]
                table.add_row("model", f"{model['name']} {model['digest'][:19]}")
            table.add_row("complete", str(prov.get("complete")))
        out.print(table)


def _no_series_warning(record: logging.LogRecord) -> bool:
    """Drop the multi-series warning of :mod:`fluoden_batch.io.source` (a log filter)."""
    from fluoden_batch.io.source import SERIES_WARNING

    return record.msg is not SERIES_WARNING


def _chunks(text: str, flag: str) -> tuple[int, int]:
    try:
        sizes = parse_yx(text)
    except ValueError as exc:
        raise FluodenError(f"{flag}: {exc}") from None
    if len(sizes) != 2 or min(sizes) <= 0:
        raise FluodenError(f"{flag}: expected 'Y,X' (two positive integers), got {text!r}")
    return sizes[0], sizes[1]

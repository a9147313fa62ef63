"""The ``fluoden`` command line (typer): thin wrappers over the library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fluoden_batch import __version__
from fluoden_batch.cli_common import errors, out, parse_chunks
from fluoden_batch.cli_denoise import demo, denoise
from fluoden_batch.cli_noise import estimate_noise
from fluoden_batch.cli_segment import segment_command
from fluoden_batch.errors import FluodenError
from fluoden_batch.train.cli import train_command

app = typer.Typer(
    name="fluoden",
    help="Denoise large fluorescence microscopy datasets (Zarr / OME-Zarr / TIFF) in batch "
    "with Dask and DnCNN. Start with `fluoden demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and inspect denoising models (shipped and your own).")
app.add_typer(models_app, name="models")
app.command()(denoise)
app.command()(demo)
app.command("estimate-noise")(estimate_noise)
app.command("segment")(segment_command)
app.command("train")(train_command)


def _version(value: bool) -> None:
    if value:
        out.print(f"fluoden-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Batch denoising of fluorescence microscopy data."""


@app.command()
def ingest(
    tiff: Annotated[Path, typer.Argument(help="TIFF or OME-TIFF stack.")],
    output: Annotated[Path, typer.Argument(help="New OME-Zarr image to write.")],
    chunks: Annotated[str, typer.Option(help="Chunk size in Y/X as 'Y,X'.")] = "512,512",
    ngff_version: Annotated[str, typer.Option(help="NGFF version: 0.5 or 0.4.")] = "0.5",
    axes: Annotated[
        str | None, typer.Option(help="Axis names if the TIFF has none usable, e.g. 'zyx'.")
    ] = None,
) -> None:
    """Convert a TIFF / OME-TIFF stack to an OME-Zarr image (plane by plane)."""
    from fluoden_batch.io.ingest import ingest as do_ingest

    with errors():
        if ngff_version not in ("0.4", "0.5"):
            raise FluodenError(f"--ngff-version {ngff_version!r}: use 0.4 or 0.5")
        path = do_ingest(
            tiff, output, chunks=parse_chunks(chunks), ngff_version=ngff_version, axes=axes
        )
        out.print(f"wrote {path}")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Array, OME-Zarr image or TIFF.")]) -> None:
    """Show shape, dtype, chunks, axes, scales and any fluoden provenance of an image."""
    from fluoden_batch.io.source import open_image
    from fluoden_batch.io.store import read_provenance

    with errors():
        src = open_image(path, dtypes=None)
        table = Table(title=str(path), show_header=False)
        table.add_row("shape", str(src.shape))
        table.add_row("dtype", str(src.dtype))
        table.add_row("chunks", str(src.chunks))
        table.add_row("axes", src.meta.axes)
        table.add_row("scale", str(src.meta.scale))
        table.add_row("units", str(src.meta.units or "-"))
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


@models_app.command("list")
def models_list() -> None:
    """List the shipped models."""
    from fluoden_batch.models.weights import read_metadata, shipped_models

    with errors():
        table = Table("name", "architecture", "protocol", "normalisation", "description")
        for name, path in shipped_models().items():
            m = read_metadata(path)
            arch = f"DnCNN {m.architecture.depth}x{m.architecture.width}"
            table.add_row(name, arch, m.protocol, m.normalisation.method, m.description)
        out.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="Shipped model name or .safetensors path.")],
) -> None:
    """Print a model's metadata (architecture, normalisation, training) as JSON."""
    from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights

    with errors():
        path = resolve_weights(model)
        meta = read_metadata(path)
        out.print_json(data={"path": str(path), "digest": file_digest(path), **meta.model_dump()})


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fluoden")


if __name__ == "__main__":
    sys.exit(main())

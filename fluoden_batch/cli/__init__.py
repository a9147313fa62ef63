"""The ``fluoden`` command line (typer): each command a few lines over one library function.

Flags come from the pydantic configs (:mod:`fluoden_batch.cli.options`), so names,
defaults and help are declared once, in :mod:`fluoden_batch.config`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fluoden_batch import __version__
from fluoden_batch.cli.common import out, paragraphs_help
from fluoden_batch.cli.data import export, info, ingest
from fluoden_batch.cli.denoise import demo, denoise
from fluoden_batch.cli.models import models_app
from fluoden_batch.cli.noise import estimate_noise
from fluoden_batch.cli.profiles import profiles
from fluoden_batch.cli.segment import segment_command
from fluoden_batch.cli.train import train_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="fluoden",
    help="Denoise large fluorescence microscopy datasets (Zarr / OME-Zarr / TIFF) in batch "
    "with Dask and CNN denoisers. Start with `fluoden demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(models_app, name="models")
app.command()(denoise)
app.command()(demo)
app.command("estimate-noise")(estimate_noise)
app.command("segment")(segment_command)
app.command("train")(train_command)
app.command()(ingest)
app.command()(export)
app.command()(info)
app.command()(profiles)
paragraphs_help(app)
paragraphs_help(models_app)


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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fluoden")


if __name__ == "__main__":
    sys.exit(main())

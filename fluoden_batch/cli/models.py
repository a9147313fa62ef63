"""``fluoden models list|show|export``: the shipped models, any weights file's metadata,
and BioImage Model Zoo packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fluoden_batch.cli.common import errors, out

__all__ = ["models_app"]

models_app = typer.Typer(
    help="List and inspect denoising models (shipped and your own); export them to bioimage.io."
)


@models_app.command("list")
def models_list() -> None:
    """List the shipped models."""
    from fluoden_batch.models.weights import read_metadata, shipped_models

    with errors():
        table = Table("name", "architecture", "protocol", "normalisation", "description")
        for name, path in shipped_models().items():
            m = read_metadata(path)
            arch = m.architecture.describe()
            table.add_row(name, arch, m.protocol, m.normalisation.method, m.description)
        out.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[
        str,
        typer.Argument(
            help="Shipped model name, .safetensors path, exported .zip, or the OUTPUT of a "
            "denoise --adapt run (its fitted weights)."
        ),
    ],
) -> None:
    """Print a model's metadata (architecture, normalisation, training) as JSON."""
    from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights

    with errors():
        path = resolve_weights(model)
        meta = read_metadata(path)
        out.print_json(data={"path": str(path), "digest": file_digest(path), **meta.model_dump()})


@models_app.command("export")
def models_export(
    model: Annotated[str, typer.Argument(help="Shipped model name or .safetensors path.")],
    output: Annotated[Path, typer.Argument(help="The bioimage.io package to write (.zip).")],
) -> None:
    """Write a BioImage Model Zoo (bioimage.io) package of a model.

    The package runs without fluoden, in bioimage.io tools that run torchscript or
    pytorch_state_dict weights (tested with bioimageio.core): raw intensities in, denoised
    intensities out, fluoden's per-plane normalisation inside the network.
    `fluoden denoise --model OUT.zip` takes it back. Needs the optional bioimageio.spec
    (the extra 'bioimageio' of fluoden-batch).
    """
    from fluoden_batch.models.bioimageio import export_package

    with errors():
        if output.suffix != ".zip":
            raise typer.BadParameter(f"{output}: the package is a zip; name it *.zip")
        export_package(model, output)
        out.print(f"wrote {output}")

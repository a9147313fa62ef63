"""``fluoden models list|show|export``: the shipped models, any weights file's metadata,
and BioImage Model Zoo packages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fluoden_batch.cli.common import errors, out

__all__ = ["models_app"]

_HELP = "List and inspect denoising models (shipped and your own); export them to bioimage.io."
models_app = typer.Typer(help=_HELP, short_help=_HELP, rich_markup_mode=None)


@models_app.command("list")
def models_list(
    long: Annotated[
        bool,
        typer.Option("--long", "-l", help="Add each model's description (data and recipe)."),
    ] = False,
) -> None:
    """List the shipped models: which is the default, and each one's cost and context.

    Cost: multiply-add FLOPs of one forward pass per output pixel (the default's budget
    is 0.30 MFLOP). Halo: the model's receptive radius, the context each output pixel sees
    and the pixels each block reads around its own. `fluoden models show NAME` prints
    every metadata field (training data, recipe, noise model).
    """
    from fluoden_batch.config import DEFAULT_MASKED_MODEL, DEFAULT_MODEL
    from fluoden_batch.models.weights import build_model, read_metadata, shipped_models

    defaults = {DEFAULT_MODEL: " (default)", DEFAULT_MASKED_MODEL: " (masked default)"}
    with errors():
        columns = ["name", "architecture", "MFLOP/px", "halo (px)", "protocol", "normalisation"]
        table = Table(*columns, *(["description"] if long else []))
        for name, path in shipped_models().items():
            m = read_metadata(path)
            module = build_model(m.architecture)
            row = [
                name + defaults.get(name, ""),
                m.architecture.describe(),
                f"{module.flops_per_pixel() / 1e6:.3f}",
                str(module.receptive_radius),
                m.protocol,
                m.normalisation.method,
            ]
            table.add_row(*row, *([m.description] if long else []))
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

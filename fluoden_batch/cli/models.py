"""``fluoden models list|show``: the shipped models and any weights file's metadata."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fluoden_batch.cli.common import errors, out

__all__ = ["models_app"]

models_app = typer.Typer(help="List and inspect denoising models (shipped and your own).")


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
    model: Annotated[str, typer.Argument(help="Shipped model name or .safetensors path.")],
) -> None:
    """Print a model's metadata (architecture, normalisation, training) as JSON."""
    from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights

    with errors():
        path = resolve_weights(model)
        meta = read_metadata(path)
        out.print_json(data={"path": str(path), "digest": file_digest(path), **meta.model_dump()})

"""``fluoden profiles [NAME]``: the deploy profiles and training configs shipped with fluoden."""

from __future__ import annotations

from typing import Annotated

import typer

from fluoden_batch.cli.common import fail

__all__ = ["profiles"]


def profiles(
    name: Annotated[
        str | None,
        typer.Argument(help="Print this profile or config (e.g. slurm/cpu), to copy and edit."),
    ] = None,
) -> None:
    """List the shipped deploy profiles (--profile NAME) and training configs."""
    from fluoden_batch.resources import (
        Folder,
        describe,
        shipped_configs,
        shipped_folder,
        shipped_profiles,
    )

    found = {"deploy": shipped_profiles(), "configs": shipped_configs()}
    if name is not None:
        path = found["deploy"].get(name) or found["configs"].get(name)
        if path is None:
            known = ", ".join([*found["deploy"], *found["configs"]]) or "none"
            raise fail(f"no shipped profile or config named {name!r} (shipped: {known})")
        typer.echo(path.read_text(), nl=False)
        return
    width = max(map(len, [*found["deploy"], *found["configs"]]), default=0)
    headings: dict[Folder, str] = {
        "deploy": "deploy profiles (fluoden denoise IN OUT --profile NAME)",
        "configs": "training configs (fluoden train FILE)",
    }
    for folder, heading in headings.items():
        typer.echo(f"{heading}, in {shipped_folder(folder)}:")
        for key, path in found[folder].items():
            typer.echo(f"  {key:<{width}}  {describe(path)}")
    typer.echo("`fluoden profiles NAME` prints one, to copy and edit.")

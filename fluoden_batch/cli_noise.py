"""``fluoden estimate-noise``: Poisson-Gaussian (a, b) per plane of an image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fluoden_batch.cli_common import (
    AxesOption,
    console,
    errors,
    out,
)


def estimate_noise(
    input: Annotated[
        Path, typer.Argument(help="Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF.")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per plane) to stdout only.")
    ] = False,
    axes: AxesOption = None,
    max_blocks: Annotated[
        int,
        typer.Option(
            min=1, help="Regions (up to 2048 x 2048 px) estimated per plane, spread over it."
        ),
    ] = 8,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Local Dask worker processes; 0 runs here without Dask (default: here for "
            "up to 16 regions, else one worker per core).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of a running Dask scheduler to use.")
    ] = None,
) -> None:
    """Estimate Poisson-Gaussian noise (a, b) of every Y/X plane: Var(z | y) = a*y + b.

    a is the gain (data units per photo-electron), b the variance at zero signal
    (negative when the data carry an offset). Each plane is cut into regions of at most
    2048 x 2048 pixels; up to --max-blocks of them are estimated (one Dask task each) and
    their level sets pooled into one fit per plane.
    """
    import json

    from fluoden_batch.io.source import open_image
    from fluoden_batch.noise.planes import estimate_planes, plan_tasks

    with errors():
        source = open_image(input, axes)
        n_tasks = len(plan_tasks(source.shape, max_blocks))
        local = scheduler is None and (workers == 0 or (workers is None and n_tasks <= 16))
        if local:
            rows = estimate_planes(source, None, max_blocks)
        else:
            from fluoden_batch.compute import dask_client

            with dask_client(scheduler, workers or None, dashboard_address="127.0.0.1:0") as c:
                console.print(f"{n_tasks} regions on Dask; dashboard: {c.dashboard_link}")
                rows = estimate_planes(source, c, max_blocks)
        if json_output:
            typer.echo(json.dumps(rows, allow_nan=False))
            return
        _print_noise_table(str(input), source.meta.axes, rows)


def _print_noise_table(title: str, axes: str, rows: list[dict[str, Any]]) -> None:
    def num(v: float | None, fmt: str = "{:.4g}") -> str:
        return "-" if v is None else fmt.format(v)

    lead = list(axes[:-2])
    table = Table(*lead, "a", "b", "a_std", "b_std", "n_levels", "blocks", title=title)
    for r in rows:
        cells = [str(r[a]) for a in lead]
        if r["error"] is not None:
            table.add_row(*cells, "-", "-", "-", "-", "0", f"0/{r['blocks_failed']}")
            continue
        used = f"{r['blocks']}/{r['blocks'] + r['blocks_failed']}"
        table.add_row(
            *cells, num(r["a"]), num(r["b"]), num(r["a_std"]), num(r["b_std"]),
            str(r["n_levels"]), used,
        )  # fmt: skip
    out.print(table)
    for r in rows:
        if r["error"] is not None:
            where = ", ".join(f"{a}={r[a]}" for a in lead) or "plane"
            console.print(f"[yellow]{where}:[/] no estimate ({r['error']})", highlight=False)

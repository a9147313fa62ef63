"""``fluoden estimate-noise``: Poisson-Gaussian (a, b) per plane of an image."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from fluoden_batch.cli.common import ConfigFileOption, console, errors, out
from fluoden_batch.cli.options import config_options
from fluoden_batch.config import NoiseConfig

__all__ = ["estimate_noise"]


@config_options(NoiseConfig, arguments=("input",))
def estimate_noise(
    given: dict[str, Any],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per plane) to stdout only.")
    ] = False,
    config: ConfigFileOption = None,
) -> None:
    """Estimate Poisson-Gaussian noise (a, b) of every Y/X plane: Var(z | y) = a*y + b.

    a is the gain (data units per photo-electron), b the variance at zero signal
    (negative when the data carry an offset). Each plane is cut into regions of at most
    2048 x 2048 pixels; up to --max-blocks of them are estimated (one Dask task each on a
    cluster; here for up to 16 regions) and their level sets pooled into one fit per plane.

    Examples:
      fluoden estimate-noise raw.ome.zarr
      fluoden estimate-noise raw.ome.zarr --json > noise.json   # per plane
    """
    import json

    from fluoden_batch.config import load_config
    from fluoden_batch.pipeline.noise import run_estimate_noise
    from fluoden_batch.pipeline.progress import ConsoleReporter

    with errors():
        cfg = load_config(NoiseConfig, config, **given)
        rows = run_estimate_noise(cfg, reporter=ConsoleReporter(console))
        if json_output:
            typer.echo(json.dumps(rows, allow_nan=False))
            return
        _print_noise_table(str(cfg.input), rows)


def _print_noise_table(title: str, rows: list[dict[str, Any]]) -> None:
    def num(v: float | None, fmt: str = "{:.4g}") -> str:
        return "-" if v is None else fmt.format(v)

    lead = [k for k in rows[0] if len(k) == 1 and k in "tcz"] if rows else []
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

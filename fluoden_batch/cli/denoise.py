"""``fluoden denoise`` and ``fluoden demo``: thin wrappers over the denoising run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fluoden_batch.cli.common import ConfigFileOption, console, out, running
from fluoden_batch.cli.options import config_options
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import FluodenError

__all__ = ["demo", "denoise", "print_summary"]


def print_summary(result: Any) -> None:
    """Print a denoising run's summary table to stdout."""
    from fluoden_batch.report import summary_rows

    table = Table(title=f"fluoden: {result.output}", show_header=False)
    for label, value in summary_rows(result.summary):
        table.add_row(label, value)
    table.add_row("metrics table", str(result.output / "metrics.parquet"))
    out.print(table)


def _run(given: dict[str, Any], config_file: Path | None = None) -> Any:
    from fluoden_batch.config import load_config
    from fluoden_batch.pipeline.execution import run_denoise
    from fluoden_batch.pipeline.progress import ConsoleReporter

    cfg = load_config(DenoiseConfig, config_file, **given)
    return run_denoise(cfg, reporter=ConsoleReporter(console))


@config_options(DenoiseConfig, arguments=("input", "output"), short={"clusters": "-k"})
def denoise(
    given: dict[str, Any],
    config: ConfigFileOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --profile: print the job script / cluster spec and stop."
        ),
    ] = False,
) -> None:
    """Denoise every Y/X plane of INPUT into the OME-Zarr OUTPUT.

    Work is split into blocks aligned to the output chunks; each task reads its block with
    a halo, denoises it and writes exactly its own chunks, then a completion marker.
    Rerunning the same command resumes: finished blocks are skipped. Per-block metrics go
    to OUTPUT/metrics.parquet and a summary into OUTPUT's attributes. Small inputs run in
    this process; larger ones on a local Dask cluster (or --scheduler / --profile).

    Examples:
      fluoden denoise raw.ome.zarr denoised.ome.zarr
      fluoden denoise stack.tif out.zarr --reference gt.tif   # + PSNR/SSIM
      fluoden denoise big.zarr out.zarr --profile slurm/cpu --workers 32
      fluoden denoise movie.zarr out.zarr --adapt auto        # fit to it first
      fluoden denoise raw.zarr bm3d.zarr --protocol vst-bm3d  # a classical one
    """
    with running(given["output"]):
        if dry_run:
            _print_dry_run(given)
            return
        print_summary(_run(given, config))


def _print_dry_run(given: dict[str, Any]) -> None:
    from fluoden_batch.compute import dry_run, load_profile, make_security

    if given.get("profile") is None:
        raise FluodenError("--dry-run needs --profile")
    tls = given.get("tls_dir") or (True if given.get("tls") else None)
    text = dry_run(load_profile(given["profile"]), given.get("workers"), make_security(tls))
    out.print(text, highlight=False, soft_wrap=True)


def demo(
    folder: Annotated[
        Path | None,
        typer.Option(help="Where to write the demo data and output (default: a temp folder)."),
    ] = None,
    planes: Annotated[int, typer.Option(help="Number of Z planes.")] = 4,
    size: Annotated[int, typer.Option(help="Plane size in pixels (Y = X).")] = 2048,
    workers: Annotated[
        int | None,
        typer.Option(help=DenoiseConfig.model_fields["workers"].description.capitalize() + "."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help=DenoiseConfig.model_fields["model"].description.capitalize() + "."),
    ] = None,
) -> None:
    """Make a synthetic noisy dataset with its clean reference, denoise it, print the scores.

    The data are fluorescence-like cells and filaments (uint16, 12-bit range) with
    Poisson-Gaussian noise (a=32, b=400), written as OME-Zarr; nothing is downloaded.
    """
    from fluoden_batch.demo import make_demo_dataset

    base = folder or Path(tempfile.mkdtemp(prefix="fluoden-demo-"))
    output = base / "denoised.zarr"
    with running(output):
        console.print(f"writing the demo dataset ({planes} x {size} x {size} uint16) to {base}")
        noisy, clean = make_demo_dataset(base, planes=planes, size=size)
        given = dict(input=noisy, output=output, reference=clean, overwrite=True)
        given |= {k: v for k, v in dict(workers=workers, model=model).items() if v is not None}
        print_summary(_run(given))
        out.print(
            f"denoised image: {output}\nnoisy input: {noisy}\nclean reference: {clean}",
            soft_wrap=True,
        )
        out.print(f"view it: napari --plugin fluoden-batch {output}", soft_wrap=True)

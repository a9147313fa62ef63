"""``fluoden denoise`` and ``fluoden demo``: plan, run on Dask with a progress bar, summarise."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fluoden_batch.cli_common import (
    AxesOption,
    SchedulerOption,
    WorkersOption,
    console,
    errors,
    interrupted,
    out,
    parse_chunks,
    sigterm_as_interrupt,
)
from fluoden_batch.errors import FluodenError


def run_denoise(**flags: Any) -> Any:
    """Plan, run on a Dask cluster with a progress bar, print the summary; returns the result."""
    from distributed import performance_report

    from fluoden_batch.compute import dask_client
    from fluoden_batch.config import build_config
    from fluoden_batch.deploy import gpu_resources, load_profile
    from fluoden_batch.pipeline import execute, plan

    config_file = flags.pop("config", None)
    cfg = build_config(config_file, **flags)
    p = plan(cfg)
    where = "resuming" if p.resumed else "writing"
    console.print(
        f"{where} [bold]{cfg.output}[/]: {len(p.blocks)} blocks of {p.source.shape} "
        f"{p.source.dtype} ({p.source.meta.axes}), {len(p.blocks) - len(p.pending)} already done"
    )
    if p.stray_removed:
        console.print(f"removed {p.stray_removed} temporary files left by an interrupted run")
    for note in p.notes:
        console.print(note.replace("warning:", "[yellow]warning:[/]", 1), highlight=False)
    if not p.pending:
        from fluoden_batch.pipeline import finish

        return finish(p, 0.0, {})
    resources = gpu_resources(load_profile(cfg.profile)) if cfg.profile else None
    with dask_client(
        cfg.scheduler,
        cfg.workers,
        cfg.threads_per_worker,
        cfg.memory_limit,
        cfg.dashboard_address,
        profile=cfg.profile,
        tls=cfg.tls_option,
    ) as client:
        console.print(f"Dask dashboard: {client.dashboard_link}")
        report = (
            performance_report(filename=str(cfg.performance_report))
            if cfg.performance_report
            else contextlib.nullcontext()
        )
        columns = (
            TextColumn("denoising"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeRemainingColumn(),
        )
        with report, Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(
                "blocks", total=len(p.blocks), completed=len(p.blocks) - len(p.pending)
            )
            return execute(
                p,
                client,
                on_block=lambda done, total: bar.update(task, completed=done),
                resources=resources,
            )


def print_summary(result: Any) -> None:
    """Print the run's summary table to stdout."""
    from fluoden_batch.report import summary_rows

    table = Table(title=f"fluoden: {result.output}", show_header=False)
    for label, value in summary_rows(result.summary):
        table.add_row(label, value)
    table.add_row("metrics table", str(result.output / "metrics.parquet"))
    out.print(table)


def denoise(
    input: Annotated[
        Path, typer.Argument(help="Input: Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF.")
    ],
    output: Annotated[
        Path, typer.Argument(help="Output OME-Zarr image (created; or resumed if it exists).")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Shipped model name or path to a .safetensors file (default: dncnn-fmd; "
            "with --protocol masked: dncnn-small-masked where it is installed)."
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="whole|vst|masked (default: whole). whole: the model sees normalised raw "
            "intensities; vst: generalized Anscombe transform with one (a, b) per channel "
            "estimated from the data, the model, then the exact unbiased inverse; masked: "
            "pixels are labelled by the nearest of K intensity centres (fitted once per "
            "channel) on the smoothed plane, each cluster is denoised with everything else "
            "set to the smoothed plane clipped to the cluster's intensity band, and each "
            "pixel comes from its own cluster's pass (K passes per plane)."
        ),
    ] = None,
    clusters: Annotated[
        int | None,
        typer.Option(
            help="Number of intensity clusters K, 1 to 16, for --protocol masked and "
            "--save-labels; K = 1 is the whole protocol (default: 3)."
        ),
    ] = None,
    mask_sigma: Annotated[
        float | None,
        typer.Option(
            help="Gaussian smoothing (sigma, pixels, >= 0) of the plane before labelling, so "
            "masks do not break into speckle where noise straddles two centres; 0 = none; "
            "each block reads about 4 sigma more halo (default: 2.0)."
        ),
    ] = None,
    cluster_backend: Annotated[
        str | None,
        typer.Option(
            help="Where the K-means centres are fitted: auto (cuML when it imports and a GPU "
            "is present, else scikit-learn), gpu (cuML or an error) or cpu (scikit-learn); "
            "the centres are stored, so the output does not depend on it (default: auto)."
        ),
    ] = None,
    save_labels: Annotated[
        bool,
        typer.Option(
            "--save-labels",
            help="Also write the cluster labels (0 = darkest) as the NGFF label image "
            "OUTPUT/labels/clusters, with cluster sizes and scores per block in the metrics.",
        ),
    ] = False,
    reference: Annotated[
        Path | None,
        typer.Option(help="Clean array of the same shape: adds PSNR/SSIM to the metrics."),
    ] = None,
    data_range: Annotated[
        float | None,
        typer.Option(help="Peak-to-peak range for PSNR/SSIM (default: the reference's range)."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="Output dtype: same|uint8|uint16|float32|float64 (default: same)."),
    ] = None,
    chunks: Annotated[
        str | None, typer.Option(help="Output chunk size in Y/X as 'Y,X' (default: the input's).")
    ] = None,
    block_min: Annotated[
        int | None,
        typer.Option(
            help="Smallest block (task) size in Y/X, in pixels; whole chunks are grouped."
        ),
    ] = None,
    tile: Annotated[
        int | None, typer.Option(help="Forward-pass tile size in pixels (default: 384).")
    ] = None,
    ngff_version: Annotated[
        str | None, typer.Option(help="Output NGFF version: 0.5 (default) or 0.4 (Fiji).")
    ] = None,
    axes: AxesOption = None,
    workers: WorkersOption = None,
    threads_per_worker: Annotated[
        int | None, typer.Option(help="Threads (and torch threads) per worker (default: 1).")
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="Memory limit per local worker, e.g. '4GiB'.")
    ] = None,
    scheduler: SchedulerOption = None,
    dashboard_address: Annotated[
        str | None,
        typer.Option(help="Dashboard address of the local cluster (default: 127.0.0.1:8787)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device: auto|cpu|cuda|cuda:N (default: auto).")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32 (default), or bf16/fp16 autocast on CUDA (faster, less exact)."),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Test-time augmentation: average each plane's result over its 8 flips and "
            "rotations. 8x the model time; usually a few tenths of a dB better "
            "(see README).",
        ),
    ] = False,
    performance_report: Annotated[
        Path | None, typer.Option(help="Write a Dask performance report (HTML) here.")
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Deploy profile (YAML) starting a local, local-cuda, SLURM or Kubernetes "
            "Dask cluster; see deploy/."
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Encrypt Dask traffic with temporary certificates."),
    ] = False,
    tls_dir: Annotated[
        Path | None,
        typer.Option(help="Directory with ca.pem, cert.pem, key.pem for TLS between all parts."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --profile: print the job script / cluster spec and stop."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUT written with other parameters.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML or YAML file with any of these options (flags override it)."),
    ] = None,
) -> None:
    """Denoise every Y/X plane of INPUT into the OME-Zarr OUTPUT.

    Work is split into blocks aligned to the output chunks; each Dask task reads its block
    with a halo, denoises it and writes exactly its own chunks, then a completion marker.
    Rerunning the same command resumes: finished blocks are skipped. Per-block metrics
    go to OUTPUT/metrics.parquet and a summary into OUTPUT's attributes.
    """
    sigterm_as_interrupt()
    with errors():
        if dry_run:
            _print_dry_run(profile, workers, tls_dir or (True if tls else None))
            return
        chunk_tuple = parse_chunks(chunks) if chunks else None
        try:
            result = run_denoise(
                input=input,
                output=output,
                model=model,
                protocol=protocol,
                clusters=clusters,
                mask_sigma=mask_sigma,
                cluster_backend=cluster_backend,
                save_labels=save_labels or None,
                reference=reference,
                data_range=data_range,
                dtype=dtype,
                chunks=chunk_tuple,
                block_min=block_min,
                tile=tile,
                ngff_version=ngff_version,
                axes=axes,
                workers=workers,
                threads_per_worker=threads_per_worker,
                memory_limit=memory_limit,
                scheduler=scheduler,
                dashboard_address=dashboard_address,
                device=device,
                precision=precision,
                tta=tta or None,
                performance_report=performance_report,
                overwrite=overwrite or None,
                config=config,
                profile=profile,
                tls=tls or None,
                tls_dir=tls_dir,
            )
        except KeyboardInterrupt:
            raise interrupted(output) from None
        print_summary(result)


def _print_dry_run(profile: Path | None, workers: int | None, tls: bool | Path | None) -> None:
    from fluoden_batch.deploy import dry_run, load_profile
    from fluoden_batch.security import make_security

    if profile is None:
        raise FluodenError("--dry-run needs --profile")
    out.print(
        dry_run(load_profile(profile), workers, make_security(tls)), highlight=False, soft_wrap=True
    )


def demo(
    folder: Annotated[
        Path | None,
        typer.Option(help="Where to write the demo data and output (default: a temp folder)."),
    ] = None,
    planes: Annotated[int, typer.Option(help="Number of Z planes.")] = 4,
    size: Annotated[int, typer.Option(help="Plane size in pixels (Y = X).")] = 2048,
    workers: WorkersOption = None,
    model: Annotated[str | None, typer.Option(help="Model name or weights path.")] = None,
) -> None:
    """Make a synthetic noisy dataset with its clean reference, denoise it, print the scores.

    The data are fluorescence-like cells and filaments (uint16, 12-bit range) with
    Poisson-Gaussian noise (a=32, b=400), written as OME-Zarr; nothing is downloaded.
    """
    from fluoden_batch.demo import make_demo_dataset

    sigterm_as_interrupt()
    with errors():
        base = folder or Path(tempfile.mkdtemp(prefix="fluoden-demo-"))
        console.print(f"writing the demo dataset ({planes} x {size} x {size} uint16) to {base}")
        noisy, clean = make_demo_dataset(base, planes=planes, size=size)
        output = base / "denoised.zarr"
        try:
            result = run_denoise(
                input=noisy,
                output=output,
                reference=clean,
                workers=workers,
                model=model,
                overwrite=True,
            )
        except KeyboardInterrupt:
            raise interrupted(output) from None
        print_summary(result)
        out.print(
            f"denoised image: {output}\nnoisy input: {noisy}\nclean reference: {clean}",
            soft_wrap=True,
        )
        out.print(f"view it: napari --plugin napari-ome-zarr {output}", soft_wrap=True)

"""The ``fluoden segment`` command (registered in :mod:`fluoden_batch.cli` with
``app.command("segment")(segment_command)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fluoden_batch.cli_common import (
    AxesOption,
    SchedulerOption,
    WorkersOption,
    console,
    errors,
    fail,
    interrupted,
    out,
    sigterm_as_interrupt,
)


def segment_command(
    input: Annotated[
        Path, typer.Argument(help="Input: Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF.")
    ],
    output: Annotated[
        Path,
        typer.Argument(help="Output OME-Zarr label image (created; or resumed if it exists)."),
    ],
    method: Annotated[
        str,
        typer.Option(
            help="kmeans (seam-free: centres fitted once per channel), dbscan or hdbscan "
            "(clustered per block: labels can change at block borders)."
        ),
    ] = "kmeans",
    k: Annotated[int, typer.Option("--k", "-k", help="K-means: number of clusters.")] = 3,
    eps: Annotated[
        float | None,
        typer.Option(
            help="DBSCAN radius in standard deviations of the block's intensities "
            "(default: automatic, from the k-distance knee)."
        ),
    ] = None,
    min_samples: Annotated[
        int | None,
        typer.Option(
            help="DBSCAN: pixels a core point's neighbourhood must hold; HDBSCAN: neighbours "
            "for the core distance (default: from the block size)."
        ),
    ] = None,
    min_cluster_size: Annotated[
        int | None,
        typer.Option(help="HDBSCAN: smallest cluster, in sampled points (default: 2% of them)."),
    ] = None,
    backend: Annotated[  # named like denoise's option and select_backend's reason
        str,
        typer.Option(
            "--cluster-backend",
            help="auto (cuML when it imports and a GPU is present, else scikit-learn), "
            "gpu (cuML or an error) or cpu (scikit-learn).",
        ),
    ] = "auto",
    block_min: Annotated[
        int,
        typer.Option(
            help="Smallest block (task) size in Y/X, in pixels; whole chunks are grouped."
        ),
    ] = 512,
    ngff_version: Annotated[
        str, typer.Option(help="Output NGFF version: 0.5 (default) or 0.4 (Fiji).")
    ] = "0.5",
    axes: AxesOption = None,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    dashboard_address: Annotated[
        str, typer.Option(help="Dashboard address of the local cluster.")
    ] = "127.0.0.1:8787",
    quality: Annotated[
        bool,
        typer.Option(
            "--quality/--no-quality",
            help="Score every block (silhouette, Davies-Bouldin, WSS) in the metrics table.",
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUT written with other parameters.")
    ] = False,
) -> None:
    """Segment every Y/X plane of INPUT by clustering its pixels into the label image OUTPUT.

    OUTPUT is an OME-Zarr label image (int32, 0 = darkest cluster, -1 = noise) with the
    input's axes, scales and chunks. Each Dask task labels one block and writes exactly
    its own chunks, then a completion marker; rerunning the same command resumes.
    Per-block cluster sizes and quality scores go to OUTPUT/metrics.parquet.
    """
    from pydantic import ValidationError

    from fluoden_batch.segment import SegmentConfig

    sigterm_as_interrupt()
    flags = dict(locals())
    flags = {k: flags[k] for k in SegmentConfig.model_fields if k in flags}
    try:
        cfg = SegmentConfig(**flags)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(problems.replace("_", "-")) from None
    with errors():
        try:
            result = run_segment(cfg)
        except KeyboardInterrupt:
            raise interrupted(output) from None
        print_segment_summary(result)


def run_segment(cfg: Any) -> Any:
    """Plan, print the backend, run on a Dask cluster with a progress bar; the result."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from fluoden_batch.compute import dask_client
    from fluoden_batch.segment import execute_segment, finish_segment, plan_segment

    p = plan_segment(cfg)
    console.print(f"clustering backend: {p.backend_reason}", highlight=False)
    where = "resuming" if p.resumed else "writing"
    console.print(
        f"{where} [bold]{cfg.output}[/]: {len(p.blocks)} blocks of {p.source.shape} "
        f"({p.source.meta.axes}), {len(p.blocks) - len(p.pending)} already done"
    )
    for note in p.notes:
        console.print(note, highlight=False)
    if not p.pending:
        return finish_segment(p, 0.0, {})
    with dask_client(cfg.scheduler, cfg.workers, 1, "auto", cfg.dashboard_address) as client:
        console.print(f"Dask dashboard: {client.dashboard_link}")
        columns = (
            TextColumn(f"segmenting ({cfg.method})"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(
                "blocks", total=len(p.blocks), completed=len(p.blocks) - len(p.pending)
            )
            return execute_segment(
                p, client, on_block=lambda done, total: bar.update(task, completed=done)
            )


def print_segment_summary(result: Any) -> None:
    """Print the run's summary table to stdout."""
    from rich.table import Table

    s = result.summary

    def fmt(key: str, spec: str) -> str:
        value = s.get(key)
        return "n/a" if value is None else format(value, spec)

    table = Table(title=f"fluoden segment: {result.output}", show_header=False)
    table.add_row(
        "blocks",
        f"{s.get('blocks', 0)} of {result.blocks_total} "
        f"({result.blocks_run} run, {result.blocks_skipped} skipped)",
    )
    table.add_row("clusters (most in a block)", fmt("max_clusters", "d"))
    table.add_row("mean silhouette", fmt("mean_silhouette", ".3f"))
    table.add_row("mean Davies-Bouldin", fmt("mean_davies_bouldin", ".3f"))
    table.add_row("mean WSS", fmt("mean_wss", ".4g"))
    table.add_row("seconds (wall)", f"{result.seconds:.1f}")
    table.add_row("metrics table", str(result.output / "metrics.parquet"))
    out.print(table)

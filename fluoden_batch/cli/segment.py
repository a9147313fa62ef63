"""The ``fluoden segment`` command (registered in :mod:`fluoden_batch.cli` with
``app.command("segment")(segment_command)``)."""

from __future__ import annotations

from typing import Any

from fluoden_batch.cli.common import ConfigFileOption, console, out, running
from fluoden_batch.cli.options import config_options
from fluoden_batch.config import SegmentConfig

__all__ = ["print_segment_summary", "segment_command"]


@config_options(SegmentConfig, arguments=("input", "output"), short={"clusters": "-k"})
def segment_command(
    given: dict[str, Any],
    config: ConfigFileOption = None,
) -> None:
    """Segment every Y/X plane of INPUT by clustering its pixels into the label image
    OUTPUT/labels/clusters.

    OUTPUT is an OME-Zarr image, a copy of INPUT (its axes, scales and chunks), with the
    labels registered under it as NGFF label images (int32, 0 = darkest cluster, -1 =
    noise; one per channel, clusters-c0, clusters-c1, ..., for more than one), each with
    a multiscale pyramid. Each task labels one block and writes exactly its own chunks,
    then a completion marker; rerunning the same command resumes. Per-block
    cluster sizes and quality scores go to OUTPUT/metrics.parquet. Small inputs run in
    this process; larger ones on a local Dask cluster (or --scheduler / --profile).

    Examples:
      fluoden segment raw.ome.zarr labels.ome.zarr -k 3
      fluoden segment raw.ome.zarr labels.ome.zarr --method hdbscan
      napari --plugin fluoden-batch labels.ome.zarr   # the image and labels
    """
    from fluoden_batch.config import load_config
    from fluoden_batch.pipeline.progress import ConsoleReporter
    from fluoden_batch.pipeline.segment import run_segment

    with running(given["output"]):
        cfg = load_config(SegmentConfig, config, **given)
        print_segment_summary(run_segment(cfg, reporter=ConsoleReporter(console)))


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

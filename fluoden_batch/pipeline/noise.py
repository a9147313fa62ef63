"""``estimate-noise``: Poisson-Gaussian ``(a, b)`` of every Y/X plane, region by region.

The regions of each plane (:func:`~fluoden_batch.noise.planes.plan_tasks`) are estimated
one Dask task each when there is a client, or here one after the other; their level sets
are pooled per plane (:func:`~fluoden_batch.noise.planes.plane_rows`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distributed import Client

from fluoden_batch.config import NoiseConfig
from fluoden_batch.errors import NoiseEstimationError
from fluoden_batch.io.source import ImageSource, SourceSpec, open_image
from fluoden_batch.noise.estimate import NoiseEstimate
from fluoden_batch.noise.planes import (
    DEFAULT_MAX_BLOCKS,
    REGION_SIDE,
    Region,
    estimate_region,
    plan_tasks,
    plane_rows,
)
from fluoden_batch.pipeline.execution import client_for
from fluoden_batch.pipeline.progress import Reporter

__all__ = ["estimate_array", "estimate_planes", "run_estimate_noise"]

IN_PROCESS_REGIONS = 16  # without a cluster asked for, this many regions run here


def _estimate_task(task: tuple[tuple[int, ...], Region], spec: SourceSpec) -> NoiseEstimate | str:
    """Dask task: reopen the input on the worker and estimate one region."""
    return estimate_region(spec.open(), task[1])


def estimate_planes(
    source: ImageSource | str | Path,
    client: Client | None = None,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    *,
    axes: str | None = None,
    side: int = REGION_SIDE,
) -> list[dict[str, Any]]:
    """Poisson-Gaussian ``(a, b)`` of every Y/X plane of an image.

    Parameters
    ----------
    source : ImageSource or path
        An opened input (:func:`fluoden_batch.io.source.open_image`) or the path of a
        Zarr array, an OME-Zarr image or a TIFF file (``axes`` for arrays without them).
    client : distributed.Client, optional
        Run one task per (plane, region) on this Dask cluster; without one, everything
        runs here, one region after the other.
    max_blocks : int
        Regions (of at most ``side`` x ``side`` pixels) estimated per plane, spread
        evenly over it; their level sets are pooled.
    side : int
        Largest region side in pixels.

    Returns
    -------
    list of dict
        One row per plane (:func:`~fluoden_batch.noise.planes.plane_rows`).
    """
    if not isinstance(source, ImageSource):
        source = open_image(source, axes)
    if client is None:
        return estimate_array(source.array, source.meta.axes, max_blocks, side=side)
    tasks = plan_tasks(source.shape, max_blocks, side)
    futures = client.map(_estimate_task, tasks, spec=source.spec, pure=False)
    return plane_rows(source.meta.axes, source.shape, tasks, client.gather(futures))


def estimate_array(
    array: Any, axes: str, max_blocks: int = DEFAULT_MAX_BLOCKS, *, side: int = REGION_SIDE
) -> list[dict[str, Any]]:
    """:func:`estimate_planes` of an array (Zarr, NumPy) with axes ``axes``, here, one
    region after the other."""
    tasks = plan_tasks(array.shape, max_blocks, side)
    results = [estimate_region(array, region) for _, region in tasks]
    return plane_rows(axes, array.shape, tasks, results)


def run_estimate_noise(
    cfg: NoiseConfig, *, client: Client | None = None, reporter: Reporter | None = None
) -> list[dict[str, Any]]:
    """Open ``cfg.input`` and estimate every plane: on ``client``, on a cluster from
    ``cfg``'s compute options, or here (up to ``IN_PROCESS_REGIONS`` regions when no
    cluster is asked for).

    Raises
    ------
    NoiseEstimationError
        No plane has an estimate (every one unreadable, too flat or too small), naming
        the input and the first plane's reason; planes that fail among others that do
        not are rows with an ``error``.
    """
    reporter = reporter or Reporter()
    source = open_image(cfg.input, cfg.axes, series=cfg.series)
    n_tasks = len(plan_tasks(source.shape, cfg.max_blocks))
    small = 0 if n_tasks <= IN_PROCESS_REGIONS else n_tasks
    with client_for(cfg, small, client) as c:
        if c is not None:
            reporter.dashboard(c.dashboard_link)
        rows = estimate_planes(source, c, cfg.max_blocks)
    if all(r["error"] is not None for r in rows):
        first = rows[0]
        where = ", ".join(f"{a}={first[a]}" for a in source.meta.axes[:-2]) or "the plane"
        raise NoiseEstimationError(
            f"{source.spec.describe()}: no estimate for any of its {len(rows)} plane(s) "
            f"({where}: {first['error']})"
        )
    return rows

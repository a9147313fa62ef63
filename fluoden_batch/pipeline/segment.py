"""``fluoden segment IN OUT``: clustering segmentation of a large image, block by block.

K-means has no seams: the cluster centres are fitted once per channel at planning (per
group of similar planes where a channel's planes differ in their noise, as ``fluoden
denoise`` plans them: :mod:`~fluoden_batch.pipeline.groups`), on the
pooled intensities of a deterministic spread of blocks, and stored in OUT's provenance;
each task then gives every pixel the label of its nearest centre (labels ordered by
increasing intensity, 0 = darkest). A pixel's label does not depend on its block.
DBSCAN and HDBSCAN cluster each Y/X plane of each block on its own
(:func:`~fluoden_batch.clustering.cluster_image`), so labels can change at block borders.

OUT is an OME-Zarr image: a copy of the input's intensities (its axes, scales, chunks and
channel metadata) with the labels registered under it as NGFF label images (int32, -1 =
noise): ``OUT/labels/clusters``, or ``clusters-c0``, ``clusters-c1``, ... for more than one
channel (:mod:`fluoden_batch.io.labels` says why label images have no channel axis). The
input is never written, so the labels need an image of their own to live under; a viewer
opens OUT with both. Every image gets a pyramid (:mod:`fluoden_batch.pipeline.pyramid`);
OUT also holds provenance, per-block markers and ``metrics.parquet``.
The block task lives in :mod:`~fluoden_batch.pipeline.segment_worker`, so that a worker
imports neither torch nor the planning side.

:func:`segment_array` labels a NumPy or Dask array with the same plan (centres, groups,
blocks), array in, labels out, nothing written.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from distributed import Client

from fluoden_batch import __version__
from fluoden_batch.clustering import select_backend
from fluoden_batch.config.segment import SegmentConfig, SegmentOptions
from fluoden_batch.io import store
from fluoden_batch.io.labels import create_label_images, label_names, label_set, set_image_label
from fluoden_batch.io.lock import OutputLock
from fluoden_batch.io.source import ImageSource, open_image
from fluoden_batch.io.sparse import check_stored
from fluoden_batch.pipeline.arrays import array_axes, default_chunks, map_planned_blocks
from fluoden_batch.pipeline.execution import run_planned
from fluoden_batch.pipeline.groups import PlaneGroups, group_part, plane_groups, stored_rows
from fluoden_batch.pipeline.progress import Reporter
from fluoden_batch.pipeline.run import RunResult, run_plan
from fluoden_batch.pipeline.segment_worker import SegmentJob, label_planes, segment_block
from fluoden_batch.pipeline.statistics import channel_centres
from fluoden_batch.restore.tiles import Block, BlockGrid, block_shape, plan_blocks

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.parquet"
LABELS = "clusters"  # OUT/labels/clusters (clusters-c0, ... per channel)


@dataclass
class SegmentPlan:
    """A validated run: the job, all blocks, those still to do, the backend reason, and
    OUT's lock (held until the run ends)."""

    config: SegmentConfig
    source: ImageSource
    job: SegmentJob
    blocks: BlockGrid
    pending: BlockGrid
    resumed: bool
    token: str
    backend_reason: str
    lock: OutputLock
    notes: list[str] = field(default_factory=list)


def plan_segment(cfg: SegmentConfig) -> SegmentPlan:
    """Validate, pick the backend, fit K-means centres, create or reopen OUT, list blocks."""
    source = open_image(cfg.input, cfg.axes, series=cfg.series)
    stored: list[str] = []  # the warning of a small, sparse input
    check_stored(source, cfg.allow_sparse, stored)
    out = store.check_output_path(cfg.output, [cfg.input])
    engine, reason = select_backend(cfg.cluster_backend)
    resolved = "gpu" if engine.name == "cuml" else "cpu"
    shards = store.output_shards(source.shards, cfg.ngff_version, None, stored)
    grid = shards or source.chunks  # a task writes whole shards
    blocks = plan_blocks(source.shape, block_shape(source.shape, grid, cfg.block_min))
    params = cfg.output_parameters()
    if shards is not None:
        params["shards"] = list(shards)
    centres, groups, grouped = None, None, []
    if cfg.method == "kmeans":
        centres = store.stored_parameter(out, params, "centres", cfg.overwrite)
        old_groups = stored_rows(store.stored_parameter(out, params, "plane_groups", cfg.overwrite))
        # an OUT fitted per channel (before groups existed) is resumed so
        if cfg.plane_groups == "auto" and not (centres and not old_groups):
            groups = plane_groups(source.array, source.meta.axes, grouped, old_groups)
        centres = centres or _fit_centres(
            source.array, source.meta.axes, blocks, cfg.clusters, resolved, groups
        )
        params["centres"] = centres
        if groups is not None:
            params["plane_groups"] = list(groups.rows)
    spec, resumed, lock = _open_or_create(cfg, out, source, params, shards)
    spec.clean_temporaries()
    cluster = _cluster_keywords(cfg, resolved)
    fixed = None if centres is None else tuple(tuple(c) for c in centres)
    labels = label_set(out, LABELS, source.meta.axes, source.shape, lock.token)
    job = SegmentJob(
        source.spec, spec, labels, source.meta.axes, cluster, fixed, cfg.quality, groups
    )
    note = f"{cfg.method} clusters each block alone: labels can change at block borders"
    notes = [*grouped, _centres_note(centres, groups) if centres else note, *stored]
    pending = blocks.without(spec.done_ids())
    token = hashlib.sha1(f"{out}{sorted(params.items())}".encode()).hexdigest()[:10]
    return SegmentPlan(cfg, source, job, blocks, pending, resumed, token, reason, lock, notes)


def _cluster_keywords(options: SegmentOptions, backend: str) -> dict[str, Any]:
    """:func:`~fluoden_batch.clustering.cluster_image`'s keywords (``backend``: the choice
    resolved at planning, ``gpu`` or ``cpu``; seed 0)."""
    keys = ("method", "eps", "min_samples", "min_cluster_size")
    cluster = {k: getattr(options, k) for k in keys}
    return cluster | {"k": options.clusters, "backend": backend, "seed": 0}


def _centres_note(centres: list, groups: PlaneGroups | None) -> str:
    text = "; ".join(", ".join(f"{v:.4g}" for v in c) for c in centres)
    per = "per group" if groups is not None else "per channel"
    return f"K-means centres {per} (seam-free): {text}"


def _fit_centres(
    array: Any, axes: str, blocks: BlockGrid, k: int, backend: str, groups: PlaneGroups | None
) -> list:
    """K-means centres per channel, or per plane group (each fitted as a run over its
    planes alone, as ``fluoden denoise`` plans groups), as JSON lists
    (:func:`~fluoden_batch.pipeline.statistics.channel_centres`)."""
    if groups is None:
        return [list(c) for c in channel_centres(array, axes, blocks, k, backend)]
    fitted = []
    for row in range(groups.count):
        part, part_blocks = group_part(array, groups, row, blocks.bshape)
        fitted.append(list(channel_centres(part, "zyx", part_blocks, k, backend)[0]))
    return fitted


def segment_array(
    array: Any, options: SegmentOptions, chunks: tuple[int, ...] | None = None
) -> np.ndarray | da.Array:
    """Label every Y/X plane of a NumPy or Dask array by clustering its pixels.

    The plan is a store run's (:func:`plan_segment`): K-means centres fitted per channel
    (or plane group) on the same spread of blocks, DBSCAN/HDBSCAN per block, the blocks
    from the array's chunks (a NumPy array: one plane per chunk) and ``block_min``; so an
    array gives the labels a store with the same chunks gives.

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array, shape (..., Y, X)
        The image (a dtype the store path reads), axes ``options.axes`` or the last
        ``ndim`` letters of ``tczyx``.
    options : SegmentOptions
        Method, clusters, backend ... as for a store run.
    chunks : tuple of int, optional
        The chunks the blocks are planned on, as a store's (e.g. those of the store a
        NumPy array was read from). Default: a Dask array's, one plane for NumPy.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        int32 labels of ``array``'s shape (0 = darkest cluster for K-means, -1 = noise for
        DBSCAN/HDBSCAN). NumPy in, NumPy out; Dask in, a lazy Dask array (one task per
        block).

    Notes
    -----
    The planning notes (the centres, the plane groups) go to this module's logger at INFO
    (warnings at WARNING).
    """
    axes = array_axes(array, options.axes)
    engine, _ = select_backend(options.cluster_backend)
    backend = "gpu" if engine.name == "cuml" else "cpu"
    chunks = chunks or default_chunks(array)
    blocks = plan_blocks(array.shape, block_shape(array.shape, chunks, options.block_min))
    notes: list[str] = []
    centres, groups = None, None
    if options.method == "kmeans":
        if options.plane_groups == "auto":
            groups = plane_groups(array, axes, notes)
        centres = _fit_centres(array, axes, blocks, options.clusters, backend, groups)
        notes.append(_centres_note(centres, groups))
    for note in notes:
        (log.warning if note.startswith("warning") else log.info)(note)
    fixed = None if centres is None else tuple(tuple(c) for c in centres)
    cluster = _cluster_keywords(options, backend)
    job = SegmentJob(None, None, None, axes, cluster, fixed, False, groups)
    return map_planned_blocks(
        array, blocks, np.int32, _labels, lambda block: (job, block, array[block.slices])
    )


def _labels(job: SegmentJob, block: Block, data: Any) -> np.ndarray:
    """One block's labels (:func:`~fluoden_batch.pipeline.segment_worker.label_planes`)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return label_planes(block, np.asarray(data), job)[0]


def _open_or_create(
    cfg: SegmentConfig,
    out: Path,
    source: ImageSource,
    params: dict[str, Any],
    shards: tuple[int, ...] | None,
) -> tuple[store.OutputSpec, bool, OutputLock]:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    provenance = dict(tool="fluoden-batch", version=__version__, command="segment")
    provenance |= dict(created=created, parameters=params, complete=False)
    meta, shape, chunks, version = source.meta, source.shape, source.chunks, cfg.ngff_version
    levels = cfg.pyramid_levels(shape)

    def create(owner: str) -> store.OutputSpec:
        spec = store.create_output(
            out, meta, shape, chunks, source.dtype, version, provenance, owner, levels, shards
        )
        create_label_images(
            out, LABELS, meta, shape, chunks, version, cfg.clusters,
            dtype="int32", levels=levels, noise=True, owner=owner, shards=shards,
        )  # fmt: skip
        return spec

    return store.open_output(out, params, cfg.overwrite, create)


def execute_segment(
    p: SegmentPlan,
    client: Client | None,
    reporter: Reporter | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Run the pending blocks (on ``client``, or here when None), each reported to
    ``reporter``, then the pyramid phase. Failures do not stop the others: they are raised
    together as a :class:`BlockError` after the metrics."""
    prefix = "fluoden-segment"
    return run_plan(p, client, segment_block, finish_segment, prefix, reporter, resources)


def run_segment(
    cfg: SegmentConfig, *, client: Client | None = None, reporter: Reporter | None = None
) -> RunResult:
    """Plan a segmentation, report it, run its blocks (on ``client``, a cluster from
    ``cfg``'s compute options, or here for small inputs) and finish."""
    p = plan_segment(cfg)
    p.notes.insert(0, f"clustering backend: {p.backend_reason}")
    label = f"segmenting ({cfg.method})"
    return run_planned(
        p, execute_segment, finish_segment, label=label, client=client, reporter=reporter
    )


def finish_segment(p: SegmentPlan, seconds: float, failed: dict[str, str]) -> RunResult:
    """Write metrics.parquet, the colours for every label seen, and the summary."""
    p.job.output.check_owner()
    out = Path(p.job.output.path)
    ran = p.pending.without(failed)
    metrics = pd.DataFrame(list(p.job.output.done_rows().values()))
    summary: dict[str, Any] = {"blocks": len(metrics), "blocks_total": len(p.blocks)}
    if not metrics.empty:
        order = metrics["block"].map(lambda s: tuple(int(i) for i in s.split(".")))
        metrics = metrics.iloc[sorted(range(len(order)), key=order.__getitem__)]
        metrics = metrics.reset_index(drop=True)
        metrics.to_parquet(out / METRICS_FILE, index=False)
        summary["max_clusters"] = int(metrics["n_clusters"].max())
        scores = [c for c in ("silhouette", "davies_bouldin", "wss", "seconds") if c in metrics]
        summary |= {f"mean_{c}": float(metrics[c].mean()) for c in scores}
        n_labels = max(p.config.clusters, summary["max_clusters"])
        for name in label_names(LABELS, p.source.meta.axes, p.source.shape):
            set_image_label(out / "labels" / name, p.config.ngff_version, n_labels)
    summary = {k: None if v != v else v for k, v in summary.items()}  # NaN -> null in JSON
    last_run = dict(finished=datetime.now(UTC).isoformat(timespec="seconds"), failed=failed)
    last_run |= dict(config=p.config.model_dump(mode="json"), backend=p.backend_reason)
    complete = len(metrics) == len(p.blocks) and not failed
    store.update_provenance(out, summary=summary, complete=complete, last_run=last_run)
    skipped = len(p.blocks) - len(p.pending)
    return RunResult(out, len(p.blocks), len(ran), skipped, seconds, metrics, summary, failed)

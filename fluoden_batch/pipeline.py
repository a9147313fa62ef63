"""``fluoden denoise`` end to end: validate, plan, skip finished blocks, submit, gather.

The pipeline talks to a :class:`distributed.Client` only; :mod:`fluoden_batch.compute`
decides where the workers run.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client

from fluoden_batch import __version__
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import InputError
from fluoden_batch.io.labels import create_label_image
from fluoden_batch.io.source import ImageSource, open_image
from fluoden_batch.io.store import (
    OutputSpec,
    check_output_path,
    create_output,
    resume_or_clear,
    update_provenance,
)
from fluoden_batch.models.weights import file_digest, read_metadata, resolve_weights
from fluoden_batch.planning import choose_model, cluster_centres, planned_noise
from fluoden_batch.report import summarise
from fluoden_batch.restore.block import JobSpec, process_block
from fluoden_batch.restore.sampling import channel_ranges, peak_to_peak
from fluoden_batch.restore.tiles import Block, block_shape, plan_blocks
from fluoden_batch.submit import ProgressHook, block_error, run_blocks

METRICS_FILE = "metrics.parquet"
LABELS = "clusters"  # --save-labels writes OUT/labels/clusters


@dataclass
class Plan:
    """A validated run: the job every task gets, all blocks, and those still to do."""

    config: DenoiseConfig
    source: ImageSource
    job: JobSpec
    blocks: list[Block]
    pending: list[Block]
    resumed: bool
    token: str
    stray_removed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """What a run did: counts, failures, the metrics table and its summary."""

    output: Path
    blocks_total: int
    blocks_run: int
    blocks_skipped: int
    seconds: float
    metrics: pd.DataFrame
    summary: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)


def _output_dtype(cfg: DenoiseConfig, source: ImageSource) -> np.dtype:
    return source.dtype if cfg.dtype == "same" else np.dtype(cfg.dtype)


def _output_chunks(cfg: DenoiseConfig, source: ImageSource) -> tuple[int, ...]:
    if cfg.chunks is None:
        return source.chunks
    return (1,) * (len(source.shape) - 2) + tuple(cfg.chunks)


def plan(cfg: DenoiseConfig) -> Plan:
    """Validate inputs and output, create or reopen OUT, and list the blocks to run.

    Raises
    ------
    InputError, OutputError, ModelError, ClusterBackendError
        Before anything is scheduled, naming the file/array/value at fault.
    """
    model, notes = choose_model(cfg)
    cfg = cfg.model_copy(update={"model": model})
    source = open_image(cfg.input, cfg.axes)
    inputs = [cfg.input] + ([cfg.reference] if cfg.reference else [])
    out = check_output_path(cfg.output, inputs)
    reference = None
    if cfg.reference is not None:
        reference = open_image(cfg.reference, source.meta.axes)
        if reference.shape != source.shape:
            raise InputError(
                f"reference {cfg.reference} has shape {reference.shape}, input {source.shape}"
            )
    weights = resolve_weights(model)
    metadata = read_metadata(weights)
    digest = file_digest(weights)

    chunks = _output_chunks(cfg, source)
    blocks = plan_blocks(source.shape, block_shape(source.shape, chunks, cfg.block_min))
    norm = metadata.normalisation
    if metadata.protocol != cfg.protocol:
        notes.append(
            f"warning: model {metadata.name} was trained for the {metadata.protocol!r} "
            f"protocol; running {cfg.protocol!r} feeds it data it was not trained on"
        )
    noise = planned_noise(cfg, out, digest, source, notes) if cfg.protocol == "vst" else None
    centres = cluster_centres(cfg, out, digest, source, blocks, notes) if cfg.labelled else None
    ranges = channel_ranges(source.array, source.meta.axes, blocks, norm, noise=noise)
    if noise is None and metadata.architecture.noise_map:
        sigmas = None
        if norm.method == "noise":  # the window is scale sigmas wide
            sigmas = tuple((hi - lo) / norm.scale for lo, hi in ranges)
        noise = planned_noise(cfg, out, digest, source, notes, fallback=sigmas)
    data_range = cfg.data_range
    if reference is not None and data_range is None:
        data_range = peak_to_peak(reference.array, blocks)
    params = {
        **cfg.output_parameters(),
        "model_digest": digest,
        "channel_ranges": [list(r) for r in ranges],
    }
    if noise is not None:
        params["channel_noise"] = [list(n) for n in noise]
    if centres is not None:
        params["channel_centres"] = [list(c) for c in centres]
    spec, resumed = _open_or_create(cfg, out, source, chunks, params, metadata.name, digest)
    labels = None
    if cfg.save_labels:
        labels = OutputSpec(str(out), f"labels/{LABELS}/0")
        if not resumed:
            version, k = cfg.ngff_version, cfg.clusters
            create_label_image(out, LABELS, source.meta, source.shape, chunks, version, k)
    stray = spec.clean_temporaries()
    done = set(spec.done_rows())
    job = JobSpec(
        source=source.spec,
        output=spec,
        axes=source.meta.axes,
        model_path=str(weights),
        model_digest=digest,
        device=cfg.device,
        channel_ranges=ranges,
        tile=cfg.tile,
        out_dtype=_output_dtype(cfg, source).name,
        precision=cfg.precision,
        reference=reference.spec if reference is not None else None,
        data_range=data_range,
        protocol=cfg.protocol,
        channel_noise=noise,
        channel_centres=centres,
        mask_sigma=cfg.mask_sigma,
        labels=labels,
        tta=cfg.tta,
    )
    pending = [b for b in blocks if b.id not in done]
    token = hashlib.sha1(f"{out}{sorted(params.items())}".encode()).hexdigest()[:10]
    return Plan(cfg, source, job, blocks, pending, resumed, token, stray, notes)


def _open_or_create(
    cfg: DenoiseConfig,
    out: Path,
    source: ImageSource,
    chunks: tuple[int, ...],
    params: dict[str, Any],
    model_name: str,
    digest: str,
) -> tuple[OutputSpec, bool]:
    if resume_or_clear(out, params, cfg.overwrite):
        return OutputSpec(str(out)), True
    provenance = {
        "tool": "fluoden-batch",
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model_name, "digest": digest},
        "parameters": params,
        "input_ngff_version": source.ngff_version,
        "complete": False,
    }
    version = cfg.ngff_version
    spec = create_output(
        out, source.meta, source.shape, chunks, _output_dtype(cfg, source), version, provenance
    )
    return spec, False


def execute(
    p: Plan,
    client: Client,
    on_block: ProgressHook | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Submit the pending blocks, wait for all of them, then gather metrics.

    ``on_block(done, total)`` is called after each finished (or failed) block. Blocks that
    fail do not stop the others; they are listed in a :class:`BlockError` at the end,
    after the metrics of every finished block have been written. ``resources`` (e.g.
    ``{"GPU": 1}``) go to ``client.map`` itself: ``dask.annotate`` would be lost in graph
    fusion.
    """
    t0 = time.perf_counter()
    failed = run_blocks(
        client,
        process_block,
        p.pending,
        p.job,
        prefix=f"fluoden-{p.token}",
        total=len(p.blocks),
        memory_limit=p.config.memory_limit,
        on_block=on_block,
        resources=resources,
    )
    result = finish(p, time.perf_counter() - t0, failed)
    if failed:
        raise block_error(failed, len(p.blocks), p.job.source.describe())
    return result


def finish(p: Plan, seconds: float, failed: dict[str, str]) -> RunResult:
    """Write the metrics table and the summary into OUT; return the run's result."""
    ran = [b for b in p.pending if b.id not in failed]
    out = Path(p.job.output.path)
    rows = list(p.job.output.done_rows().values())
    metrics = pd.DataFrame(rows)
    if not metrics.empty:
        metrics = metrics.sort_values("block", key=lambda s: s.map(_block_order)).reset_index(
            drop=True
        )
        metrics.to_parquet(out / METRICS_FILE, index=False)
    summary = summarise(metrics, seconds, len(p.blocks), p.job.data_range)
    pixels_run = sum(int(np.prod(b.shape)) for b in ran)
    if ran and seconds > 0:
        summary["mpx_per_s"] = pixels_run / seconds / 1e6
    complete = len(rows) == len(p.blocks)
    last_run = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": p.config.model_dump(mode="json"),
        "blocks_run": len(ran),
        "failed": failed,
    }
    update_provenance(out, summary=summary, complete=complete, last_run=last_run)
    return RunResult(
        output=out,
        blocks_total=len(p.blocks),
        blocks_run=len(ran),
        blocks_skipped=len(p.blocks) - len(p.pending),
        seconds=seconds,
        metrics=metrics,
        summary=summary,
        failed=failed,
    )


def _block_order(block_id: str) -> tuple[int, ...]:
    return tuple(int(i) for i in block_id.split("."))

"""Plan a denoising run: validate inputs and OUT, fix per-channel values, list the blocks.

Everything that can be wrong with the input, the output path, the model or the options
is found here, before anything is scheduled; a rerun of the same plan resumes (blocks
with a completion marker are dropped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

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
)
from fluoden_batch.pipeline.params import channel_values, choose_method, stored
from fluoden_batch.pipeline.statistics import peak_to_peak
from fluoden_batch.pipeline.worker import JobSpec
from fluoden_batch.restore.tiles import Block, block_shape, plan_blocks

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

    Notes
    -----
    Longer than most functions here (about 70 lines): it is the run's checklist, in the
    order a failure must be found (model, input, output path, reference, blocks, values per
    channel, OUT), and most lines fill the :class:`JobSpec`.
    """
    notes: list[str] = []
    method = choose_method(cfg, notes)
    cfg = cfg.model_copy(update={"model": method.model})
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
    digest = method.digest
    chunks = _output_chunks(cfg, source)
    blocks = plan_blocks(source.shape, block_shape(source.shape, chunks, cfg.block_min))
    values = channel_values(
        cfg,
        source.array,
        source.meta.axes,
        source.spec.describe(),
        blocks,
        method.metadata,
        notes,
        stored=lambda key: stored(cfg, out, digest, key),
    )
    ranges, noise, centres = values.ranges, values.noise, values.centres
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
    if values.levels is not None:
        params["channel_levels"] = list(values.levels)
    spec, resumed = _open_or_create(cfg, out, source, chunks, params, method.name, digest)
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
        model_path=method.path,
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
        channel_levels=values.levels,
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

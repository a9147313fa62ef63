"""Plan a denoising run: validate inputs and OUT, fix per-channel values, list the blocks.

Everything that can be wrong with the input, the output path, the model or the options
is found here, before anything is scheduled; a rerun of the same plan resumes (blocks
with a completion marker are dropped). A plan holds OUT's lock
(:mod:`fluoden_batch.io.lock`) from the moment OUT is opened until its run ends.

The block list is a :class:`~fluoden_batch.restore.tiles.BlockGrid`: blocks are made when
asked for, so a plan of 239,121 blocks holds an index array, not 239,121 objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fluoden_batch import __version__
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import InputError
from fluoden_batch.io.labels import create_label_images, label_set
from fluoden_batch.io.lock import OutputLock
from fluoden_batch.io.source import ImageSource, open_image
from fluoden_batch.io.sparse import check_stored
from fluoden_batch.io.store import (
    OutputSpec,
    check_output_path,
    create_output,
    open_output,
    output_shards,
)
from fluoden_batch.pipeline.adapt import AdaptJob, plan_adapt
from fluoden_batch.pipeline.params import (
    choose_method,
    grouped_values,
    noise_rows,
    planned_noise,
    stored,
    tested_noise,
)
from fluoden_batch.pipeline.statistics import peak_to_peak
from fluoden_batch.pipeline.worker import JobSpec
from fluoden_batch.restore.detail import Detail
from fluoden_batch.restore.tiles import BlockGrid, block_shape, plan_blocks
from fluoden_batch.train.adapt import AdaptSettings

METRICS_FILE = "metrics.parquet"
LABELS = "clusters"  # --save-labels writes OUT/labels/clusters (clusters-c0, ... per channel)


@dataclass
class Plan:
    """A validated run: the job every task gets, all blocks, and those still to do."""

    config: DenoiseConfig
    source: ImageSource
    job: JobSpec
    blocks: BlockGrid
    pending: BlockGrid
    resumed: bool
    token: str
    lock: OutputLock
    stray_removed: int = 0
    notes: list[str] = field(default_factory=list)
    adapt: AdaptJob | None = None


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
    source = open_image(cfg.input, cfg.axes, series=cfg.series)
    check_stored(source, cfg.allow_sparse, notes)
    adapt_mode = plan_adapt(cfg, source, notes)
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
    shards = output_shards(source.shards, cfg.ngff_version, cfg.chunks, notes)
    grid = shards or chunks  # a task writes whole shards
    blocks = plan_blocks(source.shape, block_shape(source.shape, grid, cfg.block_min))
    values, detail, groups = grouped_values(  # with --adapt: tuned after the fit
        cfg,
        source.array,
        source.meta.axes,
        source.spec.describe(),
        blocks,
        method,
        adapt_mode is not None,
        notes,
        stored=lambda key: stored(cfg, out, digest, key),
    )
    if adapt_mode == "single" and (values.noise is None or None in values.noise):
        # its fit is chosen by SURE, on every channel
        old = stored(cfg, out, digest, "channel_noise")
        try:
            noise = planned_noise(
                source.array, source.meta.axes, source.spec.describe(), notes, old
            )
        except InputError as exc:
            raise InputError(f"{exc}, which --adapt single needs to choose its fit") from None
        values = replace(values, noise=noise)
    ranges, noise, centres = values.ranges, values.noise, values.centres
    tested = tested_noise(cfg, values)
    data_range = cfg.data_range
    if reference is not None and data_range is None:
        data_range = peak_to_peak(reference.array, blocks, name=f"reference {cfg.reference}")
        if not data_range > 0:  # PSNR against a range of 1 would mean nothing here
            notes.append(
                f"warning: reference {cfg.reference} is constant in its sampled blocks: "
                "PSNR/SSIM use a data range of 1; give --data-range (e.g. 255 for 8-bit data)"
            )
            data_range = 1.0
    params = {
        **cfg.output_parameters(),
        "model_digest": digest,
        "channel_ranges": [list(r) for r in ranges],
    }
    if noise is not None:
        params["channel_noise"] = noise_rows(noise)
    if centres is not None:
        params["channel_centres"] = [list(c) for c in centres]
    if values.levels is not None:
        params["channel_levels"] = list(values.levels)
    if detail is not None:
        params["channel_detail"] = Detail.stored(detail)
    if groups is not None:
        params["plane_groups"] = list(groups.rows)
    if shards is not None:
        params["shards"] = list(shards)
    layout = chunks, shards
    spec, resumed, lock = _open_or_create(cfg, out, source, layout, params, method.name, digest)
    labels = None
    if cfg.save_labels:
        labels = label_set(out, LABELS, source.meta.axes, source.shape, lock.token)
    stray = spec.clean_temporaries()
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
        channel_noise=tested,
        channel_centres=centres,
        channel_levels=values.levels,
        mask_sigma=cfg.mask_sigma,
        labels=labels,
        tta=cfg.tta,
        phase_split=cfg.phase_split,
        channel_detail=detail,
        plane_groups=groups,
        hot=cfg.hot,
    )
    pending = blocks.without(spec.done_ids())
    token = hashlib.sha1(f"{out}{sorted(params.items())}".encode()).hexdigest()[:10]
    adapt = None
    if adapt_mode is not None:
        settings = AdaptSettings(  # tested: the run's noise, else the hot pixels' test's
            source.spec.describe(), source.meta.axes, ranges, adapt_mode, cfg.adapt_steps,
            cfg.adapt_minutes, cfg.adapt_seed, method.path, digest, cfg.device, tested,
            cfg.hot,
        )  # fmt: skip
        adapt = AdaptJob(source.spec, settings)
    return Plan(cfg, source, job, blocks, pending, resumed, token, lock, stray, notes, adapt)


def _open_or_create(
    cfg: DenoiseConfig,
    out: Path,
    source: ImageSource,
    layout: tuple[tuple[int, ...], tuple[int, ...] | None],
    params: dict[str, Any],
    model_name: str,
    digest: str,
) -> tuple[OutputSpec, bool, OutputLock]:
    """Lock OUT, then resume it or create it (with its label image for --save-labels);
    ``layout``: its chunks and shards."""
    provenance = {
        "tool": "fluoden-batch",
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model_name, "digest": digest},
        "parameters": params,
        "input_ngff_version": source.ngff_version,
        "complete": False,
    }
    version, dtype = cfg.ngff_version, _output_dtype(cfg, source)
    shape, levels = source.shape, cfg.pyramid_levels(source.shape)
    chunks, shards = layout

    def create(owner: str) -> OutputSpec:
        spec = create_output(
            out, source.meta, shape, chunks, dtype, version, provenance, owner, levels, shards
        )
        if cfg.save_labels:
            create_label_images(
                out, LABELS, source.meta, shape, chunks, version, cfg.clusters,
                levels=levels, owner=owner, shards=shards,
            )  # fmt: skip
        return spec

    return open_output(out, params, cfg.overwrite, create)

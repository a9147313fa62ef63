"""The Dask side of one block: read it with its halo, denoise, write its chunks, then a marker.

:func:`process_block` runs on a worker (or in this process for small inputs). The science
is :func:`~fluoden_batch.restore.block.denoise_region` (arrays only); this module reads
the block and its halo from the input store, writes exactly the block's chunks (and its
labels' with ``--save-labels``), then the completion marker with the metrics row. The
model is loaded once per worker process from its weights file (keyed by path and digest)
and kept between blocks; nothing heavy is pickled into the task graph, only the small
:class:`JobSpec` and :class:`~fluoden_batch.restore.tiles.Block`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fluoden_batch.clustering.masked import smoothing_radius
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.io.labels import LabelSet
from fluoden_batch.io.source import SourceSpec
from fluoden_batch.io.store import OutputSpec
from fluoden_batch.models.weights import LoadedModel, load_model
from fluoden_batch.pipeline.groups import PlaneGroups, plane_row
from fluoden_batch.restore.block import (
    BlockOutput,
    cast_output,
    check_finite,
    denoise_region,
    reference_scores,
)
from fluoden_batch.restore.classical import CLASSICAL
from fluoden_batch.restore.detail import Detail, detail_radius
from fluoden_batch.restore.hot import REACH as HOT_REACH
from fluoden_batch.restore.inference import Network, align, inference_network
from fluoden_batch.restore.protocols import PlaneParams, get_protocol
from fluoden_batch.restore.tiles import Block, Window, halo_window

_MODELS: dict[tuple[str, str, str], LoadedModel] = {}
# BM3D is not tile-exact (its blocks lie on a grid from the plane's origin): a block reads
# this much context; how far its borders then differ from a whole-plane run is not
# measured here (the optional bm3d package is not installed on the project's machine)
WHOLE_PLANE_HALO = 64
_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobSpec:
    """Everything a block task needs, as small picklable values.

    Attributes
    ----------
    source, output : SourceSpec, OutputSpec or None
        Where to read and write (None: an in-memory array,
        :mod:`fluoden_batch.pipeline.arrays`).
    axes : str
        Axis names of the arrays (e.g. ``"czyx"``).
    model_path, model_digest : str
        Weights file and its expected SHA-256 digest (checked on load); both empty for a
        classical protocol (no model).
    device : str
        Torch device for inference (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``);
        ``"auto"`` picks CUDA on workers that have it.
    channel_ranges : tuple of (float, float)
        Normalisation (lo, hi) per channel index (one entry when there is no ``c`` axis),
        in the units the model is fed (GAT units for ``vst``).
    tile : int or None
        Forward-pass tile size inside a block.
    out_dtype : str
        Output dtype name; integer outputs are clipped and rounded before casting.
    precision : str
        ``"fp32"``, or ``"bf16"``/``"fp16"`` autocast on CUDA.
    reference : SourceSpec or None
        Clean reference array of the same shape, for PSNR/SSIM.
    data_range : float or None
        Peak-to-peak range used for PSNR/SSIM against the reference.
    protocol : str
        Per-plane protocol, a key of :data:`fluoden_batch.restore.protocols.PROTOCOLS`.
    channel_noise : tuple of (float, float, float) or None
        GAT parameters (a, b) and the intensity of zero signal per channel index (``vst``,
        a noise map, the detail restoration; :func:`~fluoden_batch.pipeline.params.planned_noise`),
        estimated once at planning; an entry is None for a plane group whose noise could
        not be estimated (its restoration then keeps the output).
    channel_centres : tuple of tuple of float or None
        Increasing K-means intensity centres per channel index, data units, fitted once
        at planning (``masked``, ``--save-labels``); None: no labels.
    channel_levels : tuple of float or None
        Median intensity per channel index (the classical protocols).
    mask_sigma : float
        Label smoothing width, pixels (with ``channel_centres``).
    labels : LabelSet or None
        Where to write the labels (``--save-labels``): the label images of OUT, one per
        channel, same chunks as ``output`` in the other axes.
    tta : bool
        Test-time augmentation: each plane's result is the mean over its 8 flips and
        rotations (:class:`~fluoden_batch.restore.inference.Dihedral`).
    channel_detail : tuple of Detail or None
        Detail restoration after the model per channel index (``--detail sure``), chosen
        once at planning; None: none.
    phase_split : bool
        The model runs on the four stride-2 phases of each plane
        (:class:`~fluoden_batch.restore.inference.PhaseSplit`).
    plane_groups : PlaneGroups or None
        Which row of the ``channel_*`` values each plane takes, where planes of one
        channel were planned in groups (:mod:`fluoden_batch.pipeline.groups`); None: a
        plane takes its channel's (one row per channel index).
    hot : (str, float) or None
        ``--hot-pixels`` and ``--hot-pixel-sigmas`` (:mod:`fluoden_batch.restore.hot`);
        None: off.
    """

    source: SourceSpec | None
    output: OutputSpec | None
    axes: str
    model_path: str
    model_digest: str
    device: str
    channel_ranges: tuple[tuple[float, float], ...]
    tile: int | None
    out_dtype: str
    precision: str = "fp32"
    reference: SourceSpec | None = None
    data_range: float | None = None
    protocol: str = "whole"
    channel_noise: tuple[tuple[float, float, float] | None, ...] | None = None
    channel_centres: tuple[tuple[float, ...], ...] | None = None
    channel_levels: tuple[float, ...] | None = None
    mask_sigma: float = 0.0
    labels: LabelSet | None = None
    tta: bool = False
    channel_detail: tuple[Detail, ...] | None = None
    phase_split: bool = False
    plane_groups: PlaneGroups | None = None
    hot: tuple[str, float] | None = None

    def plane_params(self, row: int) -> PlaneParams:
        """The protocol's parameters of row ``row`` of the ``channel_*`` values (the
        channel index, or a plane group's row: :meth:`row`)."""
        lo, hi = self.channel_ranges[row]
        noise = None if self.channel_noise is None else self.channel_noise[row]
        a, b, floor = (None, None, 0.0) if noise is None else noise
        centres = None if self.channel_centres is None else self.channel_centres[row]
        level = None if self.channel_levels is None else self.channel_levels[row]
        detail = None if self.channel_detail is None else self.channel_detail[row]
        return PlaneParams(lo, hi, a, b, centres, self.mask_sigma, level, detail, floor)

    def row(self, index: tuple[int, ...]) -> int:
        """The row of the ``channel_*`` values for the plane at ``index`` (its indices on
        the non-Y/X axes of the input)."""
        return plane_row(self.plane_groups, self.axes, index)

    @property
    def halo(self) -> int:
        """Pixels read around a block beyond the model's receptive radius (label smoothing,
        the hot pixels' test, the detail restoration's Gaussian), or, without a model, the
        classical denoiser's reach."""
        extra = 0 if self.channel_centres is None else smoothing_radius(self.mask_sigma)
        extra += 0 if self.hot is None else HOT_REACH
        if self.model_path:
            detail = max(map(detail_radius, self.channel_detail or ()), default=0)
            return extra + detail
        return extra + (CLASSICAL[self.protocol].reach or WHOLE_PLANE_HALO)

    def model(self) -> LoadedModel | None:
        """This process's copy of the run's model (None for a classical protocol)."""
        if not self.model_path:
            return None
        return worker_model(self.model_path, self.model_digest, self.device)

    def network(self, model: LoadedModel | None) -> Network | None:
        """The model as this run applies it (``--tta``, ``--phase-split``), or None."""
        if model is None:
            return None
        return inference_network(model.module, self.tta, self.phase_split)

    def window(self, model: LoadedModel | None, block: Block, plane: tuple[int, ...]) -> Window:
        """Where to read ``block`` (with its halo) in a plane of Y/X shape ``plane``."""
        network = self.network(model)
        halo = self.halo + (network.receptive_radius if network is not None else 0)
        grid = align(network) if network is not None else 1
        return halo_window(block.start[-2:], block.stop[-2:], plane, halo, grid)

    def denoise(
        self,
        model: LoadedModel | None,
        block: Block,
        region: np.ndarray,
        crop: tuple[slice, slice],
    ) -> BlockOutput:
        """Denoise ``block``, read with its halo as ``region``
        (:func:`~fluoden_batch.restore.block.denoise_region` with this run's values)."""
        network = self.network(model)

        def params(idx: tuple[int, ...]) -> PlaneParams:
            return self.plane_params(self.row(tuple(np.add(block.start[:-2], idx).tolist())))

        return denoise_region(
            region,
            crop,
            network,
            get_protocol(self.protocol),
            params,
            tile=self.tile,
            precision=self.precision,
            labelled=self.channel_centres is not None,
            hot=self.hot,
        )


def worker_model(path: str, digest: str, device: str) -> LoadedModel:
    """The model for this worker process, loaded on first use and then reused."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (path, digest, device)
    with _LOCK:
        if key not in _MODELS:
            _match_torch_threads()
            model = load_model(path, device=device)
            if model.digest != digest:
                raise ModelError(f"{path}: weights changed since the run was planned")
            _MODELS[key] = model
        return _MODELS[key]


def _match_torch_threads() -> None:
    """One torch thread per block task inside a Dask worker.

    A worker runs as many blocks at once as it has threads, and every cluster here gives
    it one core per thread (a local worker per core; dask-jobqueue: cores / processes; a
    pod's cpu limit), so blocks x torch threads = the worker's cores. torch at the worker's
    thread count would multiply them (4 blocks x 4 threads on 4 cores). Whole blocks in
    parallel rather than threads inside one also keep the cores busy while a block reads,
    decompresses and writes. Outside a worker torch's setting is left alone.
    """
    try:
        from distributed import get_worker

        get_worker()
    except ValueError:  # not inside a worker
        return
    torch.set_num_threads(1)


def process_block(block: Block, job: JobSpec) -> dict[str, Any]:
    """Denoise one block and record it; returns its metrics row.

    The block's chunks are written first, then the completion marker, so a marker always
    means that the data is on disk.
    """
    assert job.source is not None and job.output is not None
    t0 = time.perf_counter()
    model = job.model()
    src = job.source.open()
    lead = block.slices[:-2]
    window = job.window(model, block, src.shape[-2:])
    name = f"{job.source.describe()} block {block.id} (start {block.start})"
    try:
        region = np.asarray(src[(*lead, *window.read)])
    except Exception as exc:  # codec errors of a truncated or corrupt chunk
        raise InputError(f"{name}: cannot read its chunks ({type(exc).__name__}: {exc})") from exc
    check_finite(region, name)
    t_read = time.perf_counter()

    result = job.denoise(model, block, region, window.crop)
    out, labels = result.denoised, result.labels
    t_compute = time.perf_counter()

    dtype = np.dtype(job.out_dtype)
    written = cast_output(out, dtype)
    job.output.write(block.slices, written)
    if job.labels is not None and labels is not None:
        job.labels.write(block.slices, labels)
    t_write = time.perf_counter()

    inner = region[(Ellipsis, *window.crop)]
    saturated = (
        float((inner == np.iinfo(inner.dtype).max).mean()) if inner.dtype.kind in "iu" else 0.0
    )
    inner = inner.astype(np.float64)
    row: dict[str, Any] = {
        "block": block.id,
        **{f"start_{a}": s for a, s in zip(job.axes, block.start, strict=True)},
        **{f"size_{a}": s for a, s in zip(job.axes, block.shape, strict=True)},
        "pixels": int(np.prod(block.shape)),
        "seconds": t_write - t0,
        "seconds_read": t_read - t0,
        "seconds_compute": t_compute - t_read,
        "seconds_write": t_write - t_compute,
        "seconds_noise": result.stats.pop("seconds_noise"),
        "input_mean": float(inner.mean()),
        "input_std": float(inner.std()),
        **{k: v for k, v in result.stats.items() if not k.startswith("cluster")},
        "saturated_fraction": saturated,
        "missing_chunks": job.source.missing_chunks(block.slices),
        "model": model.metadata.name if model else job.protocol,
        "model_digest": model.digest if model else "",
    }
    row.update({k: v for k, v in result.stats.items() if k.startswith("cluster")})
    if job.reference is not None:
        assert job.data_range is not None
        ref = np.asarray(job.reference.open()[block.slices])
        row.update(reference_scores(inner, written, ref, job.data_range))
    job.output.write_marker(block.id, row)
    return row

"""One task: read a block plus halo, denoise each Y/X plane, write its chunks, then a marker.

Each plane goes through the run's protocol (:mod:`fluoden_batch.restore.protocols`); the
block's own Poisson-Gaussian parameters are estimated on its input for the metrics row
(never used for denoising: per-block values would leave seams). Where the run has cluster
centres (``masked``, ``--save-labels``) the halo grows by the label smoothing's reach, the
labels are computed on the halo region and cropped (so they equal the whole plane's), the
block's cluster sizes and scores join the row, and ``--save-labels`` writes the labels'
chunks before the marker too.

This module runs on the Dask workers. The model is loaded once per worker process from
its weights file (keyed by path and digest) and kept between blocks; nothing heavy is
pickled into the task graph, only the small :class:`JobSpec` and :class:`Block`.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fluoden_batch.clustering.masked import masked_labels, smoothing_radius
from fluoden_batch.clustering.rows import block_quality
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.io.source import SourceSpec
from fluoden_batch.io.store import OutputSpec
from fluoden_batch.metrics import noise_sigma, ssim
from fluoden_batch.models.weights import LoadedModel, load_model
from fluoden_batch.noise import estimate
from fluoden_batch.restore.inference import Dihedral, align
from fluoden_batch.restore.protocols import PlaneParams, get_protocol
from fluoden_batch.restore.tiles import Block, halo_window

_MODELS: dict[tuple[str, str, str], LoadedModel] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobSpec:
    """Everything a block task needs, as small picklable values.

    Attributes
    ----------
    source, output : SourceSpec, OutputSpec
        Where to read and write.
    axes : str
        Axis names of the arrays (e.g. ``"czyx"``).
    model_path, model_digest : str
        Weights file and its expected SHA-256 digest (checked on load).
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
    channel_noise : tuple of (float, float) or None
        GAT parameters (a, b) per channel index (``vst``), estimated once at planning.
    channel_centres : tuple of tuple of float or None
        Increasing K-means intensity centres per channel index, data units, fitted once
        at planning (``masked``, ``--save-labels``); None: no labels.
    mask_sigma : float
        Label smoothing width, pixels (with ``channel_centres``).
    labels : OutputSpec or None
        Where to write the labels (``--save-labels``), same chunks as ``output``.
    tta : bool
        Test-time augmentation: each plane's result is the mean over its 8 flips and
        rotations (:class:`~fluoden_batch.restore.inference.Dihedral`).
    """

    source: SourceSpec
    output: OutputSpec
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
    channel_noise: tuple[tuple[float, float], ...] | None = None
    channel_centres: tuple[tuple[float, ...], ...] | None = None
    mask_sigma: float = 0.0
    labels: OutputSpec | None = None
    tta: bool = False

    def plane_params(self, channel: int) -> PlaneParams:
        """The protocol's parameters for channel index ``channel``."""
        lo, hi = self.channel_ranges[channel]
        a, b = (None, None) if self.channel_noise is None else self.channel_noise[channel]
        centres = None if self.channel_centres is None else self.channel_centres[channel]
        return PlaneParams(lo, hi, a, b, centres, self.mask_sigma)

    @property
    def halo(self) -> int:
        """Pixels read around a block beyond the model's receptive radius (label smoothing)."""
        return 0 if self.channel_centres is None else smoothing_radius(self.mask_sigma)


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
    """Give torch as many threads as the Dask worker has (1 by default)."""
    try:
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except ValueError:  # not inside a worker: leave torch's setting alone
        pass


def cast_output(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float intensities to ``dtype``: integers are rounded and clipped, never wrapped."""
    if np.issubdtype(dtype, np.integer):
        if not np.isfinite(x).all():
            raise InputError(f"cannot cast NaN/Inf to {dtype}")
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    with np.errstate(over="ignore"):
        y = x.astype(dtype)
    if not np.isfinite(y).all():
        raise InputError(f"values are NaN/Inf or overflow {dtype}")
    return y


STATS_SIDE = 512  # per-block noise statistics use the central STATS_SIDE^2 pixels


def _central(plane: np.ndarray) -> np.ndarray:
    """The central ``STATS_SIDE`` x ``STATS_SIDE`` crop (the whole plane if smaller)."""
    y0 = max(0, (plane.shape[0] - STATS_SIDE) // 2)
    x0 = max(0, (plane.shape[1] - STATS_SIDE) // 2)
    return plane[y0 : y0 + STATS_SIDE, x0 : x0 + STATS_SIDE]


def _sigma_or_nan(plane: np.ndarray) -> float:
    """Noise std estimate, NaN (an empty cell in the table) for planes too small for it."""
    try:
        return noise_sigma(plane)
    except InputError:
        return float("nan")


def _noise_or_none(plane: np.ndarray) -> tuple[float, float] | None:
    """``(a, b)`` of a plane, None where it cannot be estimated (tiny, flat, ...).

    Metrics only: whatever goes wrong in the estimator must not fail the block.
    """
    try:
        est = estimate(plane)
    except Exception:  # NoiseEstimationError, or anything else: a diagnostic, not the job
        return None
    return est.a, est.b


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _cluster_columns(data: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """``fluoden segment``'s cluster columns of the block (sizes, silhouette, Davies-Bouldin,
    WSS: :func:`~fluoden_batch.clustering.rows.block_quality`), each name starting with
    ``cluster_`` (``cluster_silhouette``, ``cluster_n_clusters``, ``cluster_sizes``, ...)."""
    quality = block_quality(data, labels)
    return {k if k.startswith("cluster") else f"cluster_{k}": v for k, v in quality.items()}


def _planes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(n) for n in shape[:-2])))


def process_block(block: Block, job: JobSpec) -> dict[str, Any]:
    """Denoise one block and record it; returns its metrics row.

    The block's chunks are written first, then the completion marker, so a marker always
    means that the data is on disk.
    """
    t0 = time.perf_counter()
    model = worker_model(job.model_path, job.model_digest, job.device)
    src = job.source.open()
    lead = block.slices[:-2]
    halo = model.receptive_radius + job.halo
    window = halo_window(block.start[-2:], block.stop[-2:], src.shape[-2:], halo, align(model.module))
    name = f"{job.source.describe()} block {block.id} (start {block.start})"
    try:
        region = np.asarray(src[(*lead, *window.read)])
    except Exception as exc:  # codec errors of a truncated or corrupt chunk
        raise InputError(f"{name}: cannot read its chunks ({type(exc).__name__}: {exc})") from exc
    if region.dtype.kind == "f" and not np.isfinite(region).all():
        bad = int((~np.isfinite(region)).sum())
        raise InputError(f"{name}: {bad} NaN/Inf pixels; fill or mask them before denoising")
    t_read = time.perf_counter()

    c_axis = job.axes.find("c")
    protocol = get_protocol(job.protocol)
    network = Dihedral(model.module) if job.tta else model.module
    out = np.empty(block.shape, dtype=np.float32)
    labels = None if job.channel_centres is None else np.empty(block.shape, dtype=np.uint8)
    sig_in, sig_out, noise_in = [], [], []
    t_noise = 0.0
    for idx in _planes(region.shape):
        channel = block.start[c_axis] + idx[c_axis] if c_axis >= 0 else 0
        params = job.plane_params(channel)
        plane_in = _central(region[idx][window.crop])
        t = time.perf_counter()
        noise_in.append(_noise_or_none(plane_in))
        t_noise += time.perf_counter() - t
        y = protocol(network, region[idx], params, job.tile, job.precision)[window.crop]
        out[idx] = y
        if labels is not None:  # on the halo region, then cropped: the whole plane's labels
            labels[idx] = masked_labels(region[idx], params.centres, params.sigma)[window.crop]
        sig_in.append(_sigma_or_nan(plane_in))
        sig_out.append(_sigma_or_nan(_central(y)))
    clusters = {} if labels is None else _cluster_columns(region[(..., *window.crop)], labels)
    t_compute = time.perf_counter()
    known = [n for n in noise_in if n is not None]

    dtype = np.dtype(job.out_dtype)
    written = cast_output(out, dtype)
    job.output.open()[block.slices] = written
    if job.labels is not None and labels is not None:
        job.labels.open()[block.slices] = labels
    t_write = time.perf_counter()

    inner = region[(Ellipsis, *window.crop)]
    saturated = (
        float((inner == np.iinfo(inner.dtype).max).mean()) if inner.dtype.kind == "u" else 0.0
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
        "seconds_noise": t_noise,
        "input_mean": float(inner.mean()),
        "input_std": float(inner.std()),
        "noise_sigma_in": _mean_or_none(sig_in),
        "noise_sigma_out": _mean_or_none(sig_out),
        "noise_a": _mean_or_none([n[0] for n in known]),
        "noise_b": _mean_or_none([n[1] for n in known]),
        "noise_planes": len(known),
        "saturated_fraction": saturated,
        "missing_chunks": job.source.missing_chunks(block.slices),
        "model": model.metadata.name,
        "model_digest": model.digest,
    }
    row.update(clusters)
    if job.reference is not None:
        row.update(_reference_scores(job, block, inner, written))
    job.output.write_marker(block.id, row)
    return row


def _reference_scores(
    job: JobSpec, block: Block, noisy: np.ndarray, denoised: np.ndarray
) -> dict[str, float]:
    """Squared errors and SSIM of the input and of the output against the reference."""
    assert job.reference is not None and job.data_range is not None
    ref = np.asarray(job.reference.open()[block.slices], dtype=np.float64)
    den = denoised.astype(np.float64)
    scores: dict[str, float] = {
        "sse_in": float(((noisy - ref) ** 2).sum()),
        "sse_out": float(((den - ref) ** 2).sum()),
    }
    n = ref.size
    for key, img in (("in", noisy), ("out", den)):
        mse = scores[f"sse_{key}"] / n
        scores[f"psnr_{key}"] = float(10 * np.log10(job.data_range**2 / mse)) if mse > 0 else np.inf
        planes = _planes(ref.shape)
        if min(ref.shape[-2:]) >= 7:
            scores[f"ssim_{key}"] = float(
                np.mean([ssim(img[i], ref[i], job.data_range) for i in planes])
            )
    return scores

"""One block of planes through a protocol: arrays in, arrays and statistics out.

:func:`denoise_region` takes a region read with a halo (any leading axes, then Y/X),
denoises every Y/X plane with the run's protocol and parameters, crops the halo and
returns the block with its no-reference statistics (noise before and after, the block's
own Poisson-Gaussian fit, cluster scores where labels are computed). No Zarr, no Dask:
the orchestration (:mod:`fluoden_batch.pipeline.worker`) reads, writes and records.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluoden_batch.clustering.masked import masked_labels
from fluoden_batch.clustering.rows import block_quality
from fluoden_batch.errors import InputError
from fluoden_batch.metrics import noise_sigma, ssim
from fluoden_batch.noise import estimate
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.restore.inference import Network
from fluoden_batch.restore.protocols import PlaneParams, Protocol

__all__ = ["BlockOutput", "cast_output", "denoise_region", "planes", "reference_scores"]

STATS_SIDE = 512  # per-block noise statistics use the central STATS_SIDE^2 pixels


@dataclass
class BlockOutput:
    """What :func:`denoise_region` returns.

    Attributes
    ----------
    denoised : ndarray, float32
        The block without its halo, data units.
    labels : ndarray, uint8, or None
        Cluster labels of the block (with ``labelled``), else None.
    stats : dict
        Metrics-row columns: ``noise_sigma_in/out``, ``noise_a/b``, ``noise_planes``,
        ``seconds_noise`` and, with labels, the ``cluster_*`` columns.
    """

    denoised: np.ndarray
    labels: np.ndarray | None
    stats: dict[str, Any] = field(default_factory=dict)


def planes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Indices of every Y/X plane of an array of ``shape`` (its leading axes)."""
    return list(itertools.product(*(range(n) for n in shape[:-2])))


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


def denoise_region(
    region: np.ndarray,
    crop: tuple[slice, slice],
    network: Network | None,
    protocol: Protocol,
    params: Callable[[tuple[int, ...]], PlaneParams],
    *,
    tile: int | None = None,
    precision: str = "fp32",
    labelled: bool = False,
    hot: tuple[str, float] | None = None,
) -> BlockOutput:
    """Denoise every Y/X plane of ``region`` and crop the halo.

    Parameters
    ----------
    region : ndarray, shape (..., H + halo, W + halo)
        The block read with its halo, data units.
    crop : (slice, slice)
        The block inside the region's Y/X.
    network : DnCNN, FFDNet or Dihedral
        Inference model of the protocol.
    protocol : Protocol
        Per-plane protocol (:mod:`fluoden_batch.restore.protocols`).
    params : callable
        The :class:`~fluoden_batch.restore.protocols.PlaneParams` of the plane at a
        leading index of ``region`` (e.g. its channel's).
    tile, precision
        As in :func:`~fluoden_batch.restore.inference.infer_plane`.
    labelled : bool
        Also compute the cluster labels of every plane (on the halo region, then cropped,
        so they equal the whole plane's) and their scores.
    hot : (str, float) or None
        ``("keep" | "remove", sigmas)``: hot pixels (:mod:`fluoden_batch.restore.hot`,
        with the plane's ``a`` and ``b``; none looked for where they are None) are
        replaced by their neighbours' median before the protocol, and the output keeps
        the input's value there (``keep``) or the protocol's (``remove``); counted in
        the stats (``hot_pixels``). The region's halo must hold one more pixel
        (:data:`~fluoden_batch.restore.hot.REACH`).

    Returns
    -------
    BlockOutput
    """
    out = np.empty(region.shape[:-2] + _cropped(region.shape[-2:], crop), dtype=np.float32)
    labels = np.empty(out.shape, dtype=np.uint8) if labelled else None
    sig_in, sig_out, noise_in = [], [], []
    t_noise = 0.0
    hot_count = 0
    for idx in planes(region.shape):
        plane_params = params(idx)
        plane_in = _central(region[idx][crop])
        t = time.perf_counter()
        noise_in.append(_noise_or_none(plane_in))
        t_noise += time.perf_counter() - t
        plane, found = region[idx], None
        if hot is not None and plane_params.a is not None and plane_params.b is not None:
            found = find_hot(plane, plane_params.a, plane_params.b, hot[1])
            if found.any():
                plane = inpaint(plane, found)
            hot_count += int(found[crop].sum())
        y = protocol(network, plane, plane_params, tile, precision)[crop]
        if found is not None and hot[0] == "keep" and found[crop].any():
            y = np.where(found[crop], region[idx][crop], y)
        out[idx] = y
        if labels is not None:
            assert plane_params.centres is not None
            labels[idx] = masked_labels(region[idx], plane_params.centres, plane_params.sigma)[crop]
        sig_in.append(_sigma_or_nan(plane_in))
        sig_out.append(_sigma_or_nan(_central(y)))
    known = [n for n in noise_in if n is not None]
    stats: dict[str, Any] = {
        "seconds_noise": t_noise,
        "noise_sigma_in": _mean_or_none(sig_in),
        "noise_sigma_out": _mean_or_none(sig_out),
        "noise_a": _mean_or_none([n[0] for n in known]),
        "noise_b": _mean_or_none([n[1] for n in known]),
        "noise_planes": len(known),
    }
    if hot is not None:
        stats["hot_pixels"] = hot_count
    if labels is not None:
        stats.update(_cluster_columns(region[(..., *crop)], labels))
    return BlockOutput(out, labels, stats)


def _cropped(shape: tuple[int, ...], crop: tuple[slice, slice]) -> tuple[int, int]:
    h, w = shape
    return len(range(*crop[0].indices(h))), len(range(*crop[1].indices(w)))


def check_finite(region: np.ndarray, name: str) -> None:
    """Refuse a block read with NaN or infinite pixels (``name``: the block, for the
    error), which the model would spread over its receptive field.

    Raises
    ------
    InputError
        Naming the block and how many such pixels it holds.
    """
    if region.dtype.kind == "f" and not np.isfinite(region).all():
        bad = int((~np.isfinite(region)).sum())
        raise InputError(f"{name}: {bad} NaN/Inf pixels; fill or mask them before denoising")


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


def reference_scores(
    noisy: np.ndarray, denoised: np.ndarray, reference: np.ndarray, data_range: float
) -> dict[str, float]:
    """Squared errors, PSNR (dB) and SSIM of the input and of the output against a clean
    ``reference`` (all of one block's shape, data units; SSIM per Y/X plane, averaged)."""
    ref = np.asarray(reference, dtype=np.float64)
    den = denoised.astype(np.float64)
    scores: dict[str, float] = {
        "sse_in": float(((noisy - ref) ** 2).sum()),
        "sse_out": float(((den - ref) ** 2).sum()),
    }
    n = ref.size
    for key, img in (("in", noisy), ("out", den)):
        mse = scores[f"sse_{key}"] / n
        scores[f"psnr_{key}"] = float(10 * np.log10(data_range**2 / mse)) if mse > 0 else np.inf
        if min(ref.shape[-2:]) >= 7:
            scores[f"ssim_{key}"] = float(
                np.mean([ssim(img[i], ref[i], data_range) for i in planes(ref.shape)])
            )
    return scores

"""Metrics table -> run summary (dict), and its human-readable rendering."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _weighted(metrics: pd.DataFrame, column: str) -> float | None:
    if column not in metrics:
        return None
    values = pd.to_numeric(metrics[column], errors="coerce")
    ok = values.notna() & np.isfinite(values)
    if not ok.any():
        return None
    return float(np.average(values[ok], weights=metrics.loc[ok, "pixels"]))


def _global_psnr(metrics: pd.DataFrame, which: str, data_range: float | None) -> float | None:
    column = f"sse_{which}"
    if column not in metrics or data_range is None:
        return None
    mse = metrics[column].sum() / metrics["pixels"].sum()
    return float(10 * math.log10(data_range**2 / mse)) if mse > 0 else math.inf


def summarise(
    metrics: pd.DataFrame,
    wall_seconds: float,
    blocks_total: int,
    data_range: float | None = None,
) -> dict[str, Any]:
    """Summary of a run from its per-block metrics.

    PSNR is computed from the summed squared errors over all blocks (the PSNR of the
    whole dataset, not a mean of per-block PSNRs); SSIM, noise estimates (``sigma``,
    and the Poisson-Gaussian ``a``, ``b``) and cluster scores (silhouette,
    Davies-Bouldin; with labels only) are means weighted by block pixels over the blocks
    that have a value.

    Returns
    -------
    dict
        JSON-compatible: blocks, pixels, seconds, Mpx/s, noise before/after, PSNR/SSIM,
        cluster scores.
    """
    summary: dict[str, Any] = {"blocks_total": blocks_total, "blocks_done": len(metrics)}
    if metrics.empty:
        return summary
    pixels = int(metrics["pixels"].sum())
    summary.update(
        pixels=pixels,
        wall_seconds=round(wall_seconds, 3),
        task_seconds=round(float(metrics["seconds"].sum()), 3),
        noise_sigma_in=_weighted(metrics, "noise_sigma_in"),
        noise_sigma_out=_weighted(metrics, "noise_sigma_out"),
        noise_a=_weighted(metrics, "noise_a"),
        noise_b=_weighted(metrics, "noise_b"),
        saturated_fraction=_weighted(metrics, "saturated_fraction"),
        missing_chunks=int(metrics["missing_chunks"].sum()),
    )
    if "hot_pixels" in metrics:  # blocks of a run with --hot-pixels, NaN in others
        summary["hot_pixels"] = int(metrics["hot_pixels"].fillna(0).sum())
    for column in ("cluster_silhouette", "cluster_davies_bouldin"):
        if column in metrics:
            summary[column] = _weighted(metrics, column)
    if data_range is not None:
        summary.update(
            data_range=data_range,
            psnr_in=_global_psnr(metrics, "in", data_range),
            psnr_out=_global_psnr(metrics, "out", data_range),
            ssim_in=_weighted(metrics, "ssim_in"),
            ssim_out=_weighted(metrics, "ssim_out"),
        )
    return summary


SUMMARY_LABELS = {
    "blocks_done": ("blocks finished", "{:d}"),
    "pixels": ("pixels", "{:,d}"),
    "wall_seconds": ("wall time this run (s)", "{:.1f}"),
    "mpx_per_s": ("throughput this run (Mpx/s)", "{:.2f}"),
    "noise_sigma_in": ("noise sigma before", "{:.4g}"),
    "noise_sigma_out": ("noise sigma after", "{:.4g}"),
    "noise_a": ("noise gain a before", "{:.4g}"),
    "noise_b": ("noise variance b before", "{:.4g}"),
    "saturated_fraction": ("saturated input pixels", "{:.3%}"),
    "missing_chunks": ("missing input chunks (read as fill value)", "{:d}"),
    "hot_pixels": ("hot pixels found (--hot-pixels)", "{:d}"),
    "psnr_in": ("PSNR before (dB)", "{:.2f}"),
    "psnr_out": ("PSNR after (dB)", "{:.2f}"),
    "ssim_in": ("SSIM before", "{:.4f}"),
    "ssim_out": ("SSIM after", "{:.4f}"),
    "data_range": ("PSNR/SSIM data range", "{:.6g}"),
    "cluster_silhouette": ("mean cluster silhouette", "{:.3f}"),
    "cluster_davies_bouldin": ("mean cluster Davies-Bouldin", "{:.3f}"),
}


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs of the summary entries that are present."""
    rows = []
    for key, (label, fmt) in SUMMARY_LABELS.items():
        value = summary.get(key)
        if value is not None:
            rows.append((label, fmt.format(value)))
    return rows

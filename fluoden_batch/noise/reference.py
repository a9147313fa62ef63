"""The "oracle" noise fit: (a, b) from a noisy image and its clean reference."""

from __future__ import annotations

import numpy as np

from fluoden_batch.errors import NoiseEstimationError


def oracle_fit(
    noisy: np.ndarray,
    clean: np.ndarray,
    clip: tuple[float, float] = (0.0, 255.0),
    bins: int = 40,
    min_count: int = 500,
    quantisation: float = 1 / 12,
) -> tuple[float, float, int]:
    """Fit ``var(noisy - clean) = a * level + b`` over bins of the clean intensity.

    Parameters
    ----------
    noisy, clean : ndarray, shape (H, W)
        A noisy frame and its reference (e.g. a 50-frame average), same units.
    clip : (lo, hi)
        Sensor range; bins with more than 0.1 % of noisy pixels at a bound are dropped.
    bins : int
        Number of quantile bins of ``clean``.
    min_count : int
        Fewest pixels a bin needs.
    quantisation : float
        Variance of the reference's rounding (1/12 for an integer-valued reference),
        subtracted from each bin's variance.

    Returns
    -------
    a, b, n_levels
        The slope and intercept of a weighted least-squares fit (weights from the fitted
        variance, iterated), with the mean noisy level of each bin on the x-axis (frames
        can be a few percent brighter or dimmer than the reference), and the bins used.
    """
    noisy, clean = noisy.astype(np.float64), clean.astype(np.float64)
    edges = np.unique(np.quantile(clean, np.linspace(0, 1, bins + 1)))
    labels = np.clip(np.searchsorted(edges, clean, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for i in range(len(edges) - 1):
        sel = labels == i
        at_bounds = np.mean((noisy[sel] <= clip[0]) | (noisy[sel] >= clip[1]))
        if sel.sum() >= min_count and at_bounds <= 1e-3:
            diff = noisy[sel] - clean[sel]
            rows.append((noisy[sel].mean(), np.var(diff, ddof=1) - quantisation, sel.sum()))
    if len(rows) < 2:
        raise NoiseEstimationError(f"only {len(rows)} usable intensity bins for an oracle fit")
    level, var, n = map(np.array, zip(*rows, strict=True))
    theta = np.polyfit(level, var, 1, w=np.sqrt(n) / np.maximum(var, 1e-3))
    for _ in range(5):  # weights from the fitted variance, not the noisy observed one
        theta = np.polyfit(
            level, var, 1, w=np.sqrt(n / 2) / np.maximum(np.polyval(theta, level), 1e-3)
        )
    return float(theta[0]), float(theta[1]), len(level)

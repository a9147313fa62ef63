"""Level sets and the fit of ``Var[z | y] = a * y + b`` to them, with clipping (Foi 2009).

A pixel with clean value ``y`` and noise standard deviation ``sigma(y) = sqrt(a y + b)``
is observed as ``clip(y + sigma * N(0, 1), lo, hi)``; near the bounds its mean and
variance differ from ``y`` and ``sigma^2``, and the fit uses the clipped-normal moments.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

__all__ = [
    "bin_levels",
    "clipped_moments",
    "fit_variance_model",
    "group_medians",
    "level_sets",
    "pilot_level_sets",
    "unclipped_level",
]

_CHI2_1_MEDIAN = 0.454936423119572  # median of a chi-square variable with 1 dof
_PILOT_SAMPLE = 2**17  # blocks used for the pilot medians
_BIG = 40.0  # |standardised bound| beyond which the bound has no effect in float64
_SQRT_2PI = np.sqrt(2.0 * np.pi)


def clipped_moments(
    y: np.ndarray, sigma: np.ndarray, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``clip(N(y, sigma^2), lo, hi)``.

    Parameters
    ----------
    y : numpy.ndarray, shape (n,)
        Means of the unclipped normal variables, data units.
    sigma : numpy.ndarray, shape (n,)
        Their standard deviations (> 0), data units.
    lo, hi : float
        Clipping bounds, data units; ``-inf`` / ``inf`` for none.

    Returns
    -------
    mean, var : numpy.ndarray, shape (n,)
        Mean (data units) and variance (squared data units) after clipping.
    """
    alpha = np.clip((lo - y) / sigma, -_BIG, _BIG)
    beta = np.clip((hi - y) / sigma, -_BIG, _BIG)
    p_lo, p_hi = special.ndtr(alpha), special.ndtr(-beta)  # mass clipped at lo / hi
    phi_a = np.exp(-0.5 * alpha**2) / _SQRT_2PI
    phi_b = np.exp(-0.5 * beta**2) / _SQRT_2PI
    inside = 1.0 - p_lo - p_hi
    # Moments of the standardised variable t = (clip(x) - y) / sigma.
    m1 = alpha * p_lo + (phi_a - phi_b) + beta * p_hi
    m2 = alpha**2 * p_lo + (inside + alpha * phi_a - beta * phi_b) + beta**2 * p_hi
    return y + sigma * m1, sigma**2 * np.maximum(m2 - m1**2, 0.0)


def unclipped_level(
    mean: np.ndarray, a: float, b: float, lo: float, hi: float, n_iter: int = 30
) -> np.ndarray:
    """Clean level ``y`` whose clipped mean is ``mean``, for ``Var = a y + b``.

    Parameters
    ----------
    mean : numpy.ndarray, shape (n,)
        Observed (clipped) means, data units, strictly inside ``(lo, hi)``.
    a, b : float
        Noise parameters (``a >= 0``).
    lo, hi : float
        Clipping bounds, data units.
    n_iter : int
        Newton iterations.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Levels ``y`` in data units (may lie outside ``[lo, hi]``).
    """
    floor = 1e-12 * max(1.0, float(np.max(np.abs(mean))))
    y = mean.astype(np.float64, copy=True)
    for _ in range(n_iter):
        sigma = np.sqrt(np.maximum(a * y + b, floor))
        m, _var = clipped_moments(y, sigma, lo, hi)
        alpha, beta = (lo - y) / sigma, (hi - y) / sigma
        slope = np.maximum(special.ndtr(beta) - special.ndtr(alpha), 1e-3)
        step = (mean - m) / slope
        y += np.clip(step, -5.0 * sigma, 5.0 * sigma)
        if np.all(np.abs(step) <= 1e-9 * sigma):
            break
    return y


def bin_levels(level: np.ndarray, n_bins: int, min_count: int) -> tuple[np.ndarray, int]:
    """Equal-width bins of ``level`` merged upwards until each holds ``min_count`` items.

    Parameters
    ----------
    level : numpy.ndarray, shape (n,)
        Intensity of each item, data units.
    n_bins : int
        Number of equal-width bins spanning the central 99.9 % of ``level``.
    min_count : int
        Fewest items in a level set.

    Returns
    -------
    labels : numpy.ndarray of int, shape (n,)
        Level-set index of each item, -1 outside the central 99.9 %.
    n_sets : int
        Number of level sets.
    """
    if level.size == 0:
        return np.zeros(0, dtype=np.int64), 0
    lo, hi = np.quantile(level, [0.0005, 0.9995])
    if not hi > lo:
        return np.full(level.shape, -1), 0
    raw = ((level - lo) * (n_bins / (hi - lo))).astype(np.int64)
    raw[(level < lo) | (level > hi)] = -1
    np.minimum(raw, n_bins - 1, out=raw)
    counts = np.bincount(raw[raw >= 0], minlength=n_bins)
    relabel = np.empty(n_bins, dtype=np.int64)
    current, acc = 0, 0
    for i, c in enumerate(counts):
        relabel[i] = current
        acc += int(c)
        if acc >= min_count:
            current, acc = current + 1, 0
    if acc:  # a last, too small group joins the one below
        if current == 0:
            return np.full(level.shape, -1), 0
        relabel[relabel == current] = current - 1
    return np.where(raw >= 0, relabel[np.maximum(raw, 0)], -1), current


def group_medians(values: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` within each label (labels < 0 ignored; NaN for empty groups)."""
    keep = labels >= 0
    values, labels = values[keep], labels[keep]
    order = np.lexsort((values, labels))
    counts = np.bincount(labels, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_groups, np.nan)
    has = counts > 0
    out[has] = values[order[starts[has] + (counts[has] - 1) // 2]]
    return out


def pilot_level_sets(
    level: np.ndarray, leak: np.ndarray, diag: np.ndarray, n_bins: int, min_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pilot level sets of all blocks, robust to signal: median ``HH^2`` of the calm half.

    Parameters
    ----------
    level : numpy.ndarray, shape (n,)
        Binning intensity of each block (mean of its neighbours).
    leak : numpy.ndarray, shape (n,)
        Estimated signal leakage into ``HH`` of each block.
    diag : numpy.ndarray, shape (n,)
        Diagonal detail ``HH`` of each block.
    n_bins, min_count : int
        As in :func:`bin_levels` (``min_count`` is scaled down with the subsampling).

    Returns
    -------
    levels, variances, counts : numpy.ndarray, shape (n_sets,)
        Mean binning level, robust ``HH`` variance and number of calm blocks per set.
    """
    step = max(1, level.size // _PILOT_SAMPLE)
    level, leak, diag = level[::step], leak[::step], diag[::step]
    labels, n_sets = bin_levels(level, n_bins, max(min_count // step, 16))
    if n_sets == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    calm = labels >= 0
    calm[calm] = leak[calm] <= group_medians(leak, labels, n_sets)[labels[calm]]
    labels = np.where(calm, labels, -1)
    counts = np.bincount(labels[calm], minlength=n_sets).astype(np.float64)
    levels = np.bincount(labels[calm], level[calm], n_sets) / np.maximum(counts, 1)
    variances = group_medians(diag**2, labels, n_sets) / _CHI2_1_MEDIAN
    ok = (counts > 0) & (variances > 0)
    return levels[ok], variances[ok], counts[ok]


def level_sets(
    level: np.ndarray,
    mean: np.ndarray,
    diag: np.ndarray,
    clipped: np.ndarray | None,
    n_bins: int,
    min_count: int,
    max_clipped: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level, ``HH`` variance and size of each level set; too clipped sets are dropped.

    ``level`` bins the blocks, ``mean`` (their own 2x2 means) gives each set's level and
    ``mean(diag^2)`` its variance; ``clipped`` is each block's fraction of pixels on a
    clipping bound (``None``: no clipping). Returns arrays of shape ``(n_sets,)``.
    """
    labels, n_sets = bin_levels(level, n_bins, min_count)
    keep = labels >= 0
    labels = labels[keep]
    counts = np.bincount(labels, minlength=n_sets).astype(np.float64)
    levels = np.bincount(labels, mean[keep], n_sets) / np.maximum(counts, 1)
    variances = np.bincount(labels, diag[keep] ** 2, n_sets) / np.maximum(counts, 1)
    ok = (counts > 0) & (variances > 0)
    if clipped is not None:
        ok &= np.bincount(labels, clipped[keep], n_sets) <= max_clipped * counts
    return levels[ok], variances[ok], counts[ok]


class _Model:
    """Predicted detail variance of level sets for parameters ``(a, b)``, with clipping."""

    def __init__(self, levels: np.ndarray, near: np.ndarray, bounds: tuple[float, float]):
        self.levels, self.near, self.bounds = levels, near, bounds

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        a, b = float(theta[0]), float(theta[1])
        var = a * self.levels + b
        if self.near.any():
            lo, hi = self.bounds
            m = self.levels[self.near]
            y = unclipped_level(m, a, b, lo, hi)
            sigma = np.sqrt(np.maximum(a * y + b, 1e-12 * max(1.0, float(np.abs(m).max()))))
            var[self.near] = clipped_moments(y, sigma, lo, hi)[1]
        return var


def fit_variance_model(
    levels: np.ndarray,
    variances: np.ndarray,
    counts: np.ndarray,
    bounds: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust IRLS fit of ``var = a * level + b`` (clipped near ``bounds``), ``a >= 0``.

    Weights are the inverse sampling variances ``2 var^2 / n`` of the level-set variances,
    recomputed from the fitted model at each iteration; a Huber loss with a scale taken
    from the residuals' MAD limits the pull of level sets with residual signal.

    Parameters
    ----------
    levels : numpy.ndarray, shape (n,)
        Mean (clipped) intensity of each level set, data units.
    variances : numpy.ndarray, shape (n,)
        Noise variance measured in each level set (> 0), squared data units.
    counts : numpy.ndarray, shape (n,)
        Number of samples behind each variance.
    bounds : (lo, hi) or None
        Clipping bounds in data units; level sets within six noise standard deviations
        of a bound are fitted with the clipped-normal variance.

    Returns
    -------
    theta : numpy.ndarray, shape (2,)
        ``(a, b)``.
    cov : numpy.ndarray, shape (2, 2)
        Their covariance, scaled up by the reduced chi-square when it exceeds 1.
    """
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    reach = 6.0 * np.sqrt(variances)
    near = (levels - lo < reach) | (hi - levels < reach)
    model = _Model(levels, near, (lo, hi))
    w = counts / variances**2
    design = np.stack([levels, np.ones_like(levels)], axis=1)
    theta = np.linalg.lstsq(design * np.sqrt(w)[:, None], variances * np.sqrt(w), rcond=None)[0]
    theta[0] = max(theta[0], 0.0)
    floor = 1e-3 * float(np.median(variances))
    for _ in range(10):
        sd = np.maximum(model(theta), floor) * np.sqrt(2.0 / counts)
        resid = (variances - model(theta)) / sd
        scale = max(1.0, 1.4826 * float(np.median(np.abs(resid - np.median(resid)))))
        res = optimize.least_squares(
            lambda t, sd=sd: (variances - model(t)) / sd,
            theta,
            bounds=([0.0, -np.inf], [np.inf, np.inf]),
            loss="huber",
            f_scale=1.345 * scale,
            x_scale="jac",
        )
        step = np.abs(res.x - theta)
        theta = res.x
        if np.all(step <= 1e-6 * (np.abs(theta) + np.sqrt(floor))):
            break
    jac = res.jac
    dof = max(len(levels) - 2, 1)
    chi2 = float(np.sum(res.fun**2)) / dof
    return theta, np.linalg.pinv(jac.T @ jac) * max(chi2, 1.0)

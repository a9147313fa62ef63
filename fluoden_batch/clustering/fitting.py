"""The three methods on prepared points: fit on all weighted points (exact) or on a
bounded sample, then label every point. Called by
:func:`~fluoden_batch.clustering.algorithms.cluster_image`, which explains the scaling
and exactness rules; all points here are standardised feature vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import kmeans_plusplus

from fluoden_batch.clustering.backends import ClusterBackend
from fluoden_batch.clustering.neighbours import (
    assign_nearest,
    core_distances,
    kdistance_sorted_1d,
    knee_eps,
    nearest_centre,
    sample_indices,
)
from fluoden_batch.errors import InputError

__all__ = [
    "DBSCAN_MIN_FRACTION",
    "HDBSCAN_MIN_FRACTION",
    "MAX_ITER",
    "Points",
    "kmeans_fit",
    "kmeans_inits",
    "run_dbscan",
    "run_hdbscan",
    "run_kmeans",
]

DBSCAN_MIN_FRACTION = 1e-3  # default min_samples: 0.1 % of the block's pixels (at least 5)
HDBSCAN_MIN_FRACTION = 0.02  # default min_cluster_size: 2 % of the fitted sample (at least 5)
MAX_ITER = 300  # Lloyd iterations per K-means run

Fitted = tuple[np.ndarray, dict[str, Any]]  # labels per point (-1 noise), parameters used


@dataclass(frozen=True)
class Points:
    """What a method clusters.

    Attributes
    ----------
    x : ndarray, shape (m, d)
        Standardised points: distinct intensities (histogram) or one row per pixel.
    weight : ndarray, shape (m,), or None
        Pixels per point (histogram); None = one pixel each.
    n_pixels : int
        Pixels of the block.
    step : float
        Quantisation step of the points, standardised units (0 when not quantised).
    """

    x: np.ndarray
    weight: np.ndarray | None
    n_pixels: int
    step: float

    def fit_set(self, max_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Points to fit on, float64: all of them when weighted (exact), else a uniform
        sample of at most ``max_samples`` pixels."""
        if self.weight is not None:
            return np.asarray(self.x, dtype=np.float64)
        pick = sample_indices(len(self.x), max_samples, rng)
        return np.asarray(self.x[pick], dtype=np.float64)


def kmeans_inits(
    x: np.ndarray, weight: np.ndarray | None, k: int, n_init: int, seed: int
) -> np.ndarray:
    """``n_init`` weighted k-means++ initialisations, deterministic for a seed.

    Returns
    -------
    ndarray, shape (n_init, k, d)
    """
    rs = np.random.RandomState(seed)
    return np.stack(
        [kmeans_plusplus(x, k, sample_weight=weight, random_state=rs)[0] for _ in range(n_init)]
    )


def kmeans_fit(
    x: np.ndarray, weight: np.ndarray | None, inits: np.ndarray, backend: ClusterBackend
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's K-means from each initialisation; keep the run of lowest inertia.

    Parameters
    ----------
    x : ndarray, shape (n, d)
    weight : ndarray, shape (n,), or None
    inits : ndarray, shape (n_init, k, d)
    backend : ClusterBackend

    Returns
    -------
    labels : ndarray, shape (n,)
    centers : ndarray, shape (k, d)
    """
    runs = [backend.kmeans(x, init, weight, MAX_ITER) for init in inits]
    labels, centers, _ = min(runs, key=lambda run: run[2])
    return labels, centers


def run_kmeans(
    pts: Points,
    k: int,
    n_init: int,
    max_samples: int,
    backend: ClusterBackend,
    seed: int,
    rng: np.random.Generator,
) -> Fitted:
    """K-means; ``k`` is reduced to the number of distinct fitted points if fewer."""
    x_fit = pts.fit_set(max_samples, rng)
    distinct = len(x_fit) if pts.weight is not None else len(np.unique(x_fit, axis=0))
    k_used = min(k, distinct)
    inits = kmeans_inits(x_fit, pts.weight, k_used, n_init, seed)
    labels, centers = kmeans_fit(x_fit, pts.weight, inits, backend)
    if pts.weight is None:
        labels = nearest_centre(pts.x, centers)
    return labels, {"k": k_used, "n_init": n_init, "n_fit": len(x_fit)}


def run_dbscan(
    pts: Points,
    eps: float | None,
    min_samples: int | None,
    max_samples: int,
    backend: ClusterBackend,
    rng: np.random.Generator,
) -> Fitted:
    """DBSCAN; ``min_samples`` counts pixels of the block (scaled down on a sample)."""
    min_samples = min_samples or max(5, math.ceil(DBSCAN_MIN_FRACTION * pts.n_pixels))
    if min_samples < 1:
        raise InputError(f"min_samples={min_samples}: must be >= 1")
    x_fit = pts.fit_set(max_samples, rng)
    if pts.weight is not None:  # exact: every distinct value, weighted
        ms_fit = min_samples
        eps = eps or knee_eps(kdistance_sorted_1d(x_fit[:, 0], pts.weight, ms_fit), pts.weight)
    else:  # a sample: the density threshold shrinks with the sampled fraction
        ms_fit = max(2, round(min_samples * len(x_fit) / pts.n_pixels))
        eps = eps or knee_eps(core_distances(x_fit, ms_fit))
    labels, core = backend.dbscan(x_fit, eps, ms_fit, pts.weight)
    used = {"eps": eps, "min_samples": min_samples, "min_samples_fit": ms_fit, "n_fit": len(x_fit)}
    if pts.weight is not None:
        return labels, used
    if not core.any():
        return np.full(len(pts.x), -1, dtype=np.int32), used
    return assign_nearest(pts.x, x_fit[core], labels[core], eps), used


def run_hdbscan(
    pts: Points,
    min_cluster_size: int | None,
    min_samples: int | None,
    max_samples: int,
    backend: ClusterBackend,
    rng: np.random.Generator,
) -> Fitted:
    """HDBSCAN on a pixel sample, then every point labelled from its nearest sample."""
    pick = sample_indices(pts.n_pixels, max_samples, rng)
    if pts.weight is None:
        x_fit = np.asarray(pts.x[pick], dtype=np.float64)
    else:  # sample pixels: pixel i (in value order) has the value where cumsum(weight) > i;
        # spread repeated values over their quantisation step (HDBSCAN sees repeats as
        # infinitely dense points and would split the histogram level by level)
        owner = np.searchsorted(np.cumsum(pts.weight), pick, side="right")
        x_fit = pts.x[owner] + rng.uniform(-pts.step / 2, pts.step / 2, (len(pick), 1))
    mcs = min_cluster_size or max(5, math.ceil(HDBSCAN_MIN_FRACTION * len(x_fit)))
    if mcs < 2:
        raise InputError(f"min_cluster_size={mcs}: must be >= 2")
    ms = min(min_samples or mcs, len(x_fit))
    labels_fit = backend.hdbscan(x_fit, mcs, ms) if len(x_fit) >= mcs else np.full(len(x_fit), -1)
    clustered = labels_fit >= 0
    bound = float(core_distances(x_fit, ms)[clustered].max()) if clustered.any() else 0.0
    used = {"min_cluster_size": mcs, "min_samples": ms, "n_fit": len(x_fit), "assign_bound": bound}
    return assign_nearest(pts.x, x_fit, labels_fit, bound), used

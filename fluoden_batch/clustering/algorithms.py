"""Cluster the pixels of one Y/X block: K-means, DBSCAN or HDBSCAN, on any backend.

:func:`cluster_image` is the per-block entry point (pure function of the block and its
parameters, picklable result, safe to call from a Dask task). How each method scales:

============  ======================================  =====================================
method        intensity only (default features)      with local / coordinate features
============  ======================================  =====================================
``kmeans``    weighted Lloyd on the distinct values   fit on <= ``max_samples`` pixels
              (pixel counts as weights): **exact**    (100 000), every pixel then gets
                                                      its nearest centre
``dbscan``    weighted DBSCAN on the distinct values  fit on <= ``max_samples`` pixels
              (pixel counts as weights): **exact**    (5 000) with ``min_samples`` scaled
                                                      by the sampled fraction; a pixel
                                                      gets the label of its nearest core
                                                      sample within ``eps``, else noise
``hdbscan``   fit on <= ``max_samples`` pixels (5 000), then every pixel (distinct value)
              gets the label of its nearest fitted sample, or noise when that sample is
              noise or farther than the largest core distance of a clustered sample
============  ======================================  =====================================

"Exact" means the labels equal those of the same algorithm run on every pixel:
K-means from the same initial centres (Lloyd's update is a weighted mean, so a value
repeated ``c`` times is one point of weight ``c``; a value exactly midway between two
centres is a tie that rounding may break either way in either computation); DBSCAN with
the same ``eps`` and ``min_samples`` (DBSCAN counts weights towards ``min_samples``),
except for border points reachable from two clusters, which DBSCAN itself assigns by
processing order.
Integer blocks are exact; float blocks are quantised into ``bins`` bins (see
:func:`~fluoden_batch.clustering.features.intensity_histogram`) and exact only when no
bin holds two values; ``result.params["exact"]`` says which.

Labels are renumbered by increasing mean intensity (label 0 = darkest cluster, -1 =
noise), so the same structures get the same labels across blocks and backends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fluoden_batch.clustering.backends import BackendChoice, ClusterBackend, select_backend
from fluoden_batch.clustering.features import (
    FeatureScaling,
    FeatureSpec,
    intensity_histogram,
    pixel_features,
)
from fluoden_batch.clustering.fitting import Points, run_dbscan, run_hdbscan, run_kmeans
from fluoden_batch.errors import InputError

__all__ = ["MAX_SAMPLES", "ClusterResult", "Method", "cluster_image"]

Method = Literal["kmeans", "dbscan", "hdbscan"]
MAX_SAMPLES = {"kmeans": 100_000, "dbscan": 5_000, "hdbscan": 5_000}


@dataclass(frozen=True)
class ClusterResult:
    """Clustering of one block.

    Attributes
    ----------
    labels : ndarray, shape (height, width), int32
        0..n_clusters-1 by increasing mean intensity; -1 = noise (DBSCAN/HDBSCAN).
    means : ndarray, shape (n_clusters,), float64
        Mean intensity of each label, data units.
    centers : ndarray, shape (n_clusters, n_features), float64
        Mean raw feature vector of each label (columns as ``scaling.columns``).
    sizes : ndarray, shape (n_clusters,), int64
        Pixels per label.
    n_noise : int
        Pixels labelled -1.
    method, backend : str
        Algorithm and backend name (``"sklearn"`` or ``"cuml"``).
    seconds : float
        Wall time of the call, s.
    scaling : FeatureScaling
        Standardisation of the features (``eps`` is in these standardised units).
    params : dict
        Every parameter as used (defaults resolved): ``k``, ``n_init``, ``eps``,
        ``min_samples``, ``min_cluster_size``, ``features``, ``window``, ``seed``,
        ``max_samples``, ``n_fit`` (points the algorithm was fitted on), ``exact``, ...
    """

    labels: np.ndarray
    means: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    n_noise: int
    method: str
    backend: str
    seconds: float
    scaling: FeatureScaling
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        """Number of clusters (noise not counted)."""
        return len(self.means)


def _check_params(method: str, k: int, n_init: int, eps: float | None, seed: int) -> None:
    if method not in MAX_SAMPLES:
        raise InputError(f"clustering method {method!r}: use 'kmeans', 'dbscan' or 'hdbscan'")
    if k < 1 or n_init < 1:
        raise InputError(f"k={k}, n_init={n_init}: both must be >= 1")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        raise InputError(f"eps={eps}: must be a finite number > 0 (or None for automatic)")
    if seed < 0:
        raise InputError(f"seed={seed}: must be >= 0")


def cluster_image(
    image: np.ndarray,
    method: Method = "kmeans",
    *,
    k: int = 3,
    eps: float | None = None,
    min_samples: int | None = None,
    min_cluster_size: int | None = None,
    features: FeatureSpec | None = None,
    backend: BackendChoice | ClusterBackend = "auto",
    seed: int = 0,
    max_samples: int | None = None,
    n_init: int = 4,
    bins: int = 4096,
) -> ClusterResult:
    """Cluster the pixels of one 2-D block (scaling and exactness in the module doc).

    Parameters
    ----------
    image : ndarray, shape (height, width), real dtype
        One Y/X block, data units, finite.
    method : {"kmeans", "dbscan", "hdbscan"}
    k : int
        K-means clusters (reduced to the number of distinct feature vectors if fewer).
    eps : float, optional
        DBSCAN radius in standardised feature units (standard deviations); None = the
        k-distance knee (:mod:`~fluoden_batch.clustering.neighbours`), computed exactly
        over all pixels for intensity features, on the fitted sample otherwise.
    min_samples : int, optional
        DBSCAN: pixels (weight) a neighbourhood must hold for a core point, default
        ``max(5, ceil(0.001 * pixels))``. HDBSCAN: neighbours for the core distance,
        counted in the fitted sample, default ``min_cluster_size``.
    min_cluster_size : int, optional
        HDBSCAN: smallest cluster, in points of the fitted sample; default
        ``max(5, ceil(0.02 * n_fit))``.
    features : FeatureSpec, optional
        Default: intensity only.
    backend : {"auto", "gpu", "cpu"} or ClusterBackend
        See :func:`~fluoden_batch.clustering.backends.select_backend`.
    seed : int
        Seeds the k-means++ initialisations and every sample (same seed, same labels).
    max_samples : int, optional
        Largest number of points an algorithm is fitted on where it samples (see the
        module doc); default per method: kmeans 100 000, dbscan 5 000, hdbscan 5 000.
    n_init : int
        K-means initialisations; the lowest-inertia run is kept.
    bins : int
        Histogram bins for float intensity data.

    Returns
    -------
    ClusterResult
    """
    t0 = time.perf_counter()
    _check_params(method, k, n_init, eps, seed)
    spec = FeatureSpec() if features is None else features
    if not isinstance(spec, FeatureSpec):
        raise InputError(f"features must be a FeatureSpec, got {features!r}")
    engine, _ = select_backend(backend)
    max_samples = max_samples or MAX_SAMPLES[method]
    if max_samples < 2:
        raise InputError(f"max_samples={max_samples}: must be >= 2")
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {"features": list(spec.columns), "window": spec.window}
    params.update(seed=seed, max_samples=max_samples, n_pixels=int(np.asarray(image).size))

    if spec.intensity_only:
        hist = intensity_histogram(image, bins)
        scaling = hist.scaling()
        x = scaling.apply(hist.values[:, None])
        step = hist.step / scaling.scale[0]
        pts = Points(x, hist.counts.astype(np.float64), int(hist.counts.sum()), step)
        intensity = hist.values
        params.update(bins=bins, exact=hist.exact and method != "hdbscan", n_points=len(x))
    else:
        feats = pixel_features(image, spec)
        scaling = feats.scaling
        pts = Points(feats.x, None, len(feats.x), 0.0)
        intensity = np.asarray(image, dtype=np.float64).ravel()
        params.update(exact=False, n_points=len(feats.x))

    if method == "kmeans":
        labels, used = run_kmeans(pts, k, n_init, max_samples, engine, seed, rng)
    elif method == "dbscan":
        labels, used = run_dbscan(pts, eps, min_samples, max_samples, engine, rng)
    else:
        labels, used = run_hdbscan(pts, min_cluster_size, min_samples, max_samples, engine, rng)
    params.update(used)

    labels, means, centers, sizes, n_noise = _order_by_intensity(labels, pts, intensity)
    if spec.intensity_only:
        labels = labels[hist.index]
    return ClusterResult(
        labels=labels.reshape(np.shape(image)),
        means=means,
        centers=scaling.invert(centers),
        sizes=sizes,
        n_noise=n_noise,
        method=method,
        backend=engine.name,
        seconds=time.perf_counter() - t0,
        scaling=scaling,
        params=params,
    )


def _order_by_intensity(
    labels: np.ndarray, pts: Points, intensity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Renumber labels by increasing mean intensity; per-label means, centres, sizes."""
    labels = np.asarray(labels, dtype=np.int64)
    w = np.ones(len(labels)) if pts.weight is None else pts.weight
    keep = labels >= 0
    n = int(labels.max()) + 1 if keep.any() else 0
    size = np.bincount(labels[keep], weights=w[keep], minlength=n)
    present = np.flatnonzero(size > 0)
    sums = np.bincount(labels[keep], weights=(w * intensity)[keep], minlength=n)
    mean_i = sums[present] / size[present]
    order = present[np.argsort(mean_i, kind="stable")]
    remap = np.full(n + 1, -1, dtype=np.int32)  # label -1 reads the last slot
    remap[order] = np.arange(len(order), dtype=np.int32)
    new = remap[labels]
    size_new = size[order]
    cols = np.asarray(pts.x, dtype=np.float64).T
    sums = [np.bincount(new[keep], weights=(w * c)[keep], minlength=len(order)) for c in cols]
    centers = np.stack(sums, axis=1) / np.maximum(size_new, 1)[:, None]
    n_noise = int(w[~keep].sum().round())
    return new, np.sort(mean_i), centers, np.rint(size_new).astype(np.int64), n_noise

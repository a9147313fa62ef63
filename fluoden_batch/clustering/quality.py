"""Cluster quality of one block: silhouette, Davies-Bouldin, WSS and cluster sizes.

Conventions (the same for every method, so the metrics table compares like with like):

- Noise points (label -1) are left out of the three scores and counted in ``n_noise``.
- ``silhouette``: scikit-learn's mean silhouette coefficient (Euclidean) on a uniform
  sample of at most ``sample_size`` clustered points, drawn with the given seed (all of
  them when there are fewer); in [-1, 1], higher is better.
- ``davies_bouldin``: over all clustered points, as scikit-learn defines it (0 when all
  clusters are single points or all centroids coincide); >= 0, lower is better.
- ``wss``: within-cluster sum of squares over all clustered points, in squared feature
  units (squared grey levels when scoring intensities); 0 when there are none.
- Undefined scores are NaN and ``reason`` says why: silhouette and Davies-Bouldin need
  2 <= clusters <= points - 1 (among the points they use) -- so one cluster, a constant
  block or an all-noise DBSCAN result give NaN, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import silhouette_score

from fluoden_batch.clustering.neighbours import sample_indices
from fluoden_batch.errors import InputError

__all__ = ["ClusterQuality", "cluster_quality", "davies_bouldin"]


@dataclass(frozen=True)
class ClusterQuality:
    """Quality scores of one clustering (conventions in the module doc).

    Attributes
    ----------
    silhouette, davies_bouldin, wss : float
        NaN where undefined (see ``reason``).
    sizes : dict of int to int
        Points per label, noise (-1) included when present.
    n_clusters, n_noise : int
        Clusters (noise excluded) and noise points.
    n_silhouette : int
        Points the silhouette was computed on.
    reason : str
        Why a score is NaN; empty when all are defined.
    """

    silhouette: float
    davies_bouldin: float
    wss: float
    sizes: dict[int, int]
    n_clusters: int
    n_noise: int
    n_silhouette: int
    reason: str = ""

    def as_row(self) -> dict[str, float | int | str]:
        """Flat columns for a metrics table (sizes as a compact ``label:count`` string)."""
        return {
            "silhouette": self.silhouette,
            "davies_bouldin": self.davies_bouldin,
            "wss": self.wss,
            "n_clusters": self.n_clusters,
            "n_noise": self.n_noise,
            "cluster_sizes": " ".join(f"{k}:{v}" for k, v in self.sizes.items()),
            "quality_note": self.reason,
        }


def _centroid_stats(x: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster centroids (n, d) and each point's distance to its centroid (m,)."""
    counts = np.bincount(codes, minlength=n)
    centroids = (
        np.stack(
            [np.bincount(codes, weights=x[:, j], minlength=n) for j in range(x.shape[1])], axis=1
        )
        / counts[:, None]
    )
    dist = np.sqrt(((x - centroids[codes]) ** 2).sum(axis=1))
    return centroids, dist


def davies_bouldin(x: np.ndarray, codes: np.ndarray, n: int) -> float:
    """Davies-Bouldin index of points ``x`` (m, d) with cluster codes 0..n-1 (all used,
    2 <= n <= m - 1), computed in O(m d) like :func:`sklearn.metrics.davies_bouldin_score`."""
    centroids, dist = _centroid_stats(x, codes, n)
    intra = np.bincount(codes, weights=dist, minlength=n) / np.bincount(codes, minlength=n)
    sep = np.sqrt(((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    if np.allclose(intra, 0) or np.allclose(sep, 0):
        return 0.0
    sep[sep == 0] = np.inf
    return float(np.mean(np.max((intra[:, None] + intra[None, :]) / sep, axis=1)))


def cluster_quality(
    x: np.ndarray, labels: np.ndarray, *, sample_size: int = 5000, seed: int = 0
) -> ClusterQuality:
    """Silhouette, Davies-Bouldin, WSS and sizes of a clustering.

    Parameters
    ----------
    x : ndarray, shape (n, d), or (height, width)
        Points in the space to score in: a 2-D image is taken as its pixel intensities
        (n = height * width, d = 1, data units); pass standardised features
        (:func:`~fluoden_batch.clustering.features.pixel_features`) to score in feature
        space.
    labels : ndarray, n elements (e.g. shape (height, width))
        Cluster label per point, -1 = noise.
    sample_size : int
        Largest number of points for the silhouette (O(sample_size**2) work).
    seed : int
        Seed of the silhouette sample.

    Returns
    -------
    ClusterQuality
    """
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 2 and np.shape(labels) == x.shape else x
    labels = np.asarray(labels).ravel()
    if x.ndim != 2 or len(x) != labels.size:
        raise InputError(f"cluster_quality: points {x.shape} and labels {labels.size} disagree")
    if sample_size < 2:
        raise InputError(f"silhouette sample_size={sample_size}: must be >= 2")
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < -1):
        raise InputError("cluster_quality: labels must be integers >= -1 (-1 = noise)")
    counts = np.bincount(labels + 1, minlength=1)  # slot 0 = noise
    present = np.flatnonzero(counts)
    sizes = {int(v) - 1: int(counts[v]) for v in present}
    n_noise = int(counts[0])
    keep = labels >= 0
    code_of = np.cumsum(counts[1:] > 0) - 1  # label -> 0..n-1 among the labels present
    n = int(np.count_nonzero(counts[1:]))
    xk, ck = x[keep], code_of[labels[keep]]
    m = len(xk)
    wss = float((_centroid_stats(xk, ck, n)[1] ** 2).sum()) if m else 0.0
    if not 2 <= n <= m - 1:
        reason = f"{n} cluster(s) among {m} clustered point(s); scores need 2..points-1"
        return ClusterQuality(math.nan, math.nan, wss, sizes, n, n_noise, 0, reason)
    db = davies_bouldin(xk, ck, n)
    pick = sample_indices(m, sample_size, np.random.default_rng(seed))
    n_sampled = len(np.unique(ck[pick]))
    if 2 <= n_sampled <= len(pick) - 1:
        sil, reason = float(silhouette_score(xk[pick], ck[pick])), ""
    else:
        sil = math.nan
        reason = f"silhouette sample of {len(pick)} points holds {n_sampled} cluster(s)"
    return ClusterQuality(sil, db, wss, sizes, n, n_noise, len(pick), reason)

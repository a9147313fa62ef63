"""Neighbourhood helpers: the automatic DBSCAN radius, core distances, bounded samples,
and assigning many points to the labels of a fitted set (memory bounded by chunks).

Automatic ``eps`` (the k-distance knee; Ester et al. 1996, knee by the "difference
curve" of Satopaa et al. 2011):

1. the k-distance of a point is the smallest radius whose ball (the point included)
   holds at least ``min_samples`` points, counting weights: the smallest ``eps`` that
   makes it a core point;
2. sort the points by k-distance; ``x`` = cumulative fraction of the (weighted) points,
   ``y`` = k-distance divided by the largest one;
3. ``eps`` is the k-distance where ``x - y`` is largest (the elbow after which the
   k-distance shoots up: the points beyond it are the sparse ones, mostly noise). If
   that is 0 (many repeated values), the smallest positive k-distance is used instead.
   It is then widened by a relative 1e-9 so that distances equal to it up to rounding
   (e.g. every one-grey-level gap of integer data after standardisation) count as
   within ``eps``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "assign_nearest",
    "core_distances",
    "kdistance_sorted_1d",
    "knee_eps",
    "nearest_centre",
    "sample_indices",
]

_CHUNK = 1 << 18  # points per query chunk in assign_nearest
_WIDEN = 1e-9  # relative widening of the automatic eps (rounding of equal gaps)


def kdistance_sorted_1d(values: np.ndarray, weight: np.ndarray, min_samples: float) -> np.ndarray:
    """Exact weighted k-distance of 1-D points.

    Parameters
    ----------
    values : ndarray, shape (m,)
        Distinct values in increasing order (feature units).
    weight : ndarray, shape (m,)
        Weight (pixel count) of each value, > 0.
    min_samples : float
        Weight the ball must hold.

    Returns
    -------
    ndarray, shape (m,), float64
        Smallest ``r`` with ``weight[|values - v| <= r].sum() >= min_samples`` for each
        ``v``; ``inf`` where even the whole set weighs less.
    """
    v = np.asarray(values, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(weight, dtype=np.float64)])
    if cum[-1] < min_samples:
        return np.full(len(v), np.inf)
    lo = np.zeros(len(v))
    hi = np.full(len(v), v[-1] - v[0])
    for _ in range(64):  # bisection on r; the answer is then snapped to a data distance
        mid = 0.5 * (lo + hi)
        inside = cum[np.searchsorted(v, v + mid, "right")] - cum[np.searchsorted(v, v - mid)]
        ok = inside >= min_samples
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    right = v[np.searchsorted(v, v + hi, "right") - 1] - v
    left = v - v[np.searchsorted(v, v - hi)]
    return np.maximum(left, right)


def core_distances(x: np.ndarray, min_samples: int) -> np.ndarray:
    """Distance of each point to its ``min_samples``-th nearest point, itself included
    (as DBSCAN and HDBSCAN count it); ``inf`` when there are fewer points.

    Parameters
    ----------
    x : ndarray, shape (n, d)
    min_samples : int

    Returns
    -------
    ndarray, shape (n,), float64
    """
    if min_samples > len(x):
        return np.full(len(x), np.inf)
    dist, _ = NearestNeighbors(n_neighbors=min_samples).fit(x).kneighbors(x)
    return dist[:, -1].astype(np.float64)


def knee_eps(kdist: np.ndarray, weight: np.ndarray | None = None) -> float:
    """DBSCAN radius at the knee of the sorted k-distance curve (rule in the module doc).

    Parameters
    ----------
    kdist : ndarray, shape (m,)
        k-distance per point (``inf`` for points that can never be core).
    weight : ndarray, shape (m,), optional
        Pixels per point (default 1 each).

    Returns
    -------
    float
        ``eps`` > 0, feature units. 1.0 when no point has a positive finite k-distance
        (a constant block: any radius gives the same clustering).
    """
    weight = np.ones(len(kdist)) if weight is None else np.asarray(weight, dtype=np.float64)
    finite = np.isfinite(kdist)
    d, w = kdist[finite], weight[finite]
    if not len(d) or d.max() <= 0:
        return 1.0
    order = np.argsort(d, kind="stable")
    d, w = d[order], w[order]
    x = np.cumsum(w) / w.sum()
    eps = float(d[np.argmax(x - d / d[-1])])
    return (eps if eps > 0 else float(d[d > 0][0])) * (1 + _WIDEN)


def sample_indices(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform sample of ``min(n, size)`` of ``n`` points, without
    replacement (all of them when ``n <= size``)."""
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size, replace=False))


def assign_nearest(
    points: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray, max_dist: float = np.inf
) -> np.ndarray:
    """Label each point with the label of its nearest reference point, or -1 when that
    is farther than ``max_dist`` (inclusive). Queries run in chunks of 2**18 points, so
    memory is bounded by the chunk and the reference set, not by ``len(points)``.

    Parameters
    ----------
    points : ndarray, shape (n, d)
    ref : ndarray, shape (m, d)
        Reference points (m >= 1).
    ref_labels : ndarray, shape (m,), int
        Their labels (-1 allowed: a point nearest to a noise reference is noise).
    max_dist : float
        Largest distance for an assignment, feature units.

    Returns
    -------
    ndarray, shape (n,), int32
    """
    tree = cKDTree(ref)
    table = np.append(np.asarray(ref_labels, dtype=np.int32), np.int32(-1))  # m = no neighbour
    bound = np.nextafter(max_dist, np.inf)  # cKDTree's bound is exclusive
    out = np.empty(len(points), dtype=np.int32)
    for start in range(0, len(points), _CHUNK):
        _, idx = tree.query(points[start : start + _CHUNK], k=1, distance_upper_bound=bound)
        out[start : start + _CHUNK] = table[idx]
    return out


def nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each point (K-means assignment; ties go to the
    lower index), computed in chunks of 2**18 points.

    Parameters
    ----------
    points : ndarray, shape (n, d)
    centres : ndarray, shape (k, d)

    Returns
    -------
    ndarray, shape (n,), int32
    """
    centres = np.asarray(centres, dtype=np.float64)
    out = np.empty(len(points), dtype=np.int32)
    for start in range(0, len(points), _CHUNK):
        chunk = np.asarray(points[start : start + _CHUNK], dtype=np.float64)
        d2 = ((chunk[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        out[start : start + _CHUNK] = d2.argmin(axis=1)
    return out

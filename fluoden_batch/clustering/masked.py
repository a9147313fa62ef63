"""The masked protocol's building blocks: labels from fixed centres, masked parts, merge.

Definition (used identically at inference and in masked training). Given a plane ``z``
(data units), ``K`` increasing intensity centres ``c_0 < ... < c_{K-1}`` fixed for the
whole run (K-means on a sample of the dataset, per channel) and a smoothing width
``sigma`` (pixels):

1. labels ``L = argmin_k |G_sigma * z - c_k|``: each pixel goes to the nearest centre of
   its Gaussian-smoothed intensity (``sigma = 0``: of its own intensity). Smoothing
   keeps the masks from breaking into single-pixel speckle where the noise straddles a
   boundary between two centres.
2. part ``k``: ``z_k = where(L == k, z, c_k)``, the plane with everything outside
   cluster ``k`` replaced by that cluster's centre (a flat fill: no artificial edges to
   zero, and the same constant for every block, so no seams between blocks).
3. each part is denoised, ``d_k = f(z_k)``, and the result takes every pixel from the
   part of its own label: ``R[p] = d_{L[p]}[p]``
   (:func:`~fluoden_batch.clustering.masks.recombine`: every pixel exactly once).

With ``K = 1`` (or a block that holds one cluster only) ``z_0 = z`` and ``R = f(z)``: the
whole-image protocol. Every step is local (the smoothing reaches
:func:`smoothing_radius` pixels), so a block read with a halo of the model's receptive
radius plus that radius gives exactly the pixels of the whole plane.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from fluoden_batch.clustering.masks import recombine
from fluoden_batch.errors import InputError

__all__ = [
    "TRUNCATE",
    "label_by_centres",
    "masked_denoise",
    "masked_labels",
    "masked_part",
    "smoothing_radius",
]

TRUNCATE = 4.0  # Gaussian kernel half-width in sigmas (scipy's default)


def smoothing_radius(sigma: float) -> int:
    """Pixels the label smoothing reaches: scipy's kernel radius ``round(TRUNCATE*sigma)``."""
    if sigma < 0 or not math.isfinite(sigma):
        raise InputError(f"mask smoothing sigma={sigma}: must be a finite number >= 0")
    return int(TRUNCATE * sigma + 0.5)


def label_by_centres(plane: np.ndarray, centres: Sequence[float] | np.ndarray) -> np.ndarray:
    """Index of the nearest of the increasing ``centres`` for every pixel (int32).

    A value exactly midway between two centres goes to the lower one.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0 or np.any(np.diff(c) <= 0):
        raise InputError(f"centres must be a non-empty increasing sequence, got {c.tolist()}")
    mid = (c[:-1] + c[1:]) / 2
    return np.searchsorted(mid, np.asarray(plane, dtype=np.float64), side="left").astype(np.int32)


def masked_labels(
    plane: np.ndarray, centres: Sequence[float] | np.ndarray, sigma: float
) -> np.ndarray:
    """Step 1 of the definition: labels of the Gaussian-smoothed plane.

    Parameters
    ----------
    plane : ndarray, shape (H, W)
        Intensities, data units.
    centres : sequence of float, increasing
        Cluster centres, data units.
    sigma : float
        Smoothing width in pixels (0 = none); borders are mirrored (``reflect``).

    Returns
    -------
    ndarray, shape (H, W), int32, values 0..K-1
    """
    smoothing_radius(sigma)  # validates sigma
    x = np.asarray(plane, dtype=np.float64)
    if sigma > 0:
        x = gaussian_filter(x, sigma, mode="reflect", truncate=TRUNCATE)
    return label_by_centres(x, centres)


def masked_part(
    plane: np.ndarray, labels: np.ndarray, centres: Sequence[float] | np.ndarray, k: int
) -> np.ndarray:
    """Step 2: ``plane`` inside cluster ``k``, the centre ``c_k`` everywhere else (float32)."""
    return np.where(labels == k, plane, np.float32(centres[k])).astype(np.float32)


def masked_denoise(
    denoise: Callable[[np.ndarray], np.ndarray],
    plane: np.ndarray,
    labels: np.ndarray,
    centres: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Steps 2-3: denoise every part present in ``labels`` and merge by the labels.

    Parameters
    ----------
    denoise : callable
        Maps a float32 plane (data units) to its denoised version of the same shape.
    plane : ndarray, shape (H, W)
        Intensities, data units.
    labels : ndarray, shape (H, W), int
        From :func:`masked_labels`.
    centres : sequence of float
        The centres the labels index.

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    present = [int(k) for k in np.unique(labels)]
    if len(present) == 1:  # one cluster: the part is the plane itself
        return np.asarray(denoise(np.asarray(plane, dtype=np.float32)), dtype=np.float32)
    parts = {k: denoise(masked_part(plane, labels, centres, k)) for k in present}
    return recombine(parts, labels).astype(np.float32)

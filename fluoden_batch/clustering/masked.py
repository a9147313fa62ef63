"""The masked protocol's building blocks: labels from fixed centres, masked parts, merge.

Definition (used identically at inference and in masked training). Given a plane ``z``
(data units), ``K`` increasing intensity centres ``c_0 < ... < c_{K-1}`` fixed for the
whole run (K-means on a sample of the dataset, per channel) and a smoothing width
``sigma`` (pixels), let ``s = G_sigma * z`` be the Gaussian-smoothed plane (``s = z`` for
``sigma = 0``) and ``m_k = (c_k + c_{k+1}) / 2`` the midpoints, so that cluster ``k`` owns
the intensity band ``B_k = [m_{k-1}, m_k]`` (``m_{-1} = -inf``, ``m_{K-1} = +inf``):

1. labels ``L = argmin_k |s - c_k|``: each pixel goes to the cluster whose band holds its
   smoothed intensity. Smoothing keeps the masks from breaking into single-pixel speckle
   where the noise straddles a boundary between two centres.
2. part ``k``: ``z_k = where(L == k, z, clip(s, B_k))``: the plane inside cluster ``k``;
   outside it, the smoothed plane clipped to the cluster's band, i.e. the band edge
   facing each neighbouring region. At a mask border ``s`` crosses that very edge, so
   the part continues the cluster's own intensities across its border with no step
   (filling with ``c_k`` instead leaves a step of half the distance between centres,
   which the network turns into a seam: measured and tested). The fill depends only on
   the smoothed plane, so it is the same for every block.
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
    "band",
    "label_by_centres",
    "masked_denoise",
    "masked_labels",
    "masked_part",
    "smooth",
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


def smooth(plane: np.ndarray, sigma: float) -> np.ndarray:
    """The smoothed plane ``s = G_sigma * z`` of the definition (float64; borders
    mirrored, ``reflect``); ``sigma = 0`` returns the plane itself as float64."""
    smoothing_radius(sigma)  # validates sigma
    x = np.asarray(plane, dtype=np.float64)
    return gaussian_filter(x, sigma, mode="reflect", truncate=TRUNCATE) if sigma > 0 else x


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
    return label_by_centres(smooth(plane, sigma), centres)


def band(centres: Sequence[float] | np.ndarray, k: int) -> tuple[float, float]:
    """Intensity band ``B_k = [m_{k-1}, m_k]`` of cluster ``k``: the midpoints to its
    neighbouring centres (``-inf`` / ``+inf`` at the ends), data units."""
    c = np.asarray(centres, dtype=np.float64)
    lo = -np.inf if k == 0 else (c[k - 1] + c[k]) / 2
    hi = np.inf if k == len(c) - 1 else (c[k] + c[k + 1]) / 2
    return float(lo), float(hi)


def masked_part(
    plane: np.ndarray,
    labels: np.ndarray,
    smoothed: np.ndarray,
    centres: Sequence[float] | np.ndarray,
    k: int,
) -> np.ndarray:
    """Step 2: ``plane`` inside cluster ``k``; outside, ``smoothed`` clipped to the
    cluster's :func:`band` (float32, shape of ``plane``)."""
    fill = np.clip(smoothed, *band(centres, k))
    return np.where(labels == k, plane, fill).astype(np.float32)


def masked_denoise(
    denoise: Callable[[np.ndarray], np.ndarray],
    plane: np.ndarray,
    centres: Sequence[float] | np.ndarray,
    sigma: float,
) -> np.ndarray:
    """Steps 1-3: label, denoise every part present and merge by the labels.

    Parameters
    ----------
    denoise : callable
        Maps a float32 plane (data units) to its denoised version of the same shape.
    plane : ndarray, shape (H, W)
        Intensities, data units.
    centres : sequence of float, increasing
        Cluster centres, data units.
    sigma : float
        Label smoothing width, pixels.

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    smoothed = smooth(plane, sigma)
    labels = label_by_centres(smoothed, centres)
    present = [int(k) for k in np.unique(labels)]
    if len(present) == 1:  # one cluster: the part is the plane itself
        return np.asarray(denoise(np.asarray(plane, dtype=np.float32)), dtype=np.float32)
    parts = {k: denoise(masked_part(plane, labels, smoothed, centres, k)) for k in present}
    return recombine(parts, labels).astype(np.float32)

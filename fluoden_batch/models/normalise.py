"""Intensity normalisation shared by training and inference.

A model sees ``(x - lo) / (hi - lo)`` where ``lo``/``hi`` are percentiles of the data
(:class:`~fluoden_batch.models.weights.Normalisation`). Training takes them per image;
batch inference takes them once per channel from a sample, so that every tile of a plane
uses the same affine map and tiling stays exact.
"""

from __future__ import annotations

import numpy as np

from fluoden_batch.errors import InputError


def percentile_range(x: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Return the ``low``/``high`` percentiles (in %) of the finite values of ``x``.

    When the two coincide (a flat image) ``hi`` is set to ``lo + 1`` so the map stays
    invertible; the image then passes through the model at its own intensity.
    """
    values = np.asarray(x, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("cannot normalise: no finite pixel values")
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def normalise(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensities to model units: float32 ``(x - lo) / (hi - lo)``."""
    return ((np.asarray(x, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(
        np.float32, copy=False
    )


def denormalise(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalise`: float32 intensities in the data's units."""
    return (np.asarray(y, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(
        np.float32, copy=False
    )

"""Intensity normalisation shared by training and inference.

A model sees ``(x - lo) / (hi - lo)`` where ``lo``/``hi`` are percentiles of the data
(:class:`~fluoden_batch.models.weights.Normalisation`). Training takes them per image;
batch inference takes them once per channel from a sample, so that every tile of a plane
uses the same affine map and tiling stays exact.
"""

from __future__ import annotations

import numpy as np

from fluoden_batch.errors import InputError

FLOAT32_SAFE = 1e30  # larger magnitudes overflow float32 arithmetic in the network
OUTLIER_LIMIT = 1e4  # normalised values are clipped to +-this many intensity windows


def percentile_range(x: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Return the ``low``/``high`` percentiles (in %) of the finite values of ``x``.

    When the two coincide (a flat image) ``hi`` is set a little above ``lo`` so the map
    stays invertible. Magnitudes above ``FLOAT32_SAFE`` raise :class:`InputError`.
    """
    values = np.asarray(x, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("cannot normalise: no finite pixel values")
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if not np.float32(hi - lo) > 0 or not np.float32(hi) > np.float32(lo):
        hi = lo + max(1.0, abs(lo) * 1e-3)  # flat, or a span float32 cannot resolve
    if not np.isfinite(np.float32(hi) - np.float32(lo)) or max(abs(lo), abs(hi)) > FLOAT32_SAFE:
        raise InputError(
            f"intensities around {lo:.3g}..{hi:.3g} are outside what the float32 model input "
            f"can represent (|x| <= {FLOAT32_SAFE:.0e}); rescale the data first"
        )
    return lo, hi


def normalise(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensities to model units: float32 ``(x - lo) / (hi - lo)``.

    Values further than ``OUTLIER_LIMIT`` ranges from the window are clipped there, so
    that absurd outliers cannot overflow float32 inside the network.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        y = (np.asarray(x, dtype=np.float64) - lo) / (hi - lo)
    return np.clip(y, -OUTLIER_LIMIT, OUTLIER_LIMIT).astype(np.float32)


def denormalise(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalise`: float32 intensities in the data's units."""
    return (np.asarray(y, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(
        np.float32, copy=False
    )

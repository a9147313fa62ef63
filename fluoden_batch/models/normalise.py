"""Intensity normalisation shared by training and inference.

A model sees ``(x - lo) / (hi - lo)`` where ``lo``/``hi`` come from the data as its
weights' :class:`~fluoden_batch.models.weights.Normalisation` says (percentiles, or a
percentile and the noise level: :func:`normalisation_range`). Training takes them per
image; batch inference takes them once per channel from a sample, so that every tile of a
plane uses the same affine map and tiling stays exact.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from skimage.restoration import estimate_sigma

from fluoden_batch.errors import InputError, NoiseEstimationError
from fluoden_batch.noise.estimate import estimate
from fluoden_batch.noise.planes import stride_phases

if TYPE_CHECKING:
    from fluoden_batch.models.weights import Normalisation

SIGMA_FLOOR = 1e-3  # noise method: sigma is at least this share of the percentile window
FLOAT32_SAFE = 1e30  # larger magnitudes overflow float32 arithmetic in the network
OUTLIER_LIMIT = 1e4  # normalised values are clipped to +-this many intensity windows
# model units: the network sees at most +-this many intensity windows (split_range)
MODEL_RANGE = 8.0


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


def split_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (model units) as what the network sees, clipped to ``+-MODEL_RANGE``, and the
    excess beyond, which goes around the network (added back to its output).

    No training image goes beyond about 7 windows (fmd_dev's brightest 16-frame mean;
    W2S about 1), while a bright bead or nucleus in 16-bit data can stand at 70: fed
    whole, the network spreads its error over its receptive field (a scene of beads at
    30 000 photons over a 0-1000 photon cell: 41.3 dB in the input 3-10 px from the
    beads, 32.5 after the network, 44.6 with the excess around it;
    ``runs/bright_probe.py``). Pixel-wise, so tiles still equal the whole plane; inside
    the range nothing changes (the excess is 0).

    Returns
    -------
    inside, excess : ndarray
        float32, the shape of ``x``; ``inside + excess == x``.
    """
    x = np.asarray(x, dtype=np.float32)
    inside = np.clip(x, -MODEL_RANGE, MODEL_RANGE)
    return inside, x - inside


def in_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """:func:`normalise` clipped to the network's range (:func:`split_range`'s
    ``inside``): how training patches, inputs and targets alike, reach the network, so
    that a fit on bright data learns what the run will ask of it."""
    return split_range(normalise(x, lo, hi))[0]


def denormalise(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`normalise`: float32 intensities in the data's units."""
    return (np.asarray(y, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(
        np.float32, copy=False
    )


def noise_sigma(x: np.ndarray) -> float:
    """Noise standard deviation of an image, in its units (0.0 when it cannot tell).

    The wavelet estimate of scikit-image (``estimate_sigma``: median absolute deviation of
    the finest diagonal coefficients / 0.6745) of every 2-D plane of ``x`` (shape
    ``(..., H, W)``), then the median over planes. For Poisson-Gaussian data it is the
    noise at a typical (median) pixel; its ratio between two noise levels of the same
    scene follows the noise (e.g. about 4 between one frame and a 16-frame mean).
    Non-finite pixels are replaced by the plane's finite median first.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2 or min(arr.shape[-2:]) < 2:
        return 0.0
    estimates = []
    for plane in arr.reshape(-1, *arr.shape[-2:]):
        finite = np.isfinite(plane)
        if not finite.any():
            continue
        if not finite.all():
            plane = np.where(finite, plane, np.median(plane[finite]))
        with warnings.catch_warnings():  # a flat plane: NaN, without "Mean of empty slice"
            warnings.simplefilter("ignore", RuntimeWarning)
            # a plane 3 or 4 px wide is not an RGB image: channel_axis=None says so already
            warnings.filterwarnings("ignore", "image is size", UserWarning)
            estimates.append(float(estimate_sigma(plane, channel_axis=None)))
    good = [e for e in estimates if np.isfinite(e)]
    return float(np.median(good)) if good else 0.0


def phase_sigma(x: np.ndarray) -> float:
    """:func:`noise_sigma` as seen by ``--phase-split``: its mean over the four stride-2
    phases of ``x`` (shape ``(..., H, W)``; :func:`~fluoden_batch.noise.planes.stride_phases`).
    For white noise about :func:`noise_sigma`; for noise correlated between neighbouring
    pixels larger, because the finest wavelet scale of the full plane sees little of it."""
    return float(np.mean([noise_sigma(p) for p in stride_phases(x)]))


def normalisation_range(x: np.ndarray, norm: Normalisation) -> tuple[float, float]:
    """``(lo, hi)`` of ``x`` (a plane, or planes ``(..., H, W)``) under ``norm``.

    ``percentile``: the ``low``/``high`` percentiles (:func:`percentile_range`).
    ``noise``: ``lo`` the ``low`` percentile, ``hi = lo + scale * sigma`` with
    ``sigma = noise_sigma(x)`` floored at ``SIGMA_FLOOR`` of the percentile window (a
    noiseless or quantised-flat image would otherwise divide by zero).
    """
    lo, hi = percentile_range(x, norm.low, norm.high)
    if norm.method == "percentile":
        return lo, hi
    return normalisation_window(lo, hi, noise_sigma(x), norm)


def normalisation_window(
    lo: float, hi: float, sigma: float, norm: Normalisation
) -> tuple[float, float]:
    """The model's ``(lo, hi)`` from a percentile window ``lo..hi`` and a noise ``sigma``
    (image units; ignored by ``percentile``): for ``noise``, ``hi = lo + scale * sigma``
    with ``sigma`` floored at ``SIGMA_FLOOR`` of the percentile window."""
    if norm.method == "percentile":
        return lo, hi
    return lo, lo + norm.scale * max(sigma, SIGMA_FLOOR * (hi - lo))


def map_parameters(a: float, b: float, lo: float, hi: float) -> tuple[float, float]:
    """Poisson-Gaussian ``(a, b)`` of the data (``Var[z | y] = a y + b``, data units) in
    model units ``x_n = (x - lo) / (hi - lo)``: ``Var[x_n] = a_n x_n + b_n`` with
    ``a_n = a / s`` and ``b_n = (a lo + b) / s**2``, ``s = hi - lo``."""
    s = hi - lo
    return a / s, (a * lo + b) / (s * s)


def noise_map(x: np.ndarray, a_n: float, b_n: float) -> np.ndarray:
    """Noise standard deviation of every pixel, ``sqrt(max(a_n x + b_n, 0))``, float32.

    ``x`` (any shape) and the result are in model units (:func:`normalise`); ``a_n``,
    ``b_n`` from :func:`map_parameters`. Pixel-wise, so tiles of it equal the whole.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        var = np.float64(a_n) * np.asarray(x, dtype=np.float64) + np.float64(b_n)
    return np.sqrt(np.clip(var, 0.0, None)).astype(np.float32)


def with_noise_map(x: np.ndarray, a_n: float, b_n: float) -> np.ndarray:
    """``x`` (shape (H, W), model units) stacked with its :func:`noise_map`: (2, H, W)."""
    return np.stack([np.asarray(x, dtype=np.float32), noise_map(x, a_n, b_n)])


def plane_noise(x: np.ndarray) -> tuple[float, float]:
    """Poisson-Gaussian ``(a, b)`` of one noisy plane (data units) for its noise map.

    The single-image estimator (:func:`fluoden_batch.noise.estimate`); where it cannot fit
    (flat, tiny or noiseless images) signal-independent noise of the wavelet
    :func:`noise_sigma`: ``(0, sigma**2)``.
    """
    try:
        est = estimate(x)
    except (NoiseEstimationError, InputError, ValueError):
        return 0.0, noise_sigma(x) ** 2
    return float(est.a), float(est.b)

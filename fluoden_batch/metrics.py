"""Image quality metrics: PSNR/SSIM with an explicit data range, FMD scoring, no-reference.

All functions take 2-D arrays of shape (H, W) in the same intensity units. ``data_range``
is always explicit (the peak-to-peak range of the data's scale, e.g. 255 for uint8 FMD
images), never guessed from the dtype.
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import estimate_sigma

from fluoden_batch.errors import InputError

MIN_SIGMA_SIDE = 8


def _check_pair(image: np.ndarray, reference: np.ndarray) -> None:
    if image.shape != reference.shape:
        raise InputError(f"image shape {image.shape} != reference shape {reference.shape}")
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"expected non-empty 2-D planes, got shape {image.shape}")
    if not (np.isfinite(image).all() and np.isfinite(reference).all()):
        raise InputError("image or reference has NaN/Inf pixels")


def psnr(image: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` when identical).

    Parameters
    ----------
    image, reference : ndarray, shape (H, W)
        Test and clean image, same units.
    data_range : float
        Peak value of the scale (e.g. 255 for 8-bit, 65535 for full-range uint16).
    """
    _check_pair(image, reference)
    with np.errstate(all="ignore"):
        value = float(
            peak_signal_noise_ratio(
                reference.astype(np.float64), image.astype(np.float64), data_range=data_range
            )
        )
    if np.isnan(value) or value == -np.inf:
        raise InputError("squared error overflows float64; rescale the data")
    return value


def ssim(image: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    """Structural similarity (Wang et al. 2004, 7x7 window, skimage defaults) in [-1, 1]."""
    _check_pair(image, reference)
    if min(image.shape) < 7:
        raise InputError(f"SSIM needs planes of at least 7x7 pixels, got {image.shape}")
    with np.errstate(all="ignore"):
        value = float(
            structural_similarity(
                reference.astype(np.float64), image.astype(np.float64), data_range=data_range
            )
        )
    if not np.isfinite(value):
        raise InputError("SSIM overflows float64 for these values; rescale the data")
    return value


def fmd_scores(
    image: np.ndarray, reference: np.ndarray, data_range: float = 255.0, crop: int = 256
) -> tuple[float, float]:
    """FMD protocol: mean PSNR and SSIM over the non-overlapping ``crop`` x ``crop`` crops.

    A 512x512 image gives four 256x256 crops (Zhang et al. 2019, peak 255).
    """
    _check_pair(image, reference)
    h, w = image.shape
    if h < crop or w < crop:
        raise InputError(f"image {image.shape} smaller than the FMD crop {crop}")
    ps, ss = [], []
    for y in range(0, h - crop + 1, crop):
        for x in range(0, w - crop + 1, crop):
            a = image[y : y + crop, x : x + crop]
            r = reference[y : y + crop, x : x + crop]
            ps.append(psnr(a, r, data_range))
            ss.append(ssim(a, r, data_range))
    return float(np.mean(ps)), float(np.mean(ss))


def noise_sigma(image: np.ndarray) -> float:
    """No-reference estimate of the Gaussian noise std (wavelet MAD, Donoho 1994).

    Same units as ``image``; used for the "noise before/after" columns of the metrics.
    """
    if image.ndim != 2 or min(image.shape) < MIN_SIGMA_SIDE:
        raise InputError(
            f"noise estimate needs a 2-D plane of at least {MIN_SIGMA_SIDE}x{MIN_SIGMA_SIDE} "
            f"pixels, got shape {image.shape}"
        )
    if not np.isfinite(image).all():
        raise InputError("plane has NaN/Inf pixels")
    # a flat plane has no non-zero wavelet detail: NaN, and numpy's "Mean of empty slice"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(estimate_sigma(image.astype(np.float64), channel_axis=None))
    if not np.isfinite(sigma):
        raise InputError(f"noise estimate is undefined for this plane (range {np.ptp(image):.3g})")
    return sigma

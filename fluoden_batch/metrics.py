"""Image quality metrics: PSNR/SSIM with an explicit data range, FMD scoring, no-reference.

All functions take 2-D arrays of shape (H, W) in the same intensity units. ``data_range``
is always explicit (the peak-to-peak range of the data's scale, e.g. 255 for uint8 FMD
images), never guessed from the dtype.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import estimate_sigma

from fluoden_batch.errors import InputError


def _check_pair(image: np.ndarray, reference: np.ndarray) -> None:
    if image.shape != reference.shape:
        raise InputError(f"image shape {image.shape} != reference shape {reference.shape}")
    if image.ndim != 2:
        raise InputError(f"expected 2-D planes, got shape {image.shape}")


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
    return float(
        peak_signal_noise_ratio(
            reference.astype(np.float64), image.astype(np.float64), data_range=data_range
        )
    )


def ssim(image: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    """Structural similarity (Wang et al. 2004, 7x7 window, skimage defaults) in [-1, 1]."""
    _check_pair(image, reference)
    return float(
        structural_similarity(
            reference.astype(np.float64), image.astype(np.float64), data_range=data_range
        )
    )


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
    if image.ndim != 2 or min(image.shape) < 2:
        raise InputError(f"need a 2-D plane of at least 2x2 pixels, got shape {image.shape}")
    return float(estimate_sigma(image.astype(np.float64), channel_axis=None))

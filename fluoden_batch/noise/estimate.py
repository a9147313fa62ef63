"""Single-image estimation of Poisson-Gaussian noise parameters (after Foi et al. 2008).

A one-level orthonormal 2-D Haar transform splits the image into 2x2-block means ``m``
(the approximation, data units) and the diagonal detail ``HH = (p00 - p01 - p10 + p11)/2``
with ``Var[HH] = Var[z]`` for white noise. ``HH`` vanishes exactly on any signal of the
form ``f(x) + g(y)`` (planes, axis-aligned edges), so the signal leaks into it only
through the mixed derivative ``d2y/dxdy``: ``HH_signal ~ (1/2) d2y/dxdy``.

1. Smoothness: the mixed second difference of the block means (noise ``sigma/32`` in
   ``HH`` units) estimates the leakage ``HH_signal^2`` of each block, averaged over its
   3x3 neighbourhood. Blocks whose leakage exceeds a small fraction of the noise variance
   predicted at their level are excluded (edges, blobs, filaments, texture). The
   prediction comes from a pilot fit on the smoothest half of each level set, then is
   refined once from the first full fit.
2. Level sets: kept blocks are binned by the mean of their eight neighbours (so the
   binning does not depend on the block's own noise); in each level set the block means
   give the level and ``mean(HH^2)`` the variance.
3. Fit: ``var = a * level + b`` by robust (Huber) iteratively reweighted least squares
   with ``a >= 0`` (:mod:`fluoden_batch.noise.fit`), using the clipped-normal moments of
   Foi (2009) for level sets near a clipping bound; level sets with more than half of their
   pixels on a bound are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from fluoden_batch.errors import NoiseEstimationError
from fluoden_batch.noise.fit import fit_variance_model, level_sets, pilot_level_sets

__all__ = ["MAX_LEAKAGE", "MIN_SIDE", "NoiseEstimate", "estimate"]

MIN_SIDE = 32  # smallest accepted image side, pixels
MAX_LEAKAGE = 0.02  # default smoothness screen: leakage over predicted noise variance
_MIN_LEVELS = 4  # fewest usable level sets for a fit


@dataclass(frozen=True)
class NoiseEstimate:
    """Estimated Poisson-Gaussian parameters, ``Var[z | y] = a * y + b``.

    Attributes
    ----------
    a : float
        Poisson gain, data units per photo-electron (>= 0).
    b : float
        Variance at zero signal, squared data units. Usually the Gaussian (read-out)
        variance; it can be negative when the data carry a pedestal (offset) ``g``, in
        which case ``b = b_gauss - a * g`` (Foi et al. 2008).
    a_std, b_std : float
        One-sigma uncertainties of ``a`` and ``b`` from the weighted least-squares
        covariance, inflated by the reduced chi-square when the fit is worse than the
        sampling error.
    n_levels : int
        Number of level sets used in the final fit.
    clip : (float, float) or None
        Clipping bounds that were modelled, in data units (``None``: no clipping).
    levels, variances, counts : numpy.ndarray, shape (n_levels,)
        Per level set: mean intensity (data units), detail variance (squared data
        units) and number of Haar blocks; diagnostics only, not compared.
    """

    a: float
    b: float
    a_std: float
    b_std: float
    n_levels: int
    clip: tuple[float, float] | None = None
    levels: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    variances: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    counts: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def sigma_at(self, y: npt.ArrayLike) -> np.ndarray:
        """Noise standard deviation ``sqrt(max(a * y + b, 0))`` at intensity ``y``.

        Parameters
        ----------
        y : array_like, any shape
            Clean intensities in data units (clipping is not applied).

        Returns
        -------
        numpy.ndarray, float64, shape of ``y``
            Standard deviation in data units.
        """
        y = np.asarray(y, dtype=np.float64)
        return np.sqrt(np.maximum(self.a * y + self.b, 0.0))


def _validate(z: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(z)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise NoiseEstimationError(f"image must have a real numeric dtype, got {arr.dtype}")
    if arr.ndim != 2:
        raise NoiseEstimationError(f"image must be 2-D (Y, X), got shape {arr.shape}")
    if arr.size == 0:
        raise NoiseEstimationError(f"image is empty (shape {arr.shape})")
    if min(arr.shape) < MIN_SIDE:
        raise NoiseEstimationError(
            f"image is too small for noise estimation: shape {arr.shape}, "
            f"need at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise NoiseEstimationError(f"image holds {n_bad} NaN or infinite pixel(s)")
    if arr.min() == arr.max():
        raise NoiseEstimationError(f"image is constant (every pixel is {arr.flat[0]:g})")
    return arr


def _detect_clip(z: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float] | None:
    """Clipping bounds: as given, or detected as pile-ups at the extreme values.

    An extreme value is a bound when it holds at least 0.01 % of the pixels (and at least
    10) and more pixels than the next value inwards; an unclipped tail thins out instead.
    """
    if clip is not None:
        lo, hi = (float(v) for v in clip)
        if not lo < hi:
            raise NoiseEstimationError(f"clip must satisfy lo < hi, got clip={clip!r}")
        return lo, hi
    pile = max(10, z.size // 10_000)

    def piles_up(extreme: float, upper: bool) -> bool:
        count = np.count_nonzero(z == extreme)
        if count < pile:
            return False
        inner = z[z < extreme] if upper else z[z > extreme]
        if inner.size == 0:
            return False
        nxt = inner.max() if upper else inner.min()
        return count > np.count_nonzero(inner == nxt)

    lo, hi = float(z.min()), float(z.max())
    lo = lo if piles_up(lo, upper=False) else -math.inf
    hi = hi if piles_up(hi, upper=True) else math.inf
    return None if (lo, hi) == (-math.inf, math.inf) else (lo, hi)


def _haar(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block means (data units) and diagonal details ``HH`` of the 2x2 blocks of ``z``.

    An odd last row or column is dropped; both outputs have shape ``(Y // 2, X // 2)``.
    """
    h, w = (z.shape[0] // 2) * 2, (z.shape[1] // 2) * 2
    p00, p01 = z[0:h:2, 0:w:2], z[0:h:2, 1:w:2]
    p10, p11 = z[1:h:2, 0:w:2], z[1:h:2, 1:w:2]
    d0, d1 = p00 - p01, p10 - p11
    return 0.25 * (p00 + p01 + p10 + p11), 0.5 * (d0 - d1)


def _leakage(mean: np.ndarray) -> np.ndarray:
    """Local estimate of ``HH_signal^2`` from the block means, for interior blocks.

    The mixed central difference of the block means over +-1 block (4 pixels) is about
    ``16 d2y/dxdy / 4``, i.e. eight times the ``HH`` leakage; its square is averaged over
    3x3 blocks. Shape ``(Y // 2 - 2, X // 2 - 2)``, squared data units.
    """
    q = (mean[2:, 2:] - mean[2:, :-2] - mean[:-2, 2:] + mean[:-2, :-2]) / 4.0
    return ndimage.uniform_filter(q * q / 64.0, size=3, mode="reflect")


def _neighbour_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the eight neighbours of each interior element (shape shrinks by 2)."""
    return (ndimage.uniform_filter(x, size=3, mode="reflect") * 9.0 - x)[1:-1, 1:-1] / 8.0


def estimate(
    z: npt.ArrayLike,
    *,
    clip: tuple[float, float] | None = None,
    n_bins: int = 64,
    min_count: int = 300,
    max_leakage: float = MAX_LEAKAGE,
    max_clipped: float = 0.5,
) -> NoiseEstimate:
    """Estimate Poisson-Gaussian noise parameters ``(a, b)`` from one noisy image.

    Parameters
    ----------
    z : array_like, shape (Y, X), any real dtype
        One noisy plane in data units (both sides >= ``MIN_SIDE``; an odd last row or
        column is ignored).
    clip : (lo, hi), optional
        Clipping bounds of the sensor in data units. ``None`` (default) detects them:
        the minimum (maximum) value counts as a bound when at least 0.01 % of the pixels
        (and at least 10) sit exactly on it and it holds more pixels than the next value
        inwards. Pass ``(-inf, inf)`` to model no clipping.
    n_bins : int
        Number of equal-width intensity bins before merging into level sets.
    min_count : int
        Fewest 2x2 blocks in a level set (lowered for small images, down to 16).
    max_leakage : float
        Blocks whose estimated signal leakage into ``HH`` exceeds this fraction of the
        predicted noise variance are excluded.
    max_clipped : float
        Level sets with a larger fraction of pixels on a bound are dropped.

    Returns
    -------
    NoiseEstimate
        ``a`` (data units per photo-electron) and ``b`` (squared data units) with their
        uncertainties and per-level-set diagnostics.

    Raises
    ------
    fluoden_batch.errors.NoiseEstimationError
        If the settings are out of range, or the image is not 2-D, empty, smaller than
        ``MIN_SIDE`` on a side, holds NaN or infinite values, is constant, or is too flat
        (fewer than 4 usable level sets, or smooth intensities spanning less than two
        noise standard deviations).
    """
    if n_bins < _MIN_LEVELS or min_count < 1 or max_leakage <= 0 or not 0 < max_clipped <= 1:
        raise NoiseEstimationError(
            f"bad estimator settings: n_bins={n_bins} (>= {_MIN_LEVELS}), min_count="
            f"{min_count} (>= 1), max_leakage={max_leakage} (> 0), max_clipped={max_clipped} "
            "(in (0, 1])"
        )
    arr = _validate(z)
    bounds = _detect_clip(arr, clip)
    # Work on (z - centre) / half_range in [-1, 1]: no overflow, scale-free thresholds.
    zmin, zmax = float(arr.min()), float(arr.max())
    centre, half = 0.5 * zmin + 0.5 * zmax, 0.5 * zmax - 0.5 * zmin
    arr = (arr - centre) / half
    clip_used = bounds
    if bounds is not None:
        bounds = ((bounds[0] - centre) / half, (bounds[1] - centre) / half)
    mean, diag = _haar(arr)
    level = _neighbour_mean(mean).ravel()
    leak = _leakage(mean).ravel()
    mean, diag = mean[1:-1, 1:-1].ravel(), diag[1:-1, 1:-1].ravel()
    min_count = max(16, min(min_count, mean.size // (4 * _MIN_LEVELS)))  # small images
    clipped = None
    if bounds is not None:
        at_bound = ((arr <= bounds[0]) | (arr >= bounds[1])).astype(np.float64)
        clipped = _haar(at_bound)[0][1:-1, 1:-1].ravel()

    levels, variances, counts = pilot_level_sets(level, leak, diag, n_bins, min_count)
    _check_levels(levels, variances, half)
    theta = fit_variance_model(levels, variances, counts, bounds)[0]
    for _ in range(2):
        predicted = np.maximum(theta[0] * level + theta[1], 1e-6 * float(np.median(variances)))
        smooth = leak <= max_leakage * predicted
        levels, variances, counts = level_sets(
            level[smooth],
            mean[smooth],
            diag[smooth],
            None if clipped is None else clipped[smooth],
            n_bins,
            min_count,
            max_clipped,
        )
        _check_levels(levels, variances, half)
        theta, cov = fit_variance_model(levels, variances, counts, bounds)
    return _to_data_units(theta, cov, levels, variances, counts, centre, half, clip_used)


def _to_data_units(
    theta: np.ndarray,
    cov: np.ndarray,
    levels: np.ndarray,
    variances: np.ndarray,
    counts: np.ndarray,
    centre: float,
    half: float,
    clip: tuple[float, float] | None,
) -> NoiseEstimate:
    """Undo ``z' = (z - centre) / half``: ``a = half a'``, ``b = half^2 b' - centre a``."""
    jac = np.array([[half, 0.0], [-centre * half, half * half]])
    with np.errstate(over="ignore", invalid="ignore"):
        a, b = jac @ theta
        cov = jac @ cov @ jac.T
        result = (a, b, math.sqrt(max(cov[0, 0], 0.0)), math.sqrt(max(cov[1, 1], 0.0)))
    if not np.isfinite(result).all():
        raise NoiseEstimationError(
            "noise parameters are not representable in float64 for data spanning "
            f"[{centre - half:g}, {centre + half:g}] (a={a:g}, b={b:g})"
        )
    return NoiseEstimate(
        a=float(a),
        b=float(b),
        a_std=result[2],
        b_std=result[3],
        n_levels=len(levels),
        clip=clip,
        levels=centre + half * levels,
        variances=half * half * variances,
        counts=counts,
    )


def _check_levels(levels: np.ndarray, variances: np.ndarray, half: float) -> None:
    """Raise NoiseEstimationError when the level sets cannot determine ``(a, b)``.

    ``levels`` and ``variances`` are in normalised units; ``half`` converts to data units.
    """
    if len(levels) < _MIN_LEVELS:
        raise NoiseEstimationError(
            f"image is too flat for noise estimation: only {len(levels)} usable level "
            f"set(s) of smooth pixels, need at least {_MIN_LEVELS} (an image with more "
            "intensity variation, or a larger one, is needed)"
        )
    spread = float(levels.max() - levels.min())
    noise = math.sqrt(float(np.median(variances)))
    if spread < 2.0 * noise:
        raise NoiseEstimationError(
            "image is too flat for noise estimation: its smooth intensities span "
            f"{spread * half:.3g}, less than twice the noise standard deviation "
            f"({noise * half:.3g})"
        )

"""Classical denoisers of one Y/X plane: non-local means and BM3D, plain or after the GAT.

Arrays in, arrays out (no Zarr, Dask or torch). Every method of :data:`CLASSICAL` has the
signature ``fn(plane, a, b, level, floor) -> float32 plane`` with the channel's
Poisson-Gaussian parameters ``(a, b)`` in data units (``Var[z | y] = a * y + b``), fixed per
channel for a whole run (per-block values would leave seams):

- ``nlm`` / ``bm3d``: a Gaussian denoiser at one noise std for the whole plane,
  ``sigma = sqrt(a * level + b)`` with ``level`` (data units) also fixed per channel, e.g.
  its median; the plane itself never sets sigma, so the result is local; ``floor`` unused.
- ``vst-nlm`` / ``vst-bm3d``: ``gat_forward(z, a, b)`` -> the denoiser at unit noise std ->
  ``gat_inverse(..., method="exact_unbiased", floor=floor)`` (Makitalo & Foi 2013; ``floor``
  the channel's zero-signal intensity, below 0 for background-subtracted data);
  ``level`` unused.

NLM is scikit-image ``denoise_nl_means`` (5x5 patches, 13x13 search, fast mode,
``h = 0.8 sigma``, sigma subtracted from the patch distances). BM3D is the optional ``bm3d``
package (Makinen et al.), imported only when called: its licence forbids commercial use, so
it is never a dependency of fluoden-batch.

Also here, not a denoiser of its own but the second stage of one: :func:`vst_wiener`, the
empirical Wiener filter of BM3D's second step without its block matching (Dabov, Foi,
Katkovnik & Egiazarian 2007): every 8x8 patch of the input, in the DCT domain, shrunk by
what a pilot estimate (a first denoiser's output) says each coefficient holds of signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from skimage.restoration import denoise_nl_means

from fluoden_batch.errors import InputError
from fluoden_batch.noise import gat_forward, gat_inverse

__all__ = [
    "CLASSICAL",
    "NLM_H",
    "NLM_REACH",
    "WIENER_PATCH",
    "WIENER_REACH",
    "ClassicalMethod",
    "bm3d",
    "bm3d_available",
    "dct_wiener",
    "nlm",
    "noise_sigma",
    "vst_bm3d",
    "vst_nlm",
    "vst_wiener",
]

PATCH_SIZE = 5  # NLM patch side, px
PATCH_DISTANCE = 6  # NLM search radius, px (13x13 search window)
NLM_H = 0.8  # NLM filtering strength h in units of the noise std
NLM_REACH = PATCH_SIZE // 2 + PATCH_DISTANCE  # 8 px: context a tile needs on each side
WIENER_PATCH = 8  # side of the Wiener filter's DCT patches, px
WIENER_REACH = WIENER_PATCH - 1  # 7 px: the patches over a pixel reach this far from it
# patches per strip: 2 MiB a coefficient array, small enough to stay in cache
_WIENER_STRIP = 1 << 12

PlaneFn = Callable[[np.ndarray, float, float, float, float], np.ndarray]


def _plane(plane: npt.ArrayLike) -> np.ndarray:
    """A 2-D plane as float64 in data units (integers keep their values, never rescaled)."""
    x = np.asarray(plane, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"classical denoisers take one Y/X plane, got shape {x.shape}")
    return x


def noise_sigma(a: float, b: float, level: float) -> float:
    """Poisson-Gaussian noise std ``sqrt(a * level + b)``, data units.

    ``a``: Poisson gain (data units per photo-electron), ``b``: Gaussian variance (squared
    data units), ``level``: intensity (data units). A variance <= 0 raises InputError.
    """
    var = float(a) * float(level) + float(b)
    if not math.isfinite(var) or var <= 0:
        raise InputError(
            f"noise variance a * level + b = {var:g} (a={a:g}, b={b:g}, level={level:g}) "
            "must be finite and > 0"
        )
    return math.sqrt(var)


def nlm(plane: npt.ArrayLike, sigma: float) -> np.ndarray:
    """Non-local means at a known Gaussian noise std.

    Parameters
    ----------
    plane : array_like, shape (H, W)
        Noisy intensities, data units (cast to float64, never rescaled).
    sigma : float
        Noise standard deviation, data units (> 0); ``h = 0.8 * sigma``.

    Returns
    -------
    ndarray, shape (H, W), float64, data units (not clipped)
    """
    if not sigma > 0:
        raise InputError(f"NLM needs a noise std sigma > 0, got {sigma}")
    return denoise_nl_means(
        _plane(plane),
        patch_size=PATCH_SIZE,
        patch_distance=PATCH_DISTANCE,
        h=NLM_H * sigma,
        sigma=sigma,
        fast_mode=True,
    )


def vst_nlm(
    plane: npt.ArrayLike, a: float, b: float, h: float = NLM_H, *, floor: float = 0.0
) -> np.ndarray:
    """GAT with ``(a, b)``, NLM at unit noise std with strength ``h``, exact unbiased inverse.

    Parameters
    ----------
    plane : array_like, shape (H, W)
        Noisy intensities, data units.
    a, b : float
        Poisson gain (> 0, data units) and Gaussian variance (squared data units).
    h : float
        NLM strength in the stabilised domain (units of its unit noise std).
    floor : float
        Zero-signal intensity, data units (:func:`~fluoden_batch.noise.gat_inverse`).

    Returns
    -------
    ndarray, shape (H, W), float64, data units
    """
    x = gat_forward(_plane(plane), a, b)
    smooth = denoise_nl_means(
        x, patch_size=PATCH_SIZE, patch_distance=PATCH_DISTANCE, h=h, sigma=1.0, fast_mode=True
    )
    return gat_inverse(smooth, a, b, method="exact_unbiased", floor=floor)


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, shape (n, n): row ``k`` is frequency ``k``."""
    j = np.arange(n)
    m = np.cos(np.pi * (2 * j[None, :] + 1) * j[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def _patch_dct(x: np.ndarray, m: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """2-D DCT of every ``p x p`` patch of ``x`` (R, W) into ``out`` (R - p + 1, W - p + 1,
    p, p), indexed by the patch's top-left pixel, then horizontal frequency, then vertical
    (separable: rows into ``rows`` (R - p + 1, W, p), then columns)."""
    p = len(m)
    np.matmul(sliding_window_view(x, p, axis=0), m.T, out=rows)  # vertical frequencies
    return np.matmul(m, sliding_window_view(rows, p, axis=1).swapaxes(-1, -2), out=out)


def dct_wiener(noisy: npt.ArrayLike, pilot: npt.ArrayLike, sigma: float = 1.0) -> np.ndarray:
    """Empirical Wiener filter of ``noisy`` guided by ``pilot``, white noise of std ``sigma``.

    Every ``WIENER_PATCH`` square patch (stride 1) of ``noisy`` is taken to the 2-D DCT,
    each coefficient scaled by ``P^2 / (P^2 + sigma^2)`` (``P`` the pilot's coefficient
    there) and taken back; the patches are averaged where they overlap, each weighted by
    ``1 / (sigma^2 sum(G^2))`` (BM3D's weights: less where more noise stays; the sum floored
    at 1e-12 where the pilot's patch is all 0). A pixel reads
    the input and pilot :data:`WIENER_REACH` px around it, so a tile with that much context
    equals whole-plane application.

    Parameters
    ----------
    noisy, pilot : array_like, shape (H, W)
        The noisy plane and a first estimate of it (both sides >= ``WIENER_PATCH``).
    sigma : float
        Noise standard deviation (> 0), the units of ``noisy``.

    Returns
    -------
    ndarray, shape (H, W), float64
    """
    z, y = _plane(noisy), _plane(pilot)
    p = WIENER_PATCH
    if z.shape != y.shape or min(z.shape) < p:
        raise InputError(
            f"the Wiener filter needs a noisy plane and a pilot of one shape, both sides >= "
            f"{p}; got {z.shape} and {y.shape}"
        )
    m = _dct_matrix(p)
    height, width = z.shape
    k = width - p + 1  # patches per row
    s2 = sigma * sigma
    num, den = np.zeros_like(z), np.zeros_like(z)
    step = min(max(1, _WIENER_STRIP // k), height - p + 1)  # patch rows per strip
    # One strip's arrays, allocated once: where glibc maps every large block anew (any
    # MALLOC_TRIM_THRESHOLD_, such as Dask's nannies set), fresh arrays for each strip were
    # page-faulted in every time: a first version without them was over 3x slower there
    # (runs/README.md, "The Wiener filter's speed")
    rows_buf, strip_buf = np.empty((2, step, width, p))
    coef_buf, gain_buf, cols_buf = np.empty((3, step, k, p, p))
    weight_buf, box_buf = np.empty((step, k)), np.empty((step, width))
    for top in range(0, height - p + 1, step):
        n = min(step, height - p + 1 - top)
        band = slice(top, top + n + p - 1)
        coef = _patch_dct(z[band], m, rows_buf[:n], coef_buf[:n])  # (n, k, v, u)
        gain = _patch_dct(y[band], m, rows_buf[:n], gain_buf[:n])
        gain *= gain  # P^2 / (P^2 + sigma^2), in place
        np.divide(gain, np.add(gain, s2, out=cols_buf[:n]), out=gain)
        # (n, k); floored where a pilot patch is all 0 (every coefficient taken as noise)
        weight = np.einsum("hwuv,hwuv->hw", gain, gain, out=weight_buf[:n])
        np.reciprocal(
            np.multiply(np.maximum(weight, 1e-12, out=weight), s2, out=weight), out=weight
        )
        coef *= gain
        coef *= weight[..., None, None]
        # back, one axis at a time, each summed over the patches that overlap there:
        # horizontal (patch column c of every patch) into rows of the strip ...
        cols = np.matmul(m.T, coef, out=cols_buf[:n])  # (n, k, c, u)
        strip, box = strip_buf[:n], box_buf[:n]
        strip.fill(0.0)
        box.fill(0.0)
        for c in range(p):
            strip[:, c : c + k] += cols[:, :, c]
            box[:, c : c + k] += weight
        # ... then vertical (patch row r) into the plane
        pixels = np.matmul(strip, m, out=rows_buf[:n])  # (n, width, r)
        for r in range(p):
            num[top + r : top + r + n] += pixels[:, :, r]
            den[top + r : top + r + n] += box
    return num / den


def vst_wiener(
    plane: npt.ArrayLike, pilot: npt.ArrayLike, a: float, b: float, *, floor: float = 0.0
) -> np.ndarray:
    """:func:`dct_wiener` in the GAT domain: the plane and the pilot through ``gat_forward``
    with ``(a, b)``, the filter at unit noise std, the exact unbiased inverse.

    Parameters
    ----------
    plane, pilot : array_like, shape (H, W)
        Noisy intensities and a first estimate of the noise-free ones, data units.
    a, b : float
        Poisson gain (> 0, data units) and Gaussian variance (squared data units).
    floor : float
        Zero-signal intensity, data units (:func:`~fluoden_batch.noise.gat_inverse`).

    Returns
    -------
    ndarray, shape (H, W), float64, data units
    """
    x = gat_forward(_plane(plane), a, b)
    guide = gat_forward(_plane(pilot), a, b)
    return gat_inverse(dct_wiener(x, guide, 1.0), a, b, method="exact_unbiased", floor=floor)


def _bm3d_module(method: str) -> ModuleType:
    try:
        import bm3d as module  # optional, non-commercial licence: never a dependency
    except ImportError:
        raise InputError(
            f"{method} needs the optional `bm3d` package (pip install bm3d); it is not a "
            "dependency of fluoden-batch because its licence forbids commercial use"
        ) from None
    return module


def bm3d_available() -> bool:
    """Whether the optional ``bm3d`` package imports."""
    try:
        _bm3d_module("BM3D")
    except InputError:
        return False
    return True


def bm3d(plane: npt.ArrayLike, sigma: float) -> np.ndarray:
    """BM3D (``bm3d.bm3d``) at a known white Gaussian noise std ``sigma`` (data units, > 0).

    Same shapes and units as :func:`nlm`; needs the optional ``bm3d`` package (else
    InputError).
    """
    module = _bm3d_module("BM3D")
    if not sigma > 0:
        raise InputError(f"BM3D needs a noise std sigma > 0, got {sigma}")
    return np.asarray(module.bm3d(_plane(plane), sigma_psd=float(sigma)), dtype=np.float64)


def vst_bm3d(plane: npt.ArrayLike, a: float, b: float, *, floor: float = 0.0) -> np.ndarray:
    """GAT with ``(a, b)``, BM3D at unit noise std, exact unbiased inverse.

    Same shapes and units as :func:`vst_nlm`; needs the optional ``bm3d`` package.
    """
    module = _bm3d_module("VST+BM3D")
    x = gat_forward(_plane(plane), a, b)
    smooth = np.asarray(module.bm3d(x, sigma_psd=1.0), dtype=np.float64)
    return gat_inverse(smooth, a, b, method="exact_unbiased", floor=floor)


def _nlm_plane(
    plane: np.ndarray, a: float, b: float, level: float, floor: float = 0.0
) -> np.ndarray:
    return nlm(plane, noise_sigma(a, b, level)).astype(np.float32)


def _vst_nlm_plane(
    plane: np.ndarray, a: float, b: float, level: float, floor: float = 0.0
) -> np.ndarray:
    return vst_nlm(plane, a, b, floor=floor).astype(np.float32)


def _bm3d_plane(
    plane: np.ndarray, a: float, b: float, level: float, floor: float = 0.0
) -> np.ndarray:
    return bm3d(plane, noise_sigma(a, b, level)).astype(np.float32)


def _vst_bm3d_plane(
    plane: np.ndarray, a: float, b: float, level: float, floor: float = 0.0
) -> np.ndarray:
    return vst_bm3d(plane, a, b, floor=floor).astype(np.float32)


@dataclass(frozen=True)
class ClassicalMethod:
    """One classical denoiser of :data:`CLASSICAL`.

    Attributes
    ----------
    fn : callable
        ``fn(plane, a, b, level, floor)``: plane of shape (H, W) in data units, the
        channel's ``(a, b)``, ``level`` and zero-signal ``floor`` (data units) -> float32
        plane of shape (H, W), data units.
    needs : tuple of str
        The parameters ``fn`` reads: ``("a", "b", "level")`` or ``("a", "b")``.
    reach : int or None
        Context pixels a tile needs on each side so that tiled application equals
        whole-plane application at the tile's pixels; None: not tile-exact (BM3D's
        reference blocks lie on a grid from the plane's origin), run it on whole planes.
    package : str or None
        Optional package the method imports.
    """

    fn: PlaneFn
    needs: tuple[str, ...]
    reach: int | None
    package: str | None = None

    def available(self) -> bool:
        """Whether the method can run here (its optional package imports)."""
        return self.package is None or bm3d_available()


CLASSICAL: dict[str, ClassicalMethod] = {
    "nlm": ClassicalMethod(_nlm_plane, ("a", "b", "level"), NLM_REACH),
    "vst-nlm": ClassicalMethod(_vst_nlm_plane, ("a", "b"), NLM_REACH),
    "bm3d": ClassicalMethod(_bm3d_plane, ("a", "b", "level"), None, "bm3d"),
    "vst-bm3d": ClassicalMethod(_vst_bm3d_plane, ("a", "b"), None, "bm3d"),
}

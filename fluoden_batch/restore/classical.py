"""Classical denoisers of one Y/X plane: non-local means and BM3D, plain or after the GAT.

Arrays in, arrays out (no Zarr, Dask or torch). Every method of :data:`CLASSICAL` has the
signature ``fn(plane, a, b, level) -> float32 plane`` with the channel's Poisson-Gaussian
parameters ``(a, b)`` in data units (``Var[z | y] = a * y + b``), fixed per channel for a
whole run (per-block values would leave seams):

- ``nlm`` / ``bm3d``: a Gaussian denoiser at one noise std for the whole plane,
  ``sigma = sqrt(a * level + b)`` with ``level`` (data units) also fixed per channel, e.g.
  its median; the plane itself never sets sigma, so the result is local.
- ``vst-nlm`` / ``vst-bm3d``: ``gat_forward(z, a, b)`` -> the denoiser at unit noise std ->
  ``gat_inverse(..., method="exact_unbiased")`` (Makitalo & Foi 2013); ``level`` unused.

NLM is scikit-image ``denoise_nl_means`` (5x5 patches, 13x13 search, fast mode,
``h = 0.8 sigma``, sigma subtracted from the patch distances). BM3D is the optional ``bm3d``
package (Makinen et al.), imported only when called: its licence forbids commercial use, so
it is never a dependency of fluoden-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt
from skimage.restoration import denoise_nl_means

from fluoden_batch.errors import InputError
from fluoden_batch.noise import gat_forward, gat_inverse

__all__ = [
    "CLASSICAL",
    "NLM_H",
    "NLM_REACH",
    "ClassicalMethod",
    "bm3d",
    "bm3d_available",
    "nlm",
    "noise_sigma",
    "vst_bm3d",
    "vst_nlm",
]

PATCH_SIZE = 5  # NLM patch side, px
PATCH_DISTANCE = 6  # NLM search radius, px (13x13 search window)
NLM_H = 0.8  # NLM filtering strength h in units of the noise std
NLM_REACH = PATCH_SIZE // 2 + PATCH_DISTANCE  # 8 px: context a tile needs on each side

PlaneFn = Callable[[np.ndarray, float, float, float], np.ndarray]


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


def vst_nlm(plane: npt.ArrayLike, a: float, b: float, h: float = NLM_H) -> np.ndarray:
    """GAT with ``(a, b)``, NLM at unit noise std with strength ``h``, exact unbiased inverse.

    Parameters
    ----------
    plane : array_like, shape (H, W)
        Noisy intensities, data units.
    a, b : float
        Poisson gain (> 0, data units) and Gaussian variance (squared data units).
    h : float
        NLM strength in the stabilised domain (units of its unit noise std).

    Returns
    -------
    ndarray, shape (H, W), float64, data units
    """
    x = gat_forward(_plane(plane), a, b)
    smooth = denoise_nl_means(
        x, patch_size=PATCH_SIZE, patch_distance=PATCH_DISTANCE, h=h, sigma=1.0, fast_mode=True
    )
    return gat_inverse(smooth, a, b, method="exact_unbiased")


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


def vst_bm3d(plane: npt.ArrayLike, a: float, b: float) -> np.ndarray:
    """GAT with ``(a, b)``, BM3D at unit noise std, exact unbiased inverse.

    Same shapes and units as :func:`vst_nlm`; needs the optional ``bm3d`` package.
    """
    module = _bm3d_module("VST+BM3D")
    x = gat_forward(_plane(plane), a, b)
    smooth = np.asarray(module.bm3d(x, sigma_psd=1.0), dtype=np.float64)
    return gat_inverse(smooth, a, b, method="exact_unbiased")


def _nlm_plane(plane: np.ndarray, a: float, b: float, level: float) -> np.ndarray:
    return nlm(plane, noise_sigma(a, b, level)).astype(np.float32)


def _vst_nlm_plane(plane: np.ndarray, a: float, b: float, level: float) -> np.ndarray:
    return vst_nlm(plane, a, b).astype(np.float32)


def _bm3d_plane(plane: np.ndarray, a: float, b: float, level: float) -> np.ndarray:
    return bm3d(plane, noise_sigma(a, b, level)).astype(np.float32)


def _vst_bm3d_plane(plane: np.ndarray, a: float, b: float, level: float) -> np.ndarray:
    return vst_bm3d(plane, a, b).astype(np.float32)


@dataclass(frozen=True)
class ClassicalMethod:
    """One classical denoiser of :data:`CLASSICAL`.

    Attributes
    ----------
    fn : callable
        ``fn(plane, a, b, level)``: plane of shape (H, W) in data units, the channel's
        ``(a, b)`` and ``level`` (data units) -> float32 plane of shape (H, W), data units.
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

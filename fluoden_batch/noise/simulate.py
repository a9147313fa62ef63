"""Exact sampling of the Poisson-Gaussian noise model.

The observation model (Foi et al. 2008) is

    z = a * p + n,    p ~ Poisson(y / a),    n ~ Normal(0, b),

so that ``E[z | y] = y`` and ``Var[z | y] = a * y + b``, optionally followed by
clipping to the sensor range ``[lo, hi]`` (Foi 2009).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fluoden_batch.errors import InputError

__all__ = ["as_rng", "simulate"]


def as_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """Return a NumPy generator from ``None`` (fresh entropy), an int seed or a generator.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        Seed or generator. A generator is returned as is (not copied).

    Returns
    -------
    numpy.random.Generator
    """
    if rng is None or isinstance(rng, int | np.integer):
        if rng is not None and rng < 0:
            raise InputError(f"rng seed must be a non-negative integer, got {rng}")
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise InputError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def _check_params(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    if not math.isfinite(a) or a < 0:
        raise InputError(f"gain a must be finite and >= 0, got a={a}")
    if not math.isfinite(b) or b < 0:
        raise InputError(f"Gaussian variance b must be finite and >= 0, got b={b}")
    return a, b


def _check_clip(clip: tuple[float, float] | None) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError) as exc:
        raise InputError(f"clip must be a pair (lo, hi) of numbers, got {clip!r}") from exc
    if math.isnan(lo) or math.isnan(hi) or lo >= hi:
        raise InputError(f"clip must satisfy lo < hi, got clip={clip!r}")
    return lo, hi


def simulate(
    y: npt.ArrayLike,
    a: float,
    b: float,
    *,
    clip: tuple[float, float] | None = None,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw a noisy observation of the clean image ``y`` under the Poisson-Gaussian model.

    Parameters
    ----------
    y : array_like, any shape, real (float or unsigned/signed integer) dtype
        Clean (noise-free) intensities, in the units of the output (e.g. camera ADU or
        grey levels). Converted to float64; must be finite and >= 0.
    a : float
        Gain of the Poisson part, in units of ``y`` per photo-electron (> 0). ``a == 0``
        is accepted and means "no Poisson part" (purely Gaussian noise).
    b : float
        Variance of the additive Gaussian part, in squared units of ``y`` (>= 0).
    clip : (lo, hi), optional
        Sensor range, in units of ``y``: the result is clipped to ``[lo, hi]``, so values
        outside the range pile up at the bounds. ``None`` (default) does not clip.
    rng : int, numpy.random.Generator or None
        Random source; an int seed makes the draw reproducible.

    Returns
    -------
    numpy.ndarray, float64, same shape as ``y``
        ``z = a * Poisson(y / a) + Normal(0, sqrt(b))``, then clipped if requested, so that
        ``E[z] = y`` and ``Var[z] = a * y + b`` before clipping.

    Raises
    ------
    fluoden_batch.errors.InputError
        If ``a < 0``, ``b < 0``, a parameter is not finite, ``y`` holds negative or
        non-finite values, or ``clip`` is not an increasing pair.
    """
    a, b = _check_params(a, b)
    bounds = _check_clip(clip)
    gen = as_rng(rng)
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.number) and not np.iscomplexobj(y)):
        raise InputError(f"y must be a real numeric array, got dtype {y.dtype}")
    y = y.astype(np.float64, copy=False)
    if y.size and not np.isfinite(y).all():
        raise InputError("y holds NaN or infinite values")
    if y.size and y.min() < 0:
        raise InputError(f"y must be >= 0 (intensities), got a minimum of {y.min():g}")
    if a > 0:
        try:
            z = a * gen.poisson(y / a).astype(np.float64)
        except ValueError as exc:  # lam beyond ~1e19 photons
            raise InputError(f"y / a is too large for Poisson sampling (a={a:g}): {exc}") from exc
    else:
        z = y.copy()
    if b > 0:
        z += gen.normal(0.0, math.sqrt(b), size=y.shape)
    if bounds is not None:
        np.clip(z, bounds[0], bounds[1], out=z)
    return z

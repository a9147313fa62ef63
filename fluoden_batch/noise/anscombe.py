"""Generalized Anscombe transform (GAT) for Poisson-Gaussian noise and its inverses.

For ``z`` with ``E[z | y] = y`` and ``Var[z | y] = a * y + b`` the GAT (Starck et al.
1998; Makitalo & Foi 2013) with ``alpha = a``, ``sigma^2 = b`` and ``mu = 0`` is

    f(z) = (2 / a) * sqrt(max(a * z + 3/8 * a^2 + b, 0)),

which makes the noise approximately unit-variance Gaussian. In units normalised by
``a`` (``u = y / a``, ``s2 = b / a^2``) this is ``D = 2 * sqrt(max(z / a + 3/8 + s2, 0))``.

Inverses (M. Makitalo and A. Foi, "Optimal inversion of the generalized Anscombe
transformation for Poisson-Gaussian noise", IEEE TIP 22(1), 2013):

- ``"exact_unbiased"``: the inverse of ``y -> E[f(z) | y]``, so that a perfect denoiser
  output ``D = E[f(z) | y]`` maps back to ``y`` exactly. It is computed here by tabulating
  ``E[f(z) | y]`` numerically (Poisson sum times a Gaussian quadrature) for ``y / a`` up to
  200 and using the paper's closed-form approximation above that, where the two agree to
  better than 1e-4 relative.
- ``"closed_form"``: the paper's closed-form approximation of the exact unbiased inverse,
  ``a * max(1/4 D^2 + 1/4 sqrt(3/2) D^-1 - 11/8 D^-2 + 5/8 sqrt(3/2) D^-3 - 1/8 - s2, 0)``.
  It is biased by a few percent for ``y / a`` below about 3 when ``b / a^2`` is of
  order one, which is why it is not the default.
- ``"algebraic"``: the exact functional inverse of ``f``, ``a * (D^2 / 4 - 3/8 - s2)``.

A negative ``b`` (a pedestal, as returned by :func:`fluoden_batch.noise.estimate` for data
with an offset) is accepted: it describes ``z = g + a * Poisson((y - g) / a)`` with
``g = -b / a``, and every inverse above stays consistent with it.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from fluoden_batch.errors import InputError

__all__ = ["InverseMethod", "gat_forward", "gat_inverse"]

InverseMethod = Literal["exact_unbiased", "closed_form", "algebraic"]

_SQRT_3_2 = math.sqrt(1.5)
_D_MIN_CLOSED_FORM = 2.0 * math.sqrt(3.0 / 8.0)  # the closed form is 0 here, increasing above
_U_MAX = 200.0  # tabulate E[f(z) | u] for u = y / a in [0, _U_MAX]
_U_GRID = np.unique(np.concatenate([np.linspace(0.0, 2.0, 161), np.geomspace(2.0, _U_MAX, 400)]))
_X_GRID = np.linspace(-8.0, 8.0, 1601)  # standard-normal quadrature nodes (trapezoid)


def _check_params(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    if not math.isfinite(a) or a <= 0:
        raise InputError(f"GAT gain a must be finite and > 0, got a={a}")
    if not math.isfinite(b):
        raise InputError(f"GAT Gaussian variance b must be finite, got b={b}")
    return a, b


def gat_forward(z: npt.ArrayLike, a: float, b: float) -> np.ndarray:
    """Generalized Anscombe transform of noisy data.

    Parameters
    ----------
    z : array_like, any shape, real dtype
        Noisy observations in data units (the units of ``y``).
    a : float
        Poisson gain (> 0), data units per photo-electron.
    b : float
        Gaussian variance in squared data units (a negative value is read as a pedestal,
        see the module notes).

    Returns
    -------
    numpy.ndarray, float64, same shape as ``z``
        Stabilised values ``f(z)``, dimensionless, with noise standard deviation close to 1.
        NaN in ``z`` propagates.
    """
    a, b = _check_params(a, b)
    z = np.asarray(z, dtype=np.float64)
    arg = a * z + (0.375 * a * a + b)
    return (2.0 / a) * np.sqrt(np.maximum(arg, 0.0))


def _closed_form(d: np.ndarray, s2: float) -> np.ndarray:
    """Makitalo & Foi closed-form approximation, normalised units (``u = y / a``)."""
    d = np.maximum(d, _D_MIN_CLOSED_FORM)
    inv = 0.25 * d**2 + 0.25 * _SQRT_3_2 / d - 1.375 / d**2 + 0.625 * _SQRT_3_2 / d**3 - 0.125 - s2
    return np.maximum(inv, 0.0)


@functools.lru_cache(maxsize=64)
def _expected_forward_table(s2: float) -> np.ndarray:
    """``E[D | u]`` on ``_U_GRID`` in normalised units for Gaussian variance ``s2 >= 0``."""
    k = np.arange(int(_U_MAX + 12.0 * math.sqrt(_U_MAX) + 40.0), dtype=np.float64)
    if s2 > 0:
        s = math.sqrt(s2)
        w = stats.norm.pdf(_X_GRID)
        w /= w.sum()
        arg = k[:, None] + 0.375 + s2 + s * _X_GRID[None, :]
        g = (2.0 * np.sqrt(np.maximum(arg, 0.0))) @ w
    else:
        g = 2.0 * np.sqrt(k + 0.375)
    pmf = stats.poisson.pmf(k[None, :], _U_GRID[:, None])
    return pmf @ g


def _exact_unbiased(d: np.ndarray, s2: float) -> np.ndarray:
    """Exact unbiased inverse in normalised units; returns ``u = y / a``."""
    gauss_s2 = max(s2, 0.0)
    table = _expected_forward_table(gauss_s2)
    u = np.interp(d, table, _U_GRID, left=0.0)
    high = d > table[-1]
    if np.any(high):
        u[high] = _closed_form(d[high], gauss_s2)
    # s2 < 0 is a pedestal g = -b / a: the Poisson part sees y - g, i.e. u - (-s2).
    return u - min(s2, 0.0)


def gat_inverse(
    d: npt.ArrayLike,
    a: float,
    b: float,
    *,
    method: InverseMethod = "exact_unbiased",
    floor: float = 0.0,
) -> np.ndarray:
    """Map stabilised (e.g. denoised) values back to data units.

    Parameters
    ----------
    d : array_like, any shape, real dtype
        Values in the stabilised domain (dimensionless), typically the output of a
        Gaussian denoiser applied to :func:`gat_forward` output.
    a : float
        Poisson gain (> 0), data units per photo-electron; same as in the forward call.
    b : float
        Gaussian variance in squared data units; same as in the forward call.
    method : {"exact_unbiased", "closed_form", "algebraic"}
        ``"exact_unbiased"`` (default) inverts ``y -> E[f(z) | y]`` (numerically exact);
        ``"closed_form"`` is Makitalo & Foi's closed-form approximation of it;
        ``"algebraic"`` is the plain functional inverse of :func:`gat_forward` (biased when
        applied to denoised data at low counts).
    floor : float
        The intensity of zero signal, data units (default 0): the unbiased inverses read
        the data as ``z - floor``, whose variance ``a (z - floor) + b + a floor`` is the
        same line, so :func:`gat_forward` is unchanged. Where the data go below 0
        (background-subtracted images), ``floor`` at or below their lowest clean level
        keeps the inverse from clipping them at 0. Data with a pedestal above 0 need no
        floor: their ``b`` is negative (module notes).

    Returns
    -------
    numpy.ndarray, float64, same shape as ``d``
        Estimated intensities in data units. The unbiased inverses return values
        ``>= floor + max(-(b + a floor) / a, 0)``; values of ``d`` below ``E[f(z) | y =
        floor]`` map to that floor.
    """
    a, b = _check_params(a, b)
    floor = float(floor)
    if not math.isfinite(floor):
        raise InputError(f"GAT floor must be finite, got floor={floor}")
    if floor:
        return floor + gat_inverse(d, a, b + a * floor, method=method)
    d = np.asarray(d, dtype=np.float64)
    s2 = b / (a * a)
    if method == "algebraic":
        return a * (0.25 * d * d - 0.375 - s2)
    if method == "closed_form":
        return a * _closed_form(d, s2)
    if method == "exact_unbiased":
        shape = d.shape
        return a * _exact_unbiased(d.ravel(), s2).reshape(shape)
    raise InputError(
        f"method must be 'exact_unbiased', 'closed_form' or 'algebraic', got {method!r}"
    )

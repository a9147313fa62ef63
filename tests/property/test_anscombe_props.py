"""Property tests of the generalized Anscombe transform and its inverses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fluoden_batch.errors import InputError
from fluoden_batch.noise import gat_forward, gat_inverse

_LEGENDRE = np.polynomial.legendre.leggauss(200)

gains = st.floats(0.05, 50.0)
read_noise_ratio = st.floats(0.0, 20.0)  # sqrt(b) / a
photons = st.floats(1.0, 400.0)  # y / a, at least one photon


def expected_forward(y: float, a: float, b: float) -> float:
    """``E[f(z) | y]`` for ``z = a * Poisson(y / a) + N(0, b)``, by independent quadrature.

    Works in photon units (``D = 2 sqrt(max(k + s * t + 3/8 + s^2, 0))``). For each count
    ``k`` the Gaussian expectation is written with ``v^2 = c + s t`` (``c = k + 3/8 +
    s^2``), which removes the square-root kink, and integrated by Gauss-Legendre.
    """
    u, s = y / a, math.sqrt(b) / a
    k = np.arange(int(u + 15 * math.sqrt(u) + 30), dtype=np.float64)
    pmf = stats.poisson.pmf(k, u)
    c = k + 0.375 + s * s
    if s < 1e-6:  # the Gaussian part changes E[f] by O(s^2) only
        return float(np.sum(pmf * 2 * np.sqrt(c)))
    lo = np.sqrt(np.maximum(c - 12 * s, 0.0))
    hi = np.sqrt(c + 12 * s)
    x, w = _LEGENDRE
    v = 0.5 * (hi - lo)[:, None] * (x + 1)[None, :] + lo[:, None]
    density = stats.norm.pdf((v * v - c[:, None]) / s) * (2 * v / s)
    inner = 0.5 * (hi - lo) * np.sum(w * 2 * v * density, axis=1)
    return float(np.sum(pmf * inner))


@settings(max_examples=60, deadline=None)
@given(a=gains, ratio=read_noise_ratio, u=photons)
def test_exact_unbiased_inverse_maps_expected_forward_back_to_y(
    a: float, ratio: float, u: float
) -> None:
    b, y = (ratio * a) ** 2, u * a
    d = expected_forward(y, a, b)
    back = float(gat_inverse(np.array([d]), a, b)[0])
    assert back == pytest.approx(y, rel=0.01)


def test_exact_unbiased_inverse_with_a_pedestal() -> None:
    # b < 0: z = g + a * Poisson((y - g) / a) with g = -b / a.
    a, g = 2.0, 30.0
    for y in (g + a, g + 10 * a, g + 500 * a):
        d = expected_forward(y - g, a, 0.0)  # f(z) with b = -a g sees only the Poisson part
        assert float(gat_inverse(np.array([d]), a, -a * g)[0]) == pytest.approx(y, rel=0.01)


@settings(max_examples=40, deadline=None)
@given(a=gains, ratio=read_noise_ratio, u=photons, floor=st.floats(-1e4, 0.0))
def test_a_floor_takes_the_exact_inverse_below_zero(
    a: float, ratio: float, u: float, floor: float
) -> None:
    """Background-subtracted data: ``z = floor + a Poisson((y - floor) / a) + N(0, b0)``,
    whose variance line is ``a z + b`` with ``b = b0 - a floor``; with ``floor`` the
    inverse maps ``E[f(z) | y]`` back to ``y`` (without it, ``y < 0`` would be clipped)."""
    b0 = (ratio * a) ** 2
    y, b = floor + u * a, b0 - a * floor
    d = expected_forward(y - floor, a, b0)  # f(z) is the same function of z - floor
    back = float(gat_inverse(np.array([d]), a, b, floor=floor)[0])
    assert back == pytest.approx(y, rel=0.01, abs=0.01 * u * a)


@settings(max_examples=60, deadline=None)
@given(
    a=gains,
    b=st.floats(-1e3, 1e3),
    floor=st.floats(-1e3, 0.0),
    shift=st.floats(-1e3, 1e3),
    d=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8),
)
def test_shifting_the_data_shifts_every_inverse(
    a: float, b: float, floor: float, shift: float, d: list[float]
) -> None:
    """The data read as ``z - shift`` have the variance line ``a z + b + a shift`` and the
    floor ``floor - shift``: the same forward values, every inverse ``shift`` lower."""
    z = np.asarray(d) * a  # any values: the forward is defined (clamped) everywhere
    np.testing.assert_allclose(
        gat_forward(z - shift, a, b + a * shift), gat_forward(z, a, b), rtol=1e-9, atol=1e-9
    )
    for method in ("exact_unbiased", "closed_form", "algebraic"):
        here = gat_inverse(np.asarray(d), a, b, method=method, floor=floor)
        moved = gat_inverse(np.asarray(d), a, b + a * shift, method=method, floor=floor - shift)
        np.testing.assert_allclose(moved, here - shift, rtol=1e-9, atol=1e-6 * (1 + abs(shift)))


def test_a_floor_must_be_finite() -> None:
    with pytest.raises(InputError, match="floor"):
        gat_inverse(np.ones(2), 1.0, 1.0, floor=float("nan"))


def test_closed_form_approximation_is_the_published_formula() -> None:
    d = np.array([1.5, 3.0, 10.0, 40.0])
    s2 = 0.25
    r = math.sqrt(1.5)
    expected = d**2 / 4 + r / 4 / d - 11 / 8 / d**2 + 5 / 8 * r / d**3 - 1 / 8 - s2
    np.testing.assert_allclose(gat_inverse(d, 1.0, s2, method="closed_form"), expected)
    np.testing.assert_allclose(gat_inverse(d, 3.0, 9 * s2, method="closed_form"), 3 * expected)


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(1e-3, 1e3),
    b=st.floats(-1e4, 1e4),
    offset=st.floats(0.0, 1e6),
)
def test_algebraic_inverse_is_the_exact_functional_inverse(
    a: float, b: float, offset: float
) -> None:
    z_min = -(0.375 * a + b / a)  # smallest z where the square root argument is >= 0
    z = np.array([z_min + offset, z_min + offset * 0.5, z_min + 1e-3 * offset])
    back = gat_inverse(gat_forward(z, a, b), a, b, method="algebraic")
    scale = np.abs(z) + 0.375 * a + abs(b) / a + 1.0
    np.testing.assert_allclose(back, z, rtol=0, atol=float(1e-10 * scale.max()))


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(1e-3, 1e3),
    b=st.floats(-1e4, 1e4),
    z=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50),
)
def test_forward_is_finite_and_monotone(a: float, b: float, z: list[float]) -> None:
    zs = np.sort(np.array(z))
    f = gat_forward(zs, a, b)
    assert np.all(np.isfinite(f)) and np.all(f >= 0)
    assert np.all(np.diff(f) >= 0)
    inside = a * zs + 0.375 * a * a + b > 0
    strict = inside[1:] & inside[:-1] & (np.diff(zs) > 1e-6 * (np.abs(zs[1:]) + 1))
    assert np.all(np.diff(f)[strict] > 0)


@settings(max_examples=50, deadline=None)
@given(a=gains, ratio=read_noise_ratio, d=st.lists(st.floats(0.0, 1e3), min_size=2, max_size=50))
def test_unbiased_inverses_are_monotone_and_non_negative(
    a: float, ratio: float, d: list[float]
) -> None:
    b = (ratio * a) ** 2
    ds = np.sort(np.array(d))
    for method in ("exact_unbiased", "closed_form"):
        y = gat_inverse(ds, a, b, method=method)
        assert np.all(np.isfinite(y)) and np.all(y >= 0)
        assert np.all(np.diff(y) >= -1e-9 * (np.abs(y[1:]) + 1))


def test_noise_is_stabilised_to_unit_variance() -> None:
    rng = np.random.default_rng(0)
    a, b = 3.0, 50.0
    for y in (30.0, 300.0, 3000.0):
        z = a * rng.poisson(y / a, 200_000) + rng.normal(0.0, math.sqrt(b), 200_000)
        assert np.std(gat_forward(z, a, b)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("a", "b"), [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, math.inf)])
def test_bad_parameters_raise(a: float, b: float) -> None:
    with pytest.raises(InputError, match="GAT"):
        gat_forward(np.ones(3), a, b)
    with pytest.raises(InputError, match="GAT"):
        gat_inverse(np.ones(3), a, b)


def test_unknown_method_raises() -> None:
    with pytest.raises(InputError, match="method"):
        gat_inverse(np.ones(3), 1.0, 1.0, method="asymptotic")  # type: ignore[arg-type]

"""Poisson-Gaussian simulation: moments, clipping, reproducibility, parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fluoden_batch.errors import InputError
from fluoden_batch.noise import simulate
from fluoden_batch.noise.simulate import MAX_CORRELATION, kernel_coefficient

N = 200_000  # samples per intensity level
Z_MAX = 5.0  # two-sided z-test bound: a false alarm is a ~1e-6 event per comparison


def _moment_z_scores(z: np.ndarray, mean: float, var: float) -> tuple[float, float]:
    """z-scores of the sample mean and the sample variance against the model."""
    n = z.size
    dev = z - z.mean()
    m2 = float(np.mean(dev**2))
    m4 = float(np.mean(dev**4))
    z_mean = (z.mean() - mean) / math.sqrt(var / n)
    z_var = (z.var(ddof=1) - var) / math.sqrt(max(m4 - m2 * m2, 1e-300) / n)
    return float(z_mean), float(z_var)


@pytest.mark.parametrize(
    ("a", "b"),
    [(1.0, 0.0), (0.5, 4.0), (3.0, 25.0), (20.0, 100.0), (0.0, 9.0)],
)
@pytest.mark.parametrize("y", [0.5, 3.0, 50.0, 1000.0])
def test_mean_and_variance_follow_the_model(a: float, b: float, y: float) -> None:
    z = simulate(np.full(N, y), a, b, rng=12345)
    z_mean, z_var = _moment_z_scores(z, y, a * y + b)
    assert abs(z_mean) < Z_MAX, f"mean {z.mean():.4f} vs {y} (z={z_mean:.2f})"
    assert abs(z_var) < Z_MAX, f"variance {z.var():.4f} vs {a * y + b} (z={z_var:.2f})"


def test_zero_signal_with_zero_read_noise_is_exactly_zero() -> None:
    z = simulate(np.zeros((8, 8)), 2.0, 0.0, rng=0)
    assert np.array_equal(z, np.zeros((8, 8)))


def test_poisson_part_is_quantised_in_steps_of_the_gain() -> None:
    z = simulate(np.full(1000, 7.5), 2.5, 0.0, rng=0)
    np.testing.assert_allclose(z / 2.5, np.round(z / 2.5), atol=1e-9)


def _clipped_fraction(y: float, a: float, b: float, bound: float, upper: bool) -> float:
    """Exact P(z <= bound) (or P(z >= bound)) for z = a * Poisson(y / a) + N(0, b)."""
    k = np.arange(int(y / a + 20 * math.sqrt(y / a) + 50))
    pmf = stats.poisson.pmf(k, y / a)
    t = (bound - a * k) / math.sqrt(b)
    return float(np.sum(pmf * (stats.norm.sf(t) if upper else stats.norm.cdf(t))))


@pytest.mark.parametrize(
    ("y", "a", "b", "clip"),
    [
        (2.0, 1.0, 4.0, (0.0, 100.0)),
        (95.0, 2.0, 9.0, (0.0, 100.0)),
        (10.0, 0.5, 100.0, (0.0, 4095.0)),
    ],
)
def test_clipping_piles_up_at_the_bounds_in_the_predicted_fraction(
    y: float, a: float, b: float, clip: tuple[float, float]
) -> None:
    lo, hi = clip
    z = simulate(np.full(N, y), a, b, clip=clip, rng=7)
    assert z.min() >= lo and z.max() <= hi
    for bound, upper in ((lo, False), (hi, True)):
        p = _clipped_fraction(y, a, b, bound, upper)
        observed = float(np.mean(z == bound))
        se = math.sqrt(max(p * (1 - p), 1e-12) / N)
        assert abs(observed - p) < Z_MAX * se + 1e-6, (bound, observed, p)
        if p > 1e-3:
            assert observed > 0  # the clipped values sit exactly on the bound


def test_unclipped_values_are_untouched_by_clip() -> None:
    y = np.linspace(20.0, 80.0, 1000)
    assert np.array_equal(
        simulate(y, 1.0, 1.0, rng=3), simulate(y, 1.0, 1.0, clip=(-1e9, 1e9), rng=3)
    )


def test_int_seed_is_reproducible_and_seeds_differ() -> None:
    y = np.linspace(0, 500, 64 * 64).reshape(64, 64)
    first = simulate(y, 2.0, 10.0, rng=42)
    assert np.array_equal(first, simulate(y, 2.0, 10.0, rng=42))
    assert not np.array_equal(first, simulate(y, 2.0, 10.0, rng=43))


def test_generator_is_used_and_advanced() -> None:
    y = np.full(100, 10.0)
    gen = np.random.default_rng(5)
    z1, z2 = simulate(y, 1.0, 1.0, rng=gen), simulate(y, 1.0, 1.0, rng=gen)
    assert not np.array_equal(z1, z2)
    gen = np.random.default_rng(5)
    assert np.array_equal(z1, simulate(y, 1.0, 1.0, rng=gen))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_any_real_dtype_gives_float64_of_the_same_shape(dtype: type) -> None:
    y = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    z = simulate(y, 1.0, 2.0, rng=0)
    assert z.dtype == np.float64
    assert z.shape == y.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": -1.0, "b": 1.0}, "a=-1.0"),
        ({"a": math.nan, "b": 1.0}, "a=nan"),
        ({"a": 1.0, "b": -0.5}, "b=-0.5"),
        ({"a": 1.0, "b": math.inf}, "b=inf"),
    ],
)
def test_bad_parameters_raise_input_error_naming_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        simulate(np.ones(4), **kwargs)


def test_negative_or_non_finite_signal_is_rejected() -> None:
    with pytest.raises(InputError, match=r"y must be >= 0.*-2"):
        simulate(np.array([1.0, -2.0]), 1.0, 1.0)
    with pytest.raises(InputError, match="NaN or infinite"):
        simulate(np.array([1.0, np.nan]), 1.0, 1.0)


@pytest.mark.parametrize("clip", [(5.0, 5.0), (10.0, 0.0), (0.0,), "ab"])
def test_bad_clip_is_rejected(clip: object) -> None:
    with pytest.raises(InputError, match="clip"):
        simulate(np.ones(4), 1.0, 1.0, clip=clip)  # type: ignore[arg-type]


def test_bad_rng_is_rejected() -> None:
    with pytest.raises(InputError, match="rng"):
        simulate(np.ones(4), 1.0, 1.0, rng="seed")  # type: ignore[arg-type]


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.7])
def test_correlated_noise_has_the_asked_lag1_correlation_and_keeps_the_variance(
    rho: float,
) -> None:
    a, b, y = 2.0, 9.0, 50.0
    z = simulate(np.full((400, 500), y), a, b, rng=3, correlation=rho)
    n = z - y
    var = n.var()
    lag_x = float(np.mean(n[:, 1:] * n[:, :-1]) / var)
    lag_y = float(np.mean(n[1:, :] * n[:-1, :]) / var)
    # 2e5 pixels: the sample correlation's standard error is about 0.003
    assert lag_x == pytest.approx(rho, abs=0.02)
    assert lag_y == pytest.approx(rho, abs=0.02)
    assert var == pytest.approx(a * y + b, rel=0.03)
    assert n.mean() == pytest.approx(0.0, abs=0.15)


def test_correlated_noise_is_seen_less_by_the_single_image_estimator() -> None:
    """Why the correlated training noise exists: the wavelet estimator (finest details)
    underestimates the variance of correlated noise, as on FMD's widefield captures."""
    from fluoden_batch.metrics import noise_sigma

    flat = np.full((256, 256), 100.0)
    iid = noise_sigma(simulate(flat, 0.0, 100.0, rng=1))
    corr = noise_sigma(simulate(flat, 0.0, 100.0, rng=1, correlation=0.6))
    assert iid == pytest.approx(10.0, rel=0.05)
    assert corr < 0.6 * iid


@pytest.mark.parametrize("rho", [-0.1, 0.71, float("nan")])
def test_correlation_outside_its_range_is_refused(rho: float) -> None:
    with pytest.raises(InputError, match="noise correlation"):
        simulate(np.ones((8, 8)), 1.0, 1.0, rng=0, correlation=rho)


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.4, 0.6, MAX_CORRELATION])
def test_kernel_coefficient_gives_the_asked_lag1_correlation(rho: float) -> None:
    c = kernel_coefficient(rho)
    assert 2 * c / (1 + 2 * c * c) == pytest.approx(rho, abs=1e-7)

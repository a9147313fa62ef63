"""Public functions on random arrays (shapes, dtypes, NaN/Inf): a finite result of the right
shape, or the project's own error type - never a crash or a silent NaN."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fluoden_batch.errors import FluodenError
from fluoden_batch.metrics import noise_sigma, psnr, ssim
from fluoden_batch.models.normalise import normalise, percentile_range
from fluoden_batch.noise import estimate
from fluoden_batch.restore.block import cast_output

DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64])
planes = arrays(
    DTYPES,
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": False},
)


def finite_or_our_error(fn, *args):
    try:
        result = fn(*args)
    except FluodenError:
        return None
    values = np.atleast_1d(np.asarray(result, dtype=np.float64))
    assert np.isfinite(values).all(), (fn.__name__, result)
    return result


@settings(max_examples=150, deadline=None)
@given(planes)
def test_normalisation_statistics(x):
    r = finite_or_our_error(percentile_range, x, 0.1, 99.9)
    if r is not None:
        lo, hi = r
        assert hi > lo
        finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
        if finite.size and np.ptp(finite.astype(np.float64)) < 1e30:
            y = normalise(finite, lo, hi)
            assert y.shape == finite.shape and np.isfinite(y).all()


@settings(max_examples=150, deadline=None)
@given(planes, st.sampled_from([np.uint8, np.uint16, np.float32]))
def test_cast_output_never_wraps(x, dtype):
    y = finite_or_our_error(cast_output, x.astype(np.float64), np.dtype(dtype))
    if y is not None:
        assert y.shape == x.shape and y.dtype == dtype
        if np.issubdtype(dtype, np.integer):
            src = np.clip(np.rint(x.astype(np.float64)), 0, np.iinfo(dtype).max)
            assert (y == src).all()


@settings(max_examples=100, deadline=None)
@given(planes, st.floats(1e-3, 1e5))
def test_metrics(x, data_range):
    ref = np.zeros(x.shape, dtype=np.float64)
    with np.errstate(all="ignore"):
        mse = float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0
    if x.size and np.isfinite(x).all() and mse > 0:
        finite_or_our_error(psnr, x, ref, data_range)
    else:
        try:
            value = psnr(x, ref, data_range)
            assert value == np.inf  # identical images (or a difference below float64's range)
        except FluodenError:
            pass
    finite_or_our_error(ssim, x, ref, data_range)
    finite_or_our_error(noise_sigma, x)


@settings(max_examples=60, deadline=None)
@given(planes)
def test_noise_estimate(x):
    try:
        est = estimate(x)
    except FluodenError:
        return
    assert np.isfinite([est.a, est.b, est.a_std, est.b_std]).all()

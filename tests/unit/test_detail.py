"""Detail restoration after the model, tuned by SURE (``--detail sure``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from fluoden_batch.config import DenoiseOptions
from fluoden_batch.errors import InputError
from fluoden_batch.noise import simulate
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.restore.classical import NLM_REACH, WIENER_REACH, vst_nlm, vst_wiener
from fluoden_batch.restore.detail import (
    BLENDS,
    CORRELATED,
    WIENER_CORRELATION,
    WIENERS,
    Detail,
    choose_detail,
    detail_radius,
    lag1_correlation,
    restore_detail,
    sure_plane,
    wiener_risks,
)

A, B = 2.0, 100.0


def clean_plane(size: int = 192, seed: int = 0) -> np.ndarray:
    """Small bright spots and a few larger blobs on a dim background (grey levels)."""
    rng = np.random.default_rng(seed)
    spots = np.zeros((size, size))
    spots.flat[rng.integers(0, size * size, 60)] = rng.uniform(0.5, 1.0, 60)
    fine = gaussian_filter(spots, 1.2)
    coarse = gaussian_filter(spots, 6.0)
    return 50 + 1500 * fine / fine.max() + 600 * coarse / coarse.max()


def over_smoothing(plane: np.ndarray) -> np.ndarray:
    """A stand-in denoiser that removes the noise and also dims and spreads small
    structures (a Gaussian of 2 px): the local intensity bias the restoration is for."""
    return gaussian_filter(plane, 2.0, mode="reflect")


@given(
    sigma=st.sampled_from([0.0, 1.0, 2.5, 8.0]),
    weight=st.floats(0, 1),
    seed=st.integers(0, 100),
)
def test_restoration_is_the_formula(sigma, weight, seed):
    rng = np.random.default_rng(seed)
    z, d = rng.normal(100, 10, (2, 40, 50))
    low = gaussian_filter(z - d, sigma, mode="reflect", truncate=3.0) if sigma else 0
    expected = z + weight * (d + low - z)
    got = restore_detail(z, d, Detail(sigma, weight))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def flat_plane_and_output(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy flat plane ``z`` (40 x 50, level 300) and a stand-in model output ``d``."""
    rng = np.random.default_rng(seed)
    z = simulate(np.full((40, 50), 300.0), A, B, rng=rng)
    return z, rng.normal(300, 5, z.shape)


@settings(max_examples=10, deadline=None)
@given(
    sigma=st.sampled_from([0.0, 2.5]),
    weight=st.floats(0, 1),
    beta=st.sampled_from(BLENDS[1:]),
    seed=st.integers(0, 100),
)
def test_nlm_blend_is_the_formula(sigma, weight, beta, seed):
    """``d' = (1 - beta) d + beta VST+NLM(z)`` with the channel's (a, b), then as before."""
    z, d = flat_plane_and_output(seed)
    blended = (1 - beta) * d + beta * vst_nlm(z, A, B)
    expected = restore_detail(z, blended, Detail(sigma, weight))
    got = restore_detail(z, d, Detail(sigma, weight, beta), (A, B))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(InputError, match="needs the noise"):
        restore_detail(z, d, Detail(sigma, weight, beta))


@settings(max_examples=5, deadline=None)
@given(
    sigma=st.sampled_from([0.0, 2.5]),
    beta=st.sampled_from(BLENDS),
    gamma=st.sampled_from(WIENERS[1:]),
    seed=st.integers(0, 100),
)
def test_wiener_is_the_last_step(sigma, beta, gamma, seed):
    """``out <- (1 - gamma) out + gamma W(z; out)``, the pilot the restoration's result."""
    z, d = flat_plane_and_output(seed)
    first = restore_detail(z, d, Detail(sigma, 0.75, beta), (A, B)).astype(np.float64)
    expected = first + gamma * (vst_wiener(z, first, A, B) - first)
    got = restore_detail(z, d, Detail(sigma, 0.75, beta, gamma), (A, B))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(InputError, match="needs the noise"):
        restore_detail(z, d, Detail(sigma, 0.75, beta, gamma))


def test_identity_and_input_and_radius():
    rng = np.random.default_rng(1)
    z, d = rng.normal(100, 10, (2, 30, 30))
    np.testing.assert_allclose(restore_detail(z, d, Detail()), d, rtol=1e-6)
    np.testing.assert_allclose(restore_detail(z, d, Detail(4.0, 0.0)), z, rtol=1e-6)
    assert Detail().identity and not Detail(1.0, 1.0).identity
    assert not Detail(0.0, 1.0, 0.25).identity and not Detail(0.0, 1.0, 0.0, 0.5).identity
    radii = [detail_radius(None), detail_radius(Detail()), detail_radius(Detail(2.0, 1.0))]
    assert radii == [0, 0, 6]
    # the Gaussian reads NLM's output, so their reaches add up
    assert detail_radius(Detail(0.0, 1.0, 0.5)) == NLM_REACH
    assert detail_radius(Detail(2.0, 1.0, 0.5)) == 6 + NLM_REACH
    # and the Wiener filter reads their result
    assert detail_radius(Detail(0.0, 1.0, 0.0, 1.0)) == WIENER_REACH
    assert detail_radius(Detail(2.0, 1.0, 0.5, 0.5)) == 6 + NLM_REACH + WIENER_REACH


def test_sure_estimates_the_error_against_the_truth():
    """For every candidate, SURE (no truth used) is close to the true mean squared error."""
    clean = clean_plane()
    noisy = simulate(clean, A, B, rng=np.random.default_rng(2))
    found = sure_plane(noisy, over_smoothing, A, B)
    d = over_smoothing(noisy)
    assert {beta for _, _, beta in found.risks} == set(BLENDS)
    for (s, w, beta), risk in found.risks.items():
        out = restore_detail(noisy, d, Detail(s, w, beta), (A, B))
        true = float(((out - clean) ** 2).mean())
        assert risk / noisy.size == pytest.approx(true, rel=0.1), (s, w, beta)
    # the Wiener filter after a restoration: SURE by two more runs of the filter
    for detail in (Detail(), Detail(2.0, 0.75, 0.25)):
        risks = wiener_risks(found, detail)
        assert set(risks) == set(WIENERS)
        for gamma, risk in risks.items():
            out = restore_detail(noisy, d, replace(detail, wiener=gamma), (A, B))
            true = float(((out - clean) ** 2).mean())
            assert risk / noisy.size == pytest.approx(true, rel=0.1), (detail, gamma)


def test_sure_blends_in_nlm_where_it_helps_a_weak_model():
    """A stand-in model that removes little noise (a Gaussian of 0.7 px): VST+NLM is
    better, SURE takes a share of it, and the result is closer to the truth; without
    ``a > 0`` (no GAT) the NLM candidates are left out."""
    clean = clean_plane(seed=8)
    noisy = simulate(clean, A, B, rng=np.random.default_rng(9))

    def weak(plane: np.ndarray) -> np.ndarray:
        return gaussian_filter(plane, 0.7, mode="reflect")

    detail, why = choose_detail([sure_plane(noisy, weak, A, B)])
    assert detail.nlm > 0 and "VST+NLM share" in why and "Wiener share" in why
    before = ((weak(noisy) - clean) ** 2).mean()
    after = ((restore_detail(noisy, weak(noisy), detail, (A, B)) - clean) ** 2).mean()
    assert after < 0.8 * before
    without = sure_plane(noisy, weak, 0.0, B)
    assert {beta for _, _, beta in without.risks} == {0.0}
    assert wiener_risks(without, Detail()) == {}
    assert choose_detail([without])[0].wiener == 0


def test_sure_takes_the_wiener_filter_where_it_helps():
    """The weak stand-in (a Gaussian of 0.7 px) blended with NLM guides the filter well:
    SURE takes a share of it, and the result is closer to the truth than without it."""
    clean = clean_plane(seed=10)
    noisy = simulate(clean, A, B, rng=np.random.default_rng(11))

    def weak(plane: np.ndarray) -> np.ndarray:
        return gaussian_filter(plane, 0.7, mode="reflect")

    detail, why = choose_detail([sure_plane(noisy, weak, A, B)])
    assert detail.wiener > 0, why
    d = weak(noisy)
    without = restore_detail(noisy, d, replace(detail, wiener=0.0), (A, B))
    with_it = restore_detail(noisy, d, detail, (A, B))
    assert ((with_it - clean) ** 2).mean() < 0.9 * ((without - clean) ** 2).mean()


def test_the_wiener_filter_is_not_tried_where_the_residual_is_anti_correlated():
    """A stand-in that knows the noise-free image but keeps the noise's low frequencies
    (its residual is high-pass noise, lag-1 correlation well under WIENER_CORRELATION):
    the filter is not tried, and the rest of the restoration is chosen as before."""
    clean = clean_plane(seed=12)
    noisy = simulate(clean, A, B, rng=np.random.default_rng(13))

    def lowpass_noise(plane: np.ndarray) -> np.ndarray:
        return clean + gaussian_filter(plane - clean, 1.0, mode="reflect")

    found = sure_plane(noisy, lowpass_noise, A, B)
    assert found.correlation < WIENER_CORRELATION
    detail, why = choose_detail([found])
    assert detail.wiener == 0 and "not tried: residual anti-correlated" in why
    pooled = {k: r / found.pixels for k, r in found.risks.items()}
    assert (detail.sigma, detail.weight, detail.nlm) == min(pooled, key=pooled.get)
    assert wiener_risks(found, detail)  # it could have been: a > 0


def test_sure_restores_what_a_biased_model_dimmed():
    """A stand-in model that knows the noise-free image but takes a third off its small
    structures (what the shipped models do on samples unlike their training data): SURE
    puts part of it back, and the result is closer to the truth."""
    clean = clean_plane(seed=3)
    fine = clean - gaussian_filter(clean, 2.0)

    def dimming(plane: np.ndarray) -> np.ndarray:
        return clean - 0.3 * fine + 0.0 * plane

    planes = [simulate(clean, A, B, rng=np.random.default_rng(k)) for k in range(2)]
    found = [sure_plane(p, dimming, A, B) for p in planes]
    assert max(f.correlation for f in found) < 0.3
    detail, why = choose_detail(found)
    assert not detail.identity and "SURE" in why
    for p in planes:
        before = ((dimming(p) - clean) ** 2).mean()
        after = ((restore_detail(p, dimming(p), detail, (A, B)) - clean) ** 2).mean()
        assert after < 0.8 * before


def test_sure_keeps_a_good_model_and_refuses_correlated_noise():
    clean = clean_plane(seed=4)
    noisy = simulate(clean, A, B, rng=np.random.default_rng(5))

    def oracle(plane: np.ndarray) -> np.ndarray:  # the truth, whatever the input
        return clean + 0.0 * plane

    detail, _ = choose_detail([sure_plane(noisy, oracle, A, B)])
    assert detail == Detail()  # nothing beats the truth
    rng = np.random.default_rng(6)
    correlated = clean + correlate(rng.normal(0, 12, clean.shape), 0.6)
    found = sure_plane(correlated, over_smoothing, 0.0, 144.0)
    assert found.correlation > 0.3
    detail, why = choose_detail([found])
    assert detail == Detail() and "spatially correlated" in why
    assert choose_detail([])[0] == Detail()


def test_one_correlated_plane_among_white_ones_keeps_the_output():
    """Planes of one channel from different microscopes: three with white noise, where
    SURE alone blends in NLM (the stand-in leaves half the noise), and one with camera-like
    correlated noise. The mean residual correlation is under CORRELATED, but SURE does not
    hold on that plane, and one restoration would be applied to every plane: nothing is
    changed."""
    clean = clean_plane(seed=10)

    def leaky(plane: np.ndarray) -> np.ndarray:
        return clean + 0.5 * (plane - clean)

    white = [
        sure_plane(simulate(clean, A, B, rng=np.random.default_rng(k)), leaky, A, B)
        for k in range(3)
    ]
    assert not choose_detail(white)[0].identity  # the white-noise planes alone: restored
    correlated = clean + correlate(np.random.default_rng(6).normal(0, 12, clean.shape), 0.6)
    camera = sure_plane(correlated, over_smoothing, A, B)
    planes = [*white, camera]
    assert np.mean([p.correlation for p in planes]) < CORRELATED <= camera.correlation
    detail, why = choose_detail(planes)
    assert detail == Detail() and "correlated on 1 of the 4 sampled planes" in why


def test_lag1_correlation_reads_white_and_correlated_noise():
    rng = np.random.default_rng(7)
    white = rng.normal(0, 1, (256, 256))
    assert abs(lag1_correlation(white)) < 0.02
    assert lag1_correlation(correlate(white, 0.5)) == pytest.approx(0.5, abs=0.03)
    assert lag1_correlation(np.ones((8, 8))) == 0.0
    # a stack: pooled over its planes, each plane's own mean removed (not the stack's)
    other = correlate(rng.normal(0, 1, (256, 256)), 0.5)
    stack = np.stack([correlate(white, 0.5) + 10, other - 10])
    assert lag1_correlation(stack) == pytest.approx(0.5, abs=0.03)


@settings(max_examples=5, deadline=None)
@given(protocol=st.sampled_from(["vst", "masked", "nlm"]))
def test_detail_is_for_the_whole_protocol_only(protocol):
    with pytest.raises(ValidationError, match="--detail restores what the model"):
        DenoiseOptions(detail="sure", protocol=protocol)
    assert DenoiseOptions(detail="sure").detail == "sure"


def test_details_round_trip_through_their_stored_form():
    details = (Detail(), Detail(2.0, 0.75), Detail(8.0, 0.0, 0.5, 1.0))
    stored = Detail.stored(details)
    assert stored == [[0.0, 1.0, 0.0, 0.0], [2.0, 0.75, 0.0, 0.0], [8.0, 0.0, 0.5, 1.0]]
    assert Detail.from_stored(stored) == details
    # runs stored before the NLM blend kept [sigma, weight] pairs, those before the Wiener
    # filter [sigma, weight, nlm]: they resume unchanged
    assert Detail.from_stored([[2.0, 0.75]]) == (Detail(2.0, 0.75),)
    assert Detail.from_stored([[2.0, 0.75, 0.5]]) == (Detail(2.0, 0.75, 0.5),)

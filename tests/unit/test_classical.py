"""Classical denoisers (restore.classical): they denoise, tile exactly within their reach,
compose as documented, and BM3D stays optional."""

from __future__ import annotations

import sys
from typing import get_args

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.fft import dctn
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means

from conftest import blobs
from fluoden_batch.config.denoise import ClassicalProtocol, ModelProtocol
from fluoden_batch.errors import InputError
from fluoden_batch.noise import gat_forward, gat_inverse, simulate
from fluoden_batch.restore import classical
from fluoden_batch.restore.classical import (
    CLASSICAL,
    NLM_REACH,
    WIENER_REACH,
    dct_wiener,
    nlm,
    noise_sigma,
    vst_nlm,
    vst_wiener,
)
from fluoden_batch.restore.protocols import MODEL_PROTOCOLS
from fluoden_batch.restore.tiles import halo_window, tile_windows

A, B = 1.0, 4.0  # Poisson gain (grey levels per photon) and read-noise variance

# Boxes [start, stop) of a 64x64 plane: interior, at each border, at a corner.
BOXES = [((20, 25), (41, 44)), ((0, 0), (24, 24)), ((40, 3), (64, 30)), ((9, 45), (33, 64))]


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) 64x64 planes in grey levels, Poisson-Gaussian noise (A, B)."""
    clean = blobs(np.random.default_rng(3), 64, count=8)
    return clean, simulate(clean, A, B, rng=4)


def _rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, float) - y) ** 2)))


def _tiled(fn, plane: np.ndarray, start, stop, halo: int) -> np.ndarray:
    w = halo_window(start, stop, plane.shape, halo)
    return fn(plane[w.read])[w.crop]


def test_registry_entries() -> None:
    assert set(CLASSICAL) == {"nlm", "vst-nlm", "bm3d", "vst-bm3d"}
    assert NLM_REACH == 5 // 2 + 6 == 8
    assert CLASSICAL["nlm"].reach == CLASSICAL["vst-nlm"].reach == NLM_REACH
    assert CLASSICAL["bm3d"].reach is None and CLASSICAL["vst-bm3d"].reach is None
    assert CLASSICAL["nlm"].needs == CLASSICAL["bm3d"].needs == ("a", "b", "level")
    assert CLASSICAL["vst-nlm"].needs == CLASSICAL["vst-bm3d"].needs == ("a", "b")
    assert CLASSICAL["nlm"].available() and CLASSICAL["vst-nlm"].available()
    assert CLASSICAL["bm3d"].available() == classical.bm3d_available()


@pytest.mark.parametrize("name", ["nlm", "vst-nlm"])
def test_nlm_methods_lower_the_error(scene, name: str) -> None:
    clean, noisy = scene
    out = CLASSICAL[name].fn(noisy, A, B, float(np.median(noisy)))
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert _rmse(out, clean) < 0.8 * _rmse(noisy, clean)


def test_nlm_uses_the_noise_std_at_the_given_level(scene) -> None:
    _, noisy = scene
    level = 37.0
    out = CLASSICAL["nlm"].fn(noisy, A, B, level)
    np.testing.assert_array_equal(out, nlm(noisy, np.sqrt(A * level + B)).astype(np.float32))
    # the same as eval_fmd's baseline: h = 0.8 sigma, sigma subtracted, 5x5 / 13x13, fast
    sigma = 5.0
    ref = denoise_nl_means(
        noisy, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma, fast_mode=True
    )
    np.testing.assert_array_equal(nlm(noisy, sigma), ref)


def test_vst_nlm_is_the_documented_composition(scene) -> None:
    _, noisy = scene
    h = 0.6
    x = gat_forward(noisy, A, B)
    smooth = denoise_nl_means(x, patch_size=5, patch_distance=6, h=h, sigma=1.0, fast_mode=True)
    ref = gat_inverse(smooth, A, B, method="exact_unbiased")
    np.testing.assert_allclose(vst_nlm(noisy, A, B, h=h), ref, rtol=1e-12, atol=0)
    default = gat_inverse(
        denoise_nl_means(x, patch_size=5, patch_distance=6, h=0.8, sigma=1.0, fast_mode=True),
        A,
        B,
        method="exact_unbiased",
    )
    np.testing.assert_allclose(CLASSICAL["vst-nlm"].fn(noisy, A, B, 0.0), default, rtol=1e-6)


@pytest.mark.parametrize(("start", "stop"), BOXES)
@pytest.mark.parametrize("name", ["nlm", "vst-nlm"])
def test_tiles_with_reach_equal_the_whole_plane(scene, name: str, start, stop) -> None:
    _, noisy = scene
    method = CLASSICAL[name]

    def fn(p: np.ndarray) -> np.ndarray:
        return method.fn(p, A, B, 40.0)

    whole = fn(noisy)[start[0] : stop[0], start[1] : stop[1]]
    np.testing.assert_allclose(_tiled(fn, noisy, start, stop, method.reach), whole, 0, 1e-5)


def test_nlm_reach_is_tight(scene) -> None:
    """One pixel of context less changes the result: the reach is not overstated."""
    _, noisy = scene

    def fn(p: np.ndarray) -> np.ndarray:
        return nlm(p, 5.0)

    start, stop = BOXES[0]
    whole = fn(noisy)[start[0] : stop[0], start[1] : stop[1]]
    np.testing.assert_allclose(_tiled(fn, noisy, start, stop, NLM_REACH), whole, 0, 1e-10)
    assert np.abs(_tiled(fn, noisy, start, stop, NLM_REACH - 1) - whole).max() > 1e-3


def test_whole_plane_by_tiles(scene) -> None:
    _, noisy = scene
    out = np.empty_like(noisy)
    for window, dest in tile_windows(noisy.shape, 20, NLM_REACH):
        out[dest] = nlm(noisy[window.read], 5.0)[window.crop]
    np.testing.assert_allclose(out, nlm(noisy, 5.0), rtol=0, atol=1e-10)


@settings(max_examples=15)
@given(
    scale=st.floats(0.01, 100.0),
    offset=st.floats(-1000.0, 1000.0),
    seed=st.integers(0, 2**16),
)
def test_nlm_is_equivariant_to_affine_maps_of_the_data(scale, offset, seed) -> None:
    """Patch distances are differences, ``h`` and ``sigma`` scale with the noise std, and
    the output is a weighted mean: ``nlm(s x + c, s sigma) = s nlm(x, sigma) + c``
    (``on_8bit_scale`` of the benchmarks relies on the scaling)."""
    rng = np.random.default_rng(seed)
    x = blobs(rng, 24, count=3) + rng.normal(0.0, 6.0, (24, 24))
    lhs = nlm(scale * x + offset, scale * 6.0)
    rhs = scale * nlm(x, 6.0) + offset
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-9 * (abs(offset) + scale * 200))


def test_integer_planes_keep_their_units(scene) -> None:
    _, noisy = scene
    ints = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(nlm(ints, 5.0), nlm(ints.astype(np.float64), 5.0))


def test_bad_parameters_raise_input_errors(scene) -> None:
    _, noisy = scene
    with pytest.raises(InputError, match="must be finite and > 0"):
        noise_sigma(1.0, -50.0, 10.0)
    with pytest.raises(InputError, match="must be finite and > 0"):
        CLASSICAL["nlm"].fn(noisy, 0.0, 0.0, 10.0)
    with pytest.raises(InputError, match="sigma > 0"):
        nlm(noisy, 0.0)
    with pytest.raises(InputError, match="one Y/X plane"):
        nlm(noisy[None], 5.0)
    with pytest.raises(InputError, match="a must be finite and > 0"):
        vst_nlm(noisy, 0.0, 4.0)


@pytest.mark.parametrize("name", ["bm3d", "vst-bm3d"])
def test_missing_bm3d_is_one_clear_line(monkeypatch, scene, name: str) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # `import bm3d` now raises ImportError
    assert not classical.bm3d_available()
    assert not CLASSICAL[name].available()
    with pytest.raises(InputError) as info:
        CLASSICAL[name].fn(scene[1], A, B, 40.0)
    text = str(info.value)
    assert "\n" not in text
    assert "pip install bm3d" in text and "not a dependency" in text and "licence" in text


@pytest.mark.parametrize("name", ["bm3d", "vst-bm3d"])
def test_bm3d_methods_lower_the_error(scene, name: str) -> None:
    bm3d = pytest.importorskip("bm3d")
    clean, noisy = scene
    level = float(np.median(noisy))
    out = CLASSICAL[name].fn(noisy, A, B, level)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert _rmse(out, clean) < 0.8 * _rmse(noisy, clean)
    if name == "bm3d":
        ref = bm3d.bm3d(noisy, sigma_psd=np.sqrt(A * level + B))
    else:
        smooth = bm3d.bm3d(gat_forward(noisy, A, B), sigma_psd=1.0)
        ref = gat_inverse(smooth, A, B, method="exact_unbiased")
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


def test_config_protocol_names_are_the_implemented_ones():
    """The config declares the protocol names without importing the restore stack; they
    must stay exactly the protocols that exist."""
    assert set(get_args(ModelProtocol)) == set(MODEL_PROTOCOLS)
    assert set(get_args(ClassicalProtocol)) == set(CLASSICAL)


def test_wiener_is_the_documented_filter() -> None:
    """Against a direct loop over the patches: each 8x8 patch's 2-D DCT (scipy's), every
    coefficient times P^2 / (P^2 + sigma^2), back, averaged with weights 1 / (sigma^2
    sum G^2)."""
    rng = np.random.default_rng(0)
    z, y = rng.normal(0, 1, (2, 13, 11)) * [[[1.0]], [[3.0]]]
    num, den = np.zeros_like(z), np.zeros_like(z)
    for i in range(13 - 7):
        for j in range(11 - 7):
            pz = dctn(z[i : i + 8, j : j + 8], norm="ortho")
            py = dctn(y[i : i + 8, j : j + 8], norm="ortho")
            gain = py**2 / (py**2 + 0.7**2)
            weight = 1 / (0.7**2 * (gain**2).sum())
            num[i : i + 8, j : j + 8] += weight * dctn(gain * pz, norm="ortho", type=3)
            den[i : i + 8, j : j + 8] += weight
    np.testing.assert_allclose(dct_wiener(z, y, 0.7), num / den, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("start", "stop"), BOXES)
def test_wiener_tiles_with_its_reach_equal_the_whole_plane(scene, start, stop) -> None:
    """A tile of the plane and of the pilot, with WIENER_REACH px of context, gives the
    whole plane's pixels; one pixel less does not (the reach is tight)."""
    _, noisy = scene
    pilot = gaussian_filter(noisy, 1.5)

    def tiled(halo: int) -> np.ndarray:
        w = halo_window(start, stop, noisy.shape, halo)
        return vst_wiener(noisy[w.read], pilot[w.read], A, B)[w.crop]

    whole = vst_wiener(noisy, pilot, A, B)[start[0] : stop[0], start[1] : stop[1]]
    np.testing.assert_allclose(tiled(WIENER_REACH), whole, 0, 1e-9)
    if start == (20, 25):  # an interior box: less context changes its border pixels
        assert np.abs(tiled(WIENER_REACH - 1) - whole).max() > 1e-6


def test_wiener_in_strips_equals_one_pass(monkeypatch) -> None:
    """Memory is bounded by working in strips of patch rows: the same result."""
    rng = np.random.default_rng(1)
    z, y = rng.normal(5, 1, (2, 70, 41))
    one = dct_wiener(z, y)
    monkeypatch.setattr(classical, "_WIENER_STRIP", 50)  # 1-2 patch rows per strip
    np.testing.assert_allclose(dct_wiener(z, y), one, rtol=0, atol=1e-12)


def test_wiener_takes_from_the_data_what_a_pilot_lost(scene) -> None:
    """A pilot that blurred the truth (a Gaussian of 2 px of the noise-free plane): the
    filter of the noisy plane it guides is closer to the truth than the pilot and than
    the input; a pilot of all 0 keeps nothing and stays finite (no 0 / 0)."""
    clean, noisy = scene
    pilot = gaussian_filter(clean, 2.0)
    out = vst_wiener(noisy, pilot, A, B)
    assert _rmse(out, clean) < 0.9 * min(_rmse(pilot, clean), _rmse(noisy, clean))
    flat = dct_wiener(noisy, np.zeros_like(noisy))
    assert np.isfinite(flat).all() and np.abs(flat).max() < 1e-6 * np.abs(noisy).max()


def test_wiener_refuses_mismatched_or_tiny_planes(scene) -> None:
    _, noisy = scene
    with pytest.raises(InputError, match="pilot of one shape"):
        dct_wiener(noisy, noisy[:-1])
    with pytest.raises(InputError, match="both sides >= 8"):
        dct_wiener(noisy[:7], noisy[:7])

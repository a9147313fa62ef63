"""The science of ``--adapt`` (fluoden_batch.train.adapt): the repeat check, the mode,
input probes, patch sampling, Neighbor2Neighbor's sub-sampler, the held-out SURE and a
seeded fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as safe_load
from scipy.ndimage import shift

from conftest import blobs, make_tiny_weights
from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import map_parameters
from fluoden_batch.models.weights import (
    file_digest,
    load_trainable,
    read_metadata,
    resolve_weights,
)
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.train.adapt import (
    PATCH,
    AdaptSettings,
    RepeatCheck,
    adapt_model,
    check_repeats,
    choose_mode,
    held_out_sure,
    neighbour_pair,
    patch_size,
    pilot_variance,
    probe_input,
    residual_correlation,
    sample_patches,
)


def frames(n: int = 4, size: int = 256, motion: float = 0.0, seed: int = 0) -> np.ndarray:
    """``n`` noisy captures of one blob image, frame k shifted by ``k * motion`` px."""
    rng = np.random.default_rng(seed)
    clean = blobs(rng, size, count=40)
    out = [shift(clean, (k * motion, k * motion / 2), mode="reflect") for k in range(n)]
    return np.stack([f + rng.normal(0, 10, f.shape) for f in out])


def test_still_repeats_are_still_and_moving_ones_are_not():
    still = check_repeats(frames(), "tyx")
    assert still is not None and still.frames == 4 and still.still and still.identical is None
    moving = check_repeats(frames(motion=2.0), "tyx")
    assert moving is not None and not moving.still and moving.shift_px > 1.5


def test_repeat_check_finds_copies_and_needs_a_t_axis():
    data = frames(3)
    data[2] = data[0]
    assert check_repeats(data, "tyx").identical == (0, 2)
    assert check_repeats(frames(3), "zyx") is None
    assert check_repeats(frames(1), "tyx") is None


STILL, MOVING = RepeatCheck(4, 0.2, None), RepeatCheck(4, 3.0, None)


@pytest.mark.parametrize(
    ("requested", "check", "mode", "warned"),
    [
        ("auto", STILL, "n2n", False),
        ("auto", MOVING, "single", True),
        ("auto", None, "single", False),
        ("n2n", STILL, "n2n", False),
        ("n2n", MOVING, "n2n", True),
        ("single", STILL, "single", False),
    ],
)
def test_choose_mode(requested, check, mode, warned):
    notes: list[str] = []
    assert choose_mode(requested, check, "in.zarr", "tyx", notes) == mode
    assert any(n.startswith("warning:") for n in notes) == warned
    assert any(n.startswith("adapt:") or "adapt: single" in n for n in notes)


def test_choose_mode_refuses_n2n_without_repeats_and_copies():
    with pytest.raises(InputError, match=r"needs repeated captures along a t axis.*'zyx'"):
        choose_mode("n2n", None, "in.zarr", "zyx", [])
    with pytest.raises(InputError, match="t frames 0 and 2 are identical copies"):
        choose_mode("auto", RepeatCheck(3, 0.0, (0, 2)), "in.zarr", "tyx", [])


def test_probe_refuses_tiny_planes_and_constant_channels():
    with pytest.raises(InputError, match=r"planes of 40 x 40 pixels are smaller than the 64"):
        probe_input(np.zeros((40, 40)), "yx", "n2n", "in.zarr")
    with pytest.raises(
        InputError, match=r"50 x 90 pixels are smaller than the 64 x 64 patches --adapt single"
    ):
        probe_input(np.zeros((50, 90)), "yx", "single", "in.zarr")
    assert patch_size("single", (3, 100, 90)) == 90 and patch_size("single", (300, 200)) == 128
    assert patch_size("n2n", (3, 100, 90)) == 64
    data = np.ones((2, 96, 96))
    data[0] = np.random.default_rng(0).random((96, 96))
    with pytest.raises(InputError, match=r"channel 1 is constant \(every sampled pixel is 1\)"):
        probe_input(data, "cyx", "n2n", "in.zarr")
    probe_input(data[:1], "cyx", "n2n", "in.zarr")  # a varying channel passes


def test_patches_come_from_the_whole_dataset_normalised_per_channel():
    # each pixel's value encodes where it is: c, t, y, x
    c, t, h, w = np.meshgrid(np.arange(2), np.arange(5), np.arange(96), np.arange(80),
                             indexing="ij")  # fmt: skip
    data = (c * 50_000 + t * 10_000 + h * 100 + w).astype(np.float64)
    ranges = ((0.0, 50_000.0), (-50_000.0, 50_000.0))  # channel 1 maps to 1.0 .. 1.5
    rng = np.random.default_rng(0)
    patches, channels = sample_patches(data, "ctyx", ranges, "n2n", rng, count=40)
    p = PATCH["n2n"]
    assert patches.shape == (40, 5, p, p) and patches.dtype == np.float32
    seen = set()
    for patch, channel in zip(patches, channels, strict=True):
        ch = int(patch[0, 0, 0] >= 1.0)
        assert channel == ch
        seen.add(ch)
        lo, hi = ranges[ch]
        raw = np.rint(patch.astype(np.float64) * (hi - lo) + lo) - ch * 50_000
        t0, y0, x0 = (raw[:, 0, 0] // 10_000), raw[0, 0, 0] % 10_000 // 100, raw[0, 0, 0] % 100
        assert list(t0) == [0, 1, 2, 3, 4]  # all 5 frames (at most 8 are read), in order
        expected = data[0, :, int(y0) : int(y0) + p, int(x0) : int(x0) + p]
        np.testing.assert_array_equal(raw, expected)  # the same place in every frame
    assert seen == {0, 1}
    plane = np.arange(200 * 150, dtype=np.float64).reshape(200, 150)
    single, none = sample_patches(
        plane, "yx", ((0.0, 10_000.0),), "single", np.random.default_rng(1), 3
    )  # values up to 3 windows: inside the network's range (MODEL_RANGE)
    assert list(none) == [0, 0, 0]
    q = PATCH["single"]
    assert single.shape == (3, 1, q, q)  # one frame
    for patch in single:
        raw = np.rint(patch[0].astype(np.float64) * 10_000)
        y0, x0 = divmod(int(raw[0, 0]), 150)
        np.testing.assert_array_equal(raw, plane[y0 : y0 + q, x0 : x0 + q])


def test_patches_have_their_hot_pixels_replaced_as_the_run_replaces_them():
    """With --hot-pixels the fit sees each patch as the run's model sees it: its camera
    defects replaced by their neighbours' median, tested with the pixel around the patch
    (defects on patch edges included); a channel without a noise estimate as it is."""
    rng = np.random.default_rng(3)
    clean = blobs(rng, 96, count=8)
    data = np.stack([clean + rng.normal(0, 3, clean.shape) for _ in range(3)])  # t, y, x
    lattice = rng.choice(24 * 24, 60, replace=False)  # isolated: 4 px apart at least
    ys, xs = 4 * (lattice // 24) + 1, 4 * (lattice % 24) + 2
    data[:, ys, xs] = 60_000.0  # fixed-pattern defects: in every frame alike
    noise = ((0.0, 9.0, 0.0),)
    fixed = np.stack([inpaint(f, find_hot(f, 0.0, 9.0, 100.0)) for f in data])
    assert fixed.max() < 1000 and (fixed != data).sum() == 3 * 60
    ranges = ((0.0, 1000.0),)
    kw = {"count": 30}
    plain = sample_patches(data, "tyx", ranges, "n2n", np.random.default_rng(0), **kw)
    found = sample_patches(
        data, "tyx", ranges, "n2n", np.random.default_rng(0), hot=(100.0, noise), **kw
    )
    expected = sample_patches(fixed, "tyx", ranges, "n2n", np.random.default_rng(0), **kw)
    assert plain[0].max() == 8.0 > found[0].max()  # defects (clipped to the range) without
    np.testing.assert_allclose(found[0], expected[0], rtol=0, atol=1e-6)
    unknown = sample_patches(
        data, "tyx", ranges, "n2n", np.random.default_rng(0), hot=(100.0, (None,)), **kw
    )
    np.testing.assert_array_equal(unknown[0], plain[0])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), half=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_neighbour_pairs_are_different_neighbours_of_one_cell(n, half, seed):
    size = 2 * half
    index = torch.arange(n * size * size, dtype=torch.float32).reshape(n, 1, size, size)
    g1, g2, first, second = neighbour_pair(index, torch.Generator().manual_seed(seed))
    assert g1.shape == g2.shape == (n, 1, half, half)
    for a, b in zip(g1.flatten().tolist(), g2.flatten().tolist(), strict=True):
        (na, ya, xa), (nb, yb, xb) = (np.unravel_index(int(v), (n, size, size)) for v in (a, b))
        assert na == nb and (ya // 2, xa // 2) == (yb // 2, xb // 2)  # one 2 x 2 cell
        assert abs(ya - yb) + abs(xa - xb) == 1  # horizontal or vertical neighbours
    assert (first != second).all()


def test_fit_is_seeded_and_recorded(tmp_path, one_torch_thread):
    rng = np.random.default_rng(0)
    data = np.stack([blobs(rng, 128, count=8) + rng.normal(0, 8, (128, 128)) for _ in range(3)])
    store = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, dtype="float32",
                              chunks=(1, 64, 64))  # fmt: skip
    store[...] = data
    weights = make_tiny_weights(tmp_path / "w.safetensors")
    job = AdaptSettings("in.zarr", "tyx", ((0.0, 300.0),),
                   "n2n", 6, None, 0, str(weights), file_digest(weights), "cpu")  # fmt: skip
    steps: list[int] = []
    first = adapt_model(store, job, on_step=lambda s, n: steps.append(s))
    assert steps == list(range(1, 7)) and first.steps == 6 and first.device == "cpu"
    assert adapt_model(store, job).data == first.data  # same seed: the same bytes
    other = adapt_model(store, AdaptSettings(**{**job.__dict__, "seed": 1}))
    assert other.data != first.data
    assert first.criterion == "loss"
    shipped = resolve_weights("dncnn-fmd")  # a real denoiser: its residual is white here
    single = {**job.__dict__, "mode": "single", "steps": 2, "model_path": str(shipped),
              "model_digest": file_digest(shipped)}  # fmt: skip
    with pytest.raises(ValueError, match="needs the channels' noise"):
        adapt_model(store, AdaptSettings(**single))
    fitted = adapt_model(store, AdaptSettings(**{**single, "noise": ((0.0, 64.0, 0.0),)}))
    assert fitted.skipped is None and fitted.steps == 2 and np.isfinite(fitted.final_loss)
    assert fitted.criterion == "SURE" and fitted.held_out[1] <= fitted.held_out[0]
    (tmp_path / "fitted.safetensors").write_bytes(fitted.data)
    record = read_metadata(tmp_path / "fitted.safetensors").training["held_out"]
    assert record["criterion"].startswith("Monte-Carlo SURE")
    assert record["loss"][0][1] == pytest.approx(fitted.held_out[0], rel=1e-6)


class Blur(torch.nn.Module):
    """A linear denoiser: a 3 x 3 box mean of weight ``w`` blended with the input."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return self.w * box + (1 - self.w) * x


def _noisy_blobs() -> tuple[np.ndarray, np.ndarray, float, float]:
    """48 noise-free (1, 64, 64) patches in model units and a Poisson-Gaussian draw of them."""
    rng = np.random.default_rng(0)
    clean = np.stack([[blobs(rng, 64, count=6) / 400 + 0.1] for _ in range(48)])
    a, b = 0.004, 0.0004  # model units: Var = a y + b
    noisy = (clean + rng.normal(0, 1, clean.shape) * np.sqrt(a * clean + b)).astype(np.float32)
    return clean, noisy, a, b


class Darker(torch.nn.Module):
    """The input, darker by ``shift`` (a fit gone wrong that lowers the noise it implies)."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.shift


def test_held_out_sure_estimates_the_error_against_the_truth():
    clean, noisy, a, b = _noisy_blobs()
    cpu = torch.device("cpu")
    # the identity: SURE is the noise variance, exactly (J = I)
    identity = held_out_sure(torch.nn.Identity(), noisy, np.full(noisy.shape, b), cpu)
    assert identity == pytest.approx(b, rel=1e-3)
    variance = pilot_variance(Blur(0.7), noisy, np.tile([a, b], (len(noisy), 1)), cpu)
    risks, errors = [], []
    for w in (0.0, 0.3, 0.7, 1.0):
        model = Blur(w)
        risks.append(held_out_sure(model, noisy, variance, cpu))
        with torch.no_grad():
            out = model(torch.from_numpy(noisy)).double().numpy()
        errors.append(float(((out - clean) ** 2).mean()))
    np.testing.assert_allclose(risks, errors, rtol=0.05)
    assert np.argmin(risks) == np.argmin(errors) != 0  # a blur beats the input here


def test_pilot_variance_is_a_d_plus_b_of_the_start():
    _, noisy, a, b = _noisy_blobs()
    variance = pilot_variance(
        torch.nn.Identity(), noisy, np.tile([a, b], (len(noisy), 1)), torch.device("cpu")
    )
    assert variance.shape == noisy.shape and variance.dtype == np.float64
    np.testing.assert_allclose(variance, np.maximum(a * noisy.astype(np.float64) + b, 1e-12))


def test_held_out_sure_charges_every_candidate_the_start_models_noise():
    # a copy of the input darkened by a / 2: its true error is higher than the input's by
    # shift^2, but read from its own output, its noise variance would be a * shift lower,
    # and its SURE lower than the input's by a^2 / 4: the fit gone wrong would be kept
    clean, noisy, a, b = _noisy_blobs()
    cpu, noise = torch.device("cpu"), np.tile([a, b], (len(noisy), 1))
    start, darker = torch.nn.Identity(), Darker(a / 2)
    x = torch.from_numpy(noisy)
    errors = [float(((m(x).double().numpy() - clean) ** 2).mean()) for m in (start, darker)]
    assert errors[1] > errors[0]
    variance = pilot_variance(start, noisy, noise, cpu)
    charged = [held_out_sure(m, noisy, variance, cpu) for m in (start, darker)]
    assert charged[1] > charged[0]
    assert charged[1] - charged[0] == pytest.approx((a / 2) ** 2, rel=1e-3)
    own = [
        held_out_sure(m, noisy, pilot_variance(m, noisy, noise, cpu), cpu) for m in (start, darker)
    ]
    assert own[1] < own[0]  # what reading the variance from each candidate would choose


def test_noise_in_model_units_matches_the_normalised_variance():
    rng = np.random.default_rng(1)
    a, b, lo, hi = 2.0, 30.0, 100.0, 900.0
    y = rng.uniform(150, 800, 200_000)
    z = y + rng.normal(0, 1, y.shape) * np.sqrt(a * y + b)
    ua, ub = map_parameters(a, b, lo, hi)  # what the SURE choice converts (a, b) with
    x_clean, x = (y - lo) / (hi - lo), (z - lo) / (hi - lo)
    residual = (x - x_clean) ** 2
    np.testing.assert_allclose(residual.mean(), (ua * x_clean + ub).mean(), rtol=0.02)
    high = x_clean > 0.6
    np.testing.assert_allclose(residual[high].mean(), (ua * x_clean[high] + ub).mean(), rtol=0.03)


def test_residual_correlation_reads_the_noise_correlation():
    rng = np.random.default_rng(0)
    white = rng.normal(0, 1, (16, 1, 64, 64)).astype(np.float32)
    correlated = np.stack([[correlate(p[0], 0.6)] for p in white]).astype(np.float32)

    def nothing(x: torch.Tensor) -> torch.Tensor:  # a "denoiser" that removes everything
        return torch.zeros_like(x)

    assert abs(residual_correlation(nothing, white, torch.device("cpu"))) < 0.05
    assert 0.5 < residual_correlation(nothing, correlated, torch.device("cpu")) < 0.7


def test_single_is_not_fitted_on_correlated_noise(tmp_path, one_torch_thread):
    rng = np.random.default_rng(0)
    clean = blobs(rng, 256, count=20)
    noise = correlate(rng.normal(0, 15, clean.shape), 0.7)
    store = zarr.create_array(str(tmp_path / "in.zarr"), shape=clean.shape, dtype="float32",
                              chunks=(128, 128))  # fmt: skip
    store[...] = clean + noise
    weights = resolve_weights("dncnn-fmd")
    job = AdaptSettings("in.zarr", "yx", ((0.0, 600.0),), "single", 50, None, 0, str(weights),
                        file_digest(weights), "cpu", ((0.0, 225.0, 0.0),))  # fmt: skip
    fitted = adapt_model(store, job)
    assert fitted.skipped is not None and "spatially correlated" in fitted.skipped
    assert fitted.steps == 0 and fitted.kept_step == 0
    kept = safe_load(fitted.data)
    base = {k: v for k, v in load_trainable(weights)[0].state_dict().items()}
    assert kept.keys() == base.keys() and all(torch.equal(kept[k], base[k]) for k in base)


def test_scores_do_not_depend_on_how_many_patches_one_pass_takes(tmp_path, monkeypatch):
    """The passes without gradient run a few patches at a time (``SCORE_PIXELS``: page
    faults): the scores and a step's loss equal those of one pass over all the patches."""
    from fluoden_batch.train import adapt

    model, _ = load_trainable(make_tiny_weights(tmp_path / "w.safetensors", width=32))
    model.eval()
    _, noisy, a, b = _noisy_blobs()
    cpu = torch.device("cpu")
    noise = np.tile([[a, b]], (len(noisy), 1))

    def scores() -> tuple[float, ...]:
        variance = pilot_variance(model, noisy, noise, cpu)
        rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
        return (
            held_out_sure(model, noisy, variance, cpu),
            residual_correlation(model, noisy, cpu),
            adapt.held_out_loss(model, noisy, "single", cpu),
            float(variance.sum()),
            float(adapt._loss(model, noisy[:16], "single", rng, generator, cpu).detach()),
        )

    assert adapt._score_chunks(noisy).step == adapt.SCORE_PIXELS // 64**2 < len(noisy)
    chunked = scores()
    monkeypatch.setattr(adapt, "SCORE_PIXELS", len(noisy) * 64**2)
    assert adapt._score_chunks(noisy).step == len(noisy)
    assert scores() == pytest.approx(chunked, rel=1e-6)

"""Noise parameters per plane of a whole image (library and ``fluoden estimate-noise``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.errors import InputError, NoiseEstimationError
from fluoden_batch.noise import estimate, simulate
from fluoden_batch.noise.planes import estimate_region, plane_regions, pool_estimates, spread
from fluoden_batch.pipeline.noise import estimate_planes
from fluoden_batch.restore.detail import NOISE_SCREEN

TRUTH = [(1.5, 300.0), (6.0, 900.0)]  # (a, b) of channel 0 and 1


def scene(n: int, seed: int) -> np.ndarray:
    """Clean fluorescence-like plane on a 0-4095 scale: a ramp and blurred spots."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    spots = np.zeros((n, n))
    spots.flat[rng.integers(0, n * n, n * n // 600)] = 1.0
    sigma = n / 40
    img = 100 + 400 * yy + 300 * xx + 3000 * ndimage.gaussian_filter(spots, sigma) * sigma**2 * 6
    return np.clip(img, 0, 4000)


@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory):
    """A 2-channel, 2-plane uint16 OME-Zarr with known (a, b) per channel."""
    data = np.stack(
        [
            np.stack(
                [simulate(scene(256, z), a, b, clip=(0, 4095), rng=10 * c + z) for z in (0, 1)]
            )
            for c, (a, b) in enumerate(TRUTH)
        ]
    )
    data = np.rint(data).astype(np.uint16)
    return write_image(tmp_path_factory.mktemp("noise") / "in.zarr", data, "czyx", (1, 1, 64, 64))


def close(value: float, truth: float, tol: float = 0.15) -> bool:
    return abs(value - truth) <= tol * truth


def test_recovers_known_parameters_per_channel(noisy_store):
    rows = estimate_planes(noisy_store)
    assert [(r["c"], r["z"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in rows:
        a, b = TRUTH[r["c"]]
        assert r["error"] is None and r["blocks"] == 1 and r["pixels"] == 256 * 256
        assert close(r["a"], a), r
        assert close(math.sqrt(max(r["b"], 0.0)), math.sqrt(b)), r
        assert r["a_std"] > 0 and r["n_levels"] >= 4


def test_pooled_regions_recover_known_parameters(noisy_store):
    rows = estimate_planes(noisy_store, max_blocks=2, side=128)  # 2 of 4 regions per plane
    for r in rows:
        a, b = TRUTH[r["c"]]
        assert r["blocks"] == 2 and r["blocks_failed"] == 0 and r["pixels"] == 2 * 128 * 128
        assert close(r["a"], a), r
        assert close(math.sqrt(max(r["b"], 0.0)), math.sqrt(b), 0.25), r


def test_flat_plane_gets_an_error_not_an_exception(tmp_path):
    data = np.stack([np.full((64, 64), 7, np.uint16), simulate(scene(64, 0), 2.0, 50.0, rng=0)])
    path = write_image(tmp_path / "flat.zarr", np.rint(data).astype(np.uint16), "zyx", (1, 64, 64))
    flat, ok = estimate_planes(path)
    assert flat["a"] is None and "constant" in flat["error"] and flat["blocks_failed"] == 1
    assert ok["error"] is None and ok["a"] > 0


def test_pool_of_one_is_the_estimate_and_empty_pool_raises():
    z = simulate(scene(128, 3), 2.0, 100.0, rng=1)
    est = estimate(z)
    assert pool_estimates([est]) is est
    with pytest.raises(NoiseEstimationError):
        pool_estimates([])


def test_regions_and_spread():
    regions = plane_regions((5000, 100), 2048)
    assert [r[0] for r in regions] == [slice(0, 1667), slice(1667, 3333), slice(3333, 5000)]
    assert all(r[1] == slice(0, 100) for r in regions)
    assert spread(list(range(10)), 3) == [0, 4, 9]  # first, middle, last
    assert spread([1, 2], 5) == [1, 2]
    with pytest.raises(InputError):
        spread([1], 0)


@pytest.mark.distributed
def test_dask_gives_the_same_rows(noisy_store, client):
    assert estimate_planes(noisy_store, client, 2, side=128) == estimate_planes(
        noisy_store, None, 2, side=128
    )


runner = CliRunner()


def test_cli_json_has_one_row_per_plane(noisy_store):
    result = runner.invoke(app, ["estimate-noise", str(noisy_store), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert len(rows) == 4
    assert {"c", "z", "a", "b", "a_std", "b_std", "n_levels"} <= set(rows[0])
    assert close(rows[3]["a"], TRUTH[1][0])


def test_cli_table(noisy_store):
    result = runner.invoke(app, ["estimate-noise", str(noisy_store), "--max-blocks", "2"])
    assert result.exit_code == 0, result.output
    assert "n_levels" in result.stdout and result.stdout.count("1/1") == 4


def test_cli_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["estimate-noise", str(tmp_path / "nope.zarr"), "--json"])
    assert result.exit_code == 2
    assert "nope.zarr: no such file or directory" in " ".join(result.output.split())
    assert result.stdout == ""


def test_phase_split_estimate_reads_the_variance_of_correlated_noise():
    """Camera-like noise (lag-1 0.6): the full plane's finest scale under-reads its
    variance; pooled over the four stride-2 phases (``--phase-split``) it is within 30 %
    (the phases keep a lag-2 correlation of 0.12)."""
    rng = np.random.default_rng(3)
    y = np.tile(np.linspace(20, 200, 512), (512, 1))
    a, b = 2.0, 40.0
    z = simulate(y, a, b, rng=rng, correlation=0.6)
    truth = np.mean(a * y + b)
    full = estimate_region(z, (slice(None), slice(None)))
    split = estimate_region(z, (slice(None), slice(None)), phase_split=True)
    assert not isinstance(full, str) and not isinstance(split, str)
    assert np.mean(full.a * y + full.b) < 0.6 * truth
    assert np.mean(split.a * y + split.b) == pytest.approx(truth, rel=0.3)
    white = simulate(y, a, b, rng=rng)
    both = [estimate_region(white, (slice(None), slice(None)), phase_split=s) for s in (0, 1)]
    assert [np.mean(e.a * y + e.b) for e in both] == pytest.approx([truth, truth], rel=0.1)


def test_a_harder_screen_reads_less_structure_as_noise():
    """A nearly clean plane (noise variance about 2) with fine structure on its bright
    half: the default smoothness screen lets some of it through as noise; the detail
    restoration's harder screen (``NOISE_SCREEN``) reads closer to the truth, and
    ``estimate_region`` passes the screen on to the estimator."""
    rng = np.random.default_rng(11)
    y = np.tile(np.linspace(20, 120, 512), (512, 1))
    y[:, 256:] += 6.0 * ndimage.gaussian_filter(rng.normal(size=(512, 256)), 0.8)
    a, b = 0.02, 0.5
    z = simulate(y, a, b, rng=rng)
    truth = np.mean(a * y + b)
    whole = (slice(None), slice(None))
    default = estimate_region(z, whole)
    harder = estimate_region(z, whole, max_leakage=NOISE_SCREEN)
    assert not isinstance(default, str) and not isinstance(harder, str)
    direct = estimate(z, max_leakage=NOISE_SCREEN)
    assert (harder.a, harder.b) == (direct.a, direct.b)
    read = [np.mean(e.a * y + e.b) / truth for e in (default, harder)]
    assert read[1] < read[0] and abs(read[1] - 1) < abs(read[0] - 1), read

"""The units of the intensities do not change the result: data shifted below 0 (background
subtracted) or scaled (normalised to 0..1, or in physical units) denoise as the same data
in grey levels, shifted or scaled back, with every protocol that inverts the GAT and with
the detail restoration that SURE tunes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

import fluoden_batch as fb
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.io.store import read_provenance
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.pipeline.params import noise_rows, planned_noise

OFFSET = 50.0  # what a background subtraction took off, grey levels


def scene(seed: int = 3) -> np.ndarray:
    """Two (96, 96) planes, float32 on the integer grid (so ``z - OFFSET`` is exact): a
    dark background and a bright square under Poisson-Gaussian noise (a = 2, b = 9)."""
    rng = np.random.default_rng(seed)
    clean = np.zeros((2, 96, 96))
    clean[:, 24:72, 24:72] = 100.0
    z = 2.0 * rng.poisson(clean / 2.0) + rng.normal(0.0, 3.0, clean.shape)
    return np.rint(z).astype(np.float32)


@pytest.mark.parametrize("protocol", ["vst-nlm", "vst", "whole"])
def test_background_subtracted_data_denoise_as_the_same_data_shifted(protocol, tiny_weights):
    z = scene()
    options = {"protocol": protocol, "axes": "zyx"}
    if protocol == "vst":
        options["model"] = str(tiny_weights)
    # "whole": the shipped default and the detail restoration SURE tunes for it, which
    # takes the VST+NLM blend and the Wiener filter here
    here = fb.denoise(z, **options)
    shifted = fb.denoise(z - OFFSET, **options)
    # the floor of z is 0, that of z - OFFSET its lowest level set's mean (-49.99): the
    # inverses differ by that level's 0.01 grey levels, where the data are darkest
    np.testing.assert_allclose(shifted, here - OFFSET, rtol=0, atol=0.05)
    background = shifted[:, :16, :16].mean()
    assert background == pytest.approx(-OFFSET, abs=1.0)  # not clipped at 0


@pytest.mark.parametrize("scale", [1e-5, 1e3])
@pytest.mark.parametrize("protocol", ["vst-nlm", "whole"])
def test_scaled_data_denoise_as_the_same_data_scaled(protocol, scale):
    """SURE's noise variance was floored at 1e-6 squared data units: data whose variance is
    below that (0..1 normalised images) lost the detail restoration (SURE went negative)."""
    z = scene()
    here = fb.denoise(z, protocol=protocol, axes="zyx")
    scaled = fb.denoise(z * np.float32(scale), protocol=protocol, axes="zyx")
    np.testing.assert_allclose(scaled / scale, here, rtol=0, atol=0.05)


def test_the_floor_is_planned_stored_and_reused(tiny_weights, tmp_path):
    inp = tmp_path / "in.zarr"
    zarr.save_array(str(inp), scene() - OFFSET)
    cfg = DenoiseConfig(
        input=inp, output=tmp_path / "out.zarr", model=str(tiny_weights), protocol="vst",
        axes="zyx",
    )  # fmt: skip
    first = plan(cfg)
    assert any(re.search(r"zero signal at -(49\.9\d|50)\)", note) for note in first.notes)
    execute(first, None)
    ((a, b, floor),) = read_provenance(cfg.output)["parameters"]["channel_noise"]
    assert floor == pytest.approx(-OFFSET, abs=1.0)
    assert b == pytest.approx(9.0 + a * OFFSET, rel=0.2)  # the line a z + b of z - 50
    again = plan(cfg)  # the resume takes the stored floor
    assert again.resumed and again.job.channel_noise == first.job.channel_noise


def test_a_floor_of_0_is_stored_as_before_so_earlier_outputs_resume():
    """Rows ``[a, b]`` (every output before the floor, and every one with floor 0 now) and
    ``[a, b, floor]`` are read back; the rows a run stores are those it read."""
    notes: list[str] = []
    rows = [[2.0, 9.0], [1.0, 4.0, -3.0]]
    noise = planned_noise(None, "yx", "in.zarr", notes, old=rows)
    assert noise == ((2.0, 9.0, 0.0), (1.0, 4.0, -3.0))
    assert noise_rows(noise) == rows  # unchanged parameters: the resume goes ahead
    assert notes == ["noise parameters (a, b) per channel: (2, 9), (1, 4; zero signal at -3)"]

"""The masked protocol's pieces: recombination, one cluster = whole, local labels, centres,
the default model and the configuration."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import zarr
from pydantic import ValidationError
from scipy import ndimage

from fluoden_batch.clustering.masked import (
    band,
    masked_denoise,
    masked_labels,
    masked_part,
    smooth,
    smoothing_radius,
)
from fluoden_batch.clustering.masks import recombine
from fluoden_batch.config import DEFAULT_MASKED_MODEL, DEFAULT_MODEL, DenoiseConfig
from fluoden_batch.errors import InputError
from fluoden_batch.models import load_model, weights
from fluoden_batch.pipeline.params import choose_model
from fluoden_batch.pipeline.statistics import channel_centres
from fluoden_batch.restore.protocols import PlaneParams, get_protocol, masked, whole
from fluoden_batch.restore.tiles import halo_window, plan_blocks


def textured(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth blobs at three intensity levels with Gaussian noise (float32)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 4.0)
    levels = np.digitize(field, np.quantile(field, [0.5, 0.85])) * 1000.0 + 200.0
    return (levels + rng.normal(0, 120, shape)).astype(np.float32)


def test_recombine_takes_every_pixel_from_its_own_part_exactly_once():
    labels = np.random.default_rng(0).integers(0, 4, (37, 29))
    parts = {k: np.full(labels.shape, 10.0 * k + 1) for k in range(5)}  # 4: absent, ignored
    np.testing.assert_array_equal(recombine(parts, labels), 10.0 * labels + 1)

    # through masked_denoise (sigma 0, the plane at the centres, so its labels are
    # `labels`): one pass per cluster present, in label order; each pixel comes from the
    # pass of its own label, and each part holds the plane inside its cluster and values
    # of the cluster's band outside it
    centres = (3.0, 5.0, 7.0, 11.0)
    plane = np.asarray(centres, np.float32)[labels]
    parts: list[np.ndarray] = []

    def mark(part: np.ndarray) -> np.ndarray:
        parts.append(part.copy())
        return np.full(part.shape, len(parts) - 1, dtype=np.float32)

    got = masked_denoise(mark, plane, centres, 0.0)
    np.testing.assert_array_equal(got, labels)
    assert len(parts) == 4
    for k, part in enumerate(parts):
        lo, hi = band(centres, k)
        np.testing.assert_array_equal(part[labels == k], plane[labels == k])
        assert np.all((part >= lo) & (part <= hi))


def test_parts_continue_across_mask_borders():
    """On a smooth ramp the band fill meets the cluster's own intensities at its border:
    the step across any label border of a part is within the ramp's own step there."""
    ramp = np.tile(np.linspace(0.0, 300.0, 301, dtype=np.float32), (8, 1))
    centres = (50.0, 150.0, 250.0)
    labels = masked_labels(ramp, centres, 0.0)
    smoothed = smooth(ramp, 0.0)
    for k in range(3):
        part = masked_part(ramp, labels, smoothed, centres, k)
        assert np.abs(np.diff(part, axis=1)).max() <= 1.0 + 1e-4  # the ramp step is 1.0


def test_one_cluster_is_exactly_the_whole_protocol(tiny_weights):
    module = load_model(tiny_weights).module
    plane = textured((50, 61), 1)
    base = PlaneParams(float(plane.min()), float(plane.max()))
    expected = whole(module, plane, base, tile=32)
    for centres in ((1000.0,), (-1e6, 1000.0, 1e6)):  # K = 1; K = 3 with one cluster present
        params = PlaneParams(base.lo, base.hi, centres=centres, sigma=1.0)
        assert set(np.unique(masked_labels(plane, centres, 1.0))) == {len(centres) // 2}
        np.testing.assert_array_equal(masked(module, plane, params, tile=32), expected)
    assert get_protocol("masked") is masked


@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.5, 3.0])
def test_labels_are_local_to_the_smoothing_radius(sigma):
    plane = textured((80, 90), 2)
    centres = (200.0, 1200.0, 2200.0)
    full = masked_labels(plane, centres, sigma)
    assert set(np.unique(full)) == {0, 1, 2}
    r = smoothing_radius(sigma)
    assert r == round(4 * sigma)
    for start, stop in [((20, 25), (50, 61)), ((0, 0), (17, 90)), ((63, 70), (80, 90))]:
        w = halo_window(start, stop, plane.shape, r)  # clipped at the image border
        crop = masked_labels(plane[w.read], centres, sigma)[w.crop]
        np.testing.assert_array_equal(crop, full[start[0] : stop[0], start[1] : stop[1]])


def test_bad_sigma_and_centres_raise(tiny_weights):
    plane = textured((16, 16), 3)
    for bad in ([], [3.0, 1.0], [1.0, 1.0], [[1.0, 2.0]]):
        with pytest.raises(InputError, match="increasing"):
            masked_labels(plane, bad, 1.0)
    for sigma in (-1.0, math.nan, math.inf):
        with pytest.raises(InputError, match="sigma"):
            masked_labels(plane, [1.0, 2.0], sigma)
    module = load_model(tiny_weights).module
    with pytest.raises(InputError, match="centres"):
        masked(module, plane, PlaneParams(0.0, 1.0))
    for field, value in (("clusters", 0), ("clusters", 17), ("mask_sigma", -0.5)):
        with pytest.raises(ValidationError, match=field):
            DenoiseConfig(input="i", output="o", **{field: value})
    with pytest.raises(ValidationError, match="mask_sigma"):
        DenoiseConfig(input="i", output="o", mask_sigma=math.inf)


def test_channel_centres_are_increasing_and_deduplicated():
    rng = np.random.default_rng(4)
    data = np.empty((3, 40, 50), dtype=np.uint16)
    data[0] = 7  # constant: one centre
    data[1] = rng.choice([10, 50], size=(40, 50))  # two levels for K = 3: two centres
    data[2] = rng.choice([100, 1000, 3000], size=(40, 50)) + rng.integers(0, 20, (40, 50))
    array = zarr.create_array(store={}, shape=data.shape, chunks=(1, 20, 25), dtype=data.dtype)
    array[:] = data
    blocks = plan_blocks(data.shape, (1, 20, 25))
    c0, c1, c2 = channel_centres(array, "cyx", blocks, k=3)
    assert c0 == (7.0,) and c1 == (10.0, 50.0)
    assert len(c2) == 3 and list(c2) == sorted(c2)
    np.testing.assert_allclose(c2, [109.5, 1009.5, 3009.5], atol=2)
    assert channel_centres(array, "cyx", blocks, k=3) == (c0, c1, c2)  # deterministic


def test_default_model_of_the_masked_protocol(tmp_path, monkeypatch, tiny_weights):
    cfg = DenoiseConfig(input="i", output="o", protocol="masked")
    assert choose_model(cfg) == (DEFAULT_MASKED_MODEL, [])  # shipped
    assert choose_model(cfg.model_copy(update={"protocol": "whole"})) == (DEFAULT_MODEL, [])
    assert choose_model(cfg.model_copy(update={"model": "x.safetensors"})) == ("x.safetensors", [])
    shutil.copy(tiny_weights, tmp_path / f"{DEFAULT_MODEL}.safetensors")
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)  # an install without it
    model, notes = choose_model(cfg)  # falls back, and says so
    assert model == DEFAULT_MODEL and "not installed" in notes[0]


def test_output_parameters_hold_the_cluster_options_only_where_they_act():
    base = DenoiseConfig(input="i", output="o", clusters=5, cluster_backend="cpu")
    plain = base.output_parameters()
    assert plain["save_labels"] is False and "clusters" not in plain and "mask_sigma" not in plain
    for update in ({"protocol": "masked"}, {"save_labels": True}):
        params = base.model_copy(update=update).output_parameters()
        assert params["clusters"] == 5 and params["mask_sigma"] == 2.0
        assert "cluster_backend" not in params

"""Model input normalisation: percentile windows and the noise-scaled window."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fluoden_batch.models import ModelMetadata, Normalisation, read_metadata
from fluoden_batch.models.normalise import (
    SIGMA_FLOOR,
    noise_sigma,
    normalisation_range,
    percentile_range,
)
from fluoden_batch.train.data import PatchSampler, TrainImage

NOISE = Normalisation(method="noise")


def scene(seed: int = 0, side: int = 256) -> np.ndarray:
    """A smooth positive test scene, grey levels 20..220."""
    x = gaussian_filter(np.random.default_rng(seed).random((side, side)), 6)
    return 20 + 200 * (x - x.min()) / np.ptp(x)


@pytest.mark.parametrize("sigma", [1.0, 4.0, 16.0])
def test_noise_sigma_recovers_gaussian_noise(sigma):
    rng = np.random.default_rng(1)
    noisy = scene() + rng.normal(0, sigma, (256, 256))
    assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_noise_sigma_is_the_median_over_planes_and_ignores_non_finite():
    rng = np.random.default_rng(2)
    stack = np.stack([scene(i) + rng.normal(0, s, (256, 256)) for i, s in enumerate([1, 2, 8])])
    assert noise_sigma(stack) == pytest.approx(noise_sigma(stack[1]))
    holed = stack[1].copy()
    holed[10:20, 10:20] = np.nan
    assert noise_sigma(holed) == pytest.approx(noise_sigma(stack[1]), rel=0.05)
    assert noise_sigma(np.zeros(5)) == 0.0  # not an image: cannot tell


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("width", [3, 4])
def test_noise_sigma_of_a_narrow_plane_does_not_warn(width):
    """scikit-image takes a plane 3 or 4 px wide for RGB and warns; it is one grey plane."""
    noisy = np.random.default_rng(1).normal(0.0, 2.0, (64, width))
    assert noise_sigma(noisy) > 0.0


def test_noise_window_follows_the_noise_not_the_contrast():
    rng = np.random.default_rng(3)
    clean = scene()
    one = clean + rng.normal(0, 8.0, clean.shape)  # a single frame
    avg16 = clean + rng.normal(0, 2.0, clean.shape)  # 16-frame mean: a quarter of the noise
    lo1, hi1 = normalisation_range(one, NOISE)
    lo16, hi16 = normalisation_range(avg16, NOISE)
    assert lo1 == percentile_range(one, 0.1, 99.9)[0]
    assert hi1 - lo1 == pytest.approx(40.0 * noise_sigma(one))
    assert (hi1 - lo1) / (hi16 - lo16) == pytest.approx(4.0, rel=0.1)
    # the percentile window hardly changes between the two: it cannot tell them apart
    p1, p16 = percentile_range(one, 0.1, 99.9), percentile_range(avg16, 0.1, 99.9)
    assert (p1[1] - p1[0]) / (p16[1] - p16[0]) < 1.3
    assert normalisation_range(one, Normalisation()) == p1


def test_noiseless_and_flat_images_get_a_floored_invertible_window():
    clean = scene()
    lo, hi = normalisation_range(np.round(clean * 0) + 7.0, NOISE)
    assert np.isfinite(hi) and hi > lo
    steps = np.repeat(np.repeat(np.arange(4.0), 64)[None], 256, axis=0) * 50  # no noise
    lo, hi = normalisation_range(steps, NOISE)
    p_lo, p_hi = percentile_range(steps, 0.1, 99.9)
    assert hi - lo == pytest.approx(40.0 * SIGMA_FLOOR * (p_hi - p_lo))


def test_metadata_without_scale_still_loads_and_noise_round_trips(tmp_path):
    old = ModelMetadata(name="m").model_dump(mode="json")
    del old["normalisation"]["scale"]  # written before the noise method existed
    assert ModelMetadata.model_validate(json.loads(json.dumps(old))).normalisation == (
        Normalisation()
    )
    from conftest import make_tiny_weights

    path = make_tiny_weights(tmp_path / "n.safetensors", normalisation="noise")
    assert read_metadata(path).normalisation == NOISE
    with pytest.raises(ValueError):
        Normalisation(method="noise", scale=0.0)


def test_patch_sampler_normalises_each_image_with_its_noise_window():
    rng = np.random.default_rng(4)
    clean = scene().astype(np.float32)
    images = [
        TrainImage(
            f"k{s}", clean, (clean + rng.normal(0, s, clean.shape)).astype(np.float32), None, "t"
        )
        for s in (2.0, 8.0)
    ]
    sampler = PatchSampler(images, 64, normalisation=NOISE)
    draw = sampler.draw(np.random.default_rng(0))
    assert (draw.lo, draw.hi) == normalisation_range(images[draw.index].noisy, NOISE)

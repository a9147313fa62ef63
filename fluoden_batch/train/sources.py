"""Where a run's data comes from: the patch sampler of each mode and the validation set."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fluoden_batch.config.train import NOISY_ONLY_MODES, TrainConfig
from fluoden_batch.train.blindspot import BlindSpotSampler
from fluoden_batch.train.captures import capture_targets
from fluoden_batch.train.data import (
    PatchSampler,
    TrainImage,
    ValImage,
    load_images,
    load_noisy,
    load_pairs,
    split_validation,
    validation_images,
)
from fluoden_batch.train.masked import MaskedPatchSampler

__all__ = ["Sampler", "load_data"]

Sampler = PatchSampler | BlindSpotSampler
Capture = tuple[str, np.ndarray, str]  # key, noisy image float32 (H, W), where it is


def _pairs(config: TrainConfig) -> list[TrainImage]:
    """The pairs of ``noisy_dir`` and ``clean_dir`` (brightness-matched if the config says)."""
    assert config.noisy_dir is not None and config.clean_dir is not None
    return load_pairs(
        config.noisy_dir,
        config.noisy_glob,
        config.clean_dir,
        config.clean_glob,
        config.match_brightness,
    )


def _noisy_and_val(config: TrainConfig) -> tuple[list[Capture], list[TrainImage]]:
    """Noisy-only modes: the training captures and the validation images.

    Without ``clean_dir`` there is no validation. With it, the ``val_keys`` images (noisy
    and clean) are the validation set and are left out of training, unless
    ``val_in_training`` keeps their noisy images in it too (the clean ones never train).
    """
    assert config.noisy_dir is not None
    if config.clean_dir is None:  # no references: no validation (val_keys is empty)
        return load_noisy(config.noisy_dir, config.noisy_glob), []
    images = _pairs(config)
    held = set(config.val_keys)
    unknown = held - {im.key for im in images}
    if unknown or not config.val_in_training:
        train_images, val = split_validation(images, config.val_keys)
    else:
        train_images, val = images, [im for im in images if im.key in held]
    captures = [(im.key, im.noisy, im.noisy_source) for im in train_images if im.noisy is not None]
    return captures, val


def load_data(config: TrainConfig) -> tuple[Sampler, int, list[ValImage]]:
    """The patch sampler, the number of training images and the validation images.

    Self-supervised and noise2noise modes train on the noisy images only; clean
    references, when given, only become validation images (see :func:`_noisy_and_val`).
    Masked mode loads the data of supervised mode (or, without ``noisy_dir``, of synthetic
    mode) and samples masked-protocol parts
    (:class:`~fluoden_batch.train.masked.MaskedPatchSampler`). One branch per mode, in one
    place (about 60 lines), so that the modes' data rules can be read side by side.
    """
    normalisation = config.input_normalisation
    if config.mode in NOISY_ONLY_MODES:
        captures, val = _noisy_and_val(config)
        sampler: Sampler
        if config.mode == "noise2noise":
            train_images = capture_targets(captures, config.capture_pattern, config.capture_levels)
            sampler = PatchSampler(
                train_images,
                config.patch_size,
                normalisation=normalisation,
                noise_map=config.model_architecture.noise_map,
            )
        else:
            sampler = BlindSpotSampler(
                [image for _, image, _ in captures],
                config.patch_size,
                config.mask_fraction,
                config.mask_radius,
                normalisation,
            )
        return sampler, len(captures), validation_images(val, seed=config.seed)
    if config.clean_only:
        assert config.clean_dir is not None
        images = load_images(config.clean_dir, config.clean_glob)
    else:
        images = _pairs(config)
    for source in config.extra_pairs:
        images += [
            replace(im, key=f"{source.prefix}/{im.key}")
            for im in load_pairs(
                source.noisy_dir,
                source.noisy_glob,
                source.clean_dir,
                source.clean_glob,
                config.match_brightness,
            )
        ]
    train_images, val = split_validation(images, config.val_keys)
    val_images = validation_images(
        val, seed=config.seed, a_range=config.a_range, b_range=config.b_range
    )
    if config.mode == "masked":
        sampler = MaskedPatchSampler(
            train_images,
            config.patch_size,
            clusters=config.clusters,
            sigma=config.mask_sigma,
            synthetic_fraction=config.synthetic_fraction,
            a_range=config.a_range,
            b_range=config.b_range,
            normalisation=normalisation,
        )
    else:
        sampler = PatchSampler(
            train_images,
            config.patch_size,
            synthetic_fraction=1.0 if config.mode == "synthetic" else config.synthetic_fraction,
            a_range=config.a_range,
            b_range=config.b_range,
            correlation_range=config.noise_correlation,
            normalisation=normalisation,
            noise_map=config.model_architecture.noise_map,
        )
    return sampler, len(train_images), val_images

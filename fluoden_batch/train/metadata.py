"""The metadata written into a trained weights file: data, schedule, noise model, scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fluoden_batch import __version__
from fluoden_batch.config.train import NOISY_ONLY_MODES, TrainConfig
from fluoden_batch.metrics import psnr
from fluoden_batch.models.weights import ModelMetadata
from fluoden_batch.train.blindspot import grid_step
from fluoden_batch.train.data import ValImage
from fluoden_batch.train.planes import describe_location

__all__ = ["training_metadata"]

_LOSS = {
    "supervised": "MSE of the denoised patch (normalised units)",
    "synthetic": "MSE of the denoised patch (normalised units)",
    "self_supervised": "MSE at the blind-spot pixels against their own noisy values "
    "(normalised units; Noise2Void)",
    "noise2noise": "MSE of the denoised capture against the mean of the other captures of "
    "its field of view (normalised units; Noise2Noise)",
    "masked": "MSE of the denoised cluster part against the clean image inside the part's "
    "cluster and the part's fill (the smoothed noisy image clipped to the cluster's "
    "intensity band) outside (normalised units; masked protocol)",
}


def _noise_model(config: TrainConfig) -> dict[str, Any]:
    if config.mode == "self_supervised":
        g = grid_step(config.mask_fraction)
        return {
            "real_pairs": False,
            "self_supervised": "noise2void",
            "assumption": "pixel-wise independent, zero-mean noise given the signal",
            "mask": f"one pixel per {g}x{g} cell (stratified), share {1 / g**2:.4f}",
            "replacement": f"random neighbour within radius {config.mask_radius}, never the "
            "pixel itself nor another masked pixel",
        }
    if config.mode == "noise2noise":
        return {
            "real_pairs": False,
            "self_supervised": "noise2noise",
            "assumption": "zero-mean noise, independent between captures of a field of view",
            "captures": f"fields of view by capture_pattern {config.capture_pattern}",
            "inputs": f"means of {config.capture_levels} cyclically consecutive captures",
            "target": "mean of the other captures of the field of view",
        }
    noise_model: dict[str, Any] = {
        "real_pairs": not config.clean_only,
        "synthetic_fraction": 1.0 if config.clean_only else config.synthetic_fraction,
    }
    if config.uses_synthetic:
        noise_model |= {
            "kind": "poisson-gaussian",
            "a_range": list(config.a_range or ()),
            "a_sampling": "log-uniform per patch",
            "b_range": list(config.b_range or ()),
            "b_sampling": "uniform per patch",
            "correlation_range": list(config.noise_correlation or (0.0, 0.0)),
            "correlation_sampling": "uniform per patch, lag-1 along Y and X",
            "units": "grey levels of the clean images; clipped to the dtype range",
        }
    return noise_model


def training_metadata(
    config: TrainConfig,
    device: torch.device,
    *,
    step: int,
    seconds: float,
    losses: list[float],
    val_psnr: list[tuple[int, float]],
    n_train: int,
    val: list[ValImage],
    init_digest: str | None = None,
) -> ModelMetadata:
    """Describe a finished run: data, schedule, noise model, time and final PSNR (one
    dictionary literal of about 60 lines: every key the weights file records, in one place)."""
    noisy_in = [
        psnr(np.clip(v.noisy, *v.clip) if v.clip else v.noisy, v.clean, v.data_range) for v in val
    ]
    self_sup = config.mode in NOISY_ONLY_MODES
    clean = describe_location(config.clean_dir, config.clean_glob) if config.clean_dir else None
    training = {
        "mode": config.mode,
        "clean": None if self_sup else clean,
        "noisy": describe_location(config.noisy_dir, config.noisy_glob)
        if config.noisy_dir
        else None,
        "extra_pairs": [
            f"{src.prefix}: {describe_location(src.noisy_dir, src.noisy_glob)} -> "
            f"{describe_location(src.clean_dir, src.clean_glob)}"
            for src in config.extra_pairs
        ],
        "train_images": n_train,
        "val_keys": config.val_keys,
        "steps": step,
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "augmentation": "random flips and 90-degree rotations",
        "loss": _LOSS[config.mode],
        "optimizer": f"Adam lr={config.lr}",
        "lr_schedule": config.lr_schedule,
        "seed": config.seed,
        "device": str(device),
        "amp": config.amp,
        "seconds": round(seconds, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "final_val_psnr_db": val_psnr[-1][1] if val_psnr else None,
        "val_noisy_psnr_db": float(np.mean(noisy_in)) if noisy_in else None,
        "software": f"fluoden-batch {__version__}, torch {torch.__version__}",
    }
    if self_sup:
        training["val_references"] = clean  # scored the val_keys images only
        training["val_in_training"] = config.val_in_training
    if config.mode == "noise2noise":
        training["capture_pattern"] = config.capture_pattern
    if config.mode == "masked":
        training["clusters"] = config.clusters
        training["mask_sigma"] = config.mask_sigma
        training["centres"] = (
            "K-means on each training image's intensities (the real noisy image; the clean "
            "image for synthetic-noise patches), K drawn per patch from clusters"
        )
        training["validation"] = (
            f"masked protocol, K={config.val_clusters} centres fitted on each validation image"
        )
    if config.init_weights is not None:
        training["init_weights"] = {"path": str(config.init_weights), "digest": init_digest}
    return ModelMetadata(
        name=config.name,
        description=config.description,
        architecture=config.model_architecture,
        normalisation=config.input_normalisation,
        protocol="masked" if config.mode == "masked" else "whole",
        training=training,
        noise_model=_noise_model(config),
    )

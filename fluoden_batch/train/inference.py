"""Whole-image inference during and after training: device choice, denoising, PSNR."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fluoden_batch.errors import FluodenError
from fluoden_batch.metrics import psnr
from fluoden_batch.models.normalise import (
    denormalise,
    map_parameters,
    normalisation_range,
    normalise,
    plane_noise,
    split_range,
    with_noise_map,
)
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.restore.inference import align
from fluoden_batch.restore.tiles import tile_windows
from fluoden_batch.train.data import NORMALISATION, ValImage

__all__ = ["PlaneDenoiser", "denoise_whole", "resolve_device", "validation_psnr"]

# (model, noisy plane, *, clip=, device=) -> denoised plane, image units
PlaneDenoiser = Callable[..., np.ndarray]

# Side of the pieces a plane is run in (each read with the model's receptive radius as
# halo, so the result equals one whole-plane pass): a 512 px plane at width 32 holds 32 MiB
# of activations per layer, over glibc's mmap threshold, so every layer's output was
# mapped and zeroed anew (measured on the shipped network: as much kernel time as compute,
# 1.2-1.4 s per plane against 0.7 s in pieces of 256 px).
TILE = 256


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; an unavailable CUDA is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise FluodenError(f"device {spec!r} requested but CUDA is not available")
    return torch.device(spec)


@torch.no_grad()
def denoise_whole(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    clip: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
    norm: tuple[float, float] | None = None,
    normalisation: Normalisation = NORMALISATION,
    noise: tuple[float, float] | None = None,
) -> np.ndarray:
    """Whole-image inference: normalise ``image``, run ``model``, map back.

    A model with a ``receptive_radius`` runs in pieces of :data:`TILE` px, each read with
    that radius as halo: the result is that of one pass over the whole plane (the
    convolutions' zero padding acts at the plane's border only), with less memory.

    Parameters
    ----------
    model : torch.nn.Module
        A denoiser on ``device``; run in eval mode (its mode is restored afterwards).
    image : ndarray, shape (H, W)
        Noisy plane in data units.
    clip : (float, float), optional
        Clip the result to this range (e.g. (0, 255) for 8-bit data).
    norm : (float, float), optional
        Normalisation range ``(lo, hi)`` in image units; default: that of ``image`` itself
        under ``normalisation``. The masked protocol passes the whole plane's for a part.
    normalisation : Normalisation
        The model's input normalisation (its weights' metadata); default percentile.
    noise : (float, float), optional
        Poisson-Gaussian ``(a, b)`` of ``image`` (data units) for a model with a noise map;
        default: estimated from ``image`` (:func:`~fluoden_batch.models.normalise.plane_noise`).

    Returns
    -------
    ndarray, float32, shape (H, W), in data units.
    """
    if norm is None:
        norm = normalisation_range(image, normalisation)
    lo, hi = norm
    x_n, excess = split_range(normalise(image, lo, hi))  # as the run: bright goes around
    if getattr(model, "noise_map", False):  # the image and its noise map
        a, b = plane_noise(image) if noise is None else noise
        x_n = with_noise_map(x_n, *map_parameters(a, b, lo, hi))
    x = torch.from_numpy(x_n).reshape(-1, *image.shape)
    radius = getattr(model, "receptive_radius", None)  # None: one pass over the plane
    tile = TILE if radius is not None else max(image.shape)
    y = np.empty(image.shape, np.float32)
    was_training = model.training
    model.eval()
    try:
        for window, dest in tile_windows(image.shape, tile, radius or 0, align(model)):
            piece = x[(slice(None), *window.read)][None].to(device)
            piece = model(piece.contiguous(memory_format=torch.channels_last))
            y[dest] = piece[0, 0].float().cpu().numpy()[window.crop]
    finally:
        model.train(was_training)
    out = denormalise(y + excess, lo, hi)
    return np.clip(out, *clip) if clip is not None else out


def validation_psnr(
    model: torch.nn.Module,
    images: list[ValImage],
    device: torch.device | str = "cpu",
    *,
    denoise: PlaneDenoiser = denoise_whole,
) -> float:
    """Mean PSNR (dB, each image's own data range) of denoising ``images`` with
    ``denoise(model, noisy, clip=, device=)``: whole-image inference by default."""
    values = [
        psnr(denoise(model, v.noisy, clip=v.clip, device=device), v.clean, v.data_range)
        for v in images
    ]
    return float(np.mean(values))

"""Self-supervised training data: Noise2Void blind-spot masking (Krull, Buchholz & Jug,
"Noise2Void - Learning Denoising from Single Noisy Images", CVPR 2019).

In every patch a stratified set of pixels is masked: the patch is cut into ``g x g`` cells
(``g = round(1 / sqrt(mask_fraction))``) and one pixel per cell is drawn uniformly. Each
masked pixel's input value is replaced by the value of a random neighbour within the
``(2r + 1) x (2r + 1)`` window around it, excluding the pixel itself AND every other masked
pixel. The loss compares the network output at the masked pixels with their original
noisy values. Because no masked pixel's original value appears anywhere in the input (not
at its own position, not as another masked pixel's replacement), the prediction at a
masked pixel cannot depend on its own noise, even through batch-norm statistics; with
pixel-wise independent zero-mean noise the expected loss is minimised by the clean signal.

Excluding masked pixels as replacement sources is stricter than the original N2V sampler,
where a masked pixel could take a masked neighbour's original value and so leak that
neighbour's noise into the neighbour's own receptive field.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import in_range, normalisation_range
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.train.data import NORMALISATION

__all__ = [
    "BlindSpot",
    "BlindSpotSampler",
    "apply_blind_spot",
    "blind_spot",
    "grid_step",
]

_MAX_TRIES = 64
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def grid_step(mask_fraction: float) -> int:
    """Cell side ``g`` of the stratified grid: one masked pixel per ``g x g`` cell."""
    if not 0 < mask_fraction <= 1:
        raise InputError(f"mask_fraction must be in (0, 1], got {mask_fraction}")
    return max(1, round(1 / math.sqrt(mask_fraction)))


@dataclass(frozen=True)
class BlindSpot:
    """Masked pixels of a batch of (N, 1, H, W) patches and their replacement sources.

    All attributes are int64 arrays of equal length: masked pixel ``i`` is at
    ``(batch[i], y[i], x[i])`` and takes its input value from ``(batch[i], src_y[i],
    src_x[i])``.
    """

    batch: np.ndarray
    y: np.ndarray
    x: np.ndarray
    src_y: np.ndarray
    src_x: np.ndarray

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Float32 array of ``shape`` (N, 1, H, W): 1 at masked pixels, 0 elsewhere."""
        out = np.zeros(shape, np.float32)
        out[self.batch, 0, self.y, self.x] = 1.0
        return out


def _stratified(n: int, h: int, w: int, g: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One uniformly drawn pixel per ``g x g`` cell (cells cut at the border are smaller)."""
    cy, cx = np.meshgrid(np.arange(0, h, g), np.arange(0, w, g), indexing="ij")
    cy, cx = np.tile(cy.ravel(), n), np.tile(cx.ravel(), n)
    batch = np.repeat(np.arange(n), cy.size // n)
    y = cy + rng.integers(0, np.minimum(g, h - cy))
    x = cx + rng.integers(0, np.minimum(g, w - cx))
    return batch.astype(np.int64), y.astype(np.int64), x.astype(np.int64)


def blind_spot(
    shape: tuple[int, ...], mask_fraction: float, radius: int, rng: np.random.Generator
) -> BlindSpot:
    """Draw masked pixels and replacement neighbours for a batch of ``shape`` (N, 1, H, W).

    A source is uniform over the window of ``radius`` around the masked pixel, inside the
    patch, not the pixel itself and not any masked pixel (rejection sampling; after
    ``_MAX_TRIES`` rounds the first valid window position in scan order is taken).

    Raises
    ------
    InputError
        If some masked pixel has no valid source in its window (too dense a mask).
    """
    n, _, h, w = shape
    if radius < 1:
        raise InputError(f"mask_radius must be >= 1, got {radius}")
    batch, y, x = _stratified(n, h, w, grid_step(mask_fraction), rng)
    masked = np.zeros((n, h, w), bool)
    masked[batch, y, x] = True
    src_y, src_x = y.copy(), x.copy()
    todo = np.arange(y.size)

    def valid(idx: np.ndarray, ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        ok = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        ok[ok] = ~masked[batch[idx[ok]], ty[ok], tx[ok]]  # excludes the pixel itself too
        return ok

    for _ in range(_MAX_TRIES):
        if todo.size == 0:
            break
        dy = rng.integers(-radius, radius + 1, todo.size)
        dx = rng.integers(-radius, radius + 1, todo.size)
        ty, tx = y[todo] + dy, x[todo] + dx
        ok = valid(todo, ty, tx)
        src_y[todo[ok]], src_x[todo[ok]] = ty[ok], tx[ok]
        todo = todo[~ok]
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=2))
    for i in todo:  # practically never reached
        for dy, dx in offsets:
            one = np.array([i])
            if valid(one, y[one] + dy, x[one] + dx)[0]:
                src_y[i], src_x[i] = y[i] + dy, x[i] + dx
                break
        else:
            raise InputError(
                f"blind spot at ({y[i]}, {x[i]}) has no unmasked neighbour within radius "
                f"{radius}: lower mask_fraction or raise mask_radius"
            )
    return BlindSpot(batch, y, x, src_y, src_x)


def apply_blind_spot(patches: ArrayT, spot: BlindSpot) -> ArrayT:
    """Copy of ``patches`` (N, 1, H, W; NumPy or torch) with every masked pixel replaced by
    its source's value. Differentiable for torch tensors."""
    if isinstance(patches, torch.Tensor):
        b, y, x, sy, sx = (
            torch.as_tensor(a, device=patches.device)
            for a in (spot.batch, spot.y, spot.x, spot.src_y, spot.src_x)
        )
        out = patches.clone()
        out[b, 0, y, x] = patches[b, 0, sy, sx]
        return out
    out = patches.copy()
    out[spot.batch, 0, spot.y, spot.x] = patches[spot.batch, 0, spot.src_y, spot.src_x]
    return out


class BlindSpotSampler:
    """Random blind-spot batches from noisy images, with the 8 flips/rotations.

    Each patch is normalised with the range of its whole noisy image under
    ``normalisation`` (as inference does); the target is the unmasked normalised noisy
    patch.

    Parameters
    ----------
    images : list of ndarray, float32, shape (H, W)
        Noisy training images in data units, each at least ``patch_size`` on both sides.
    patch_size : int
        Side of the square patches.
    mask_fraction : float
        Share of masked pixels per patch (see :func:`grid_step`).
    radius : int
        Replacement window radius.
    normalisation : Normalisation
        Model input normalisation (:func:`~fluoden_batch.models.normalise.normalisation_range`).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        patch_size: int,
        mask_fraction: float,
        radius: int,
        normalisation: Normalisation = NORMALISATION,
    ) -> None:
        if not images:
            raise InputError("self-supervised training needs at least one noisy image")
        small = [i for i, im in enumerate(images) if min(im.shape) < patch_size]
        if small:
            raise InputError(f"images {small[:5]} are smaller than the {patch_size}px patch")
        self.images, self.patch_size = images, patch_size
        self.mask_fraction, self.radius = mask_fraction, radius
        self._ranges = [normalisation_range(im, normalisation) for im in images]

    @property
    def masked_share(self) -> float:
        """Actual share of masked pixels in a patch."""
        g, p = grid_step(self.mask_fraction), self.patch_size
        return math.ceil(p / g) ** 2 / p**2

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw a batch using (and advancing) ``rng``.

        Returns
        -------
        inputs, targets, mask : ndarray, float32, shape (batch_size, 1, P, P)
            Blind-spot inputs, the original normalised noisy patches, and 1 at the masked
            pixels (where the loss is taken).
        """
        p = self.patch_size
        targets = np.empty((batch_size, 1, p, p), np.float32)
        for i in range(batch_size):
            j = int(rng.integers(len(self.images)))
            h, w = self.images[j].shape
            y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
            patch = np.rot90(self.images[j][y : y + p, x : x + p], k)
            targets[i, 0] = in_range(patch[:, ::-1] if flip else patch, *self._ranges[j])
        spot = blind_spot(targets.shape, self.mask_fraction, self.radius, rng)
        return apply_blind_spot(targets, spot), targets, spot.mask(targets.shape)

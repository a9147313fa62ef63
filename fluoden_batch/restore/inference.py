"""Run a denoising network over a 2-D plane, tile by tile, equal to whole-image inference."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fluoden_batch.errors import InputError
from fluoden_batch.models.weights import Denoiser
from fluoden_batch.restore.tiles import tile_windows

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Dihedral(nn.Module):
    """Test-time augmentation: the mean of a model over the 8 flips and rotations.

    ``forward(x)`` is ``mean_g g^-1(model(g x))`` over the dihedral group of the square
    (4 rotations by 90 degrees, each with and without a left-right flip), so it costs 8
    forward passes. A DnCNN commutes with translations and its zero padding is the same on
    every side, so tiles with a halo of ``receptive_radius`` still equal whole-plane
    inference.

    Parameters
    ----------
    model : DnCNN or FFDNet
        Inference model.
    """

    def __init__(self, model: Denoiser) -> None:
        super().__init__()
        self.model = model

    @property
    def receptive_radius(self) -> int:
        """The wrapped model's receptive radius, pixels."""
        return self.model.receptive_radius

    @property
    def noise_map(self) -> bool:
        """Whether the wrapped model takes a noise map."""
        return self.model.noise_map

    @property
    def align(self) -> int:
        """The wrapped model's tile alignment, pixels."""
        return align(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the 8 transforms of ``x`` (N, C, H, W), mapped back: (N, 1, H, W)."""
        h, w = x.shape[-2:]
        step = self.align  # rotate whole 2x2 cells: pad odd sides first, as the model would
        if h % step or w % step:
            x = torch.nn.functional.pad(x, (0, -w % step, 0, -h % step), mode="replicate")
        total = torch.zeros_like(x[:, :1], dtype=torch.float32)
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                y = self.model(t.contiguous(memory_format=torch.channels_last))
                y = torch.rot90(y, -k, (-2, -1))
                total += (y.flip(-1) if flip else y).float()
        return (total / 8)[..., :h, :w]


class PhaseSplit(nn.Module):
    """Phase-split inference: the model on each of the four stride-2 phases of a plane.

    ``forward(x)`` splits ``x`` into its phases ``x[..., i::2, j::2]`` (i, j in 0, 1),
    runs the model on the four half-size images as one batch and interleaves the results
    back (the pixel-shuffle down-sampling of AP-BSN, Lee et al. CVPR 2022). Noise that is
    correlated between neighbouring pixels, as in many widefield cameras, is nearly white
    two pixels apart, which a network trained on white noise can remove; structure at the
    Nyquist scale of the full plane is lost. Odd sides are padded by replicating the last
    row or column, as whole-plane inference then does too. Tiles start on the 2-pixel grid
    (times the model's own) and read ``2 r + 2`` pixels of halo (``r`` the model's radius),
    so they still equal whole-plane inference.

    Parameters
    ----------
    model : DnCNN, FFDNet or Dihedral
        Inference model, applied to the phases.
    """

    def __init__(self, model: Denoiser | Dihedral) -> None:
        super().__init__()
        self.model = model

    @property
    def receptive_radius(self) -> int:
        """Pixels of context the split output needs on each side: ``2 r + 2``."""
        return 2 * self.model.receptive_radius + 2

    @property
    def noise_map(self) -> bool:
        """Whether the wrapped model takes a noise map."""
        return self.model.noise_map

    @property
    def align(self) -> int:
        """Tile grid: the phases' 2 pixels times the wrapped model's alignment."""
        return 2 * align(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model on the four phases of ``x`` (N, C, H, W), interleaved: (N, 1, H, W)."""
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            x = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        hh, wh = x.shape[-2] // 2, x.shape[-1] // 2
        phases = x.reshape(n, c, hh, 2, wh, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * n, c, hh, wh)
        y = self.model(phases.contiguous(memory_format=torch.channels_last))
        y = y.reshape(2, 2, n, 1, hh, wh).permute(2, 3, 4, 0, 5, 1).reshape(n, 1, 2 * hh, 2 * wh)
        return y[..., :h, :w]


Network = Denoiser | Dihedral | PhaseSplit


def align(module: Network) -> int:
    """Pixel grid a network's tiles must start on (2 for the 2x2 cells of an FFDNet)."""
    return getattr(module, "align", 1)


def inference_network(module: Denoiser, tta: bool = False, phase_split: bool = False) -> Network:
    """``module`` as a run applies it: with ``tta`` the mean over the 8 flips and
    rotations (:class:`Dihedral`), with ``phase_split`` on the four stride-2 phases
    (:class:`PhaseSplit`; the flips and rotations then act on each phase)."""
    network: Network = Dihedral(module) if tta else module
    return PhaseSplit(network) if phase_split else network


def needs_noise_map(module: Network) -> bool:
    """Whether ``module`` takes a noise-level map as its second input channel."""
    return module.noise_map


def _forward(module: Network, x: np.ndarray, precision: str) -> np.ndarray:
    device = next(module.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = (t[None] if t.ndim == 3 else t[None, None]).to(device)
    t = t.contiguous(memory_format=torch.channels_last)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return module(t)[0, 0].cpu().numpy()
    if device.type != "cuda":
        raise InputError(f"precision {precision} needs a CUDA device, the model is on {device}")
    with torch.autocast("cuda", dtype=dtype):
        return module(t)[0, 0].float().cpu().numpy()


@torch.inference_mode()
def infer_plane(
    module: Network, plane: np.ndarray, tile: int | None = None, precision: str = "fp32"
) -> np.ndarray:
    """Denoise one normalised plane.

    Parameters
    ----------
    module : DnCNN, FFDNet or Dihedral
        Inference model (eval mode), or it wrapped for test-time augmentation; its
        ``receptive_radius`` is the halo.
    plane : ndarray, shape (H, W) or (C, H, W), float32
        Input in model units (see :mod:`fluoden_batch.models.normalise`); (2, H, W) for a
        network with a noise map (the image, then its map).
    tile : int, optional
        Forward passes on ``tile`` x ``tile`` pieces, each read with a halo of the receptive
        radius. The result equals the whole-plane pass (``tile=None``) up to float
        rounding, with memory bounded by the tile size.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision of the convolutions (bf16/fp16 on CUDA only); the output is
        float32 either way.

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    shape = plane.shape[-2:]
    if tile is None or (shape[0] <= tile and shape[1] <= tile):
        return _forward(module, plane, precision)
    out = np.empty(shape, dtype=np.float32)
    for window, dest in tile_windows(shape, tile, module.receptive_radius, align(module)):
        out[dest] = _forward(module, plane[(..., *window.read)], precision)[window.crop]
    return out

"""Run a denoising network over a 2-D plane, tile by tile, equal to whole-image inference."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fluoden_batch.errors import InputError
from fluoden_batch.models.dncnn import DnCNN
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
    model : DnCNN
        Inference model.
    """

    def __init__(self, model: DnCNN) -> None:
        super().__init__()
        self.model = model

    @property
    def receptive_radius(self) -> int:
        """The wrapped model's receptive radius, pixels."""
        return self.model.receptive_radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the 8 transforms of ``x`` (N, C, H, W), mapped back; same shape."""
        total = torch.zeros_like(x, dtype=torch.float32)
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                y = self.model(t.contiguous(memory_format=torch.channels_last))
                y = torch.rot90(y, -k, (-2, -1))
                total += (y.flip(-1) if flip else y).float()
        return total / 8


Network = DnCNN | Dihedral


def _forward(module: Network, x: np.ndarray, precision: str) -> np.ndarray:
    device = next(module.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
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
    module : DnCNN or Dihedral
        Inference model (eval mode), or it wrapped for test-time augmentation; its
        ``receptive_radius`` is the halo.
    plane : ndarray, shape (H, W), float32
        Input in model units (see :mod:`fluoden_batch.models.normalise`).
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
    if tile is None or (plane.shape[0] <= tile and plane.shape[1] <= tile):
        return _forward(module, plane, precision)
    out = np.empty(plane.shape, dtype=np.float32)
    for window, dest in tile_windows(plane.shape, tile, module.receptive_radius):
        out[dest] = _forward(module, plane[window.read], precision)[window.crop]
    return out

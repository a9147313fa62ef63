"""Run a denoising network over a 2-D plane, tile by tile, equal to whole-image inference."""

from __future__ import annotations

import numpy as np
import torch

from fluoden_batch.errors import InputError
from fluoden_batch.models.dncnn import DnCNN
from fluoden_batch.restore.tiles import tile_windows

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _forward(module: DnCNN, x: np.ndarray, precision: str) -> np.ndarray:
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
    module: DnCNN, plane: np.ndarray, tile: int | None = None, precision: str = "fp32"
) -> np.ndarray:
    """Denoise one normalised plane.

    Parameters
    ----------
    module : DnCNN
        Inference model (eval mode); its ``receptive_radius`` is the halo.
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

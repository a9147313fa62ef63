"""Run a denoising network over a 2-D plane, tile by tile, equal to whole-image inference."""

from __future__ import annotations

import numpy as np
import torch

from fluoden_batch.models.dncnn import DnCNN
from fluoden_batch.restore.tiles import tile_windows


def _forward(module: DnCNN, x: np.ndarray) -> np.ndarray:
    device = next(module.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
    t = t.contiguous(memory_format=torch.channels_last)
    return module(t)[0, 0].float().cpu().numpy()


@torch.inference_mode()
def infer_plane(module: DnCNN, plane: np.ndarray, tile: int | None = None) -> np.ndarray:
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

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    if tile is None or (plane.shape[0] <= tile and plane.shape[1] <= tile):
        return _forward(module, plane)
    out = np.empty(plane.shape, dtype=np.float32)
    for window, dest in tile_windows(plane.shape, tile, module.receptive_radius):
        out[dest] = _forward(module, plane[window.read])[window.crop]
    return out

"""FFDNet-style denoiser: a bias-free residual CNN at half resolution, told the noise level.

Three ideas from the literature, in one small network:

- Pixel unshuffle (FFDNet, Zhang, Zuo & Zhang 2018): the input is cut into 2x2 cells and
  the body runs on 4 channels at half resolution, then a pixel shuffle puts the four
  outputs back. Per output pixel it costs a quarter of a full-resolution layer of the same
  width, and each 3x3 layer sees twice as far.
- A noise-level map as a second input channel (FFDNet): ``sigma(x) = sqrt(max(a x + b, 0))``
  of the Poisson-Gaussian model, in model units (:func:`~fluoden_batch.models.normalise.noise_map`),
  so one network serves every noise level and signal-dependent noise.
- Bias-free convolutions (Mohan, Kadkhodaie, Simoncelli & Fernandez-Granda, ICLR 2020): no
  additive constants and no batch norm, so the network is positively homogeneous
  (``f(c x, c m) = c f(x, m)`` for ``c > 0``), which generalises to noise levels outside
  training.

The network predicts the noise residual of the image channel, as DnCNN does. Planes of odd
height or width are padded by one replicated row/column at the bottom/right and cropped
back, so any shape works; tiles must start on even coordinates (:attr:`FFDNet.align`) to
reproduce whole-image inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALE = 2  # pixel-unshuffle factor


class FFDNet(nn.Module):
    """Noise-map-conditioned, pixel-unshuffled, bias-free residual denoiser.

    Parameters
    ----------
    depth : int
        Convolution layers at half resolution (FFDNet: 15 for grey images). At least 2.
    width : int
        Feature channels of the hidden layers (FFDNet: 64).
    map_gain : float
        Factor on the noise-map channel before the first layer (model units are small: with
        the ``noise`` normalisation a typical pixel's sigma is ``1 / 40``).
    bias : bool
        Additive biases in the convolutions (False: the bias-free network).

    Notes
    -----
    Input ``(N, 2, H, W)``: channel 0 the normalised image, channel 1 its noise map (same
    units). Output ``(N, 1, H, W)``.
    """

    in_channels = 1  # image channels; the input also holds the noise map
    noise_map = True
    align = SCALE

    def __init__(
        self, depth: int = 15, width: int = 64, map_gain: float = 40.0, bias: bool = False
    ) -> None:
        super().__init__()
        if depth < 2 or width < 1 or not map_gain > 0:
            raise ValueError(f"invalid FFDNet shape depth={depth} width={width}")
        self.depth, self.width, self.map_gain, self.bias = depth, width, map_gain, bias
        cells = SCALE * SCALE
        layers: list[nn.Module] = [
            nn.Conv2d(2 * cells, width, 3, padding=1, bias=bias),
            nn.ReLU(),
        ]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=bias), nn.ReLU()]
        layers.append(nn.Conv2d(width, cells, 3, padding=1, bias=bias))
        self.body = nn.Sequential(*layers)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        last = self.body[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)  # starts as the identity: output = input

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that influence one output pixel, rounded up to the 2-pixel
        grid: each half-resolution layer reaches 2 pixels, the 2x2 cell one more."""
        radius = SCALE * self.depth + SCALE - 1
        return radius + radius % SCALE

    def flops_per_pixel(self) -> int:
        """Multiply-add FLOPs (2 per MAC) per output pixel of one forward pass."""
        cells, w = SCALE * SCALE, self.width
        macs = 9 * (2 * cells * w + (self.depth - 2) * w * w + w * cells)
        return 2 * macs // cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (N, 2, H, W) (image, noise map); returns (N, 1, H, W)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = h % SCALE, w % SCALE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        image = x[:, :1]
        scaled = torch.cat([image, x[:, 1:] * self.map_gain], dim=1)
        residual = F.pixel_shuffle(self.body(F.pixel_unshuffle(scaled, SCALE)), SCALE)
        return (image - residual)[..., :h, :w]

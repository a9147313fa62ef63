"""U-Net denoiser (Ronneberger, Fischer & Brox 2015), as CARE and CAREamics use it.

A multi-scale residual denoiser: ``levels`` times two 3x3 convolutions then a 2x2 max
pool, two convolutions at the bottom, and back up by 2x2 transposed convolutions, each
joined by the skip connection of its level and followed by two convolutions; a 1x1
convolution gives the noise residual and the network returns ``x - residual``, as DnCNN
does (Weigert et al. 2018's CARE networks are residual U-Nets too). The feature count
doubles at every level down (``width``, ``2 width``, ...). Most of the work runs at low
resolution, so for the FLOPs per pixel of a 17x32 DnCNN a U-Net of 3 levels and width 32
sees 56 px on every side (the tile halo) where the dilated 17x32 DnCNN sees 33.

Tiles must start on the pooling grid (:attr:`UNet.align` = ``2 ** levels`` px) to reproduce
whole-image inference: the pooling cells of a tile are then those of the whole plane. A
plane whose height or width is not a multiple of the grid is padded at the bottom/right by
replicating its last row/column and cropped back; a tile that ends at the plane's edge is
padded the same way, one that ends inside reads its halo instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(c_in: int, c_out: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """Residual U-Net denoiser of one image channel.

    Parameters
    ----------
    levels : int
        Pooling steps (1-5); the tile grid is ``2 ** levels`` px.
    width : int
        Feature channels at full resolution (doubled at each level down).
    bias : bool
        Additive biases in the convolutions.

    Notes
    -----
    Input ``(N, 1, H, W)`` in model units; output ``(N, 1, H, W)``. The last convolution
    starts at zero, so an untrained network is the identity.
    """

    in_channels = 1
    noise_map = False
    batch_norm = False

    def __init__(self, levels: int = 3, width: int = 32, bias: bool = True) -> None:
        super().__init__()
        if not 1 <= levels <= 5 or width < 1:
            raise ValueError(f"invalid U-Net shape levels={levels} width={width}")
        self.levels, self.width, self.bias = levels, width, bias
        widths = [width * 2**level for level in range(levels + 1)]
        self.down = nn.ModuleList(
            _double_conv(c_in, c_out, bias)
            for c_in, c_out in zip([1, *widths[:-2]], widths[:-1], strict=True)
        )
        self.bottom = _double_conv(widths[-2], widths[-1], bias)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2, bias=bias)
            for level in reversed(range(levels))
        )
        self.merge = nn.ModuleList(
            _double_conv(2 * widths[level], widths[level], bias)
            for level in reversed(range(levels))
        )
        self.head = nn.Conv2d(width, 1, 1, bias=bias)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)  # starts as the identity: output = input

    @staticmethod
    def convolutions(levels: int) -> int:
        """Convolution layers of a U-Net of ``levels`` levels (two per level down and up,
        one transposed per level, two at the bottom, the 1x1 head): ``5 levels + 3``."""
        return 5 * levels + 3

    @property
    def align(self) -> int:
        """Pixel grid tiles must start on: the cells of the deepest pooling."""
        return 2**self.levels

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that can influence one output pixel, rounded up to the
        tile grid: the two 3x3 convolutions of each level on the way down and on the way
        up (2 ``2**l`` px each at level ``l``) and the two at the bottom, plus the offset of
        a pixel inside its pooling cell at each level, at most ``2**l - 1`` px (the
        transposed convolution returns to the same cell). Measured by back-propagating one
        output pixel: 9, 23 and 51 px for 1, 2 and 3 levels, under 10, 24 and 56."""
        convs = sum(2 * 2 * 2**level for level in range(self.levels)) + 2 * 2**self.levels
        cells = sum(2**level - 1 for level in range(1, self.levels + 1))
        return -(-(convs + cells) // self.align) * self.align

    def flops_per_pixel(self) -> int:
        """Multiply-add FLOPs (2 per MAC) per output pixel of one forward pass."""
        widths = [self.width * 2**level for level in range(self.levels + 1)]
        macs = 0.0
        for level in range(self.levels):
            c, c_in, area = widths[level], [1, *widths][level], 4**level
            convs = 9 * (c_in * c + c * c) + 9 * (2 * c * c + c * c)  # down, then merge
            macs += convs / area + widths[level + 1] * c / area  # + transposed 2x2 into it
        c, area = widths[-1], 4**self.levels
        macs += 9 * (widths[-2] * c + c * c) / area + self.width  # bottom, 1x1 head
        return round(2 * macs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (N, 1, H, W); returns (N, 1, H, W)."""
        h, w = x.shape[-2:]
        grid = self.align
        pad_h, pad_w = -h % grid, -w % grid
        y = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        y = self.bottom(y)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            y = merge(torch.cat([skip, up(y)], dim=1))
        return x - self.head(y)[..., :h, :w]

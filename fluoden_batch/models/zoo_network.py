"""The network of fluoden's bioimage.io packages: DnCNN with fluoden's normalisation inside.

This file is copied into every exported package as its architecture source, so it
imports nothing but torch and must stay TorchScript-compatible. It reproduces, per
sample and on the whole plane, what fluoden's ``whole`` protocol does to one Y/X plane:

1. ``lo`` = the ``low`` percentile of the plane (numpy's linear interpolation).
2. ``hi``: ``percentile`` normalisation takes the ``high`` percentile; ``noise``
   normalisation takes ``lo + scale * sigma``, ``sigma`` the wavelet noise estimate of
   scikit-image's ``estimate_sigma`` (median absolute db2 diagonal detail coefficient,
   symmetric borders, zeros left out, / 0.6745), floored at 1e-3 of the percentile
   window. A flat plane gets ``hi = lo + max(1, |lo| / 1000)``.
3. ``(x - lo) / (hi - lo)`` clipped to +-1e4, the DnCNN (which predicts the noise
   residual), and back to the input's units.

The bioimage.io spec's ``scale_range`` preprocessing can express step 1 and the
percentile ``hi``, but neither the noise-based ``hi`` nor the way back to the input's
units afterwards, so the whole map lives in the network: it takes and returns raw
intensities. The state dict holds only the DnCNN's tensors, with the names of
:class:`fluoden_batch.models.dncnn.DnCNN`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# pywt.Wavelet("db2").dec_hi
DB2_HIGH_PASS = (
    -0.48296291314453416,
    0.8365163037378079,
    -0.2241438680420134,
    -0.12940952255126037,
)
GAUSSIAN_MAD = 0.6744897501960817  # scipy.stats.norm.ppf(0.75)
SIGMA_FLOOR = 1e-3
OUTLIER_LIMIT = 1e4


class FluodenDnCNN(nn.Module):
    """DnCNN on raw intensities, normalising each sample as fluoden does.

    Parameters
    ----------
    depth, width, batch_norm
        The DnCNN's shape (one image channel, no noise map).
    method : {"percentile", "noise"}
        How ``hi`` of the normalisation window is found (see the module docstring).
    low, high : float
        Percentiles (in %) of the window.
    scale : float
        ``noise`` method: ``hi - lo = scale * sigma``.
    bias : bool
        Additive biases in the convolutions (False: a bias-free DnCNN).
    dilations : list of int, optional
        Dilation of each convolution (default: all 1).
    """

    def __init__(
        self,
        depth: int = 17,
        width: int = 64,
        batch_norm: bool = True,
        method: str = "noise",
        low: float = 0.1,
        high: float = 99.9,
        scale: float = 40.0,
        bias: bool = True,
        dilations: list[int] | None = None,
    ) -> None:
        super().__init__()
        if method not in ("percentile", "noise"):
            raise ValueError(f"unknown normalisation method {method!r}")
        self.noise_window = method == "noise"
        self.low, self.high, self.scale = float(low), float(high), float(scale)
        # module attributes, not globals: TorchScript compiles no global floats
        self.sigma_floor, self.outlier_limit, self.mad = SIGMA_FLOOR, OUTLIER_LIMIT, GAUSSIAN_MAD
        first, *hidden, last = dilations or [1] * depth

        def conv(inputs: int, outputs: int, d: int, bias: bool) -> nn.Conv2d:
            return nn.Conv2d(inputs, outputs, 3, padding=d, dilation=d, bias=bias)

        layers: list[nn.Module] = [conv(1, width, first, bias), nn.ReLU()]
        for d in hidden:
            layers.append(conv(width, width, d, bias and not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
        layers.append(conv(width, 1, last, bias))
        self.body = nn.Sequential(*layers)
        high_pass = torch.tensor(DB2_HIGH_PASS, dtype=torch.float64).flip(0)
        self.register_buffer(
            "wavelet", torch.outer(high_pass, high_pass)[None, None], persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (N, 1, H, W), raw intensities; returns float32 the same."""
        out = []
        for i in range(x.shape[0]):
            plane = x[i, 0].to(torch.float64)
            lo, hi = self.window(plane)
            y = ((plane - lo) / (hi - lo)).clamp(-self.outlier_limit, self.outlier_limit)
            y = y.to(torch.float32)[None, None]
            y = y - self.body(y)
            span = torch.tensor(hi - lo, dtype=torch.float32)
            out.append(y[0] * span + torch.tensor(lo, dtype=torch.float32))
        return torch.stack(out)

    def window(self, plane: torch.Tensor) -> tuple[float, float]:
        """``(lo, hi)`` of the normalisation of one float64 plane."""
        values = plane.flatten().sort().values
        lo, hi = percentile(values, self.low), percentile(values, self.high)
        lo32, hi32 = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
        if not bool(hi32 - lo32 > 0) or not bool(hi32 > lo32):
            hi = lo + max(1.0, abs(lo) * 1e-3)  # flat, or a span float32 cannot resolve
        if not self.noise_window:
            return lo, hi
        return lo, lo + self.scale * max(self.sigma(plane), self.sigma_floor * (hi - lo))

    def sigma(self, plane: torch.Tensor) -> float:
        """Wavelet noise estimate of one float64 plane (0.0 when it cannot tell)."""
        if plane.shape[0] < 3 or plane.shape[1] < 3:
            return 0.0
        padded = symmetric_pad(symmetric_pad(plane, 0), 1)[None, None, 1:, 1:]
        detail = F.conv2d(padded, self.wavelet, stride=2).abs().flatten()
        detail = detail[detail != 0]
        if detail.numel() == 0:
            return 0.0
        return median(detail.sort().values) / self.mad


def percentile(sorted_values: torch.Tensor, q: float) -> float:
    """numpy's default (linear) ``q``-th percentile of sorted values."""
    position = q / 100.0 * (sorted_values.numel() - 1)
    below = int(position)
    above = min(below + 1, sorted_values.numel() - 1)
    a, b = float(sorted_values[below]), float(sorted_values[above])
    return a + (b - a) * (position - below)


def median(sorted_values: torch.Tensor) -> float:
    """numpy's median of sorted values (the mean of the middle two for an even count)."""
    n = sorted_values.numel()
    return 0.5 * (float(sorted_values[(n - 1) // 2]) + float(sorted_values[n // 2]))


def symmetric_pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad 3 samples on both sides of ``dim`` by half-sample symmetry (pywt "symmetric")."""
    n = x.shape[dim]
    head, tail = x.narrow(dim, 0, 3).flip(dim), x.narrow(dim, n - 3, 3).flip(dim)
    return torch.cat([head, x, tail], dim)

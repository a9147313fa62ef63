"""DnCNN (Zhang et al. 2017): residual denoiser with batch normalisation.

Architecture: Conv+ReLU, (depth-2) x (Conv+BN+ReLU), Conv; 3x3 kernels, each layer
dilated by ``d`` (1 unless ``dilations`` says otherwise; Yu & Koltun 2016, as IRCNN, Zhang
et al. 2017) with zero padding of ``d``. The network predicts the noise residual and
returns ``x - residual``. A tile therefore needs a halo of ``sum(dilations)`` pixels
(``depth`` undilated) on every side that is not an image border to reproduce whole-image
inference exactly.

With ``noise_map=True`` the input has one more channel, the noise level of every pixel
(:func:`~fluoden_batch.models.normalise.noise_map`, as FFDNet, Zhang, Zuo & Zhang 2018),
so that one network can tell a 16-frame average from a single frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DnCNN(nn.Module):
    """DnCNN denoiser.

    Parameters
    ----------
    depth : int
        Number of convolution layers (17 in the paper). At least 2.
    width : int
        Feature channels of the hidden layers (64 in the paper).
    in_channels : int
        Image channels (1 for the per-plane denoising used here).
    batch_norm : bool
        Batch normalisation in the hidden layers. :func:`fold_batch_norm` turns a trained
        model into the equivalent ``batch_norm=False`` model with biases.
    noise_map : bool
        One more input channel after the image channels: their noise standard deviation
        per pixel (same units). The output has ``in_channels`` channels.
    bias : bool
        Additive biases in the convolutions. ``False``: a bias-free DnCNN (Mohan,
        Kadkhodaie, Simoncelli & Fernandez-Granda, ICLR 2020), which is then
        positively homogeneous, ``f(s x) = s f(x)`` for ``s > 0``, so it treats an input
        of any intensity scale (in model units: any signal-to-noise ratio) alike; only
        without batch norm (its shift is a bias).
    dilations : sequence of int, optional
        Dilation of each of the ``depth`` convolutions (default: all 1). A layer of
        dilation ``d`` sees ``d`` pixels further at the same cost, so the receptive
        radius is ``sum(dilations)``.
    """

    align = 1  # tiles may start anywhere

    def __init__(
        self,
        depth: int = 17,
        width: int = 64,
        in_channels: int = 1,
        batch_norm: bool = True,
        noise_map: bool = False,
        bias: bool = True,
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if depth < 2 or width < 1 or in_channels < 1:
            raise ValueError(f"invalid DnCNN shape depth={depth} width={width}")
        dilations = (1,) * depth if dilations is None else tuple(int(d) for d in dilations)
        if len(dilations) != depth or min(dilations) < 1:
            raise ValueError(f"need {depth} dilations of at least 1, got {list(dilations)}")
        if batch_norm and not bias:
            raise ValueError("a bias-free DnCNN has no batch norm (its shift is a bias)")
        self.depth, self.width, self.in_channels = depth, width, in_channels
        self.batch_norm, self.noise_map, self.bias = batch_norm, noise_map, bias
        self.dilations = dilations
        first, *hidden, last = dilations
        inputs = in_channels + int(noise_map)
        layers: list[nn.Module] = [_conv(inputs, width, first, bias), nn.ReLU()]
        for d in hidden:
            layers.append(_conv(width, width, d, bias and not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
        layers.append(_conv(width, in_channels, last, bias))
        self.body = nn.Sequential(*layers)

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side that influence one output pixel (= the sum of the
        dilations; ``depth`` undilated)."""
        return sum(self.dilations)

    def flops_per_pixel(self) -> int:
        """Multiply-add FLOPs (2 per MAC) per output pixel of one forward pass."""
        w, c = self.width, self.in_channels
        macs = 9 * ((c + int(self.noise_map)) * w + (self.depth - 2) * w * w + w * c)
        return 2 * macs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (N, C, H, W) (with ``noise_map``: the image channels,
        then the map); returns (N, in_channels, H, W)."""
        return x[:, : self.in_channels] - self.body(x)


def _conv(inputs: int, outputs: int, dilation: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, 3, padding=dilation, dilation=dilation, bias=bias)


@torch.no_grad()
def fold_batch_norm(model: DnCNN) -> DnCNN:
    """Return an inference copy of ``model`` with every BatchNorm folded into its conv.

    The result has ``batch_norm=False`` and computes the same function as ``model`` in
    eval mode (up to float rounding), with fewer operations per layer.
    """
    folded = DnCNN(
        model.depth,
        model.width,
        model.in_channels,
        False,
        model.noise_map,
        bias=model.bias,
        dilations=model.dilations,
    )
    src = list(model.body)
    dst_convs = [m for m in folded.body if isinstance(m, nn.Conv2d)]
    i = 0
    for dst in dst_convs:
        conv = src[i]
        assert isinstance(conv, nn.Conv2d)
        weight = conv.weight.detach().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[0])
        i += 1
        if i < len(src) and isinstance(src[i], nn.BatchNorm2d):
            bn = src[i]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = weight * scale[:, None, None, None]
            bias = (bias - bn.running_mean) * scale + bn.bias
            i += 1
        dst.weight.copy_(weight)
        if dst.bias is not None:
            dst.bias.copy_(bias)
        while i < len(src) and not isinstance(src[i], nn.Conv2d):
            i += 1
    return folded.eval()


@torch.no_grad()
def without_biases(model: DnCNN) -> DnCNN:
    """A bias-free DnCNN with ``model``'s convolution weights (batch norm folded in first),
    its biases dropped: a warm start for training a bias-free network (``bias=False``).
    Not the same function: what the biases did is lost until training restores it."""
    src = fold_batch_norm(model.eval()) if model.batch_norm else model
    out = DnCNN(
        model.depth,
        model.width,
        model.in_channels,
        False,
        model.noise_map,
        bias=False,
        dilations=model.dilations,
    )
    old = [m for m in src.body if isinstance(m, nn.Conv2d)]
    new = [m for m in out.body if isinstance(m, nn.Conv2d)]
    for dst, conv in zip(new, old, strict=True):
        dst.weight.copy_(conv.weight)
    return out.eval()


def _inserted_at(depth: int) -> int:
    """Index of the first convolution :func:`grow` inserts into a ``depth``-layer DnCNN
    (after the first half of its hidden layers)."""
    return 1 + (depth - 2) // 2


def grown_dilations(dilations: Sequence[int], inserted: Sequence[int]) -> tuple[int, ...]:
    """The dilations of a DnCNN with ``dilations`` grown by :func:`grow`, the inserted
    layers dilated by ``inserted`` (one per new layer)."""
    at = _inserted_at(len(dilations))
    return (*dilations[:at], *inserted, *dilations[at:])


def kept_dilations(grown: Sequence[int], depth: int) -> tuple[int, ...]:
    """Of the dilations ``grown`` of a DnCNN grown from a ``depth``-layer one by
    :func:`grow`, those of the layers the smaller one had."""
    at, extra = _inserted_at(depth), len(grown) - depth
    return (*grown[:at], *grown[at + extra :])


@torch.no_grad()
def grow(
    model: DnCNN, depth: int, noise_map: bool, dilations: Sequence[int] | None = None
) -> DnCNN:
    """A deeper DnCNN without batch norm that computes the same function as ``model``.

    Net2Net-style (Chen, Goodfellow & Shlens 2016) warm start for training a larger
    network on a CPU budget: batch norm is folded into the convolutions; ``depth -
    model.depth`` identity layers (3x3 kernels with a single 1 at the centre, channel to
    channel, no bias: ``relu(conv(h)) = h`` for the non-negative activations ``h``, at any
    dilation) are inserted in the middle; with ``noise_map`` (and none in ``model``) the
    first convolution gets the map's input channel with zero weights. Training then moves
    away from this start.

    Parameters
    ----------
    model : DnCNN
    depth : int
        Layers of the result, at least ``model.depth``.
    noise_map : bool
        The result has a noise-map input.
    dilations : sequence of int, optional
        The result's dilations (``depth`` of them; :func:`grown_dilations` builds them):
        ``model``'s layers keep theirs, the inserted identity layers may be dilated to
        see further once trained. Default: the inserted layers undilated.

    Raises
    ------
    ValueError
        ``depth`` below ``model.depth``, a map ``model`` has that would be dropped, or
        ``dilations`` that change one of ``model``'s layers.
    """
    if depth < model.depth or (model.noise_map and not noise_map):
        raise ValueError(f"cannot grow depth {model.depth} to {depth} (noise map {noise_map})")
    extra = depth - model.depth
    if dilations is None:
        dilations = grown_dilations(model.dilations, (1,) * extra)
    if len(dilations) != depth or kept_dilations(dilations, model.depth) != model.dilations:
        raise ValueError(
            f"dilations {list(dilations)} do not keep the {model.depth} layers' "
            f"{list(model.dilations)} around {extra} inserted ones"
        )
    src = fold_batch_norm(model.eval()) if model.batch_norm else model
    out = DnCNN(
        depth, model.width, model.in_channels, False, noise_map, model.bias, dilations=dilations
    )
    old = [m for m in src.body if isinstance(m, nn.Conv2d)]
    new = [m for m in out.body if isinstance(m, nn.Conv2d)]
    first_extra = _inserted_at(model.depth)
    mapping = list(range(first_extra)) + [None] * extra + list(range(first_extra, len(old)))
    for dst, i in zip(new, mapping, strict=True):
        if i is None:
            dst.weight.zero_()
            if dst.bias is not None:
                dst.bias.zero_()
            for c in range(model.width):
                dst.weight[c, c, 1, 1] = 1.0
            continue
        dst.weight.zero_()
        dst.weight[:, : old[i].weight.shape[1]] = old[i].weight
        if dst.bias is not None:
            dst.bias.copy_(old[i].bias)
    return out.eval()

"""Fused CPU inference for DnCNN: each convolution and its ReLU in one oneDNN call.

Eager PyTorch runs a DnCNN layer as a convolution followed by a separate ReLU pass over
the whole activation tensor, and reorders the weights into oneDNN's blocked layout on
every call. For the narrow layers of a CPU model (32 channels) both are a large share of
the time. :class:`FusedDnCNN` calls ``torch.ops.mkldnn._convolution_pointwise`` (the
operator ``torch.compile`` emits on CPU) with the ReLU as a post-op, on weights reordered
once by ``torch.ops.mkldnn._reorder_convolution_weight``. The result is the same
function; on CUDA, with gradients, or where the operators are missing it runs the eager
forward instead.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fluoden_batch.models.dncnn import DnCNN

log = logging.getLogger(__name__)

_STRIDE = [1, 1]  # of every DnCNN convolution; padding = dilation (models.dncnn)


def fused_ops_available() -> bool:
    """True when this torch build has the oneDNN fused convolution operators."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_convolution_pointwise")
        and hasattr(ops, "_reorder_convolution_weight")
    )


class FusedDnCNN(DnCNN):
    """Inference copy of a DnCNN without batch norm, fused on CPU.

    Parameters
    ----------
    model : DnCNN
        A model with ``batch_norm=False`` (fold a trained one first with
        :func:`fluoden_batch.models.fold_batch_norm`); its weights are copied.

    Notes
    -----
    The fused path is taken for float32 CPU inputs when gradients are off (inference mode
    or ``no_grad``). Weights are reordered on first use and again whenever a parameter
    is replaced or modified in place.
    """

    def __init__(self, model: DnCNN) -> None:
        if model.batch_norm:
            raise ValueError("FusedDnCNN needs a model without batch norm: fold it first")
        super().__init__(
            model.depth,
            model.width,
            model.in_channels,
            False,
            model.noise_map,
            model.bias,
            model.dilations,
        )
        self.load_state_dict(model.state_dict())
        self.eval()
        self._convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        self._packed: list[torch.Tensor] = []
        self._packed_key: tuple = ()
        self._fused = fused_ops_available()

    def _weights_key(self) -> tuple:
        return tuple((c.weight.data_ptr(), c.weight._version) for c in self._convs)

    def _packed_weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        key = self._weights_key()
        if key != self._packed_key:
            n, _, h, w = x.shape
            reorder = torch.ops.mkldnn._reorder_convolution_weight
            self._packed = [
                reorder(c.weight, [d, d], _STRIDE, [d, d], 1, [n, c.in_channels, h, w])
                for c, d in zip(self._convs, self.dilations, strict=True)
            ]
            self._packed_key = key
        return self._packed

    def _fused_residual(self, x: torch.Tensor) -> torch.Tensor:
        conv = torch.ops.mkldnn._convolution_pointwise
        h = x
        last = len(self._convs) - 1
        layers = zip(self._convs, self._packed_weights(x), self.dilations, strict=True)
        for i, (c, w, d) in enumerate(layers):
            post = "none" if i == last else "relu"
            h = conv(h, w, c.bias, [d, d], _STRIDE, [d, d], 1, post, [], "")
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (N, C, H, W); returns the same shape."""
        fused = (
            self._fused
            and not self.training
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self._convs[0].weight.device.type == "cpu"
        )
        if not fused:
            return super().forward(x)
        try:
            return x[:, : self.in_channels] - self._fused_residual(x)
        except RuntimeError as exc:  # a torch build whose private operators changed
            log.warning("fused oneDNN inference unavailable (%s); using eager PyTorch", exc)
            self._fused = False
            return super().forward(x)

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.models import DnCNN, FusedDnCNN, load_model
from fluoden_batch.models.fused import fused_ops_available

needs_fused = pytest.mark.skipif(
    not fused_ops_available(), reason="this torch build has no oneDNN fused convolution"
)


def _pair(depth: int = 4, width: int = 8, seed: int = 0) -> tuple[DnCNN, FusedDnCNN]:
    torch.manual_seed(seed)
    eager = DnCNN(depth, width, batch_norm=False).eval()
    return eager, FusedDnCNN(eager)


@needs_fused
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 2),
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    channels_last=st.booleans(),
)
def test_fused_forward_equals_eager(n, h, w, channels_last):
    eager, fused = _pair()
    x = torch.randn(n, 1, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = eager(x), fused(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    assert fused._packed, "the fused path was not taken"


@needs_fused
def test_weights_changed_in_place_are_repacked():
    eager, fused = _pair()
    x = torch.randn(1, 1, 33, 21)
    with torch.inference_mode():
        fused(x)
    with torch.no_grad():
        for model in (eager, fused):
            model.body[2].weight.mul_(-2.0)
            model.body[0].bias.add_(0.5)
    with torch.inference_mode():
        assert torch.allclose(fused(x), eager(x), atol=1e-5)


def test_gradients_use_the_eager_forward():
    eager, fused = _pair()
    x = torch.randn(1, 1, 16, 16, requires_grad=True)
    out = fused(x)
    out.sum().backward()
    assert x.grad is not None and not fused._packed
    assert torch.allclose(out, eager(x), atol=1e-5)


def test_batch_norm_models_must_be_folded_first():
    with pytest.raises(ValueError, match="fold"):
        FusedDnCNN(DnCNN(3, 4, batch_norm=True))


@needs_fused
def test_shipped_model_loads_fused_and_matches_eager():
    loaded = load_model("dncnn-small")
    assert isinstance(loaded.module, FusedDnCNN)
    eager = DnCNN(loaded.module.depth, loaded.module.width, batch_norm=False).eval()
    eager.load_state_dict(loaded.module.state_dict())
    x = torch.rand(1, 1, 57, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(x), eager(x), atol=1e-5)

"""CUDA inference (marked gpu; skipped on machines without a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fluoden_batch.config import DEFAULT_MODEL
from fluoden_batch.models import load_model
from fluoden_batch.restore.inference import infer_plane, inference_network

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

BOUNDS = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 5e-3}  # max |cuda - cpu| in model units


@pytest.mark.parametrize("phase_split", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_matches_cpu(precision, phase_split):
    plane = np.random.default_rng(0).random((700, 900), dtype=np.float32)
    on_cpu = inference_network(load_model(DEFAULT_MODEL).module, phase_split=phase_split)
    cuda_model = load_model(DEFAULT_MODEL, device="cuda").module
    on_gpu = inference_network(cuda_model, phase_split=phase_split)
    cpu = infer_plane(on_cpu, plane, tile=512)
    gpu = infer_plane(on_gpu, plane, 512, precision)
    assert np.abs(cpu - gpu).max() < BOUNDS[precision]

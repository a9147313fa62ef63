"""Blocks x torch threads = the worker's cores: a worker that runs several blocks at once
(``--nthreads`` > 1, as a SLURM job of ``cores / processes`` threads) gives torch one
thread per block, not one per worker thread each."""

from __future__ import annotations

import pytest
import torch
from distributed import Client, LocalCluster

from conftest import make_tiny_weights
from fluoden_batch.models.weights import load_model
from fluoden_batch.pipeline.worker import worker_model

pytestmark = pytest.mark.distributed


def torch_threads_after_loading(path: str, digest: str) -> int:
    """torch's thread count in this process once the block code has loaded a model."""
    worker_model(path, digest, "cpu")
    return torch.get_num_threads()


def test_a_worker_of_two_threads_runs_torch_on_one_per_block(tmp_path):
    weights = make_tiny_weights(tmp_path / "w.safetensors")
    digest = load_model(weights).digest
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", memory_limit="2GiB",
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        (nthreads,) = client.nthreads().values()
        future = client.submit(torch_threads_after_loading, str(weights), digest)
        threads = future.result(timeout=120)
    assert nthreads == 2  # two blocks at once
    assert threads == 1  # each on one torch thread (was: 2 x 2 threads on 2 cores)


def test_outside_a_worker_torch_keeps_its_setting(tmp_path):
    weights = make_tiny_weights(tmp_path / "w.safetensors")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch_threads_after_loading(str(weights), load_model(weights).digest) == 2
    finally:
        torch.set_num_threads(threads)

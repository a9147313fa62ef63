"""Faults on a real multi-process LocalCluster: dying workers, poison blocks, signals, memory."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from distributed import WorkerPlugin
from test_resume import chunk_bytes

from conftest import make_tiny_weights, start_cli_denoise, write_image
from fluoden_batch.compute import dask_client
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import BlockError
from fluoden_batch.io.store import MARKER_DIR
from fluoden_batch.pipeline import execute, plan

pytestmark = pytest.mark.distributed


POISON_ID = "1.2.1"  # the block at z=1, y=64, x=32


class PoisonBlock(WorkerPlugin):
    """Kills the worker process (os._exit) whenever it starts block POISON_ID."""

    name = "poison-block"

    def setup(self, worker):
        from distributed.worker import thread_state

        import fluoden_batch.pipeline.worker as block_module

        self.original = original = block_module.halo_window

        def poisoned(*args, **kwargs):
            if str(getattr(thread_state, "key", "")).endswith(f"block-{POISON_ID}"):
                os._exit(1)
            return original(*args, **kwargs)

        block_module.halo_window = poisoned

    def teardown(self, worker):
        import fluoden_batch.pipeline.worker as block_module

        block_module.halo_window = self.original


@pytest.fixture(scope="module")
def fault_client():
    with dask_client(workers=2, dashboard_address="127.0.0.1:0", memory_limit="2GiB") as c:
        yield c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    weights = make_tiny_weights(tmp / "w.safetensors", depth=6, width=16)
    data = np.random.default_rng(5).integers(0, 4000, (2, 256, 256), dtype=np.uint16)
    inp = write_image(tmp / "in.zarr", data, "zyx", (1, 32, 32))
    return tmp, weights, inp


def config(dataset, out: Path, **kw) -> DenoiseConfig:
    tmp, weights, inp = dataset
    return DenoiseConfig(input=inp, output=tmp / out, model=str(weights), block_min=32, **kw)


@pytest.fixture(scope="module")
def clean_run(fault_client, dataset):
    cfg = config(dataset, Path("clean.zarr"))
    execute(plan(cfg), fault_client)
    return cfg.output


def test_worker_killed_mid_run_output_identical(fault_client, dataset, clean_run):
    cfg = config(dataset, Path("killed_worker.zarr"))
    p = plan(cfg)
    result = {}
    runner = threading.Thread(target=lambda: result.update(r=execute(p, fault_client)))
    runner.start()
    markers = cfg.output / MARKER_DIR
    while len(list(markers.glob("*.json"))) < 10 and runner.is_alive():
        time.sleep(0.01)
    victim = next(iter(fault_client.scheduler_info()["workers"]))
    with pytest.raises(Exception):  # noqa: B017 - the worker dies before it can answer
        fault_client.run(os._exit, 1, workers=[victim])
    runner.join(timeout=120)
    assert "r" in result, "the run did not finish after a worker died"
    assert result["r"].blocks_total == len(list(markers.glob("*.json")))
    assert chunk_bytes(cfg.output) == chunk_bytes(clean_run)


def test_poison_block_fails_alone_and_rerun_retries_only_it(fault_client, dataset, clean_run):
    cfg = config(dataset, Path("poison.zarr"))
    fault_client.register_plugin(PoisonBlock())
    try:
        with pytest.raises(BlockError) as info:
            execute(plan(cfg), fault_client)
    finally:
        fault_client.unregister_worker_plugin(PoisonBlock.name)  # teardown removes the poison
    message = str(info.value)
    block_id = POISON_ID
    assert f"block {block_id} of" in message and "in.zarr" in message
    assert "KilledWorker" in message and "1 of 128 blocks failed" in message
    p = plan(cfg)
    assert [b.id for b in p.pending] == [block_id]
    execute(p, fault_client)
    assert chunk_bytes(cfg.output) == chunk_bytes(clean_run)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_keeps_finished_blocks(dataset, clean_run, sig, fault_client):
    tmp, weights, inp = dataset
    out = tmp / f"signal-{sig.name}.zarr"
    proc = start_cli_denoise(
        inp, out, weights, 1, 5, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    markers = out / MARKER_DIR
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again" in " ".join(err.split())
    done = len(list(markers.glob("*.json")))
    assert 5 <= done < 128
    p = plan(config(dataset, out.relative_to(tmp)))
    assert len(p.pending) == 128 - done
    execute(p, fault_client)
    assert chunk_bytes(out) == chunk_bytes(clean_run)


def test_memory_limit_too_small_is_a_clear_failure(tmp_path):
    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=6, width=16)
    data = np.zeros((1, 2048, 2048), dtype=np.uint16)
    inp = write_image(tmp_path / "big.zarr", data, "zyx", (1, 2048, 2048))
    cfg = DenoiseConfig(
        input=inp,
        output=tmp_path / "oom.zarr",
        model=str(weights),
        tile=4096,
        memory_limit="600MiB",
    )
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        dask_client(workers=1, dashboard_address="127.0.0.1:0", memory_limit="600MiB") as c,
        pytest.raises(BlockError) as info,
    ):
        execute(plan(cfg), c)
    assert "out of memory?" in str(info.value) and "600MiB" in str(info.value)

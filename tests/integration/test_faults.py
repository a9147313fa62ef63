"""Faults on a real multi-process LocalCluster: dying workers, poison blocks, signals, memory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from distributed import WorkerPlugin

from conftest import chunk_bytes, make_tiny_weights, start_cli_denoise, write_image
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


@pytest.fixture
def small_fs(tmp_path):
    """A 512 KiB tmpfs (needs root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(mount: Path, pages_left: int) -> Path:
    """Fill ``mount`` but ``pages_left`` free 4 KiB pages; returns the filler file."""
    st = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(bytes(st.f_bavail * st.f_frsize - pages_left * 4096))
    return filler


def test_disk_full_at_every_step_of_creating_out_then_rerun(small_fs, tmp_path):
    """OUT on a full disk, with 0, 1, 2 ... free pages: each creation step fails in turn
    (the lock, the group, the array, the attributes; then block writes). Every failure
    is one line (blocks: the failed-blocks list) and exit 2, and leaves nothing or an OUT
    that the same command, once space is freed, accepts and completes byte-identically."""
    from typer.testing import CliRunner

    from fluoden_batch.cli import app

    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=4, width=8)
    data = np.random.default_rng(2).integers(0, 4000, (2, 64, 64), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    clean = tmp_path / "clean.zarr"
    execute(plan(DenoiseConfig(input=inp, output=clean, model=str(weights), block_min=32)), None)
    out = small_fs / "out.zarr"
    args = ["denoise", str(inp), str(out), "--model", str(weights), "--block-min", "32"]
    seen = []
    for pages in range(40):
        filler = fill(small_fs, pages)
        result = CliRunner().invoke(app, args)
        text = " ".join(result.output.split())
        filler.unlink()
        if result.exit_code == 0:
            break
        assert result.exit_code == 2 and "No space left on device" in text, result.output
        assert "Traceback" not in result.output
        step = next((s for s in ("cannot write to", "cannot create") if s in text), "later")
        seen.append(step)
        if step == "later":  # blocks or the summary: a valid OUT, which the rerun resumes
            assert out.exists() and "kept" in text, result.output
        else:  # the lock or the creation: one line, and nothing left behind
            assert len(result.output.strip().splitlines()) == 1, result.output
            assert not out.exists(), f"{pages} free pages: {sorted(out.rglob('*'))}"
        rerun = CliRunner().invoke(app, args)
        assert rerun.exit_code == 0, rerun.output
        assert chunk_bytes(out) == chunk_bytes(clean)
        shutil.rmtree(out)
    assert {"cannot write to", "cannot create", "later"} <= set(seen), seen


def test_failed_creation_waits_for_zarr_writes_still_in_flight(small_fs, tmp_path, monkeypatch):
    """zarr writes an array's metadata and its group's at once; when one fails for want of
    space the other may land later. Here it is held back 0.3 s: the failed creation still
    leaves nothing behind once it has landed (CI saw OUT's zarr.json come back)."""
    import zarr.storage._local as local
    from typer.testing import CliRunner

    from fluoden_batch.cli import app

    put = local._put

    def late_put(path, value, exclusive=False):
        if exclusive:  # zarr's write of the parent group's metadata, if not there yet
            time.sleep(0.3)
        return put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", late_put)
    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=4, width=8)
    data = np.random.default_rng(2).integers(0, 4000, (2, 64, 64), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    out = small_fs / "out.zarr"
    filler = fill(small_fs, 2)  # room for the lock and the group, not for the array
    result = CliRunner().invoke(app, ["denoise", str(inp), str(out), "--model", str(weights)])
    filler.unlink()
    time.sleep(0.6)
    assert result.exit_code == 2 and "cannot create" in result.output, result.output
    assert not out.exists(), sorted(out.rglob("*"))


def test_unfinished_creation_of_out_is_redone_by_the_rerun(dataset, clean_run):
    """What a run killed while creating OUT leaves (its lock, a group without provenance
    or markers folder) does not block the rerun."""
    tmp = dataset[0]
    out = tmp / "unfinished.zarr"
    code = (
        "import os, sys, zarr; from pathlib import Path; "
        "from fluoden_batch.io.lock import OutputLock; out = Path(sys.argv[1]); "
        "lock = OutputLock.acquire(out); zarr.open_group(str(out), mode='a'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    assert (out / ".fluoden" / "lock").exists() and (out / "zarr.json").exists()
    execute(plan(config(dataset, out.relative_to(tmp))), None)
    assert chunk_bytes(out) == chunk_bytes(clean_run)

"""One run per output: OUT's lock refuses a second run (also with --overwrite), a stale
lock never blocks a rerun, and a run that lost OUT writes nothing more into it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from conftest import chunk_bytes, make_tiny_weights, write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import OutputError
from fluoden_batch.io.lock import STALE_AFTER_S, lock_path
from fluoden_batch.io.store import MARKER_DIR
from fluoden_batch.pipeline import execute, finish, plan
from fluoden_batch.pipeline.run import run_plan
from fluoden_batch.pipeline.worker import process_block

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lock")
    weights = make_tiny_weights(tmp / "w.safetensors", depth=6, width=16)
    data = np.random.default_rng(7).integers(0, 4000, (2, 256, 256), dtype=np.uint16)
    inp = write_image(tmp / "in.zarr", data, "zyx", (1, 32, 32))
    clean = tmp / "clean.zarr"
    execute(plan(config(tmp, weights, inp, clean)), None)
    return tmp, weights, inp, clean


def config(tmp: Path, weights: Path, inp: Path, out: Path, **kw) -> DenoiseConfig:
    return DenoiseConfig(input=inp, output=out, model=str(weights), block_min=32, **kw)


def cli_args(dataset, out: Path, *extra: str) -> list[str]:
    _, weights, inp, _ = dataset
    return ["denoise", str(inp), str(out), "--model", str(weights), "--block-min", "32",
            "--workers", "0", *extra]  # fmt: skip


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.mark.slow
def test_second_run_and_overwrite_are_refused_while_a_run_holds_out(dataset):
    """The issue's case: run B (--overwrite, float32) must not replace the array that run
    A (uint16) is writing. A is a real CLI process, stopped (SIGSTOP) while B and C try,
    so that it surely holds OUT then; resumed, it completes, and every chunk decodes."""
    tmp, _, _, clean = dataset
    out = tmp / "contended.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluoden_batch.cli", *cli_args(dataset, out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list((out / MARKER_DIR).glob("*.json"))) < 3 and proc.poll() is None:
            assert time.monotonic() < deadline, "run A wrote no block in 120 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, "run A ended before it could be contended"
        same = runner.invoke(app, cli_args(dataset, out))
        replace = runner.invoke(app, cli_args(dataset, out, "--dtype", "float32", "--overwrite"))
        for result in (same, replace):
            text = one_line(result.output)
            assert result.exit_code == 2, text
            assert "in use by another fluoden run" in text and f"pid {proc.pid} on host" in text
            assert len(result.output.strip().splitlines()) == 1, result.output
        assert zarr.open_array(str(out), path="0").dtype == np.uint16
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not lock_path(out).exists()  # released at the end of the run
    assert chunk_bytes(out) == chunk_bytes(clean)  # every chunk is run A's, none undecodable
    assert zarr.open_group(str(out), mode="r").attrs["fluoden"]["complete"] is True
    replaced = runner.invoke(app, cli_args(dataset, out, "--dtype", "float32", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert zarr.open_array(str(out), path="0")[:].dtype == np.float32


def killed_holder(out: Path) -> dict:
    """Leave the lock of a process that took it and was killed (it exited without
    releasing it); returns the lock's fields."""
    code = (
        "import os, sys; from pathlib import Path; from fluoden_batch.io.lock import OutputLock; "
        "lock = OutputLock.acquire(Path(sys.argv[1])); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    return json.loads(lock_path(out).read_text())


def test_lock_of_a_killed_run_on_this_machine_does_not_block_the_rerun(dataset):
    tmp, weights, inp, clean = dataset
    out = tmp / "killed.zarr"
    holder = killed_holder(out)
    assert holder["pid"] != os.getpid() and lock_path(out).exists()
    p = plan(config(tmp, weights, inp, out))  # at once: the holder's process is gone
    assert json.loads(lock_path(out).read_text())["token"] == p.lock.token != holder["token"]
    execute(p, None)
    assert chunk_bytes(out) == chunk_bytes(clean)


def test_lock_from_another_machine_blocks_until_its_heartbeat_is_stale(dataset):
    tmp, weights, inp, clean = dataset
    out = tmp / "elsewhere.zarr"
    fields = killed_holder(out) | {"machine": "another-machine", "host": "node7", "pid": 4242}
    lock_path(out).write_text(json.dumps(fields))
    held = r"in use by another fluoden run \(pid 4242 on host node7"
    with pytest.raises(OutputError, match=held):
        plan(config(tmp, weights, inp, out))
    assert json.loads(lock_path(out).read_text()) == fields  # left alone
    beat = time.time() - STALE_AFTER_S - 5
    os.utime(lock_path(out), (beat, beat))
    execute(plan(config(tmp, weights, inp, out)), None)
    assert chunk_bytes(out) == chunk_bytes(clean)


def take_over(out: Path) -> None:
    """What a run on another machine does when it judges this run's lock stale."""
    fields = json.loads(lock_path(out).read_text())
    fields |= {"token": "0" * 32, "machine": "another-machine", "host": "node7", "pid": 4242}
    lock_path(out).write_text(json.dumps(fields))


def test_a_run_that_lost_out_writes_nothing_more(dataset):
    tmp, weights, inp, _ = dataset
    out = tmp / "lost.zarr"
    p = plan(config(tmp, weights, inp, out))
    take_over(out)
    block = p.pending[0]
    with pytest.raises(OutputError, match=r"no longer held by this run.*pid 4242 on host node7"):
        process_block(block, p.job)  # the worker's check, before it writes chunks
    with pytest.raises(OutputError, match="no longer held by this run"):
        execute(p, None)  # the run's check, before any block
    chunks = [f for f in (out / "0").rglob("*") if f.is_file() and f.name != "zarr.json"]
    assert not chunks and not list((out / MARKER_DIR).iterdir())
    assert json.loads(lock_path(out).read_text())["token"] == "0" * 32  # not released by p


def test_one_process_newer_plan_supersedes_an_idle_one_and_a_running_one_refuses(dataset):
    tmp, weights, inp, clean = dataset
    out = tmp / "same-process.zarr"
    cfg = config(tmp, weights, inp, out)
    idle = plan(cfg)
    p = plan(cfg)  # the API's "plan twice": the newer one holds OUT
    with pytest.raises(OutputError, match="no longer held by this run"):
        execute(idle, None)
    started, go = threading.Event(), threading.Event()

    def gated(block, job):  # the first block waits until the contender has been refused
        started.set()
        go.wait(60)
        return process_block(block, job)

    run = threading.Thread(target=run_plan, args=(p, None, gated, finish, "fluoden"))
    run.start()
    try:
        assert started.wait(60)
        with pytest.raises(OutputError, match="being written by a run in this process"):
            plan(cfg.model_copy(update={"overwrite": True, "dtype": "float32"}))
    finally:
        go.set()
        run.join(timeout=300)
    assert chunk_bytes(out) == chunk_bytes(clean)
    assert not lock_path(out).exists()


@pytest.mark.distributed
def test_a_run_taken_over_mid_way_stops_writing_on_every_worker(dataset, client):
    """Workers check the token before each chunk write and marker: after a takeover only
    the blocks already past their check (one per worker thread) may still land."""
    tmp, weights, inp, _ = dataset
    out = tmp / "taken-over.zarr"
    p = plan(config(tmp, weights, inp, out))
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            execute(p, client)
        except BaseException as exc:  # the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    markers = out / MARKER_DIR
    while len(list(markers.glob("*.json"))) < 5 and thread.is_alive():
        time.sleep(0.005)
    take_over(out)
    at_takeover = len(list(markers.glob("*.json")))
    thread.join(timeout=120)
    assert isinstance(outcome.get("error"), OutputError), outcome
    assert "no longer held by this run" in str(outcome["error"])
    threads = sum(client.nthreads().values())
    assert at_takeover >= 5 and len(list(markers.glob("*.json"))) <= at_takeover + threads
    assert at_takeover < len(p.blocks), "the run ended before the takeover"

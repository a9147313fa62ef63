"""``fluoden denoise --profile`` on a real SLURM: workers are batch jobs submitted with sbatch.

Needs a running SLURM whose node can run two one-core jobs: ``.ci/slurm-up.sh`` starts a
single-node one on this machine (``make test`` calls it first), else these tests skip.
Each run is compared byte for byte with an in-process run (``--workers 0``) of the same
input; the worker jobs' log files (one per job, ``log_directory``) count the jobs.

* a worker job cancelled (``scancel``) mid-run: the job keeper submits a new one and the run
  completes (one job of two worker processes: the multi-worker job path);
* workers retiring before their walltime (one minute, so ``--lifetime 37s``) mid-run: new
  jobs replace them and the run completes (two jobs of one worker: the single-worker
  path). The test retires every worker after the first blocks with the call ``--lifetime``
  makes when it runs out (``Worker.close_gracefully``), instead of waiting 37 s with a run
  sized to outlast it: a fresh worker spends about 10 s importing torch whatever the
  machine's speed, so no one dataset outlasts the lifetime on a fast machine and finishes
  in time on a loaded one. What SLURM itself does at the walltime is what ``scancel``
  does (SIGTERM, then SIGKILL): the first test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import chunk_bytes, make_tiny_weights, write_image
from fluoden_batch.compute import load_profile, render_job_script
from fluoden_batch.io.store import MARKER_DIR

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]

FLUODEN = Path(sys.executable).parent / "fluoden"
BLOCKS = 96  # 6 planes of 1024 x 1024 in blocks of 256 x 256 (6 Mpx)
RUN_TIMEOUT = 150  # seconds for one SLURM run before the test gives up


def slurm_up() -> str | None:
    """None when sbatch/squeue/scancel exist and a node takes jobs, else why not."""
    for tool in ("sbatch", "sinfo", "squeue", "scancel"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (start a test SLURM with .ci/slurm-up.sh)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15
        ).stdout.split()
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s (SLURM is down: .ci/slurm-up.sh)"
    if not {"idle", "mixed"} & set(states):
        return f"no SLURM node takes jobs (sinfo: {states or 'no answer'}; .ci/slurm-up.sh)"
    return None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Input, weights and the in-process reference output, made once for the module."""
    why = slurm_up()
    if why is not None:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("slurm")
    weights = make_tiny_weights(tmp / "w.safetensors", depth=6, width=16)
    data = np.random.default_rng(17).integers(0, 4000, (6, 1024, 1024), dtype=np.uint16)
    inp = write_image(tmp / "in.zarr", data, "zyx", (1, 256, 256))
    reference = tmp / "reference.zarr"
    denoise(inp, reference, weights, "--workers", "0").check_returncode()
    assert len(markers(reference)) == BLOCKS
    return tmp, inp, weights, reference


def denoise(
    inp: Path, out: Path, weights: Path, *args: str, **popen: object
) -> subprocess.CompletedProcess[str]:
    """``fluoden denoise`` run to its end (at most RUN_TIMEOUT seconds)."""
    cmd = [str(FLUODEN), "denoise", str(inp), str(out), "--model", str(weights),
           "--block-min", "256", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, **popen)


def markers(out: Path) -> list[Path]:
    return list((out / MARKER_DIR).glob("*.json"))


def job_ids(name: str) -> list[str]:
    """The ids of the jobs called ``name`` that SLURM still lists."""
    out = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def slurm_profile(tmp: Path, name: str, **settings: object) -> Path:
    """A profile for this machine: scheduler on 127.0.0.1, this interpreter, small jobs."""
    profile = {
        "cluster": "slurm",
        "memory": "3GiB",
        "job_name": name,
        "scheduler_host": "127.0.0.1",
        "local_directory": "${TMPDIR:-/tmp}",  # TMPDIR is unset in the jobs: /tmp
        "log_directory": str(tmp / name),
        "python": sys.executable,
        "dashboard_address": "127.0.0.1:0",
        **settings,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def environment() -> dict[str, str]:
    """This environment without TMPDIR (sbatch passes it on to the jobs); a job whose
    workers all left is forgotten, and so replaced, 3 s after they left (default 15 s)."""
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    return {**env, "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "3s"}


class Run:
    """``fluoden denoise`` started in the background, in its own process group."""

    def __init__(self, inp: Path, out: Path, weights: Path, profile: Path, env: dict[str, str]):
        cmd = [str(FLUODEN), "denoise", str(inp), str(out), "--model", str(weights),
               "--block-min", "256", "--profile", str(profile)]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=profile.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip

    def finish(self, name: str) -> tuple[int, str]:
        """Wait for the run; on a timeout end it and its jobs, and fail."""
        try:
            output, _ = self.proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            output, _ = self.proc.communicate()
            subprocess.run(["scancel", "-n", name], check=False)
            pytest.fail(f"the run did not end in {RUN_TIMEOUT} s:\n{output[-3000:]}")
        return self.proc.returncode, output

    def stop(self, name: str) -> None:
        """End the run, if it still runs, and every job of it (a failed test's clean-up)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
        subprocess.run(["scancel", "-n", name], check=False)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {timeout} s")
        time.sleep(0.1)


def test_cancelled_worker_job_is_replaced_and_the_output_is_identical(dataset):
    tmp, inp, weights, reference = dataset
    name = f"fluoden-t{uuid.uuid4().hex[:6]}"
    # one job of two worker processes, one core each; walltime far beyond the run
    profile = slurm_profile(tmp, name, cores=2, processes=2, walltime="10", n_workers=2)
    out = tmp / "cancelled.zarr"
    started = time.monotonic()
    run = Run(inp, out, weights, profile, environment())
    try:
        wait_for(lambda: len(markers(out)) >= 4, 90, "4 finished blocks")
        (victim,) = job_ids(name)
        subprocess.run(["scancel", victim], check=True)
        done_at_cancel = len(markers(out))
        code, output = run.finish(name)
    finally:
        run.stop(name)
    seconds = time.monotonic() - started
    assert code == 0, output[-3000:]
    assert done_at_cancel < BLOCKS, "the run ended before the job was cancelled"
    logs = sorted(p.name for p in (tmp / name).glob("*.err"))
    assert len(logs) >= 2, f"no new job after the cancelled one: {logs}"
    assert f"{name}-{victim}.err" in logs
    assert chunk_bytes(out) == chunk_bytes(reference)
    assert len(markers(out)) == BLOCKS
    wait_for(lambda: not job_ids(name), 30, "the end of every worker job")
    print(f"scancel run: {seconds:.0f} s, {len(logs)} jobs, {done_at_cancel} blocks at scancel")


def scheduler_address(log_directory: Path) -> str:
    """The run's scheduler, as a worker job's log names it."""
    for log in log_directory.glob("*.err"):
        for line in log.read_text().splitlines():
            if "Registered to:" in line:
                return line.split()[-1]
    raise AssertionError(f"no worker registered yet (logs in {log_directory})")


def test_workers_retiring_before_the_walltime_are_replaced_and_the_output_is_identical(dataset):
    from distributed import Client

    def retire_as_lifetime_does(dask_worker) -> None:
        """What ``--lifetime`` does when it runs out (a local function: the workers cannot
        import this test module, so it travels by value)."""
        dask_worker.loop.add_callback(
            dask_worker.close_gracefully, reason="worker-lifetime-reached"
        )

    def heap_settings(dask_worker) -> tuple[str | None, bool]:
        """The worker's MALLOC_TRIM_THRESHOLD_ and whether the run's HeapThresholds
        plugin set glibc's thresholds in it."""
        import os

        plugin = dask_worker.plugins["fluoden-heap-thresholds"]
        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), plugin.applied

    tmp, inp, weights, reference = dataset
    name = f"fluoden-t{uuid.uuid4().hex[:6]}"
    # two jobs of one worker each, SLURM's shortest walltime: their workers get --lifetime
    profile = slurm_profile(tmp, name, cores=1, processes=1, walltime="1", n_workers=2)
    script = render_job_script(load_profile(profile))
    assert "#SBATCH -t 1" in script and "--lifetime 37s --lifetime-stagger 3s" in script
    out = tmp / "lifetime.zarr"
    started = time.monotonic()
    run = Run(inp, out, weights, profile, environment())
    try:
        wait_for(lambda: len(markers(out)) >= 4, 90, "4 finished blocks")
        with Client(scheduler_address(tmp / name), timeout="10s") as client:
            heap = client.run(heap_settings)
            client.run(retire_as_lifetime_does)  # every worker at once: none is left
        done_at_retirement = len(markers(out))
        code, output = run.finish(name)
    finally:
        run.stop(name)
    seconds = time.monotonic() - started
    assert code == 0, output[-3000:]
    # SLURM workers start with Dask's malloc setting; the run's plugin undid its cost
    assert heap and set(heap.values()) == {("65536", True)}, heap
    assert done_at_retirement < BLOCKS, "the run ended before the workers retired"
    logs = list((tmp / name).glob("*.err"))
    retired = [p for p in logs if "worker-lifetime-reached" in p.read_text()]
    assert len(retired) >= 2 and len(logs) >= 3, f"{len(retired)} retired, {len(logs)} jobs"
    assert chunk_bytes(out) == chunk_bytes(reference)
    assert len(markers(out)) == BLOCKS
    wait_for(lambda: not job_ids(name), 30, "the end of every worker job")
    print(f"retirement run: {seconds:.0f} s, {len(logs)} jobs, {done_at_retirement} blocks before")

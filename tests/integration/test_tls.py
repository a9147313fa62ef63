"""TLS on real clusters: a local run denoises over tls://, clients without the certificates
are refused, certificate directories work for profiles, attaching, and (fake) SLURM jobs."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from distributed import Client

from conftest import write_image
from fluoden_batch.compute import dask_client, gpu_resources, load_profile, profile_cluster
from fluoden_batch.compute.security import make_security, write_self_signed
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import denormalise, normalise
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.inference import infer_plane

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def tls_client():
    with dask_client(
        workers=1, tls=True, dashboard_address="127.0.0.1:0", memory_limit="2GiB"
    ) as client:
        yield client


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory) -> Path:
    """A valid certificate set that the running cluster does not trust."""
    folder = tmp_path_factory.mktemp("other-certs")
    write_self_signed(folder)
    return folder


def connect_error(address: str, security=None, timeout: str = "3s") -> BaseException | None:
    """Try a client connection; the exception it fails with, or None if it connected.

    Asynchronous, so the failed client is closed here rather than in a later ``__del__``.
    """

    async def attempt() -> BaseException | None:
        client = Client(address, security=security, timeout=timeout, asynchronous=True)
        try:
            await client
        except Exception as exc:
            return exc
        finally:
            await client.close()
        return None

    return asyncio.run(attempt())


def test_tls_cluster_denoises_a_small_store(tls_client, tiny_weights, tmp_path):
    info = tls_client.scheduler_info()
    assert tls_client.scheduler.address.startswith("tls://127.0.0.1:")
    assert info["workers"] and all(a.startswith("tls://127.0.0.1:") for a in info["workers"])
    assert "127.0.0.1" in tls_client.dashboard_link

    data = (np.random.default_rng(3).random((1, 40, 48)) * 1000).astype(np.float32)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 16, 16))
    out = tmp_path / "out.zarr"
    p = plan(DenoiseConfig(input=inp, output=out, model=str(tiny_weights), block_min=16))
    result = execute(p, tls_client)
    assert result.blocks_run == result.blocks_total == len(p.blocks) > 1 and not result.failed

    got = zarr.open_array(str(out), path="0")[:]
    module = load_model(tiny_weights).module
    lo, hi = p.job.channel_ranges[0]
    expected = denormalise(infer_plane(module, normalise(data[0], lo, hi)), lo, hi)
    assert np.abs(got[0] - expected).max() < 1e-4 * np.ptp(data)


def test_plain_tcp_client_is_refused(tls_client):
    address = tls_client.scheduler.address.replace("tls://", "tcp://")
    t0 = time.monotonic()
    error = connect_error(address)
    assert isinstance(error, OSError)  # the TLS listener drops the plain-TCP handshake
    assert time.monotonic() - t0 < 10


def test_tls_client_without_certificates_fails(tls_client):
    error = connect_error(tls_client.scheduler.address)
    assert error is not None and "TLS" in str(error)


def test_client_with_untrusted_certificates_is_refused(tls_client, other_certs):
    error = connect_error(tls_client.scheduler.address, make_security(other_certs))
    assert error is not None and "TLS" in str(error)


def test_certificate_directory_for_a_profile_and_for_attaching(tiny_weights, tmp_path):
    certs = tmp_path / "certs"
    write_self_signed(certs)
    assert stat.S_IMODE((certs / "key.pem").stat().st_mode) == 0o600
    profile = tmp_path / "local.yaml"
    profile.write_text(
        yaml.safe_dump({"cluster": "local", "dashboard_address": "127.0.0.1:0", "n_workers": 1})
    )
    with dask_client(profile=profile, tls=certs, memory_limit="2GiB") as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2, 3]).result() == 6
        # a second client with the same files attaches (tcp:// is upgraded to tls://)
        with dask_client(scheduler=address.replace("tls://", "tcp://"), tls=certs) as other:
            assert other.submit(len, "abc").result() == 3
        assert connect_error(address.replace("tls://", "tcp://")) is not None


FAKE_SBATCH = """#!/usr/bin/env bash
# stands in for SLURM's sbatch: run the job script in its own session, print its id
set -e
dir="$(dirname "$0")"
cp "$1" "$dir/job-$$.sh"
setsid bash "$dir/job-$$.sh" > "$dir/job-$$.log" 2>&1 < /dev/null &
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = """#!/usr/bin/env bash
# stands in for SLURM's scancel: end the job's process group
for id in "$@"; do
  echo "$id" >> "$(dirname "$0")/cancelled"
  kill -TERM -- "-$id" 2>/dev/null || true
done
"""


def test_slurm_gpu_profile_over_tls_with_a_fake_batch_system(tmp_path, monkeypatch):
    """The job script dask-jobqueue renders from a GPU profile really starts a worker that
    joins over TLS with GPU=1, runs a GPU task, and is cancelled at the end."""
    pytest.importorskip("dask_jobqueue")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    certs = tmp_path / "certs"
    write_self_signed(certs)
    profile_path = tmp_path / "gpu.yaml"
    profile_path.write_text(
        yaml.safe_dump(
            {
                "cluster": "slurm",
                "partition": "gpu",
                "cores": 1,
                "memory": "1GiB",
                "walltime": "00:10:00",
                "gpu": True,
                "interface": "lo",
                "python": sys.executable,
                "job_script_prologue": ["export FLUODEN_FAKE_SLURM=1"],
                "dashboard_address": "127.0.0.1:0",
                "n_workers": 1,
            }
        )
    )
    profile = load_profile(profile_path)
    with profile_cluster(profile, security=make_security(certs)) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        client.wait_for_workers(1, timeout=60)
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["resources"] == {"GPU": 1}
        future = client.submit(os.getenv, "FLUODEN_FAKE_SLURM", resources=gpu_resources(profile))
        assert future.result(timeout=30) == "1"
        script = next(bin_dir.glob("job-*.sh")).read_text()
        assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script
        assert "--resources GPU=1" in script and "--tls-ca-file" in script
    deadline = time.monotonic() + 20
    while not (bin_dir / "cancelled").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (bin_dir / "cancelled").read_text().split()

"""glibc heap settings of Dask workers (``compute.heap``): the local clusters' worker
environment without Dask's MALLOC_TRIM_THRESHOLD_, and the plugin that sets glibc's
thresholds in workers started with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml

from fluoden_batch.compute.heap import (
    DASK_MALLOC_TRIM,
    MALLOC_TRIM,
    HeapThresholds,
    worker_environ,
)


@pytest.mark.parametrize("value", [65536, "65536"])
def test_dasks_malloc_trim_default_is_dropped_the_rest_kept(value):
    environ = {MALLOC_TRIM: value, "OMP_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        assert worker_environ() == {"OMP_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
        assert dask.config.get("distributed.nanny.pre-spawn-environ")[MALLOC_TRIM] == value


def test_a_malloc_trim_the_user_set_is_kept():
    environ = {MALLOC_TRIM: 1 << 20, "OMP_NUM_THREADS": 1}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        assert worker_environ() == environ


def test_dask_still_ships_the_default_we_drop():
    """If distributed changes its default, the comparison above must follow it (read from
    the file it ships, not the live config, which tests and users may change)."""
    import distributed

    shipped = yaml.safe_load((Path(distributed.__file__).parent / "distributed.yaml").read_text())
    assert (
        str(shipped["distributed"]["nanny"]["pre-spawn-environ"][MALLOC_TRIM]) == DASK_MALLOC_TRIM
    )


def test_dasks_value_left_in_this_process_by_an_earlier_nanny_is_removed(monkeypatch):
    """Workers inherit this process's environment, where an earlier nanny put Dask's value;
    another value there is the user's and stays."""
    environ = {MALLOC_TRIM: 65536, "OMP_NUM_THREADS": 1}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        monkeypatch.setenv(MALLOC_TRIM, DASK_MALLOC_TRIM)
        worker_environ()
        assert MALLOC_TRIM not in os.environ
        monkeypatch.setenv(MALLOC_TRIM, "131072")
        worker_environ()
        assert os.environ[MALLOC_TRIM] == "131072"


@pytest.mark.distributed
def test_local_workers_start_without_it(client):
    """The real LocalCluster's worker processes: no MALLOC_TRIM_THRESHOLD_, one BLAS thread."""
    seen = client.run(lambda: (os.environ.get(MALLOC_TRIM), os.environ.get("OMP_NUM_THREADS")))
    assert len(seen) == 2
    assert set(seen.values()) == {(None, "1")}


@pytest.mark.distributed
def test_the_local_profiles_workers_start_without_it():
    """``--profile local`` starts its own LocalCluster: the same environment."""
    from fluoden_batch.compute.clusters import profile_cluster
    from fluoden_batch.compute.profiles import load_profile

    with profile_cluster(load_profile("local"), workers=1) as client:
        seen = client.run(lambda: os.environ.get(MALLOC_TRIM))
    assert list(seen.values()) == [None]


def grow_in_a_new_process(**environ: str) -> str:
    """``grow_thresholds()`` in a fresh interpreter with ``environ`` added (mallopt changes
    the process it runs in: not this one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environ
    code = "from fluoden_batch.compute.heap import grow_thresholds; print(grow_thresholds())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_set_only_under_dasks_value():
    assert grow_in_a_new_process(**{MALLOC_TRIM: DASK_MALLOC_TRIM}) == "True"
    assert grow_in_a_new_process() == "False"
    assert grow_in_a_new_process(**{MALLOC_TRIM: "131072"}) == "False"  # the user's value
    mmap = {MALLOC_TRIM: DASK_MALLOC_TRIM, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    assert grow_in_a_new_process(**mmap) == "False"


@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_plugin_acts_in_workers_started_with_dasks_value():
    """A plain LocalCluster's nannies give its workers Dask's value (as SLURM and Kubernetes
    workers get it): the plugin sets the thresholds there; fluoden's own local workers
    start without the value, and the plugin leaves them alone."""
    from distributed import Client, LocalCluster

    from fluoden_batch.compute import dask_client

    def applied(dask_worker) -> tuple[str | None, bool]:
        plugin = dask_worker.plugins[HeapThresholds.name]
        return os.environ.get(MALLOC_TRIM), plugin.applied

    before = os.environ.get(MALLOC_TRIM)
    try:
        with (  # Dask's shipped setting (the user's configuration may say otherwise)
            dask.config.set({"distributed.nanny.pre-spawn-environ": {MALLOC_TRIM: 65536}}),
            LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(HeapThresholds())
            assert list(client.run(applied).values()) == [(DASK_MALLOC_TRIM, True)]
    finally:  # the nanny left its value in this process's environment
        os.environ.pop(MALLOC_TRIM, None)
        if before is not None:
            os.environ[MALLOC_TRIM] = before
    with dask_client(workers=1, dashboard_address="127.0.0.1:0") as client:
        assert list(client.run(applied).values()) == [(None, False)]


@pytest.mark.distributed
def test_the_client_sets_its_configuration_only_for_its_cluster():
    """Worker saturation and the workers' environment reach the cluster started here; the
    process's configuration is as before while the client is open, so a plain
    LocalCluster started meanwhile (a notebook's) gets the user's own."""
    from fluoden_batch.compute import dask_client

    keys = ("distributed.nanny.pre-spawn-environ", "distributed.scheduler.worker-saturation")
    user = {keys[0]: {MALLOC_TRIM: 65536}, keys[1]: 1.1}
    with (
        dask.config.set(user),
        dask_client(workers=1, dashboard_address="127.0.0.1:0") as client,
    ):
        assert {key: dask.config.get(key) for key in keys} == user
        assert list(client.run(lambda: os.environ.get(MALLOC_TRIM)).values()) == [None]
        saturation = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION
        )
        assert saturation == 1.0

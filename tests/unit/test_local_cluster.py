"""The worker environment of fluoden's local clusters (``compute.clusters.worker_environ``)."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest
import yaml

from fluoden_batch.compute.clusters import DASK_MALLOC_TRIM, MALLOC_TRIM, worker_environ


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

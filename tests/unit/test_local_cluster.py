"""The worker environment of fluoden's local clusters (``compute.clusters.worker_environ``)."""

from __future__ import annotations

import os

import dask
import pytest

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
    """If distributed changes its default, the comparison above must follow it."""
    import distributed  # noqa: F401  (loads distributed.yaml into dask.config)

    shipped = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert str(shipped.get(MALLOC_TRIM)) == DASK_MALLOC_TRIM


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

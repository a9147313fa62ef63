"""The Dask side: start a local cluster or attach to a running scheduler.

The pipeline only ever sees a :class:`distributed.Client`; where its workers live is
decided here. Local clusters bind the scheduler and the dashboard to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

from fluoden_batch.errors import FluodenError


def default_workers() -> int:
    """One single-threaded worker process per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
) -> Iterator[Client]:
    """A client on an existing scheduler, or on a new local cluster torn down afterwards.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); no cluster is started.
    workers : int, optional
        Worker processes of a local cluster (default: one per core).
    threads_per_worker : int
        Threads per worker; torch in each worker uses as many.
    memory_limit : str or float, optional
        Per-worker memory limit for a local cluster (Dask's syntax, e.g. ``"4GiB"``).
    dashboard_address : str
        Where a local cluster serves its dashboard (``":0"`` picks a free port).
    """
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise FluodenError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        with client:
            yield client
        return
    n = workers or default_workers()
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client

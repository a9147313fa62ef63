"""The Dask side: start a local cluster, attach to a running scheduler, or follow a profile.

The pipeline only ever sees a :class:`distributed.Client`; where its workers live is
decided here. Local clusters bind the scheduler and the dashboard to 127.0.0.1. Deploy
profiles (SLURM, Kubernetes, dask-cuda) start in :mod:`fluoden_batch.compute.clusters`,
TLS in :mod:`fluoden_batch.compute.security`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dask
from distributed import Client, LocalCluster
from distributed.security import Security

from fluoden_batch.compute.clusters import default_workers, profile_cluster
from fluoden_batch.compute.heap import HeapThresholds, worker_environ
from fluoden_batch.compute.profiles import load_profile
from fluoden_batch.compute.quiet import PRELOAD, QuietTaskErrors
from fluoden_batch.compute.security import make_security
from fluoden_batch.errors import FluodenError


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str = "127.0.0.1:8787",
    profile: Path | None = None,
    tls: bool | Path | None = None,
) -> Iterator[Client]:
    """A client on an existing scheduler, a profile's cluster or a new local cluster.

    Clusters started here are torn down on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786`` or ``tls://host:8786``); no
        cluster is started.
    workers : int, optional
        Worker processes of a local cluster (default: one per core), or the number of
        workers a profile's cluster is scaled to (default: the profile's ``n_workers``).
    threads_per_worker : int
        Threads per worker of a local cluster; torch in each worker uses as many.
    memory_limit : str or float, optional
        Per-worker memory limit for a local cluster (Dask's syntax, e.g. ``"4GiB"``).
    dashboard_address : str
        Where a local cluster serves its dashboard (``":0"`` picks a free port).
    profile : Path, optional
        A deploy profile (YAML, see :mod:`fluoden_batch.compute`); its settings replace
        ``threads_per_worker``, ``memory_limit`` and ``dashboard_address``.
    tls : bool or Path, optional
        ``True``: temporary certificates for a cluster started here; a directory holding
        ``ca.pem``, ``cert.pem``, ``key.pem``: those (also for ``scheduler``). All traffic
        then uses ``tls://`` and a client without the certificates is refused.

    Raises
    ------
    FluodenError
        The scheduler cannot be reached, the options contradict each other, or the
        profile or the certificates are invalid.

    Notes
    -----
    Every client gets the :class:`~fluoden_batch.compute.quiet.QuietTaskErrors` worker
    plugin, and the workers of a local cluster ignore Ctrl-C
    (:func:`~fluoden_batch.compute.quiet.dask_setup`): the run reports both itself. Every
    client also gets :class:`~fluoden_batch.compute.heap.HeapThresholds`, which undoes the
    cost of Dask's ``MALLOC_TRIM_THRESHOLD_`` in workers started with it (local clusters
    started here leave it out: :func:`~fluoden_batch.compute.heap.worker_environ`).
    """
    with _start(
        scheduler, workers, threads_per_worker, memory_limit, dashboard_address, profile, tls
    ) as client:
        client.register_plugin(QuietTaskErrors())
        client.register_plugin(HeapThresholds())
        yield client


@contextlib.contextmanager
def _start(
    scheduler: str | None,
    workers: int | None,
    threads_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str,
    profile: Path | None,
    tls: bool | Path | None,
) -> Iterator[Client]:
    """:func:`dask_client`'s client, without the plugin."""
    if scheduler is not None and profile is not None:
        raise FluodenError("give either a scheduler address or a profile, not both")
    if scheduler is not None and tls is True:
        raise FluodenError(
            f"temporary TLS certificates cannot join the running scheduler {scheduler}: "
            "pass the directory holding its ca.pem, cert.pem, key.pem"
        )
    security = make_security(tls)
    if scheduler is not None:
        with _attach(scheduler, security) as client:
            yield client
        return
    if profile is not None:
        with profile_cluster(load_profile(profile), workers, security) as client:
            yield client
        return
    tls_options = {"protocol": "tls://", "security": security} if security is not None else {}
    # both settings are read when the scheduler and the nannies start (a nanny keeps its
    # environment for the restarts of its worker): set only for the cluster's creation, so
    # other clusters of this process meanwhile keep the user's configuration
    with dask.config.set(
        {
            # one task per worker thread at a time: a worker that dies then only implicates
            # the block it was running, not a queued innocent one (blocks take seconds, so
            # no idle gap)
            "distributed.scheduler.worker-saturation": 1.0,
            "distributed.nanny.pre-spawn-environ": worker_environ(),
        }
    ):
        cluster = LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit,
            preload=[*dask.config.get("distributed.worker.preload"), PRELOAD],
            **tls_options,
        )
    with cluster, Client(cluster, security=security) as client:
        yield client


def _attach(scheduler: str, security: Security | None) -> Client:
    if scheduler.startswith("tls://") and security is None:
        raise FluodenError(
            f"the scheduler {scheduler} uses TLS: pass --tls-dir with the directory holding "
            "its ca.pem, cert.pem, key.pem"
        )
    if security is not None and not scheduler.startswith("tls://"):
        scheduler = "tls://" + scheduler.split("://", 1)[-1]
    try:
        return Client(scheduler, timeout="20s", security=security)
    except (OSError, TimeoutError) as exc:
        raise FluodenError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc

"""Starting the Dask cluster a profile describes, and rendering it for --dry-run."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import yaml
from distributed import Client
from distributed.security import Security

from fluoden_batch.compute.profiles import (
    GPU_RESOURCE,
    KubernetesProfile,
    LocalCUDAProfile,
    LocalProfile,
    Profile,
    ProfileError,
    SlurmProfile,
)

log = logging.getLogger(__name__)
PLACEHOLDER_SCHEDULER = "<insert-scheduler-address-here>:8786"


def default_workers() -> int:
    """One single-threaded worker process per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def slurm_kwargs(profile: SlurmProfile, security: Security | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`dask_jobqueue.SLURMCluster` for a profile."""
    extra = list(profile.worker_extra_args)
    if profile.gpu:
        extra += ["--resources", f"{GPU_RESOURCE}=1"]
    scheduler_options: dict[str, Any] = {"dashboard_address": profile.dashboard_address}
    if profile.scheduler_host is not None:
        scheduler_options["host"] = profile.scheduler_host
    kwargs: dict[str, Any] = {
        "queue": profile.queue,
        "account": profile.account,
        "cores": profile.cores,
        "processes": profile.processes,
        "memory": profile.memory,
        "walltime": profile.walltime,
        "job_name": profile.job_name,
        "job_extra_directives": profile.directives,
        "job_script_prologue": list(profile.job_script_prologue),
        "worker_extra_args": extra,
        "local_directory": profile.local_directory,
        "log_directory": profile.log_directory,
        "interface": profile.interface,
        "python": profile.python,
        "scheduler_options": scheduler_options,
        "shared_temp_directory": profile.shared_temp_directory,
    }
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    return kwargs


def _jobqueue() -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ProfileError(
            "a slurm profile needs dask-jobqueue: pip install fluoden-batch[cluster]"
        ) from exc
    return dask_jobqueue


def render_job_script(
    profile: Profile, workers: int | None = None, security: Security | None = None
) -> str:
    """The batch script each worker job of a SLURM profile submits (for ``--dry-run``).

    The same text as ``SLURMCluster(**slurm_kwargs(profile, security)).job_script()``,
    built without starting a scheduler, so the address is a placeholder. A last comment
    line says how many such jobs ``workers`` (default: the profile's ``n_workers``) takes.
    With ``security`` from a certificate directory the workers get ``--tls-*`` options.
    """
    if not isinstance(profile, SlurmProfile):
        raise ProfileError(f"only slurm profiles have a job script, not {profile.cluster!r}")
    jq = _jobqueue()
    kwargs = slurm_kwargs(profile, security)
    for key in ("scheduler_options", "shared_temp_directory"):  # cluster-only options
        kwargs.pop(key)
    address = f"{'tls' if security is not None else 'tcp'}://{PLACEHOLDER_SCHEDULER}"
    # a Job creates its log_directory: render with a stand-in so a dry run creates nothing
    with tempfile.TemporaryDirectory() as stand_in:
        if profile.log_directory is not None:
            kwargs["log_directory"] = stand_in
        text = jq.SLURMCluster.job_cls(address, "dummy-name", **kwargs).job_script()
        if profile.log_directory is not None:
            text = text.replace(stand_in, profile.log_directory)
    n = workers or profile.n_workers or 1
    jobs = -(-n // profile.processes)
    return (
        text.rstrip("\n") + f"\n# fluoden: {n} workers = {jobs} job(s) of this script, "
        f"{profile.processes} worker process(es) each\n"
    )


def kubernetes_spec(profile: KubernetesProfile, workers: int | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource (a dict, as for ``kubectl apply``) for a profile."""
    try:
        from dask_kubernetes.operator import make_cluster_spec
    except ImportError as exc:
        raise ProfileError(
            "a kubernetes profile needs dask-kubernetes: pip install fluoden-batch[cluster]"
        ) from exc
    command = f"dask worker --nthreads {profile.threads_per_worker}"
    if profile.gpu:
        command += f" --resources {GPU_RESOURCE}=1"
    spec = make_cluster_spec(
        name=profile.name,
        image=profile.image,
        n_workers=workers or profile.n_workers,
        resources=profile.resources.model_dump(),
        env=dict(profile.env),
        worker_command=command,
        idle_timeout=profile.idle_timeout,
    )
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["resources"] = profile.scheduler_resources.model_dump()
    # the template says `dask-scheduler`, a command current distributed no longer installs
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    pod = spec["spec"]["worker"]["spec"]
    if profile.volumes:
        pod["volumes"] = [dict(v) for v in profile.volumes]
        pod["containers"][0]["volumeMounts"] = [dict(m) for m in profile.volume_mounts]
    if profile.node_selector:
        pod["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod["tolerations"] = [dict(t) for t in profile.tolerations]
    if profile.namespace is not None:
        spec["metadata"]["namespace"] = profile.namespace
    return spec


def dry_run(profile: Profile, workers: int | None = None, security: Security | None = None) -> str:
    """What ``--dry-run`` prints: the SLURM job script, the DaskCluster YAML, or a summary."""
    if isinstance(profile, SlurmProfile):
        return render_job_script(profile, workers, security)
    if isinstance(profile, KubernetesProfile):
        return yaml.safe_dump(kubernetes_spec(profile, workers), sort_keys=False)
    n = workers or profile.n_workers
    what = "one worker per GPU" if isinstance(profile, LocalCUDAProfile) else "one per core"
    return (
        f"{profile.cluster} cluster on {profile.host}: {n or what} worker(s), "
        f"{profile.threads_per_worker} thread(s) each, memory_limit={profile.memory_limit}, "
        f"dashboard http://{profile.dashboard_address}/status, "
        f"{'tls' if security is not None else 'tcp'} between client, scheduler and workers\n"
    )


@contextlib.contextmanager
def profile_cluster(
    profile: Profile, workers: int | None = None, security: Security | None = None
) -> Iterator[Client]:
    """Start the profile's cluster, scale it to ``workers``, yield a client, tear down.

    ``workers`` overrides the profile's ``n_workers``. With ``security`` every connection
    uses ``tls://`` and the certificates. The scheduler's dashboard follows the profile's
    ``dashboard_address`` (127.0.0.1 unless it says otherwise).
    """
    n = workers or profile.n_workers
    if isinstance(profile, SlurmProfile) and security is None:
        log.warning(
            "the SLURM scheduler listens on %s without TLS: anyone who can reach it can run "
            "code as you; use a certificate directory (--tls-dir, see deploy/README.md)",
            profile.scheduler_host or profile.interface,
        )
    with _start(profile, n, security) as cluster, Client(cluster, security=security) as client:
        yield client


def _start(profile: Profile, n: int | None, security: Security | None) -> Any:
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    if isinstance(profile, LocalProfile):
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=n or default_workers(),
            threads_per_worker=profile.threads_per_worker,
            processes=True,
            host=profile.host,
            dashboard_address=profile.dashboard_address,
            memory_limit=profile.memory_limit,
            **tls,
        )
    if isinstance(profile, LocalCUDAProfile):
        return _start_cuda(profile, n, tls)
    if isinstance(profile, SlurmProfile):
        cluster = _jobqueue().SLURMCluster(**slurm_kwargs(profile, security))
        cluster.scale(n=n or 1)
        return cluster
    return _start_kubernetes(profile, n, security)


def _start_cuda(profile: LocalCUDAProfile, n: int | None, tls: dict[str, Any]) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ProfileError(
            "a local-cuda profile needs dask-cuda and a CUDA GPU: pip install fluoden-batch[gpu]"
        ) from exc
    devices = profile.cuda_visible_devices
    return LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=[str(d) for d in devices] if devices is not None else None,
        n_workers=n,
        threads_per_worker=profile.threads_per_worker,
        memory_limit=profile.memory_limit,
        rmm_pool_size=profile.rmm_pool_size,
        local_directory=profile.local_directory,
        host=profile.host,
        dashboard_address=profile.dashboard_address,
        resources={GPU_RESOURCE: 1},
        **tls,
    )


def _start_kubernetes(profile: KubernetesProfile, n: int | None, security: Security | None) -> Any:
    if security is not None:
        raise ProfileError(
            "--tls is not supported with a kubernetes profile: the operator's pods do not get "
            "the certificates; restrict traffic with a NetworkPolicy instead (deploy/kubernetes)"
        )
    spec = kubernetes_spec(profile, n)
    from dask_kubernetes.operator import KubeCluster

    return KubeCluster(
        custom_cluster_spec=spec, namespace=profile.namespace, shutdown_on_close=True
    )

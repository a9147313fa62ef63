"""Starting the Dask cluster a profile describes, and rendering it for --dry-run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dask
import yaml
from dask.utils import parse_timedelta
from distributed import Client
from distributed.deploy import Adaptive
from distributed.security import Security

from fluoden_batch.compute.heap import worker_environ
from fluoden_batch.compute.profiles import (
    GPU_RESOURCE,
    KubeResources,
    KubernetesProfile,
    LocalCUDAProfile,
    LocalProfile,
    Profile,
    ProfileError,
    SlurmProfile,
    walltime_seconds,
)

log = logging.getLogger(__name__)
PLACEHOLDER_SCHEDULER = "<insert-scheduler-address-here>:8786"


def default_workers() -> int:
    """One single-threaded worker process per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def shell_word(text: str) -> str:
    """``text`` as one double-quoted bash word: ``$VAR`` and ``${VAR:-default}`` still
    expand on the node, but an unset variable or a space can no longer remove or split
    the word (dask-jobqueue pastes option values into the job script unquoted)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


def worker_lifetime(walltime: str) -> list[str]:
    """``dask worker`` options that retire a worker before SLURM's walltime kills it.

    As dask-jobqueue documents for walltimes ("How to handle job queueing system walltime
    killing workers"): ``--lifetime`` ends the worker gracefully (its tasks and results
    move to other workers) a margin before the walltime, ``--lifetime-stagger`` spreads the
    workers' ends, and the cluster's adaptive scaling (:class:`JobKeeper`) submits a fresh
    job for each one that ended. Margin: a tenth of the walltime, at least 20 s (the job's
    worker start-up counts against the walltime too), at most 15 min; stagger: a twentieth,
    at most 5 min. Not ``--lifetime-restart``: it restarts the worker inside the same job,
    which the walltime then kills. No options for walltime 0 (no limit).
    """
    total = walltime_seconds(walltime)
    if total == 0:
        return []
    stagger = min(300, total // 20)
    lifetime = total - min(900, max(20, total // 10)) - stagger
    return ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]


def slurm_kwargs(profile: SlurmProfile, security: Security | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`dask_jobqueue.SLURMCluster` for a profile.

    ``local_directory`` becomes one quoted shell word (:func:`shell_word`); the workers
    get :func:`worker_lifetime`'s options unless ``worker_extra_args`` has a ``--lifetime``.
    """
    extra = list(profile.worker_extra_args)
    if not any(arg.split("=")[0] == "--lifetime" for arg in extra):
        extra += worker_lifetime(profile.walltime)
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
        "local_directory": (
            shell_word(profile.local_directory) if profile.local_directory is not None else None
        ),
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


def run_name(prefix: str) -> str:
    """A DaskCluster name of its own for one run: ``<prefix>-<8 random hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kubernetes_spec(
    profile: KubernetesProfile, workers: int | None = None, name: str | None = None
) -> dict[str, Any]:
    """The ``DaskCluster`` resource (a dict, as for ``kubectl apply``) for a profile.

    ``name`` defaults to a new :func:`run_name` of the profile's ``name``, so every call
    describes a cluster of its own. ``pod_spec`` keys go to the scheduler and worker pods.
    """
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
        name=name or run_name(profile.name),
        image=profile.image,
        n_workers=workers or profile.n_workers,
        resources=_quantities(profile.resources),
        env=dict(profile.env),
        worker_command=command,
        idle_timeout=profile.idle_timeout,
    )
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["resources"] = _quantities(profile.scheduler_resources)
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
    for pod_spec in (pod, spec["spec"]["scheduler"]["spec"]):
        pod_spec.update(profile.pod_spec)
    if profile.namespace is not None:
        spec["metadata"]["namespace"] = profile.namespace
    return spec


def _quantities(resources: KubeResources) -> dict[str, dict[str, str]]:
    """Requests and limits with every quantity a string (``nvidia.com/gpu: "1"``): the
    DaskCluster CRD types them as strings and the API server refuses a YAML integer."""
    return {
        kind: {name: str(value) for name, value in values.items()}
        for kind, values in resources.model_dump().items()
    }


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

        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
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
        return _start_slurm(profile, n or 1, security)
    return _start_kubernetes(profile, n, security)


class JobKeeper(Adaptive):
    """Adaptive scaling that keeps a fixed number of batch jobs, replacing lost ones.

    Used with ``minimum == maximum``: it never scales down during a run, it only submits a
    new job for each one that ended (walltime, ``--lifetime``, ``scancel``, a node
    failure). distributed forgets a lost job of one worker process after
    ``distributed.deploy.lost-worker-timeout`` and Adaptive then submits it again; a job of
    several worker processes (``processes > 1``) is never forgotten there (its workers'
    names carry a suffix the bookkeeping does not map back, dask/distributed#9102), so
    this class forgets such a job once every one of its workers, after having joined, has
    been gone from the scheduler for that timeout.
    """

    def __init__(self, cluster: Any, **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        self._joined: set[str] = set()
        self._gone_since: dict[str, float] = {}
        self._closing: set[asyncio.Future[Any]] = set()

    async def recommendations(self, target: int) -> dict[str, Any]:
        """Forget lost multi-worker jobs, then Adaptive's recommendation."""
        self._forget_lost_groups()
        return await super().recommendations(target)

    def _forget_lost_groups(self) -> None:
        cluster = self.cluster
        observed = cluster.observed
        grace = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        now = time.monotonic()
        for name, job in list(cluster.workers.items()):
            group = cluster.worker_spec.get(name, {}).get("group")
            if not group:
                continue  # one worker per job: distributed forgets it itself
            if {f"{name}{suffix}" for suffix in group} & observed:
                self._joined.add(name)
                self._gone_since.pop(name, None)
                continue
            if name not in self._joined:
                continue  # still queued or starting
            if now - self._gone_since.setdefault(name, now) < grace:
                continue
            log.info("batch job %s lost all its workers: submitting a new one", name)
            del cluster.workers[name]  # Adaptive then starts worker_spec[name] again
            self._joined.discard(name)
            self._gone_since.pop(name)
            closing = asyncio.ensure_future(job.close())  # scancel, if it still runs
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)


def _start_slurm(profile: SlurmProfile, n: int, security: Security | None) -> Any:
    """A SLURMCluster kept at ``ceil(n / processes)`` jobs by :class:`JobKeeper`.

    ``scale`` alone never replaces a job that ends (dask-jobqueue does not resubmit jobs
    killed at walltime); adaptive scaling held at that many jobs does. One task per worker
    thread at a time, as on a local cluster: a worker that dies then only implicates the
    blocks it was running.
    """
    jobs = math.ceil(n / profile.processes)
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = _jobqueue().SLURMCluster(**slurm_kwargs(profile, security))
    cluster.scale(jobs=jobs)
    cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs, Adaptive=JobKeeper)
    return cluster


def _start_cuda(profile: LocalCUDAProfile, n: int | None, tls: dict[str, Any]) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ProfileError(
            "a local-cuda profile needs dask-cuda and a CUDA GPU: pip install fluoden-batch[gpu]"
        ) from exc
    devices = profile.cuda_visible_devices
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
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
    from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode

    log.info("DaskCluster %s (deleted when the run ends)", spec["metadata"]["name"])
    # a name of its own and CREATE_ONLY: never attach to (and then delete) another run's
    return KubeCluster(
        custom_cluster_spec=spec,
        namespace=profile.namespace,
        create_mode=CreateMode.CREATE_ONLY,
        shutdown_on_close=True,
        resource_timeout=profile.resource_timeout,
    )

"""Deploy profiles: which Dask cluster a run starts, read from a small YAML file.

A profile names its kind in ``cluster:`` and holds only that kind's settings; unknown
keys are errors. The kinds and what they start:

``local``        :class:`distributed.LocalCluster`, worker processes on this machine.
``local-cuda``   :class:`dask_cuda.LocalCUDACluster`, one worker per GPU of a workstation.
``slurm``        :class:`dask_jobqueue.SLURMCluster`, one batch job per worker (or per
                 ``processes`` workers); the scheduler runs where ``fluoden`` runs.
``kubernetes``   :class:`dask_kubernetes.operator.KubeCluster`, a ``DaskCluster`` resource
                 handled by the Dask operator; workers are pods of the given image.

:func:`profile_cluster` starts the cluster, scales it, yields a :class:`distributed.Client`
and tears everything down on exit; the pipeline only sees the client.

GPU placement: the workers of a GPU profile advertise the abstract resource ``GPU=1`` and
:func:`gpu_resources` gives the ``resources=`` for ``client.map``, so each block task holds
one GPU of its worker. Pass it to ``client.map``: ``dask.annotate(resources=...)`` is lost
when the graph is fused (low-level optimisation), and the tasks would pile onto one GPU.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dask.utils import parse_bytes
from distributed import Client
from distributed.security import Security
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fluoden_batch.errors import FluodenError

log = logging.getLogger(__name__)

KINDS = ("local", "local-cuda", "slurm", "kubernetes")
GPU_RESOURCE = "GPU"
PLACEHOLDER_SCHEDULER = "<insert-scheduler-address-here>:8786"


class ProfileError(FluodenError):
    """A deploy profile is missing, unreadable or invalid, or its cluster cannot start."""


def _memory(value: str | int) -> str | int:
    if isinstance(value, str) and value != "auto":
        try:
            parse_bytes(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a memory size: {value!r} (use e.g. '4GiB', '16GB')") from exc
    elif isinstance(value, int) and value <= 0:
        raise ValueError("a memory size must be positive")
    return value


Memory = Annotated[str | int, AfterValidator(_memory)]
_WALLTIME = re.compile(
    r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$"
)
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: workers started when ``--workers`` is not given (``None``: the kind's own default)
    n_workers: int | None = Field(None, ge=1)


class LocalProfile(_Profile):
    """Worker processes on this machine; scheduler and dashboard on ``host``."""

    cluster: Literal["local"]
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: Memory | None = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    host: str = "127.0.0.1"


class LocalCUDAProfile(_Profile):
    """One worker per GPU of this machine (dask-cuda); ``n_workers`` defaults to all GPUs."""

    cluster: Literal["local-cuda"]
    cuda_visible_devices: list[int | str] | None = Field(
        None, validation_alias=AliasChoices("cuda_visible_devices", "CUDA_VISIBLE_DEVICES")
    )
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: Memory | None = "auto"
    rmm_pool_size: Memory | None = None
    local_directory: str | None = None
    dashboard_address: str = "127.0.0.1:8787"
    host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _enough_gpus(self) -> LocalCUDAProfile:
        devices = self.cuda_visible_devices
        if devices is not None and self.n_workers is not None and self.n_workers > len(devices):
            raise ValueError(f"n_workers={self.n_workers} but only {len(devices)} GPUs listed")
        return self


class SlurmProfile(_Profile):
    """dask-jobqueue SLURMCluster: each batch job runs ``processes`` Dask workers."""

    cluster: Literal["slurm"]
    queue: str | None = Field(None, validation_alias=AliasChoices("queue", "partition"))
    account: str | None = None
    cores: int = Field(ge=1, description="CPU cores per job (threads are cores/processes)")
    processes: int = Field(1, ge=1, description="Dask worker processes per job")
    memory: Memory = Field(description="memory per job, e.g. '32GB'")
    walltime: str = "01:00:00"
    job_name: str = "fluoden"
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    worker_extra_args: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    scheduler_host: str | None = None
    dashboard_address: str = "127.0.0.1:8787"
    shared_temp_directory: str | None = None
    python: str | None = None
    gpu: bool = False
    n_workers: int | None = Field(1, ge=1)

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime(cls, v: Any) -> Any:
        if isinstance(v, int):
            raise ValueError(
                f"got the number {v}: YAML reads an unquoted H:MM:SS as a number; "
                'quote it, e.g. walltime: "01:00:00"'
            )
        if isinstance(v, str) and not _WALLTIME.match(v):
            raise ValueError(
                f"{v!r} is not a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
            )
        return v

    @field_validator("job_extra_directives")
    @classmethod
    def _directives(cls, v: list[str]) -> list[str]:
        for d in v:
            if d.lstrip().startswith("#"):
                raise ValueError(f"{d!r}: give the option only (e.g. '--gres=gpu:1'), no #SBATCH")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SlurmProfile:
        if self.processes > self.cores:
            raise ValueError(f"processes={self.processes} exceeds cores={self.cores}")
        if self.gpu and self.processes != 1:
            raise ValueError("gpu: true runs one worker per GPU job; set processes: 1")
        if self.interface is None and self.scheduler_host is None:
            raise ValueError(
                "set interface (e.g. ib0, eth0: see `ip -br addr`) or scheduler_host, the "
                "address the compute nodes reach the scheduler on"
            )
        return self

    @property
    def directives(self) -> list[str]:
        """``job_extra_directives`` plus ``--gres=gpu:1`` for a GPU job that names none."""
        out = list(self.job_extra_directives)
        if self.gpu and not any(re.match(r"\s*--(gres|gpus)", d) for d in out):
            out.append("--gres=gpu:1")
        return out


class KubeResources(BaseModel):
    """Container resources, e.g. ``limits: {cpu: 4, memory: 16Gi, nvidia.com/gpu: 1}``."""

    model_config = ConfigDict(extra="forbid")

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class KubernetesProfile(_Profile):
    """A DaskCluster for the Dask operator; ``image`` must contain fluoden-batch."""

    cluster: Literal["kubernetes"]
    name: str = "fluoden"
    image: str
    namespace: str | None = None
    n_workers: int | None = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    resources: KubeResources = Field(default_factory=KubeResources)
    scheduler_resources: KubeResources = Field(
        default_factory=lambda: KubeResources(requests={"cpu": "500m", "memory": "1Gi"})
    )
    env: dict[str, str] = Field(default_factory=dict)
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="worker pod volumes")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    idle_timeout: int = Field(0, ge=0, description="seconds before an idle cluster is removed")

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if len(v) > 40 or not _K8S_NAME.match(v):
            raise ValueError(f"{v!r}: use lower-case letters, digits and '-', at most 40")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesProfile:
        gpus = self.resources.limits.get("nvidia.com/gpu")
        if gpus is not None and str(gpus) != "1":
            raise ValueError("resources.limits nvidia.com/gpu: one GPU per worker pod; set 1")
        declared = {v.get("name") for v in self.volumes}
        for mount in self.volume_mounts:
            if mount.get("name") not in declared or "mountPath" not in mount:
                raise ValueError(
                    f"volume_mounts: {mount} needs a mountPath and the name of one of volumes"
                )
        return self

    @property
    def gpu(self) -> bool:
        return "nvidia.com/gpu" in self.resources.limits


Profile = Annotated[
    LocalProfile | LocalCUDAProfile | SlurmProfile | KubernetesProfile,
    Field(discriminator="cluster"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Profile)
_MODELS = {
    "local": LocalProfile,
    "local-cuda": LocalCUDAProfile,
    "slurm": SlurmProfile,
    "kubernetes": KubernetesProfile,
}


def load_profile(path: Path | str) -> Profile:
    """Read and validate a profile file; errors name the file and the field at fault."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProfileError(f"profile {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path}: expected a mapping with a 'cluster' key")
    return validate_profile(data, source=str(path))


def validate_profile(data: dict[str, Any], source: str = "<profile>") -> Profile:
    """Validate a profile given as a mapping (as :func:`load_profile` does for a file)."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ProfileError(f"profile {source}: {problems}") from None


def _describe(err: Any) -> str:
    kinds = ", ".join(KINDS)
    if err["type"] == "union_tag_not_found":
        return f"field 'cluster' is missing (one of {kinds})"
    if err["type"] == "union_tag_invalid":
        return f"field 'cluster': {err['input'].get('cluster')!r} is not one of {kinds}"
    loc = list(err["loc"])
    model = _MODELS.get(str(loc.pop(0))) if loc and str(loc[0]) in _MODELS else None
    field = ".".join(str(p) for p in loc) or "cluster"
    if err["type"] == "extra_forbidden" and model is not None and len(loc) == 1:
        allowed = ", ".join(sorted(model.model_fields))
        return f"unknown field '{field}' (allowed: {allowed})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"field '{field}': {msg}"


def gpu_resources(profile: Profile) -> dict[str, int] | None:
    """``{"GPU": 1}`` for a GPU profile, else ``None``: the ``resources=`` of ``client.map``.

    Give it to ``client.map`` directly, not through ``dask.annotate``: annotations are
    dropped when the graph is fused, and the tasks would no longer be limited to one per GPU.
    """
    gpu = isinstance(profile, LocalCUDAProfile) or getattr(profile, "gpu", False)
    return {GPU_RESOURCE: 1} if gpu else None


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

        from fluoden_batch.compute import default_workers

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

"""Deploy profiles: pydantic models of the YAML files, loading with clear errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dask.utils import parse_bytes
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

from fluoden_batch.errors import FluodenError, validator_message
from fluoden_batch.resources import resolve_profile, shipped_profiles

KINDS = ("local", "local-cuda", "slurm", "kubernetes")
GPU_RESOURCE = "GPU"


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


def walltime_seconds(walltime: str) -> int:
    """Seconds in a SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``); 0 means no limit, as for SLURM."""
    days, _, clock = walltime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if not days and len(parts) < 3:  # MM or MM:SS
        parts = [0, *parts]
    hours, minutes, seconds = [*parts, 0, 0][:3]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


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
    worker_extra_args: list[str] = Field(
        default_factory=list,
        description="extra `dask worker` options; a --lifetime here replaces the automatic one",
    )
    local_directory: str | None = Field(
        None,
        description="node-local scratch, e.g. '${TMPDIR:-/tmp}': passed as one quoted shell "
        "word, so variables expand on the node and an unset one cannot swallow the next option",
    )
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
        if isinstance(v, str) and 0 < walltime_seconds(v) < 60:
            raise ValueError(f"{v!r} is under SLURM's smallest time limit, one minute")
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


#: PodSpec keys fluoden sets itself: ``pod_spec`` may not override them
_OWN_POD_KEYS = {
    "containers": "image, resources, env, volume_mounts",
    "volumes": "volumes",
    "nodeSelector": "node_selector",
    "tolerations": "tolerations",
}


class KubernetesProfile(_Profile):
    """A DaskCluster for the Dask operator; ``image`` must contain fluoden-batch.

    ``name`` is a prefix: every run creates its own DaskCluster ``<name>-<8 hex digits>``,
    so two runs in one namespace never attach to, or delete, each other's cluster.
    ``pod_spec`` passes further Kubernetes PodSpec keys (``imagePullSecrets``,
    ``securityContext``, ``serviceAccountName``, ``priorityClassName``, ...) unchanged to
    the scheduler and worker pods.
    """

    cluster: Literal["kubernetes"]
    name: str = Field("fluoden", description="DaskCluster name prefix; a run appends -<8 hex>")
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
    pod_spec: dict[str, Any] = Field(
        default_factory=dict,
        description="extra PodSpec keys for the scheduler and worker pods, passed as given",
    )
    resource_timeout: int = Field(
        600,
        ge=1,
        description="seconds to wait for the scheduler pod (first pulls of a torch image are slow)",
    )

    @field_validator("pod_spec")
    @classmethod
    def _pod_spec(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, fields in _OWN_POD_KEYS.items():
            if key in v:
                raise ValueError(f"{key!r} is set by fluoden: use the profile's {fields}")
        return v

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
    """Read and validate a profile file, or a shipped profile by name (``slurm/cpu``: see
    :func:`~fluoden_batch.resources.resolve_profile`); errors name the file and the field
    at fault."""
    path = resolve_profile(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        hint = ""
        if isinstance(exc, FileNotFoundError):
            hint = f" (shipped profiles: {', '.join(shipped_profiles()) or 'none'})"
        raise ProfileError(f"profile {path}: {exc.strerror or exc}{hint}") from exc
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
    msg = validator_message(err["msg"])
    return f"field '{field}': {msg}"


def gpu_resources(profile: Profile) -> dict[str, int] | None:
    """``{"GPU": 1}`` for a GPU profile, else ``None``: the ``resources=`` of ``client.map``.

    Give it to ``client.map`` directly, not through ``dask.annotate``: annotations are
    dropped when the graph is fused, and the tasks would no longer be limited to one per GPU.
    """
    gpu = isinstance(profile, LocalCUDAProfile) or getattr(profile, "gpu", False)
    return {GPU_RESOURCE: 1} if gpu else None

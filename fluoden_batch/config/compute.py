"""Where a command runs: the Dask options shared by ``denoise``, ``segment`` and
``estimate-noise`` (declared once here; each command's config inherits them)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from dask.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["COMPUTE_FIELDS", "ComputeOptions"]


class ComputeOptions(BaseModel):
    """The Dask cluster of a run (:func:`fluoden_batch.compute.dask_client`).

    None of these change a run's output, so none of them is in its provenance parameters.
    """

    model_config = ConfigDict(extra="forbid")
    help_panel: ClassVar[str] = "Where it runs (Dask)"  # --help's section of these options

    workers: int | None = Field(
        None,
        ge=0,
        description="local worker processes; 0 runs in this process without Dask (default: "
        "in this process for small inputs, else one worker per core)",
    )
    threads_per_worker: int = Field(1, ge=1, description="threads (and torch threads) per worker")
    memory_limit: str = Field("auto", description="memory limit per local worker, e.g. '4GiB'")
    scheduler: str | None = Field(
        None, description="address of a running Dask scheduler to use instead of a local cluster"
    )
    profile: Path | None = Field(
        None,
        description="deploy profile (YAML) starting a local, local-cuda, SLURM or Kubernetes "
        "Dask cluster, or a shipped profile's name (`fluoden profiles` lists them)",
    )
    tls: bool = Field(False, description="encrypt Dask traffic with temporary certificates")
    tls_dir: Path | None = Field(
        None, description="directory with ca.pem, cert.pem, key.pem for TLS between all parts"
    )
    dashboard_address: str = Field(
        "127.0.0.1:8787", description="dashboard address of a local cluster (':0': any port)"
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, v: str) -> str:
        if v == "auto":
            return v
        try:
            size = parse_bytes(v)
        except ValueError:
            size = -1
        if size < 0:
            raise ValueError(f"expected a size such as '4GiB' (0: no limit) or 'auto', got {v!r}")
        return v

    @property
    def tls_option(self) -> bool | Path | None:
        """What :func:`fluoden_batch.compute.dask_client` takes as ``tls``."""
        return self.tls_dir or (True if self.tls else None)

    @property
    def cluster_requested(self) -> bool:
        """Whether the options ask for a Dask cluster (a scheduler, a profile, TLS or a
        number of workers), rather than leaving the choice to the input's size."""
        return (
            self.scheduler is not None
            or self.profile is not None
            or self.tls_option is not None
            or (self.workers is not None and self.workers > 0)
        )


COMPUTE_FIELDS = frozenset(ComputeOptions.model_fields)

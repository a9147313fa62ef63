"""Run configuration: pydantic models filled from a TOML/YAML file and CLI flags.

Flags given on the command line override the file; unknown keys are errors
(``extra="forbid"``), so a typo in a config file is reported, not ignored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fluoden_batch.errors import FluodenError

DEFAULT_MODEL = "dncnn-fmd"
DEFAULT_MASKED_MODEL = "dncnn-small-masked"  # the default of --protocol masked when shipped
MAX_CLUSTERS = 16


class DenoiseConfig(BaseModel):
    """Parameters of ``fluoden denoise``.

    Only the fields in :meth:`output_parameters` decide the output; a rerun with the same
    values resumes, a rerun with others is refused unless ``overwrite``. ``model = None``
    means the protocol's default (:data:`DEFAULT_MODEL`, or :data:`DEFAULT_MASKED_MODEL`
    for ``masked`` where it is shipped), resolved at planning.
    """

    model_config = ConfigDict(extra="forbid")

    input: Path
    output: Path
    model: str | None = Field(None, description="shipped model name or .safetensors path")
    protocol: Literal["whole", "vst", "masked"] = Field(
        "whole",
        description="per-plane protocol: whole (raw intensities), vst (GAT) or masked "
        "(one pass per intensity cluster, merged by the cluster labels)",
    )
    clusters: int = Field(
        3, ge=1, le=MAX_CLUSTERS, description="K, intensity clusters per channel (masked, labels)"
    )
    mask_sigma: float = Field(
        2.0, ge=0, allow_inf_nan=False, description="label smoothing (Gaussian sigma), pixels"
    )
    cluster_backend: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="where the K-means centres are fitted; does not change the output"
    )
    save_labels: bool = Field(False, description="write the cluster labels to OUT/labels")
    dtype: Literal["same", "uint8", "uint16", "float32", "float64"] = "same"
    chunks: tuple[int, int] | None = Field(None, description="output chunk size in Y/X")
    block_min: int = Field(2048, ge=16, description="minimum block size in Y/X, pixels")
    tile: int = Field(384, ge=32, description="forward-pass tile size in pixels")
    ngff_version: Literal["0.4", "0.5"] = "0.5"
    axes: str | None = None
    reference: Path | None = None
    data_range: float | None = Field(None, gt=0)
    overwrite: bool = False
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    tta: bool = Field(False, description="mean over the 8 flips/rotations of each plane")
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"
    scheduler: str | None = None
    profile: Path | None = None
    tls: bool = False
    tls_dir: Path | None = None
    dashboard_address: str = "127.0.0.1:8787"
    performance_report: Path | None = None

    @field_validator("chunks")
    @classmethod
    def _positive_chunks(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"chunk sizes must be positive, got {v}")
        return v

    @property
    def tls_option(self) -> bool | Path | None:
        """What :func:`fluoden_batch.compute.dask_client` takes as ``tls``."""
        return self.tls_dir or (True if self.tls else None)

    @property
    def labelled(self) -> bool:
        """Whether the run computes cluster labels (``masked`` or ``save_labels``)."""
        return self.protocol == "masked" or self.save_labels

    def output_parameters(self) -> dict[str, Any]:
        """The parameters that determine the output, as JSON-compatible values.

        ``clusters`` and ``mask_sigma`` are included only when the run computes labels
        (they change nothing otherwise, so a ``whole`` run resumes whatever they are);
        ``save_labels`` always (it decides whether OUT holds labels for every block).
        ``cluster_backend`` is left out: the centres it fits are stored and reused.
        ``tta`` only when on, so outputs written before it existed resume unchanged.
        """
        keys = [
            "precision",
            "model",
            "protocol",
            "dtype",
            "chunks",
            "block_min",
            "tile",
            "ngff_version",
            "axes",
            "reference",
            "data_range",
            "save_labels",
        ]
        if self.labelled:
            keys += ["clusters", "mask_sigma"]
        if self.tta:
            keys.append("tta")
        data = self.model_dump(mode="json", include=set(keys))
        data["input"] = str(self.input.expanduser().resolve())
        return data


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FluodenError(f"config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise FluodenError(f"config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FluodenError(f"config file {path}: expected a mapping of options")
    return data


def build_config(file: Path | None, **flags: Any) -> DenoiseConfig:
    """Merge a config file (optional) and CLI flags (``None`` = not given) into a config."""
    values = load_config_file(file) if file is not None else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return DenoiseConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise FluodenError(f"invalid configuration: {problems}") from exc

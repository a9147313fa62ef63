"""Configuration of one training run (:class:`TrainConfig`).

Two modes:

- ``"supervised"``: pairs of real noisy and clean images, matched by the wildcard parts of
  ``noisy_glob`` and ``clean_glob``; optionally a share ``synthetic_fraction`` of the
  patches replaces the real noisy input by Poisson-Gaussian noise drawn on the clean image.
- ``"synthetic"``: clean images only; every patch gets Poisson-Gaussian noise with
  ``(a, b)`` drawn from ``a_range`` x ``b_range``.

Intensity units of ``a_range`` / ``b_range`` are those of the clean images as stored
(grey levels, e.g. 0..255 for uint8): ``Var[z | y] = a * y + b``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["TrainConfig"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class TrainConfig(BaseModel):
    """Everything that determines a training run; equal configs give equal models on CPU.

    Fields ``output``, ``checkpoint_dir``, ``checkpoint_every``, ``val_every`` and
    ``resume`` do not change the trained weights; every other field must match a
    checkpoint to resume from it.
    """

    model_config = ConfigDict(extra="forbid")

    # what is trained and where it goes
    name: str = Field("dncnn-custom", min_length=1, description="model name (metadata)")
    description: str = ""
    output: Path = Field(description="weights file written at the end (.safetensors)")
    depth: int = Field(17, ge=2, le=64)
    width: int = Field(64, ge=1, le=512)
    batch_norm: bool = True

    # data
    mode: Literal["supervised", "synthetic"] = "supervised"
    clean_dir: Path
    clean_glob: str = "*.tif"
    noisy_dir: Path | None = None
    noisy_glob: str = "*.tif"
    val_keys: list[str] = Field(
        default_factory=list,
        description="image keys (wildcard parts of the globs) held out for validation",
    )
    synthetic_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="supervised mode: share of synthetic-noise patches"
    )
    a_range: tuple[float, float] | None = Field(
        None, description="Poisson gain range (image units), sampled log-uniformly per patch"
    )
    b_range: tuple[float, float] | None = Field(
        None, description="Gaussian variance range (image units squared), uniform per patch"
    )

    # optimisation
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(16, ge=1)
    patch_size: int = Field(64, ge=8)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["cosine", "step"] = "cosine"
    lr_min_ratio: float = Field(0.01, ge=0, le=1, description="cosine: final lr / lr")
    lr_step_every: int = Field(1000, ge=1, description="step: decay period in steps")
    lr_step_gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="autocast (CUDA only)")

    # bookkeeping
    val_every: int = Field(200, ge=1)
    checkpoint_dir: Path | None = None
    checkpoint_every: int = Field(500, ge=1)
    resume: bool = Field(True, description="continue from the latest checkpoint if any")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("a_range", "b_range")
    @classmethod
    def _check_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"range must satisfy 0 <= low <= high, got {v}")
        return v

    @model_validator(mode="after")
    def _check_mode(self) -> TrainConfig:
        if self.mode == "supervised" and self.noisy_dir is None:
            raise ValueError("mode 'supervised' needs noisy_dir")
        if self.mode == "synthetic" and self.noisy_dir is not None:
            raise ValueError("mode 'synthetic' uses clean images only; drop noisy_dir")
        if self.uses_synthetic and (self.a_range is None or self.b_range is None):
            raise ValueError("synthetic noise needs a_range and b_range")
        if self.a_range is not None and self.a_range[0] <= 0:
            raise ValueError(f"a_range must be > 0 (log-uniform sampling), got {self.a_range}")
        return self

    @property
    def uses_synthetic(self) -> bool:
        """Whether any training patch gets simulated noise."""
        return self.mode == "synthetic" or self.synthetic_fraction > 0

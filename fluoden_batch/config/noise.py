"""Parameters of ``fluoden estimate-noise`` (and :func:`fluoden_batch.estimate_noise`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from fluoden_batch.config.compute import ComputeOptions
from fluoden_batch.config.denoise import Axes, Series

__all__ = ["NoiseConfig"]


class NoiseConfig(ComputeOptions):
    """Poisson-Gaussian ``(a, b)`` of every Y/X plane, estimated region by region."""

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(description="Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF")
    axes: Axes = None
    series: Series = 0
    max_blocks: int = Field(
        8, ge=1, description="regions (up to 2048 x 2048 px) estimated per plane, spread over it"
    )

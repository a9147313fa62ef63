"""fluoden-batch: batch denoising of fluorescence microscopy datasets stored as Zarr.

The Python API (the ``fluoden`` commands are thin wrappers over it)::

    import fluoden_batch as fb

    clean = fb.denoise(noisy_array)                      # NumPy/Dask array in, array out
    result = fb.denoise("in.ome.zarr", "out.ome.zarr")   # resumable OME-Zarr + metrics
    rows = fb.estimate_noise("in.ome.zarr")              # (a, b) per plane
    fb.segment("in.ome.zarr", "labels.ome.zarr", clusters=3)

Names are imported on first use, so ``import fluoden_batch`` (and ``fluoden --help``)
stays quick.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("fluoden-batch")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.1.0+unknown"

if TYPE_CHECKING:
    from fluoden_batch.config import DenoiseConfig, DenoiseOptions, NoiseConfig, SegmentConfig
    from fluoden_batch.models.weights import load_model, shipped_models
    from fluoden_batch.pipeline.api import denoise, estimate_noise, segment
    from fluoden_batch.pipeline.progress import ConsoleReporter, Reporter
    from fluoden_batch.pipeline.run import RunResult

_EXPORTS = {
    "denoise": "fluoden_batch.pipeline.api",
    "segment": "fluoden_batch.pipeline.api",
    "estimate_noise": "fluoden_batch.pipeline.api",
    "RunResult": "fluoden_batch.pipeline.run",
    "Reporter": "fluoden_batch.pipeline.progress",
    "ConsoleReporter": "fluoden_batch.pipeline.progress",
    "DenoiseConfig": "fluoden_batch.config",
    "DenoiseOptions": "fluoden_batch.config",
    "NoiseConfig": "fluoden_batch.config",
    "SegmentConfig": "fluoden_batch.config",
    "load_model": "fluoden_batch.models.weights",
    "shipped_models": "fluoden_batch.models.weights",
}
__all__ = [
    "ConsoleReporter",
    "DenoiseConfig",
    "DenoiseOptions",
    "NoiseConfig",
    "Reporter",
    "RunResult",
    "SegmentConfig",
    "__version__",
    "denoise",
    "estimate_noise",
    "load_model",
    "segment",
    "shipped_models",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

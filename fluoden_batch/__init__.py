"""fluoden-batch: batch denoising of fluorescence microscopy datasets stored as Zarr."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fluoden-batch")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.1.0+unknown"

__all__ = ["__version__"]

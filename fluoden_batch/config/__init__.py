"""Configuration: one pydantic model per command, the single source of names, defaults and
help (the CLI builds its flags from them), and the one reader of config files.

- :class:`DenoiseConfig` (``fluoden denoise``), :class:`SegmentConfig` (``segment``),
  :class:`NoiseConfig` (``estimate-noise``), :class:`~fluoden_batch.config.train.TrainConfig`
  (``train``);
- :class:`DenoiseOptions`, :class:`SegmentOptions`: how each plane is denoised or
  labelled, the part of those that arrays take too;
- :class:`ComputeOptions`: the Dask options every run command shares;
- :func:`read_config_file` (TOML or YAML) and :func:`load_config` (file + overrides,
  with one readable line per invalid field, naming flags; :func:`load_options` names the
  Python API's keywords).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fluoden_batch.config.compute import COMPUTE_FIELDS, ComputeOptions
from fluoden_batch.config.denoise import (
    DEFAULT_MASKED_MODEL,
    DEFAULT_MODEL,
    MAX_CLUSTERS,
    DenoiseConfig,
    DenoiseOptions,
)
from fluoden_batch.config.files import describe_error, flag_name, read_config_file
from fluoden_batch.config.noise import NoiseConfig
from fluoden_batch.config.segment import SegmentConfig, SegmentOptions
from fluoden_batch.errors import FluodenError

__all__ = [
    "COMPUTE_FIELDS",
    "DEFAULT_MASKED_MODEL",
    "DEFAULT_MODEL",
    "MAX_CLUSTERS",
    "ComputeOptions",
    "DenoiseConfig",
    "DenoiseOptions",
    "NoiseConfig",
    "SegmentConfig",
    "SegmentOptions",
    "describe_error",
    "load_config",
    "load_options",
    "read_config_file",
]

C = TypeVar("C", bound=BaseModel)


def load_config(schema: type[C], file: Path | None = None, /, **overrides: Any) -> C:
    """Validate ``schema`` from a config file (optional) and overrides (``None`` = not given).

    Raises
    ------
    FluodenError
        Unreadable file or invalid values: one line naming every field at fault (as the
        command line's flag, ``--tile``).
    """
    return _validated(schema, file, overrides, flag_name)


def load_options(schema: type[C], file: Path | None = None, /, **options: Any) -> C:
    """:func:`load_config` for the Python API: its errors name the keyword (``tile``), not
    the flag."""
    return _validated(schema, file, options, str)


def _validated(
    schema: type[C], file: Path | None, overrides: dict[str, Any], name: Callable[[str], str]
) -> C:
    values = read_config_file(file) if file is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(describe_error(e, schema.model_fields, name) for e in exc.errors())
        where = f" in {file}" if file is not None else ""
        raise FluodenError(f"invalid configuration{where}: {problems}") from exc

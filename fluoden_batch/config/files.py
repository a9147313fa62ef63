"""The one reader of configuration files (TOML or YAML), for every command."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from fluoden_batch.errors import FluodenError

__all__ = ["read_config_file"]


def read_config_file(path: Path, error: type[FluodenError] = FluodenError) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` file into a dict of options.

    Raises
    ------
    FluodenError (or ``error``)
        Another suffix, an unreadable file, invalid syntax or a top level that is not a
        table/mapping; the message names the file.
    """
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise error(f"config file {path}: use a .toml, .yaml or .yml file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"config file {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise error(f"config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"config file {path}: expected a table/mapping of options")
    return data

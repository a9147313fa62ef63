"""The one reader of configuration files (TOML or YAML), for every command."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fluoden_batch.errors import FluodenError, validator_message


def flag_name(loc: str) -> str:
    """The command-line flag of a field: ``mask_sigma`` -> ``--mask-sigma``."""
    return "--" + loc.replace("_", "-")


def describe_error(
    error: dict[str, Any], fields: Any, name: Callable[[str], str] = flag_name
) -> str:
    """One readable phrase for a pydantic validation error, naming the option (``name``
    of its location: ``--mask-sigma`` by default) and the closest known one for a typo."""
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":  # a key of a file or a keyword: named as given
        close = difflib.get_close_matches(str(error["loc"][0]), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        label = repr(loc) if name is flag_name else name(loc)
        return f"{label}: unknown option{hint}"
    if error["type"] == "missing":
        return f"{name(loc)}: required but not given"
    message = validator_message(str(error["msg"]))
    if not loc:  # a model-level check; it names its fields itself
        return message
    got = repr(error.get("input"))
    said = re.search(rf"(?<![\w.]){re.escape(got)}(?![\w.])", message)  # not 3 in "32"
    return f"{name(loc)}: {message}" + ("" if said else f" (got {got})")


__all__ = ["describe_error", "flag_name", "read_config_file"]


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

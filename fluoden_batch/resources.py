"""The example configs and deploy profiles shipped with fluoden, from a checkout or a wheel.

A checkout keeps them at the top level (``configs/``, ``deploy/``); a wheel carries copies
inside the package (``fluoden_batch/_shipped/``, put there by ``setup.py``'s build step).
Profiles are named by their path under ``deploy/`` without ``.yaml`` (``local``,
``slurm/cpu``, ...), configs by their file stem (``noise2noise_fmd``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = [
    "describe",
    "resolve_profile",
    "shipped_configs",
    "shipped_folder",
    "shipped_profiles",
]

_PACKAGE = Path(__file__).resolve().parent
Folder = Literal["configs", "deploy"]


def shipped_folder(name: Folder) -> Path | None:
    """The shipped ``configs`` or ``deploy`` folder: inside the installed package, else
    beside it in a checkout (an editable install reads the checkout's); None if neither."""
    for candidate in (_PACKAGE / "_shipped" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    return None


def shipped_profiles() -> dict[str, Path]:
    """Deploy profiles (``deploy/**/*.yaml``) by name, e.g. ``"slurm/cpu"``."""
    root = shipped_folder("deploy")
    if root is None:
        return {}
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def shipped_configs() -> dict[str, Path]:
    """Training configs (``configs/*.yaml|toml``) by file stem."""
    root = shipped_folder("configs")
    if root is None:
        return {}
    return {p.stem: p for p in sorted(root.iterdir()) if p.suffix in {".yaml", ".toml"}}


def describe(path: Path) -> str:
    """A file's first comment line (without ``#``), its one-line description (the shipped
    files' first lines are whole sentences: tested)."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.lstrip("#").strip().rstrip(",;:")
    return ""


def resolve_profile(path: Path | str) -> Path:
    """``path`` itself when it exists (or names no shipped profile), else the shipped
    profile of that name: ``slurm/cpu``, ``slurm/cpu.yaml`` or ``deploy/slurm/cpu.yaml``.
    """
    path = Path(path)
    if path.exists():
        return path
    name = path.as_posix().removesuffix(".yaml").removeprefix("deploy/")
    return shipped_profiles().get(name, path)

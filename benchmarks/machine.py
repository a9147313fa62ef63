"""One line describing the machine a benchmark ran on (imported by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def describe(libraries: dict[str, str] | None = None, note: str = "") -> str:
    """CPU model, visible CPUs, OS, Python and NumPy versions, ``libraries``, OMP threads."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    libs = "".join(f", {name} {version}" for name, version in (libraries or {}).items())
    text = (
        f"{cpu}; {os.cpu_count()} logical CPUs visible (shared); {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, NumPy {np.__version__}"
        f"{libs}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    return f"{text}, {note}" if note else text

"""The run: plan blocks, resume, submit, gather and finish, for ``denoise`` and ``segment``.

The only package that touches Dask and the stores (with :mod:`fluoden_batch.io`):

- :mod:`~fluoden_batch.pipeline.planning`: validate inputs, create or reopen OUT, list blocks;
- :mod:`~fluoden_batch.pipeline.params`: values fixed once per run (model, noise, centres);
- :mod:`~fluoden_batch.pipeline.statistics`: per-channel statistics from a sample of blocks;
- :mod:`~fluoden_batch.pipeline.worker`: one block on a worker (read, denoise, write, mark);
- :mod:`~fluoden_batch.pipeline.run`: submit the blocks, collect failures, finish;
- :mod:`~fluoden_batch.pipeline.segment`: the same for ``segment``.

Names are imported on first use: a Dask worker that unpickles a block task imports
:mod:`~fluoden_batch.pipeline.worker` only, not the planning side (measured: importing it
all cost each worker seconds before its first block).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluoden_batch.pipeline.planning import Plan, plan
    from fluoden_batch.pipeline.run import RunResult, execute, finish

_EXPORTS = {
    "Plan": "planning",
    "plan": "planning",
    "RunResult": "run",
    "execute": "run",
    "finish": "run",
}
__all__ = ["Plan", "RunResult", "execute", "finish", "plan"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fluoden_batch.pipeline.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

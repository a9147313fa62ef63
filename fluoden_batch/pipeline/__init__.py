"""The run: plan blocks, resume, submit, gather and finish, for ``denoise`` and ``segment``.

The only package that touches Dask and the stores (with :mod:`fluoden_batch.io`):

- :mod:`~fluoden_batch.pipeline.plan`: validate inputs, create or reopen OUT, list blocks;
- :mod:`~fluoden_batch.pipeline.params`: values fixed once per run (model, noise, centres);
- :mod:`~fluoden_batch.pipeline.statistics`: per-channel statistics from a sample of blocks;
- :mod:`~fluoden_batch.pipeline.worker`: one block on a worker (read, denoise, write, mark);
- :mod:`~fluoden_batch.pipeline.run`: submit the blocks, collect failures, finish;
- :mod:`~fluoden_batch.pipeline.segment`: the same for ``segment``.
"""

from fluoden_batch.pipeline.plan import Plan, plan
from fluoden_batch.pipeline.run import RunResult, execute, finish

__all__ = ["Plan", "RunResult", "execute", "finish", "plan"]

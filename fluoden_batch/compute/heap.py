"""glibc's heap settings in Dask workers: undo what Dask's ``MALLOC_TRIM_THRESHOLD_`` costs.

Dask's nannies start every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the system
soon. Any explicit value of a glibc malloc setting also turns off glibc's *growing* mmap
threshold: every array over 128 KiB is then mapped anew and page-faulted in on first use,
and a block's arrays (a few MiB and up: tiles, activations, filter strips) are mapped and
unmapped over and over. Measured on fluoden's pipeline (``benchmarks/throughput.py
--quick``, 2 workers): 0.212 Mpx/s with it, 0.261 without.

Two remedies, by where the workers start:

- :func:`worker_environ`: the local clusters started here (``--workers``, ``--profile``
  of kind ``local`` and ``local-cuda``) start their workers without Dask's value.
- :class:`HeapThresholds`, a worker plugin every client of a run registers: in a worker
  that runs with Dask's value (SLURM and Kubernetes workers, a scheduler the user
  started), it sets glibc's thresholds to the state its growing threshold reaches on such
  work (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`), through ``mallopt`` in the
  running process. Workers whose environment says anything else are left alone.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = [
    "DASK_MALLOC_TRIM",
    "MALLOC_TRIM",
    "MMAP_THRESHOLD",
    "TRIM_THRESHOLD",
    "HeapThresholds",
    "grow_thresholds",
    "worker_environ",
]

MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"
MALLOC_MMAP = "MALLOC_MMAP_THRESHOLD_"
DASK_MALLOC_TRIM = "65536"  # distributed's default for it (distributed.yaml)
# glibc's largest growing mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX,
# 4 MiB x sizeof(long)), and the trim threshold glibc sets beside it (twice it)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def worker_environ() -> dict[str, object]:
    """The environment set before a worker starts by the nannies of the local clusters
    started here: Dask's (``distributed.nanny.pre-spawn-environ``), less its
    ``MALLOC_TRIM_THRESHOLD_`` where that is Dask's own default (65536; see the module's
    notes). A value the user configured is kept.

    A nanny sets its pre-spawn environment in the process that runs it, and workers inherit
    that process's environment: where an earlier Dask cluster of this process (a plain
    ``LocalCluster`` in a notebook) left Dask's value in ``os.environ``, it is removed
    there too (a shell's ``export MALLOC_TRIM_THRESHOLD_=65536`` looks the same and goes
    with it; any other value stays).
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if str(environ.get(MALLOC_TRIM, "")) == DASK_MALLOC_TRIM:
        del environ[MALLOC_TRIM]
        if os.environ.get(MALLOC_TRIM) == DASK_MALLOC_TRIM:
            del os.environ[MALLOC_TRIM]
    return environ


def grow_thresholds() -> bool:
    """In this process, where it runs with Dask's ``MALLOC_TRIM_THRESHOLD_`` (65536) and no
    ``MALLOC_MMAP_THRESHOLD_``: set glibc's mmap threshold to :data:`MMAP_THRESHOLD` and its
    trim threshold to :data:`TRIM_THRESHOLD` (``mallopt``). Arrays up to 32 MiB then come
    from the heap and are reused, as without Dask's setting once glibc's threshold has
    grown; memory over 64 MiB free at the heap's top still goes back to the system.

    Returns
    -------
    bool
        Whether the thresholds were set (False elsewhere, or without glibc).
    """
    if os.environ.get(MALLOC_TRIM) != DASK_MALLOC_TRIM or MALLOC_MMAP in os.environ:
        return False
    try:  # the C library already loaded in this process (no library search, no subprocess)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


class HeapThresholds(WorkerPlugin):
    """Worker plugin: :func:`grow_thresholds` in every worker, now and as workers join;
    ``applied`` says whether it set them in this worker."""

    name = "fluoden-heap-thresholds"
    idempotent = True

    def __init__(self) -> None:
        self.applied = False

    def setup(self, worker: Any) -> None:
        self.applied = grow_thresholds()

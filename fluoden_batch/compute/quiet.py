"""Keep Dask workers from repeating, as tracebacks, what a run reports in one line.

- :class:`QuietTaskErrors`, a worker plugin: a block task that fails on bad input raises
  a :class:`~fluoden_batch.errors.FluodenError`, and the run names the block and the
  reason (:func:`fluoden_batch.pipeline.run.block_error`). The worker would also log it as
  "Compute Failed ... Traceback" on every failure; the plugin drops exactly those records.
  Any other exception of a task (a bug) keeps Dask's traceback, and a dying worker is
  logged by the nanny and the scheduler, which the plugin does not touch.
- :func:`dask_setup`, a worker preload for the local cluster: its worker processes share
  the terminal's process group, so Ctrl-C reaches each of them and each printed a
  ``KeyboardInterrupt`` traceback. They ignore SIGINT instead; the main process handles
  the interrupt and closes the cluster, which stops them. A worker busy with a block
  then outlives its scheduler for a moment (until its nanny kills it) and would log the
  failed heartbeat with a traceback; its scheduler lives in the main process, which is
  closing the cluster (or gone, and then the nanny's watch stops the worker anyway), so
  that record is dropped too.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from distributed import Worker
from distributed.diagnostics.plugin import WorkerPlugin

from fluoden_batch.errors import FluodenError

__all__ = ["PRELOAD", "QuietTaskErrors", "dask_setup"]

PRELOAD = __name__  # the module name to give a LocalCluster as ``preload``
WORKER_LOGGER = "distributed.worker"
BLOCK_KEY = "-block-"  # block task keys: f"{prefix}-{token}-{run}-block-{block id}"
HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


def _error_names(cls: type[BaseException] = FluodenError) -> set[str]:
    """Names of ``cls`` and of all its subclasses defined so far."""
    names = {cls.__name__}
    for sub in cls.__subclasses__():
        names |= _error_names(sub)
    return names


def is_reported_task_error(record: logging.LogRecord) -> bool:
    """Whether ``record`` is a worker's "Compute Failed" log of a block task of a run that
    raised a :class:`~fluoden_batch.errors.FluodenError` (which the run reports itself).

    Its arguments are, in distributed's worker: key, state, task, ``repr`` of the
    exception, traceback.
    """
    args = record.args
    if not str(record.msg).startswith("Compute Failed") or not isinstance(args, tuple):
        return False
    if len(args) < 4:
        return False
    key, exception = str(args[0]), str(args[3])
    ours = key.startswith("fluoden-") and BLOCK_KEY in key
    return ours and exception.split("(", 1)[0] in _error_names()


class _DropReportedErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_reported_task_error(record)


class _DropHeartbeatFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(HEARTBEAT_FAILED)


class QuietTaskErrors(WorkerPlugin):
    """Worker plugin: no "Compute Failed" traceback for the block errors a run reports
    (see the module's docstring); removed again with the plugin."""

    name = "fluoden-quiet-task-errors"
    idempotent = True

    def __init__(self) -> None:
        self._filter = _DropReportedErrors()

    def setup(self, worker: Worker) -> None:
        logging.getLogger(WORKER_LOGGER).addFilter(self._filter)

    def teardown(self, worker: Worker) -> None:
        logging.getLogger(WORKER_LOGGER).removeFilter(self._filter)


def dask_setup(worker: Any) -> None:
    """Worker preload (:data:`PRELOAD`) of a local cluster: ignore SIGINT in this worker
    process, and drop its failed-heartbeat traceback (see the module's docstring)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger(WORKER_LOGGER).addFilter(_DropHeartbeatFailures())

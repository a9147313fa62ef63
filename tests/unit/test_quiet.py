"""Which worker log records compute.quiet drops: only the block errors a run reports."""

from __future__ import annotations

import logging

import pytest

from fluoden_batch.compute.quiet import is_reported_task_error
from fluoden_batch.errors import BlockError, InputError, ModelError

COMPUTE_FAILED = (
    "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\nTraceback: %r\n"
)
BLOCK_KEY = "fluoden-5406523939-9e0c9758-block-1.1"


def record(key: str, exception: Exception, msg: str = COMPUTE_FAILED) -> logging.LogRecord:
    """A record as distributed's worker logs a failed task (the exception as its repr)."""
    args = (key, "executing", "<Task ...>", repr(exception), '  File "worker.py", line 1\n')
    return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    "exception", [InputError("1 NaN/Inf pixels"), ModelError("weights changed"), BlockError("x")]
)
def test_block_errors_of_the_project_are_dropped(exception):
    assert is_reported_task_error(record(BLOCK_KEY, exception))
    assert is_reported_task_error(record("fluoden-segment-ab-cd-block-0.0", exception))


@pytest.mark.parametrize(
    ("key", "exception", "msg"),
    [
        (BLOCK_KEY, RuntimeError("a bug: keep its traceback"), COMPUTE_FAILED),
        ("estimate-abc123", InputError("not a block task of a run"), COMPUTE_FAILED),
        ("user-task-block-3", InputError("another program's key"), COMPUTE_FAILED),
        (BLOCK_KEY, InputError("x"), "Worker process %s died (%s %s %s %s)"),
    ],
)
def test_other_records_are_kept(key, exception, msg):
    assert not is_reported_task_error(record(key, exception, msg))

"""Submit one task per block with ``client.map`` and collect failures (denoise and segment).

Keys are fresh per run (a scheduler may still hold the failed futures of an earlier try
under the old keys); failing blocks do not stop the others; the caller writes its metrics
and then raises :func:`block_error` naming every failed block.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, as_completed
from distributed.scheduler import KilledWorker

from fluoden_batch.errors import BlockError
from fluoden_batch.restore.tiles import Block

ProgressHook = Callable[[int, int], None]


def describe_failure(exc: BaseException, memory_limit: str) -> str:
    """One line on why a block failed, with a hint where the cause is a dying worker."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, KilledWorker):
        text += (
            f" - every worker that ran it died (out of memory? --memory-limit is "
            f"{memory_limit}; a smaller --tile or --block-min lowers the need)"
        )
    return text


def run_blocks(
    client: Client,
    fn: Callable[..., Any],
    pending: Sequence[Block],
    job: Any,
    *,
    prefix: str,
    total: int,
    memory_limit: str,
    on_block: ProgressHook | None = None,
    resources: dict[str, float] | None = None,
) -> dict[str, str]:
    """Run ``fn(block, job=job)`` for every pending block; return ``{block id: reason}``
    of the failed ones.

    ``on_block(done, total)`` is called after each finished or failed block (``done``
    counts the blocks already finished before this run too). ``resources`` (e.g.
    ``{"GPU": 1}``) go to ``client.map`` itself: ``dask.annotate`` would be lost in graph
    fusion. An interrupt cancels the remaining tasks and propagates.
    """
    run = uuid.uuid4().hex[:8]
    futures = client.map(
        fn,
        list(pending),
        job=job,
        key=[f"{prefix}-{run}-block-{b.id}" for b in pending],
        pure=False,
        resources=resources,
    )
    by_key = {f.key: b for f, b in zip(futures, pending, strict=True)}
    failed: dict[str, str] = {}
    done = total - len(pending)
    try:
        for future in as_completed(futures):
            if future.status == "error":
                failed[by_key[future.key].id] = describe_failure(future.exception(), memory_limit)
            done += 1
            if on_block is not None:
                on_block(done, total)
    except BaseException:
        client.cancel(futures)
        raise
    return failed


def block_error(failed: dict[str, str], total: int, name: str) -> BlockError:
    """The error naming every failed block of array ``name`` and why."""
    lines = "\n".join(f"  block {k} of {name}: {v}" for k, v in failed.items())
    return BlockError(
        f"{len(failed)} of {total} blocks failed; finished blocks are kept and a rerun of the "
        f"same command retries only these:\n{lines}"
    )

"""Run a plan's blocks and finish it, for ``denoise`` and ``segment`` alike.

:func:`run_blocks` gives one task per pending block to a :class:`distributed.Client`
(``client.map``) or, with no client, runs them one after the other in this process
(small inputs: no cluster start-up). Keys are fresh per run (a scheduler may still hold
the failed futures of an earlier try under the old keys); failing blocks do not stop the
others; :func:`execute` writes the metrics of every finished block and then raises
:func:`block_error` naming every failed one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, as_completed
from distributed.scheduler import KilledWorker

from fluoden_batch.errors import BlockError
from fluoden_batch.io.store import update_provenance
from fluoden_batch.pipeline.planning import METRICS_FILE, Plan
from fluoden_batch.pipeline.worker import process_block
from fluoden_batch.report import summarise
from fluoden_batch.restore.tiles import Block

ProgressHook = Callable[[int, int], None]


@dataclass
class RunResult:
    """What a run did: counts, failures, the metrics table and its summary."""

    output: Path
    blocks_total: int
    blocks_run: int
    blocks_skipped: int
    seconds: float
    metrics: pd.DataFrame
    summary: dict[str, Any]
    failed: dict[str, str] = field(default_factory=dict)


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
    client: Client | None,
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
    of the failed ones. ``client`` None runs them here, one after the other.

    ``on_block(done, total)`` is called after each finished or failed block (``done``
    counts the blocks already finished before this run too). ``resources`` (e.g.
    ``{"GPU": 1}``) go to ``client.map`` itself: ``dask.annotate`` would be lost in graph
    fusion. An interrupt cancels the remaining tasks and propagates.
    """
    if client is None:
        return _run_here(fn, pending, job, total=total, on_block=on_block)
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


def _run_here(
    fn: Callable[..., Any],
    pending: Sequence[Block],
    job: Any,
    *,
    total: int,
    on_block: ProgressHook | None,
) -> dict[str, str]:
    failed: dict[str, str] = {}
    done = total - len(pending)
    for block in pending:
        try:
            fn(block, job=job)
        except Exception as exc:  # recorded like a failed task; interrupts propagate
            failed[block.id] = describe_failure(exc, "")
        done += 1
        if on_block is not None:
            on_block(done, total)
    return failed


def block_error(failed: dict[str, str], total: int, name: str) -> BlockError:
    """The error naming every failed block of array ``name`` and why."""
    lines = "\n".join(f"  block {k} of {name}: {v}" for k, v in failed.items())
    return BlockError(
        f"{len(failed)} of {total} blocks failed; finished blocks are kept and a rerun of the "
        f"same command retries only these:\n{lines}"
    )


def execute(
    p: Plan,
    client: Client | None,
    on_block: ProgressHook | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Submit the pending blocks (to ``client``, or run them here when None), wait for all
    of them, then gather metrics.

    ``on_block(done, total)`` is called after each finished (or failed) block. Blocks that
    fail do not stop the others; they are listed in a :class:`BlockError` at the end,
    after the metrics of every finished block have been written. ``resources`` (e.g.
    ``{"GPU": 1}``) go to ``client.map`` itself: ``dask.annotate`` would be lost in graph
    fusion.
    """
    return run_plan(p, client, process_block, finish, "fluoden", on_block, resources)


def run_plan(
    p: Any,
    client: Client | None,
    fn: Callable[..., Any],
    finish: Callable[[Any, float, dict[str, str]], RunResult],
    prefix: str,
    on_block: ProgressHook | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Run ``fn(block, job=p.job)`` for the plan's pending blocks, then ``finish(p,
    seconds, failed)``; raise a :class:`BlockError` naming the failed blocks after that
    (denoise and segment alike)."""
    t0 = time.perf_counter()
    failed = run_blocks(
        client,
        fn,
        p.pending,
        p.job,
        prefix=f"{prefix}-{p.token}",
        total=len(p.blocks),
        memory_limit=p.config.memory_limit,
        on_block=on_block,
        resources=resources,
    )
    result = finish(p, time.perf_counter() - t0, failed)
    if failed:
        raise block_error(failed, len(p.blocks), p.job.source.describe())
    return result


def finish(p: Plan, seconds: float, failed: dict[str, str]) -> RunResult:
    """Write the metrics table and the summary into OUT; return the run's result."""
    ran = [b for b in p.pending if b.id not in failed]
    out = Path(p.job.output.path)
    rows = list(p.job.output.done_rows().values())
    metrics = pd.DataFrame(rows)
    if not metrics.empty:
        metrics = metrics.sort_values("block", key=lambda s: s.map(_block_order)).reset_index(
            drop=True
        )
        metrics.to_parquet(out / METRICS_FILE, index=False)
    summary = summarise(metrics, seconds, len(p.blocks), p.job.data_range)
    pixels_run = sum(int(np.prod(b.shape)) for b in ran)
    if ran and seconds > 0:
        summary["mpx_per_s"] = pixels_run / seconds / 1e6
    complete = len(rows) == len(p.blocks)
    last_run = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": p.config.model_dump(mode="json"),
        "blocks_run": len(ran),
        "failed": failed,
    }
    update_provenance(out, summary=summary, complete=complete, last_run=last_run)
    return RunResult(
        output=out,
        blocks_total=len(p.blocks),
        blocks_run=len(ran),
        blocks_skipped=len(p.blocks) - len(p.pending),
        seconds=seconds,
        metrics=metrics,
        summary=summary,
        failed=failed,
    )


def _block_order(block_id: str) -> tuple[int, ...]:
    return tuple(int(i) for i in block_id.split("."))

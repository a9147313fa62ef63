"""Run a plan's blocks and finish it, for ``denoise`` and ``segment`` alike.

:func:`run_blocks` gives one task per pending block to a :class:`distributed.Client`
or, with no client, runs them one after the other in this process (small inputs: no
cluster start-up). At most a window of tasks is submitted at a time (a few per worker
thread, at least :data:`WINDOW_MIN`), topped up as tasks finish: the driver and the
scheduler hold a bounded number of futures whatever the plan's size (all 239,121 blocks
of a 10^6 x 10^6 image at once took 3.4 GB and made Ctrl-C wait for minutes), and an
interrupt cancels only the window. Keys are fresh per run (a scheduler may still hold
the failed futures of an earlier try under the old keys); failing blocks do not stop the
others; :func:`execute` writes the metrics of every finished block and then raises
:func:`block_error` naming every failed one. When every level-0 block is written, the
pyramid levels are built the same way (:mod:`fluoden_batch.pipeline.pyramid`). The run
holds OUT's lock throughout and releases it at the end, however it ends.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker

from fluoden_batch.errors import BlockError, OutputError
from fluoden_batch.io.store import remove_partial_writes, update_provenance, writing_summary
from fluoden_batch.pipeline.planning import METRICS_FILE, Plan
from fluoden_batch.pipeline.progress import ProgressHook, Reporter
from fluoden_batch.pipeline.pyramid import build_pyramid
from fluoden_batch.pipeline.worker import process_block
from fluoden_batch.report import summarise
from fluoden_batch.restore.tiles import Block

# Tasks in flight per worker thread, and at least (an adaptive cluster starts with none:
# it is scaled by the work it sees); the window is resized every WINDOW_CHECK_S seconds
WINDOW_PER_THREAD = 4
WINDOW_MIN = 256
WINDOW_CHECK_S = 5.0


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
    ``{"GPU": 1}``) go to ``client.submit`` itself: ``dask.annotate`` would be lost in
    graph fusion. Blocks are submitted in a bounded window (:func:`_window`). An interrupt
    cancels the tasks in flight and propagates; so does an :class:`OutputError` of a block
    (the run lost OUT's lock: no other block could write either).
    """
    if client is None:
        return _run_here(fn, pending, job, total=total, on_block=on_block)
    run = uuid.uuid4().hex[:8]
    blocks = iter(pending)
    in_flight: dict[str, tuple[Block, Future]] = {}

    def submit(n: int) -> list[Future]:
        futures = []
        for block in itertools.islice(blocks, n):
            key = f"{prefix}-{run}-block-{block.id}"
            future = client.submit(fn, block, job=job, key=key, pure=False, resources=resources)
            in_flight[key] = (block, future)
            futures.append(future)
        return futures

    window, checked = _window(client), time.monotonic()
    running = as_completed()
    failed: dict[str, str] = {}
    done = total - len(pending)
    try:
        running.update(submit(window))
        for future in running:
            block, _ = in_flight.pop(future.key)
            if future.status == "error":
                exc = future.exception()
                if isinstance(exc, OutputError):
                    raise exc
                failed[block.id] = describe_failure(exc, memory_limit)
            done += 1
            if on_block is not None:
                on_block(done, total)
            if time.monotonic() - checked > WINDOW_CHECK_S:
                window, checked = _window(client), time.monotonic()
            running.update(submit(max(0, window - len(in_flight))))
    except BaseException:
        running.clear()
        client.cancel([future for _, future in in_flight.values()])
        raise
    return failed


def _window(client: Client) -> int:
    """How many block tasks to keep in flight on ``client``'s cluster now."""
    return max(WINDOW_MIN, WINDOW_PER_THREAD * sum(client.nthreads().values()))


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
        except OutputError:  # the run lost OUT's lock: no other block can write either
            raise
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
    reporter: Reporter | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Submit the pending blocks (to ``client``, or run them here when None), wait for all
    of them, then gather metrics.

    ``reporter.block(done, total)`` is called after each finished (or failed) block, and
    the pyramid phase is reported as a phase of its own (``reporter.start``). Blocks that
    fail do not stop the others; they are listed in a :class:`BlockError` at the end,
    after the metrics of every finished block have been written. ``resources`` (e.g.
    ``{"GPU": 1}``) go to ``client.submit`` itself: ``dask.annotate`` would be lost in
    graph fusion. OUT's lock, taken by :func:`~fluoden_batch.pipeline.planning.plan`, is
    released at the end: plan again to run again.
    """
    return run_plan(p, client, process_block, finish, "fluoden", reporter, resources)


def run_plan(
    p: Any,
    client: Client | None,
    fn: Callable[..., Any],
    finish: Callable[[Any, float, dict[str, str]], RunResult],
    prefix: str,
    reporter: Reporter | None = None,
    resources: dict[str, float] | None = None,
) -> RunResult:
    """Run ``fn(block, job=p.job)`` for the plan's pending blocks, then, if none failed,
    the pyramid phase (:func:`~fluoden_batch.pipeline.pyramid.build_pyramid`), each
    reported to ``reporter``, then clear the temporary files of workers killed mid-write
    (:func:`~fluoden_batch.io.store.remove_partial_writes`), then
    ``finish(p, seconds, failed)``; raise a :class:`BlockError` naming the failed blocks
    after that (denoise and segment alike). ``p.lock`` (OUT's) is released at the end,
    however the run ends.

    Raises
    ------
    OutputError
        The plan's lock on OUT was lost (taken over by another run, or this plan ran
        already): nothing is written.
    """
    t0 = time.perf_counter()
    try:
        with p.lock.running():
            failed = run_blocks(
                client,
                fn,
                p.pending,
                p.job,
                prefix=f"{prefix}-{p.token}",
                total=len(p.blocks),
                memory_limit=p.config.memory_limit,
                on_block=None if reporter is None else reporter.block,
                resources=resources,
            )
            if not failed:
                failed = build_pyramid(
                    client,
                    Path(p.job.output.path),
                    p.job.output.owner,
                    block_min=p.config.block_min,
                    prefix=f"{prefix}-{p.token}",
                    memory_limit=p.config.memory_limit,
                    reporter=reporter,
                )
            remove_partial_writes(Path(p.job.output.path))  # left by workers killed mid-write
            result = finish(p, time.perf_counter() - t0, failed)
    finally:
        p.lock.release()
    if failed:
        raise block_error(failed, len(p.blocks), p.job.source.describe())
    return result


def finish(p: Plan, seconds: float, failed: dict[str, str]) -> RunResult:
    """Write the metrics table and the summary into OUT (if the run still holds its lock);
    return the run's result."""
    p.job.output.check_owner()
    ran = p.pending.without(failed)
    out = Path(p.job.output.path)
    rows = list(p.job.output.done_rows().values())
    metrics = pd.DataFrame(rows)
    if not metrics.empty:
        metrics = metrics.sort_values("block", key=lambda s: s.map(_block_order))
        metrics = metrics.reset_index(drop=True)
    summary = summarise(metrics, seconds, len(p.blocks), p.job.data_range)
    if ran and seconds > 0:
        summary["mpx_per_s"] = ran.pixels() / seconds / 1e6
    complete = len(rows) == len(p.blocks) and not failed
    last_run = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": p.config.model_dump(mode="json"),
        "blocks_run": len(ran),
        "failed": failed,
    }
    with writing_summary(out):
        if not metrics.empty:
            metrics.to_parquet(out / METRICS_FILE, index=False)
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

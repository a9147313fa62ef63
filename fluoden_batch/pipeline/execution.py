"""Plan -> client -> execute -> finish: the one sequence every run command follows.

:func:`run_planned` takes a plan (of ``denoise`` or ``segment``), tells the reporter, picks
where the blocks run (:func:`client_for`) and runs them. Small inputs run in this process:
a local Dask cluster costs seconds to start (its worker processes import torch and load
the model each), more than the whole job for a notebook-sized image; see
``benchmarks/startup.py`` for the measured start-up and crossover.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distributed import Client, performance_report

from fluoden_batch.compute import dask_client, gpu_resources, load_profile
from fluoden_batch.config import ComputeOptions, DenoiseConfig
from fluoden_batch.pipeline.adapt import ensure_adapted
from fluoden_batch.pipeline.planning import plan
from fluoden_batch.pipeline.progress import Reporter
from fluoden_batch.pipeline.pyramid import pyramid_pending
from fluoden_batch.pipeline.run import RunResult, execute, finish

__all__ = ["IN_PROCESS_PIXELS", "client_for", "run_denoise", "run_planned"]

# Inputs up to this many pixels to process run in this process unless a cluster is asked
# for (a scheduler, a profile, TLS or --workers N); measured in benchmarks/startup.py.
IN_PROCESS_PIXELS = 64 * 2**20


@contextlib.contextmanager
def client_for(
    options: ComputeOptions, pixels: int, client: Client | None = None
) -> Iterator[Client | None]:
    """The client blocks run on: ``client`` (left open), None (this process) or a new one.

    None when ``options.workers`` is 0, or when no cluster is asked for and ``pixels``
    (still to process) is at most :data:`IN_PROCESS_PIXELS`; otherwise a cluster from
    ``options`` (:func:`fluoden_batch.compute.dask_client`), closed on exit.
    """
    if client is not None:
        yield client
        return
    if options.workers == 0 or (not options.cluster_requested and pixels <= IN_PROCESS_PIXELS):
        yield None
        return
    with dask_client(
        options.scheduler,
        options.workers,
        options.threads_per_worker,
        options.memory_limit,
        options.dashboard_address,
        profile=options.profile,
        tls=options.tls_option,
    ) as started:
        yield started


def run_planned(
    p: Any,
    execute: Callable[..., RunResult],
    finish: Callable[[Any, float, dict[str, str]], RunResult],
    *,
    label: str,
    client: Client | None = None,
    reporter: Reporter | None = None,
    report_file: Any = None,
    prepare: Callable[..., None] | None = None,
) -> RunResult:
    """Report the plan ``p``, then run its pending blocks with ``execute(p, client,
    reporter=, resources=)`` on :func:`client_for`'s client (or finish at once when
    no block is pending, of level 0 or of the pyramid). ``prepare(p, client, reporter,
    resources)`` runs first on the same client (``--adapt``'s fit). ``report_file``: a
    Dask performance report (HTML) there. The plan's lock on OUT is released at the end,
    however the run ends."""
    try:
        return _run_planned(p, execute, finish, label, client, reporter, report_file, prepare)
    finally:
        p.lock.release()


def _run_planned(
    p: Any,
    execute: Callable[..., RunResult],
    finish: Callable[[Any, float, dict[str, str]], RunResult],
    label: str,
    client: Client | None,
    reporter: Reporter | None,
    report_file: Any,
    prepare: Callable[..., None] | None = None,
) -> RunResult:
    reporter = reporter or Reporter()
    cfg = p.config
    where = "resuming" if p.resumed else "writing"
    done = len(p.blocks) - len(p.pending)
    reporter.planned(
        f"{where} {cfg.output}: {len(p.blocks)} blocks of {p.source.shape} {p.source.dtype} "
        f"({p.source.meta.axes}), {done} already done",
        p.notes,
    )
    pyramid = pyramid_pending(Path(p.job.output.path), cfg.block_min)
    if not p.pending and not pyramid:
        return finish(p, 0.0, {})
    pixels = p.pending.pixels()
    resources = gpu_resources(load_profile(cfg.profile)) if cfg.profile else None
    with client_for(cfg, pixels + pyramid, client) as c:
        if c is not None:
            reporter.dashboard(c.dashboard_link)
        report = (
            performance_report(filename=str(report_file))
            if report_file and c is not None
            else contextlib.nullcontext()
        )
        if prepare is not None:
            prepare(p, c, reporter, resources)
        reporter.start(label, len(p.blocks), done, pixels / max(1, len(p.pending)))
        try:
            with report:
                return execute(p, c, reporter=reporter, resources=resources)
        finally:
            reporter.stop()


def run_denoise(
    cfg: DenoiseConfig, *, client: Client | None = None, reporter: Reporter | None = None
) -> RunResult:
    """Plan a denoising run, report it, run its blocks (on ``client``, a cluster from
    ``cfg``'s compute options, or here for small inputs) and finish."""
    p = plan(cfg)
    if p.stray_removed:
        p.notes.append(f"removed {p.stray_removed} temporary files left by an interrupted run")
    return run_planned(
        p,
        execute,
        finish,
        label="denoising",
        client=client,
        reporter=reporter,
        report_file=cfg.performance_report,
        prepare=ensure_adapted if p.adapt is not None else None,
    )

"""``fluoden denoise --adapt``: fit the model to the input, once per output, before any block.

:func:`plan_adapt` (called by :func:`~fluoden_batch.pipeline.planning.plan`, before OUT
is created) checks that the input can be fitted and picks the loss;
:func:`ensure_adapted` (called by the run once its client exists, before the blocks)
fits on a Dask worker (a GPU worker where the profile has one) or in this process, and
writes the weights to ``OUT/.fluoden/adapted.safetensors`` (atomically, holding OUT's
lock). With ``--detail`` (on by default) the restoration is then tuned by SURE for the
fitted model, on this machine, and stored in OUT's ``adapted`` record. The blocks then run
the adapted model. A rerun or a resume finds the file and never refits: a run killed
during the fit refits from the same seed, one killed after it reuses the weights (and the
restoration, or tunes it again: the same choice), so both end as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from distributed import Client

from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import FluodenError, ModelError, OutputError
from fluoden_batch.io.source import ImageSource, SourceSpec
from fluoden_batch.io.store import read_provenance, update_provenance
from fluoden_batch.models.weights import ADAPTED_WEIGHTS, file_digest, read_metadata, write_file
from fluoden_batch.pipeline.params import ChannelValues, tuned_detail
from fluoden_batch.pipeline.progress import Reporter
from fluoden_batch.restore.detail import Detail
from fluoden_batch.train.adapt import (
    Adapted,
    AdaptSettings,
    Mode,
    adapt_model,
    check_repeats,
    choose_mode,
    patch_size,
    probe_input,
)

__all__ = ["AdaptJob", "adapted_path", "ensure_adapted", "fit_job", "plan_adapt"]


@dataclasses.dataclass(frozen=True)
class AdaptJob:
    """The fit of a run: where its input is, what to fit, and (on a Dask worker) the
    event topic its steps are published under for the client's progress bar."""

    source: SourceSpec
    settings: AdaptSettings
    progress_topic: str | None = None


def fit_job(
    job: AdaptJob, on_step: Callable[[int, int], None] | None = None
) -> tuple[Adapted, str]:
    """Open the input and fit (:func:`~fluoden_batch.train.adapt.adapt_model`), here or as
    one task on a Dask worker; returns the fit and where it ran (the worker's address, or
    ``"this process"``). On a worker, torch uses the worker's threads (block tasks set
    one), and with ``progress_topic`` each step is logged as an event of that topic
    (``Worker.log_event``)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        worker = None
    if on_step is None and worker is not None and job.progress_topic is not None:
        topic = job.progress_topic

        def on_step(step: int, steps: int) -> None:
            worker.log_event(topic, (step, steps))

    if worker is None:
        return adapt_model(job.source.open(), job.settings, on_step), "this process"
    threads = torch.get_num_threads()
    torch.set_num_threads(worker.state.nthreads)  # block tasks may have left it at 1
    try:
        return adapt_model(job.source.open(), job.settings, on_step), str(worker.address)
    finally:
        torch.set_num_threads(threads)


def adapted_path(out: Path) -> Path:
    """Where a run keeps the weights ``--adapt`` fitted: ``OUT/.fluoden/adapted.safetensors``
    (``--model OUT`` and ``fluoden models show OUT`` find them there)."""
    return Path(out) / ADAPTED_WEIGHTS


def plan_adapt(cfg: DenoiseConfig, source: ImageSource, notes: list[str]) -> Mode | None:
    """The fit's mode for ``cfg.adapt`` on ``source`` (None without ``--adapt``), after
    refusing inputs it cannot fit (:func:`~fluoden_batch.train.adapt.choose_mode`,
    :func:`~fluoden_batch.train.adapt.probe_input`); appends notes."""
    if cfg.adapt == "none":
        return None
    name, axes = str(cfg.input), source.meta.axes
    check = check_repeats(source.array, axes) if cfg.adapt in ("auto", "n2n") else None
    mode = choose_mode(cfg.adapt, check, name, axes, notes)  # type: ignore[arg-type]
    probe_input(source.array, axes, mode, name)
    return mode


def ensure_adapted(
    p: Any, client: Client | None, reporter: Reporter, resources: dict[str, float] | None = None
) -> None:
    """Give the plan ``p`` the adapted model: the one in OUT when a run already fitted it,
    else a fresh fit (on ``client``'s workers, or here when ``client`` is None), written
    to :func:`adapted_path`. Replaces ``p.job``'s model path and digest, and with
    ``--detail`` its restoration, tuned for the fitted model.

    Raises
    ------
    OutputError
        OUT holds weights fitted from another model (a changed file under the same name).
    """
    job: AdaptJob = p.adapt
    settings = job.settings
    out = Path(p.job.output.path)
    path = adapted_path(out)
    if path.is_file():
        base = read_metadata(path).training.get("base_model", {}).get("digest")
        if base != settings.model_digest:
            raise OutputError(
                f"{path} was fitted from model {base}, this run starts from "
                f"{settings.model_digest}; rerun with --overwrite"
            )
        reporter.planned(f"adapt: reusing the weights fitted by an earlier run ({path})", [])
        digest = file_digest(path)
        if "adapted" not in (read_provenance(out) or {}):  # killed between file and record
            update_provenance(out, adapted={"file": str(ADAPTED_WEIGHTS), "digest": digest})
    else:
        steps = settings.steps
        reporter.planned(
            f"adapt: fitting {Path(settings.model_path).name} to the input ({settings.mode}, "
            f"{steps} steps of 16 patches of {patch_size(settings.mode, p.source.shape)} px"
            + (f", at most {settings.minutes:g} min" if settings.minutes else "")
            + (", on a worker" if client is not None else "")
            + ")",
            [],
        )
        reporter.start("adapting", steps, 0, 0.0, unit="steps")
        try:
            if client is None:
                fitted, ran_on = fit_job(job, on_step=reporter.block)
            else:
                fitted, ran_on = _fit_on_cluster(client, job, reporter, resources)
        finally:
            reporter.stop()
        p.lock.check()
        write_file(path, fitted.data)
        digest = file_digest(path)
        update_provenance(
            out,
            adapted={
                "file": str(ADAPTED_WEIGHTS),
                "digest": digest,
                "mode": settings.mode,
                "steps": fitted.steps,
                "seconds": round(fitted.seconds, 1),
                "final_loss": fitted.final_loss,
                "train_mpx": round(fitted.train_mpx, 3),
                "device": fitted.device,
                "ran_on": ran_on,
                "kept_step": fitted.kept_step,
                "held_out_loss": [fitted.held_out[0], fitted.held_out[1]],
                "held_out_criterion": fitted.criterion,
                "skipped": fitted.skipped,
                "stopped_early": fitted.stopped,
            },
        )
        start, kept = fitted.held_out
        warnings = [f"warning: adapt: not fitted: {fitted.skipped}"] if fitted.skipped else []
        if fitted.skipped:
            verdict = "the starting model is kept"
        elif fitted.kept_step:
            verdict = (
                f"kept step {fitted.kept_step}: held-out {fitted.criterion} {start:.4g} -> "
                f"{kept:.4g}"
            )
        else:
            verdict = (
                f"the fit never lowered the held-out {fitted.criterion} ({start:.4g}): the "
                "starting model's weights are kept"
            )
        if fitted.stopped:
            verdict += f" ({fitted.stopped})"
        reporter.planned(
            f"adapt: {fitted.steps} steps in {fitted.seconds:.0f} s on {fitted.device} "
            f"({ran_on}, {fitted.train_mpx:.2f} Mpx of patches); {verdict}",
            warnings,
        )
    p.job = dataclasses.replace(p.job, model_path=str(path), model_digest=digest)
    if p.config.restores_detail:
        p.job = dataclasses.replace(p.job, channel_detail=_adapted_detail(p, out, reporter))


def _adapted_detail(p: Any, out: Path, reporter: Reporter) -> tuple[Detail, ...]:
    """``--detail`` for the fitted model (``p.job``'s): the restoration stored with the fit
    in OUT's ``adapted`` record by an earlier run, else tuned now
    (:func:`~fluoden_batch.pipeline.params.tuned_detail`) and stored there."""
    record = (read_provenance(out) or {}).get("adapted") or {}
    if record.get("detail") is not None:
        reporter.planned("detail restoration per channel: reused from the fitted run", [])
        return Detail.from_stored(record["detail"])
    job, notes = p.job, []
    values = ChannelValues(job.channel_ranges, job.channel_noise, None, None)
    name = p.source.spec.describe()
    axes = p.source.meta.axes
    detail = tuned_detail(
        p.config, p.source.array, axes, name, job.model_path, job.model_digest, values, notes
    )
    p.lock.check()
    update_provenance(out, adapted={**record, "detail": Detail.stored(detail)})
    reporter.planned("detail restoration tuned for the fitted model:", notes)
    return detail


def _fit_on_cluster(
    client: Client, job: AdaptJob, reporter: Reporter, resources: dict[str, float] | None
) -> tuple[Adapted, str]:
    """:func:`fit_job` as one task on ``client``'s workers, its steps (published as Dask
    events) driving ``reporter``; a failure other than fluoden's own is one
    :class:`ModelError` line."""
    key = f"adapt-{uuid.uuid4().hex[:8]}"
    client.subscribe_topic(key, lambda event: reporter.block(*event[1]))
    try:
        remote = dataclasses.replace(job, progress_topic=key)
        return client.submit(fit_job, remote, key=key, pure=False, resources=resources).result()
    except FluodenError:
        raise
    except Exception as exc:  # a worker that died, ran out of memory, ...
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ModelError(
            f"--adapt: the fit failed on the cluster ({text}); nothing was written: "
            "rerun to fit again"
        ) from exc
    finally:
        client.unsubscribe_topic(key)

"""The training loop: Adam on the MSE of the denoised patch (or, self-supervised, of the
blind-spot pixels), LR decay, validation PSNR, exact-resume checkpoints and a weights file
with honest metadata at the end."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fluoden_batch.config.train import TrainConfig, TrainConfigError
from fluoden_batch.errors import FluodenError, ModelError
from fluoden_batch.models.dncnn import DnCNN, grow, kept_dilations, without_biases
from fluoden_batch.models.weights import (
    Architecture,
    Denoiser,
    ModelMetadata,
    build_model,
    file_digest,
    load_trainable,
    resolve_weights,
    save_weights,
)
from fluoden_batch.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from fluoden_batch.train.inference import denoise_whole, resolve_device, validation_psnr
from fluoden_batch.train.masked import MaskedDenoiser
from fluoden_batch.train.metadata import training_metadata
from fluoden_batch.train.sources import load_data

__all__ = ["TrainResult", "denoise_whole", "resolve_device", "train", "validation_psnr"]

log = logging.getLogger(__name__)

# Config fields that do not change the trained weights; the others must match to resume.
_RESUME_FREE = frozenset(
    {"name", "description", "output", "checkpoint_dir", "checkpoint_every", "val_every", "resume"}
)
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model : DnCNN or FFDNet
        The trained module as trained (batch norm not folded), on CPU, in eval mode.
    losses : list of float
        Training loss (MSE in normalised units; at the blind-spot pixels in
        self-supervised mode) of every step since the run began, including steps done
        before a resume.
    val_psnr : list of (step, dB)
        Mean validation PSNR in the data's units, after each validation (masked mode:
        of the whole masked protocol, see :class:`~fluoden_batch.train.masked.MaskedDenoiser`).
    step : int
        Optimisation steps done.
    seconds : float
        Wall time spent in the loop, summed over resumed sessions.
    output, digest, metadata
        The weights file, its digest and metadata; None when the run stopped early.
    """

    model: Denoiser
    losses: list[float]
    val_psnr: list[tuple[int, float]]
    step: int
    seconds: float
    output: Path | None = None
    digest: str | None = None
    metadata: ModelMetadata | None = None


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.steps, eta_min=config.lr * config.lr_min_ratio
        )
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_every, gamma=config.lr_step_gamma
    )


def _check_resumable(path: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    now = config.model_dump(mode="json")
    fields = TrainConfig.model_fields
    # a checkpoint written before a field existed ran with that field's default
    old = {k: saved.get(k, fields[k].default if k in fields else None) for k in now}
    differ = sorted(k for k in now if k not in _RESUME_FREE and old[k] != now[k])
    if differ:
        raise ModelError(
            f"{path}: checkpoint was written by a different configuration "
            f"(fields {differ} differ); use another checkpoint_dir or resume=False"
        )


def _init_model(config: TrainConfig) -> tuple[Denoiser, str | None]:
    """A fresh network, or the one in ``config.init_weights`` (with that file's digest)."""
    arch = config.model_architecture
    model = build_model(arch)
    if config.init_weights is None:
        return model, None
    path = resolve_weights(config.init_weights)
    start, meta = load_trainable(path)
    if meta.architecture != arch and not _growable(meta.architecture, arch):
        raise TrainConfigError(
            f"field 'init_weights': {config.init_weights} is {meta.architecture.describe()}; "
            f"the config asks for {arch.describe()} (a DnCNN of the same width can be grown "
            "into a deeper one with batch_norm = false and/or noise_map = true)"
        )
    if meta.normalisation.method != config.normalisation:
        log.warning(
            "init_weights %s was trained with %r input normalisation, this run uses %r: the "
            "start is off until it re-adapts (set normalisation = %r to keep it)",
            config.init_weights,
            meta.normalisation.method,
            config.normalisation,
            meta.normalisation.method,
        )
    if meta.architecture != arch:
        assert isinstance(start, DnCNN) and isinstance(model, DnCNN)
        if (
            start.depth != arch.depth
            or start.noise_map != arch.noise_map
            or start.batch_norm
            or start.dilations != model.dilations
        ):
            log.info("growing %s (depth %d) into depth %d", path.name, start.depth, arch.depth)
            # also folds its batch norm
            start = grow(start, arch.depth, arch.noise_map, model.dilations)
        if not arch.bias and start.bias:
            log.info("starting from %s without its biases (a bias-free network)", path.name)
            start = without_biases(start)
    model.load_state_dict(start.state_dict())
    return model, file_digest(path)


def _growable(old: Architecture, new: Architecture) -> bool:
    """Whether :func:`~fluoden_batch.models.dncnn.grow` (and, for a bias-free ``new``,
    :func:`~fluoden_batch.models.dncnn.without_biases`) turns ``old`` into ``new``."""
    old_dilations = old.dilations or (1,) * old.depth
    new_dilations = new.dilations or (1,) * new.depth
    return (
        old.name == new.name == "dncnn"
        and not new.batch_norm
        and (old.bias or not new.bias)
        and old.width == new.width
        and old.in_channels == new.in_channels
        and old.depth <= new.depth
        and (new.noise_map or not old.noise_map)
        and kept_dilations(new_dilations, old.depth) == old_dilations
    )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("val {task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _loss(output: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MSE over all pixels, or over the masked (blind-spot) pixels only."""
    squared = (output.float() - targets) ** 2
    return squared.mean() if mask is None else (squared * mask).sum() / mask.sum()


def train(config: TrainConfig, *, progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train a network as ``config`` says and write its weights to ``config.output``.

    Seeds torch and NumPy from ``config.seed``; on CPU the same config gives bit-identical
    weights, whether run in one go or stopped and resumed from a checkpoint.

    Parameters
    ----------
    config : TrainConfig
        The run.
    progress : bool
        Show a rich progress bar with the loss and the latest validation PSNR.
    stop_at : int, optional
        Stop after this many steps (of ``config.steps``), writing a checkpoint when
        ``config.checkpoint_dir`` is set, e.g. to split a run over time-limited jobs.
        The weights file is written only when all ``config.steps`` are done.

    Returns
    -------
    TrainResult

    Notes
    -----
    One function of about 110 lines on purpose: the loop's state (step, losses, the RNG,
    optimizer, scheduler, scaler) is saved and restored together for exact resume, and
    keeping it in one scope keeps that contract visible.
    """
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    device = resolve_device(config.device)
    amp_dtype = _AMP_DTYPES.get(config.amp)
    if amp_dtype is not None and device.type != "cuda":
        raise FluodenError(f"amp={config.amp!r} needs a CUDA device, got {device}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sampler, n_train, val_images = load_data(config)
    normalisation = config.input_normalisation
    val_denoise = (
        MaskedDenoiser(config.val_clusters, config.mask_sigma, normalisation)
        if config.mode == "masked"
        else partial(denoise_whole, normalisation=normalisation)
    )
    model, init_digest = _init_model(config)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = _scheduler(config, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")

    step, losses, val_log, seconds = 0, [], [], 0.0
    ckpt = latest_checkpoint(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckpt is not None and config.resume:
        _check_resumable(ckpt, read_state(ckpt)["config"], config)
        step, state = load_checkpoint(
            ckpt, model=model, optimizer=optimizer, scheduler=scheduler, rng=rng
        )
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        losses, seconds = state["losses"], state["seconds"]
        val_log = [(int(s), float(v)) for s, v in state["val_psnr"]]
        log.info("resumed from %s at step %d", ckpt, step)

    def checkpoint() -> None:
        if config.checkpoint_dir is None:
            return
        state = {
            "config": config.model_dump(mode="json"),
            "losses": losses,
            "val_psnr": val_log,
            "seconds": seconds,
            "scaler": scaler.state_dict(),
        }
        save_checkpoint(
            config.checkpoint_dir,
            step=step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            rng=rng,
            state=state,
        )

    autocast = (
        torch.autocast(device_type="cuda", dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    last_val = f"{val_log[-1][1]:.2f} dB" if val_log else "-"
    model.train()
    started = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("train", total=config.steps, completed=step, loss="-", val=last_val)
        while step < end:
            arrays = sampler.sample(config.batch_size, rng)
            inputs, targets, *rest = (
                torch.from_numpy(a).to(device, memory_format=memory_format) for a in arrays
            )
            mask = rest[0] if rest else None
            with autocast:
                output = model(inputs)
            loss = _loss(output, targets, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(float(loss.item()))
            if val_images and (step % config.val_every == 0 or step == config.steps):
                psnr_db = validation_psnr(model, val_images, device, denoise=val_denoise)
                val_log.append((step, psnr_db))
                last_val = f"{val_log[-1][1]:.2f} dB"
                log.info("step %d loss %.5f val %s", step, np.mean(losses[-50:]), last_val)
            bar.update(task, advance=1, loss=f"{np.mean(losses[-20:]):.4g}", val=last_val)
            if step % config.checkpoint_every == 0 or step == end:
                seconds += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint()
    seconds += time.perf_counter() - started

    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    result = TrainResult(model, losses, val_log, step, seconds)
    if step == config.steps:
        result.metadata = training_metadata(
            config,
            device,
            step=step,
            seconds=seconds,
            losses=losses,
            val_psnr=val_log,
            n_train=n_train,
            val=val_images,
            init_digest=init_digest,
        )
        result.digest = save_weights(model, config.output, result.metadata)
        result.output = config.output
        log.info("wrote %s (%s)", config.output, result.digest)
    return result

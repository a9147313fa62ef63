"""The training loop: Adam on the MSE of the denoised patch, LR decay, validation PSNR,
exact-resume checkpoints and a weights file with honest metadata at the end."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fluoden_batch import __version__
from fluoden_batch.errors import FluodenError, ModelError
from fluoden_batch.metrics import psnr
from fluoden_batch.models.dncnn import DnCNN
from fluoden_batch.models.normalise import denormalise, normalise, percentile_range
from fluoden_batch.models.weights import Architecture, ModelMetadata, save_weights
from fluoden_batch.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from fluoden_batch.train.config import TrainConfig
from fluoden_batch.train.data import (
    NORMALISATION,
    PatchSampler,
    TrainImage,
    ValImage,
    load_images,
    load_pairs,
    split_validation,
    validation_images,
)

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
    model : DnCNN
        The trained module as trained (batch norm not folded), on CPU, in eval mode.
    losses : list of float
        Training loss (MSE in normalised units) of every step since the run began,
        including steps done before a resume.
    val_psnr : list of (step, dB)
        Mean validation PSNR in the data's units, after each validation.
    step : int
        Optimisation steps done.
    seconds : float
        Wall time spent in the loop, summed over resumed sessions.
    output, digest, metadata
        The weights file, its digest and metadata; None when the run stopped early.
    """

    model: DnCNN
    losses: list[float]
    val_psnr: list[tuple[int, float]]
    step: int
    seconds: float
    output: Path | None = None
    digest: str | None = None
    metadata: ModelMetadata | None = None


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; an unavailable CUDA is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise FluodenError(f"device {spec!r} requested but CUDA is not available")
    return torch.device(spec)


@torch.no_grad()
def denoise_whole(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    clip: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Whole-image inference: percentile-normalise ``image``, run ``model``, map back.

    Parameters
    ----------
    model : torch.nn.Module
        A denoiser on ``device``; run in eval mode (its mode is restored afterwards).
    image : ndarray, shape (H, W)
        Noisy plane in data units.
    clip : (float, float), optional
        Clip the result to this range (e.g. (0, 255) for 8-bit data).

    Returns
    -------
    ndarray, float32, shape (H, W), in data units.
    """
    lo, hi = percentile_range(image, NORMALISATION.low, NORMALISATION.high)
    x = torch.from_numpy(normalise(image, lo, hi))[None, None].to(device)
    was_training = model.training
    model.eval()
    try:
        y = model(x)[0, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    out = denormalise(y, lo, hi)
    return np.clip(out, *clip) if clip is not None else out


def validation_psnr(
    model: torch.nn.Module, images: list[ValImage], device: torch.device | str = "cpu"
) -> float:
    """Mean PSNR (dB, each image's own data range) of whole-image denoising of ``images``."""
    values = [
        psnr(denoise_whole(model, v.noisy, clip=v.clip, device=device), v.clean, v.data_range)
        for v in images
    ]
    return float(np.mean(values))


def _load_data(config: TrainConfig) -> tuple[list[TrainImage], list[ValImage]]:
    if config.mode == "supervised":
        assert config.noisy_dir is not None
        images = load_pairs(
            config.noisy_dir, config.noisy_glob, config.clean_dir, config.clean_glob
        )
    else:
        images = load_images(config.clean_dir, config.clean_glob)
    train_images, val = split_validation(images, config.val_keys)
    val_images = validation_images(
        val, seed=config.seed, a_range=config.a_range, b_range=config.b_range
    )
    return train_images, val_images


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
    differ = sorted(k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k])
    if differ:
        raise ModelError(
            f"{path}: checkpoint was written by a different configuration "
            f"(fields {differ} differ); use another checkpoint_dir or resume=False"
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


def train(config: TrainConfig, *, progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train a DnCNN as ``config`` says and write its weights to ``config.output``.

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
    """
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    device = resolve_device(config.device)
    amp_dtype = _AMP_DTYPES.get(config.amp)
    if amp_dtype is not None and device.type != "cuda":
        raise FluodenError(f"amp={config.amp!r} needs a CUDA device, got {device}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train_images, val_images = _load_data(config)
    sampler = PatchSampler(
        train_images,
        config.patch_size,
        synthetic_fraction=1.0 if config.mode == "synthetic" else config.synthetic_fraction,
        a_range=config.a_range,
        b_range=config.b_range,
    )
    model = DnCNN(config.depth, config.width, 1, config.batch_norm).to(device)
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
            inputs, targets = (
                torch.from_numpy(a).to(device) for a in sampler.sample(config.batch_size, rng)
            )
            with autocast:
                output = model(inputs)
            loss = F.mse_loss(output.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(float(loss.item()))
            if val_images and (step % config.val_every == 0 or step == config.steps):
                val_log.append((step, validation_psnr(model, val_images, device)))
                last_val = f"{val_log[-1][1]:.2f} dB"
                log.info("step %d loss %.5f val %s", step, np.mean(losses[-50:]), last_val)
            bar.update(task, advance=1, loss=f"{np.mean(losses[-20:]):.4g}", val=last_val)
            if step % config.checkpoint_every == 0 or step == end:
                seconds += time.perf_counter() - started
                started = time.perf_counter()
                checkpoint()
    seconds += time.perf_counter() - started

    model = model.cpu().eval()
    result = TrainResult(model, losses, val_log, step, seconds)
    if step == config.steps:
        result.metadata = _metadata(config, device, result, train_images, val_images)
        result.digest = save_weights(model, config.output, result.metadata)
        result.output = config.output
        log.info("wrote %s (%s)", config.output, result.digest)
    return result


def _metadata(
    config: TrainConfig,
    device: torch.device,
    result: TrainResult,
    train_images: list[TrainImage],
    val: list[ValImage],
) -> ModelMetadata:
    """Describe the finished run: data, schedule, noise model, time and final PSNR."""
    noisy_in = [
        psnr(np.clip(v.noisy, *v.clip) if v.clip else v.noisy, v.clean, v.data_range) for v in val
    ]
    training = {
        "mode": config.mode,
        "clean": f"{config.clean_dir}/{config.clean_glob}",
        "noisy": f"{config.noisy_dir}/{config.noisy_glob}" if config.noisy_dir else None,
        "train_images": len(train_images),
        "val_keys": config.val_keys,
        "steps": result.step,
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "augmentation": "random flips and 90-degree rotations",
        "loss": "MSE of the denoised patch (normalised units)",
        "optimizer": f"Adam lr={config.lr}",
        "lr_schedule": config.lr_schedule,
        "seed": config.seed,
        "device": str(device),
        "amp": config.amp,
        "seconds": round(result.seconds, 1),
        "final_loss": float(np.mean(result.losses[-50:])),
        "final_val_psnr_db": result.val_psnr[-1][1] if result.val_psnr else None,
        "val_noisy_psnr_db": float(np.mean(noisy_in)) if noisy_in else None,
        "software": f"fluoden-batch {__version__}, torch {torch.__version__}",
    }
    noise_model: dict[str, Any] = {
        "real_pairs": config.mode == "supervised",
        "synthetic_fraction": 1.0 if config.mode == "synthetic" else config.synthetic_fraction,
    }
    if config.uses_synthetic:
        noise_model |= {
            "kind": "poisson-gaussian",
            "a_range": list(config.a_range or ()),
            "a_sampling": "log-uniform per patch",
            "b_range": list(config.b_range or ()),
            "b_sampling": "uniform per patch",
            "units": "grey levels of the clean images; clipped to the dtype range",
        }
    return ModelMetadata(
        name=config.name,
        description=config.description,
        architecture=Architecture(
            depth=config.depth, width=config.width, in_channels=1, batch_norm=config.batch_norm
        ),
        training=training,
        noise_model=noise_model,
    )

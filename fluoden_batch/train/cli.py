"""``fluoden train CONFIG``: train a DnCNN from a TOML/YAML config, flags overriding it.

Mount it in the main app as a command (a typer sub-app would need a sub-command name)::

    app.command(name="train")(train_command)

``train_app`` is the same command as a standalone typer app (``python -m
fluoden_batch.train.cli CONFIG``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from fluoden_batch.errors import FluodenError
from fluoden_batch.train.config import (
    NOISY_ONLY_MODES,
    TrainConfig,
    TrainConfigError,
    load_train_config,
)

__all__ = ["train_app", "train_command"]

console = Console(stderr=True)
out = Console()


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` with YAML-typed values (numbers, booleans, lists); a value
    that is not valid YAML (a glob such as ``*.tif``) is taken as the plain string."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. mask_fraction=0.01")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            values[key.strip()] = text
    return values


def _describe_run(config: TrainConfig) -> str:
    source = config.noisy_dir if config.mode in NOISY_ONLY_MODES else config.clean_dir
    return (
        f"training [bold]{config.name}[/] ({config.mode}, DnCNN depth {config.depth} width "
        f"{config.width}) on {source} for {config.steps} steps -> {config.output}"
    )


def _summary(result: Any, config: TrainConfig) -> Table:
    table = Table(title=f"fluoden train: {config.name}", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    table.add_row("weights", str(result.output))
    table.add_row("digest", str(result.digest))
    table.add_row("steps", str(result.step))
    table.add_row("time in loop", f"{result.seconds / 60:.1f} min")
    table.add_row(
        "final loss (mean of last 50)", f"{sum(result.losses[-50:]) / len(result.losses[-50:]):.5g}"
    )
    if result.val_psnr:
        noisy = result.metadata.training.get("val_noisy_psnr_db")
        table.add_row(
            "validation PSNR", f"{result.val_psnr[-1][1]:.2f} dB (noisy input {noisy:.2f} dB)"
        )
    return table


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config, TOML or YAML.")],
    steps: Annotated[int | None, typer.Option(help="Optimisation steps.")] = None,
    output: Annotated[Path | None, typer.Option(help="Weights file to write.")] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|cuda:N.")] = None,
    resume: Annotated[
        bool | None,
        typer.Option("--resume/--no-resume", help="Continue from the latest checkpoint."),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Folder for resumable checkpoints.")
    ] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Checkpoint period.")] = None,
    val_every: Annotated[int | None, typer.Option(help="Validation period in steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Patch side in pixels.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    init_weights: Annotated[
        Path | None, typer.Option(help="Start from these weights (fine-tune).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name in the metadata.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any config field as KEY=VALUE (repeatable), e.g. --set depth=10."
        ),
    ] = None,
    stop_at: Annotated[
        int | None,
        typer.Option(help="Stop after this step with a checkpoint (time-limited jobs)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the config, print it and stop.")
    ] = False,
) -> None:
    """Train a DnCNN denoiser as CONFIG (TOML or YAML) says; flags override the file.

    Modes: supervised (noisy/clean pairs), synthetic (clean + simulated noise),
    self_supervised (noisy images only, Noise2Void), noise2noise (repeated
    noisy captures of each field of view, no clean images), masked (the masked
    protocol). Images: folders of 2-D files, or Zarr / OME-Zarr / TIFF arrays.

    Relative paths in CONFIG are relative to CONFIG's folder.

    With checkpoint_dir set, rerunning an interrupted command resumes it.

    The weights (.safetensors + JSON metadata) work with `fluoden denoise --model PATH`.
    """
    cfg: TrainConfig | None = None
    try:
        overrides = _parse_sets(set_)
        overrides.update(
            steps=steps,
            output=output,
            device=device,
            resume=resume,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            val_every=val_every,
            batch_size=batch_size,
            patch_size=patch_size,
            lr=lr,
            seed=seed,
            init_weights=init_weights,
            name=name,
        )
        cfg = load_train_config(config, **overrides)
        if check:
            out.print_json(cfg.model_dump_json())
            return
        if stop_at is not None and cfg.checkpoint_dir is None:
            raise TrainConfigError("--stop-at needs checkpoint_dir (or nothing would be kept)")
        import torch

        from fluoden_batch.train.loop import train

        if threads is not None:
            torch.set_num_threads(threads)
        console.print(_describe_run(cfg), highlight=False)
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            result = train(cfg, progress=progress, stop_at=stop_at)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except FluodenError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        kept = cfg is not None and cfg.checkpoint_dir is not None
        console.print(
            "[yellow]interrupted[/]: "
            + (
                "run the same command to resume from the last checkpoint"
                if kept
                else "no checkpoint_dir, nothing kept"
            )
        )
        raise typer.Exit(130) from None
    if result.output is None:
        console.print(
            f"stopped at step {result.step} of {cfg.steps}; checkpoint in "
            f"{cfg.checkpoint_dir}: run without --stop-at to continue"
        )
        return
    out.print(_summary(result, cfg))


train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
train_app.command(name="train")(train_command)

if __name__ == "__main__":
    train_app()

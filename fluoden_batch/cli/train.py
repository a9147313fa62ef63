"""``fluoden train CONFIG``: train a denoiser from a TOML/YAML config, flags overriding it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fluoden_batch.cli.common import console, out
from fluoden_batch.cli.options import config_options
from fluoden_batch.config.train import (
    NOISY_ONLY_MODES,
    TrainConfig,
    TrainConfigError,
    load_train_config,
)
from fluoden_batch.errors import FluodenError

__all__ = ["train_command"]


def _check_not_a_shipped_name(config: Path) -> None:
    """A missing CONFIG that names a shipped config: say how to copy it (its data paths
    point into the repository, so it is a start to edit, not a file to train from)."""
    from fluoden_batch.resources import shipped_configs

    shipped = shipped_configs().get(config.name)
    if not config.exists() and shipped is not None:
        raise TrainConfigError(
            f"{config}: no such file; {config.name!r} is a shipped config: `fluoden profiles "
            f"{config.name} > {shipped.name}` copies it, then edit its data paths and run "
            f"`fluoden train {shipped.name}`"
        )


def _describe_run(config: TrainConfig) -> str:
    source = config.noisy_dir if config.mode in NOISY_ONLY_MODES else config.clean_dir
    return (
        f"training [bold]{config.name}[/] ({config.mode}, {config.architecture} depth "
        f"{config.depth} width {config.width}) on {source} for {config.steps} steps -> "
        f"{config.output}"
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


@config_options(TrainConfig)
def train_command(
    given: dict[str, Any],
    config: Annotated[Path, typer.Argument(help="Training config, TOML or YAML.")],
    stop_at: Annotated[
        int | None,
        typer.Option(help="Stop after this step with a checkpoint (time-limited jobs)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="A live progress bar (loss, validation PSNR); --no-progress: log lines only.",
        ),
    ] = True,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the config, print it and stop.")
    ] = False,
) -> None:
    """Train a denoiser (DnCNN or FFDNet) as CONFIG (TOML or YAML) says; flags override it.

    Modes: supervised (noisy/clean pairs), synthetic (clean + simulated noise),
    self_supervised (noisy images only, Noise2Void), noise2noise (repeated
    noisy captures of each field of view, no clean images), masked (the masked
    protocol). Images: folders of 2-D files, or Zarr / OME-Zarr / TIFF arrays.

    Every config field is also a flag (lists as YAML, e.g. --capture-levels "[1, 2]").
    Relative paths in CONFIG are relative to CONFIG's folder.

    With checkpoint_dir set, rerunning an interrupted command resumes it.

    The weights (.safetensors + JSON metadata) work with `fluoden denoise --model PATH`.

    Examples:
      fluoden profiles noise2noise_fmd > my.yaml   # a config to edit
      fluoden train my.yaml --check                # the resolved config
      fluoden train my.yaml --steps 2000 --output mine.safetensors
      fluoden denoise raw.zarr out.zarr --model mine.safetensors
    """
    cfg: TrainConfig | None = None
    try:
        _check_not_a_shipped_name(config)
        cfg = load_train_config(config, **given)
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

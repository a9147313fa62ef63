"""Train the shipped placeholder model ``dncnn-small`` (DnCNN depth 10, width 32).

Data (never FMD: /work/shared/data/fmd_dev is the held-out evaluation set):

- W2S pairs ``avg1/input_avg1_<FOV>_<ch>.tif`` -> ``avg400/target_avg400_<FOV>_<ch>.tif``
  (uint8, 512x512, FOV 001-040, channels 0-2), and
- synthetic Poisson-Gaussian noise on the same avg400 clean images, a in [0.5, 8]
  (log-uniform), b in [0, 50] (uniform), grey levels 0..255, clipped to 0..255; half of the
  patches.

Validation: the four held-out W2S pairs 010_0, 020_1, 030_2, 040_0 (real avg1 input).

Usage (the command that produced the shipped weights is in results/train_default.md)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/train_default.py \\
        fluoden_batch/models/weights/dncnn-small.safetensors --steps 1500 --threads 1

``--minutes M`` instead of ``--steps`` times a few steps first and picks the step count
that fits (the LR schedule needs the total up front); the chosen count is reported so that
the run can be repeated exactly with ``--steps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

from fluoden_batch.train import TrainConfig, train

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
VAL_KEYS = ["010_0", "020_1", "030_2", "040_0"]
RESULTS = Path(__file__).resolve().parent / "results" / "train_default.md"


def make_config(
    output: Path, steps: int, checkpoint_dir: Path | None, masked: bool = False
) -> TrainConfig:
    """The placeholder's training configuration (``masked``: its masked-protocol twin,
    ``dncnn-small-masked``, same data, architecture and budget; K in 2..4, sigma 1)."""
    w2s = DATA / "w2s_train"
    protocol = (
        "Masked protocol (K-means intensity clusters, K 2..4, labels smoothed with sigma 1 "
        "px; each part denoised with the rest set to the smoothed plane clipped to the "
        "cluster's intensity band)"
        if masked
        else "Whole-image protocol"
    )
    extra = {"clusters": [2, 3, 4], "mask_sigma": 1.0} if masked else {}
    return TrainConfig(
        name="dncnn-small-masked" if masked else "dncnn-small",
        description=(
            "Placeholder DnCNN (depth 10, width 32) trained briefly on one CPU thread on W2S "
            "widefield pairs (avg1 -> avg400) plus synthetic Poisson-Gaussian noise on the "
            f"avg400 images. {protocol}, percentile normalisation per plane."
        ),
        output=output,
        depth=10,
        width=32,
        mode="masked" if masked else "supervised",
        **extra,
        noisy_dir=w2s / "avg1",
        noisy_glob="input_avg1_*.tif",
        clean_dir=w2s / "avg400",
        clean_glob="target_avg400_*.tif",
        val_keys=VAL_KEYS,
        synthetic_fraction=0.5,
        a_range=(0.5, 8.0),
        b_range=(0.0, 50.0),
        steps=steps,
        batch_size=16,
        patch_size=64,
        lr=1e-3,
        lr_schedule="cosine",
        lr_min_ratio=0.02,
        seed=0,
        device="auto",
        val_every=100,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=100,
    )


def calibrate_steps(minutes: float, output: Path) -> int:
    """Steps that fit in ``minutes``: time 2 and 12 steps, the difference is 10 steps."""
    probe = make_config(output, steps=1000, checkpoint_dir=None)
    times = []
    for n in (2, 12):
        t0 = time.perf_counter()
        train(probe, progress=False, stop_at=n)
        times.append(time.perf_counter() - t0)
    per_step = (times[1] - times[0]) / 10
    return max(1, int(minutes * 60 / per_step / 1.07))  # ~7% for validation and checkpoints


def write_report(config: TrainConfig, result, command: str, wall: float) -> Path:
    """Write results/train_default.md (``train_default_masked.md`` for the masked twin)."""
    t = result.metadata.training if result.metadata else {}
    rows = "\n".join(f"| {s} | {v:.2f} |" for s, v in result.val_psnr)
    masked = config.mode == "masked"
    path = RESULTS.with_name("train_default_masked.md") if masked else RESULTS
    protocol = (
        f"\n- Masked mode: K drawn per patch from {config.clusters}, labels smoothed with "
        f"sigma {config.mask_sigma} px; validation runs the masked protocol with "
        f"K={config.val_clusters}"
        if masked
        else ""
    )
    lr_min = config.lr * config.lr_min_ratio
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""# Training the placeholder `{config.name}`

Command (repository root, one CPU thread):

```
{command}
```

- Output: `{config.output}` ({result.digest})
- Architecture: DnCNN depth {config.depth}, width {config.width}, batch norm (folded at load)
- Data: W2S 8-bit pairs avg1 -> avg400, {t.get("train_images")} training pairs; half the
  patches get synthetic Poisson-Gaussian noise on the avg400 image instead (a {config.a_range}
  log-uniform, b {config.b_range} uniform, grey levels, clipped to 0..255)
- Validation (held out, real avg1 input): W2S {", ".join(config.val_keys)}
- Steps {result.step}, batch {config.batch_size} x {config.patch_size}x{config.patch_size},
  Adam lr {config.lr} with cosine decay to {lr_min:g}, seed {config.seed}{protocol}
- Device {t.get("device")}, torch threads {torch.get_num_threads()}
- Time in the training loop: {result.seconds / 60:.1f} min (whole script {wall / 60:.1f} min)
- Final training loss (mean of last 50 steps): {t.get("final_loss", float("nan")):.5f}
- Validation PSNR (4 W2S pairs, 0..255): noisy input {t.get("val_noisy_psnr_db", 0):.2f} dB,
  denoised {t.get("final_val_psnr_db", 0):.2f} dB

FMD (`fmd_dev`) was not used for training or validation; see `eval_fmd_dncnn-small.md`
and, for the masked twin, the benchmark suite (exp2, exp4, exp5).

| step | val PSNR (dB) |
|---:|---:|
{rows}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="weights file (.safetensors)")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimisation steps")
    budget.add_argument("--minutes", type=float, help="time budget; picks --steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="resume from here")
    parser.add_argument("--no-progress", action="store_true", help="log lines only")
    parser.add_argument(
        "--masked", action="store_true", help="train the masked twin dncnn-small-masked"
    )
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    steps = args.steps if args.steps else calibrate_steps(args.minutes, args.output)
    logging.info("training for %d steps", steps)
    config = make_config(args.output, steps, args.checkpoint_dir, args.masked)
    result = train(config, progress=not args.no_progress)
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/train_default.py "
        f"{args.output} --steps {steps} --threads {args.threads}"
        + (" --masked" if args.masked else "")
    )
    path = write_report(config, result, command, time.perf_counter() - started)
    logging.info("done: %s", path)


if __name__ == "__main__":
    main()

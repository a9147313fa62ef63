"""Leave-types-out FMD after Noise2Noise fine-tuning on the target type's own raw captures.

The user's situation: the shipped model has never seen their sample, and they have a few
repeated noisy captures of it but no clean reference. Each leave-types-out fold model of
``train_fmd.py`` (never trained on the held-out types) is fine-tuned, once per held-out
type, with ``mode = "noise2noise"`` on that type's ``raw/<Type>_*.png`` captures only (no
gt; bit-identical captures are dropped first: fmd_dev's WideField_BPAE_B_2 is a copy of
_1). Then every level of that type is scored with FMD scoring, the fold model before and
after fine-tuning, whole-image inference clipped to 0..255. The gt images only score.

The fine-tuned models are fitted on the very raw images they are scored on (transductive,
as a user fits on the data they denoise); the avg2..avg16 images of the same fields were
never trained on and show whether fitting to single frames hurts cleaner inputs.

Usage (repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/finetune_n2n.py \\
        runs/dncnn-fmdn-A.safetensors runs/dncnn-fmdn-B.safetensors --steps 400

writes ``benchmarks/results/finetune_n2n_leave_types_out.md``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, evaluate
from skimage import io
from train_fmd import held_out_types

from fluoden_batch.models import load_model
from fluoden_batch.train import TrainConfig, train

TARGET = 35.0  # issue 5: raw leave-types-out PSNR of the default model


def distinct_captures(raw: Path, kind: str) -> tuple[list[Path], list[str]]:
    """The raw captures of ``kind`` without bit-identical copies (kept, dropped names)."""
    kept: list[tuple[Path, np.ndarray]] = []
    dropped = []
    for path in sorted(raw.glob(f"{kind}_*.png")):
        image = io.imread(path)
        if any(np.array_equal(image, other) for _, other in kept):
            dropped.append(path.name)
        else:
            kept.append((path, image))
    return [p for p, _ in kept], dropped


def finetune(
    weights: Path,
    kind: str,
    captures: list[Path],
    steps: int,
    lr: float,
    out: Path,
    levels: list[int],
) -> tuple[Path, float]:
    """Noise2Noise fine-tuning of ``weights`` on ``captures``; (weights file, seconds)."""
    meta = load_model(weights).metadata
    with tempfile.TemporaryDirectory() as tmp:
        for path in captures:  # a folder of the distinct captures only
            (Path(tmp) / path.name).symlink_to(path.resolve())
        config = TrainConfig(
            name=f"{meta.name}-n2n-{kind}",
            description=f"{meta.name} fine-tuned with Noise2Noise on the raw {kind} captures",
            output=out,
            init_weights=weights,
            depth=meta.architecture.depth,
            width=meta.architecture.width,
            batch_norm=meta.architecture.batch_norm,
            normalisation=meta.normalisation.method,
            mode="noise2noise",
            noisy_dir=Path(tmp),
            noisy_glob=f"{kind}_*.png",
            capture_levels=levels,
            steps=steps,
            batch_size=16,
            patch_size=64,
            lr=lr,
            lr_min_ratio=0.01,
            seed=0,
            device="cpu",
            channels_last=True,
        )
        result = train(config, progress=False)
    return out, result.seconds


def score(weights: Path, fmd: Path, kind: str) -> dict[str, list[tuple[float, float]]]:
    """``{level: [(PSNR, SSIM) per image]}`` of ``weights`` and ``{"noisy/<level>": ...}``
    (:func:`eval_fmd.evaluate` on the one type, without its NLM baseline)."""
    scores, _, _ = evaluate(weights, fmd, [kind], nlm_baseline=False)
    return {
        (level if method == "model" else f"noisy/{level}"): values
        for (level, _, method), values in scores.items()
        if method in ("model", "noisy")  # the four-crop FMD scores, not the whole-image ones
    }


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    """Markdown: per type and level, noisy -> fold model -> fine-tuned; means; facts."""

    def mean(row: dict, key: str) -> float:
        return float(np.mean([v[0] for v in row[key]]))

    lines = [
        "# Leave-types-out FMD after Noise2Noise fine-tuning on the type's own raw captures",
        "",
        f"Command (repository root): `{command}`",
        "",
        f"Fold models: `{args.fold_a}` (never saw {', '.join(held_out_types('A'))}) and "
        f"`{args.fold_b}` (never saw {', '.join(held_out_types('B'))}). Each is fine-tuned "
        f'per held-out type with `mode = "noise2noise"` on that type\'s raw captures only '
        f"(inputs: means of {args.levels} captures, each against the mean of the others; "
        f"no gt), {args.steps} steps, batch 16 x 64x64, "
        f"Adam lr {args.lr} cosine to {args.lr / 100:g}, seed 0, one CPU thread. FMD scoring "
        "(four 256x256 crops, peak 255), 4 images per type and level, whole-image inference.",
        "",
        "The fine-tuned models are fitted on the raw images they are scored on (as a user fits "
        "on the data they denoise); gt only scores. As in FMD's protocol for every method, "
        "the raw frames are among the 50 frames averaged into gt.",
        "",
        "## raw (single frame): PSNR (dB) / SSIM",
        "",
        "| type | captures used | noisy | fold model | fine-tuned | gain | fine-tune time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = np.mean(r["before"]["noisy/raw"], axis=0)
        b, a = np.mean(r["before"]["raw"], axis=0), np.mean(r["after"]["raw"], axis=0)
        used = (
            f"{r['used']}"
            + (f", levels {r['levels']}" if args.levels != [1] else "")
            + (f" ({', '.join(r['dropped'])} dropped: copy)" if r["dropped"] else "")
        )
        lines.append(
            f"| {r['type']} | {used} | {n[0]:.2f} / {n[1]:.3f} | {b[0]:.2f} / {b[1]:.3f} | "
            f"{a[0]:.2f} / {a[1]:.3f} | {a[0] - b[0]:+.2f} | {r['seconds'] / 60:.1f} min |"
        )
    means = {
        k: float(np.mean([mean(r[src], lvl) for r in rows]))
        for k, src, lvl in [
            ("noisy", "before", "noisy/raw"),
            ("b", "before", "raw"),
            ("a", "after", "raw"),
        ]
    }
    lines += [
        f"| **mean** | | {means['noisy']:.2f} | {means['b']:.2f} | **{means['a']:.2f}** | "
        f"{means['a'] - means['b']:+.2f} | |",
        "",
        f"Mean over the six types after fine-tuning: {means['a']:.2f} dB against the "
        f"{TARGET:.1f} dB target of the default model "
        + ("(above it)." if means["a"] >= TARGET else "(below it)."),
        "",
        "## Every level: mean PSNR over the six types (dB)",
        "",
        "| level | noisy | fold model | fine-tuned on raw |",
        "|---|---:|---:|---:|",
    ]
    for level in LEVELS:
        n, b, a = (
            np.mean([mean(r["before"], f"noisy/{level}") for r in rows]),
            np.mean([mean(r["before"], level) for r in rows]),
            np.mean([mean(r["after"], level) for r in rows]),
        )
        lines.append(f"| {level} | {n:.2f} | {b:.2f} | {a:.2f} |")
    lines += [
        "",
        "## Per type and level: noisy -> fold model -> fine-tuned (dB)",
        "",
        "| type | " + " | ".join(LEVELS) + " |",
        "|---|" + "---:|" * len(LEVELS),
    ]
    for r in rows:
        cells = [
            f"{mean(r['before'], f'noisy/{lv}'):.2f} -> {mean(r['before'], lv):.2f} -> "
            f"{mean(r['after'], lv):.2f}"
            for lv in LEVELS
        ]
        lines.append(f"| {r['type']} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", type=Path, help="weights trained with train_fmd.py --fold A")
    parser.add_argument("fold_b", type=Path, help="weights trained with train_fmd.py --fold B")
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps per type")
    parser.add_argument("--lr", type=float, default=3e-4, help="initial learning rate")
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[1], help="capture_levels of the fine-tuning"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/n2n-finetune"))
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    args = parser.parse_args()
    if not (args.data / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {args.data} (set FLUODEN_DATA or --data)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.levels == [1] else "_levels" + "-".join(map(str, args.levels))
    rows = []
    for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
        for kind in held_out_types(fold):
            captures, dropped = distinct_captures(args.data / "raw", kind)
            t0 = time.perf_counter()
            out = args.out_dir / f"{kind}{suffix}.safetensors"
            levels = [k for k in args.levels if k < len(captures)]
            tuned, seconds = finetune(weights, kind, captures, args.steps, args.lr, out, levels)
            row = {
                "type": kind,
                "used": len(captures),
                "levels": levels,
                "dropped": dropped,
                "seconds": seconds,
                "before": score(weights, args.data, kind),
                "after": score(tuned, args.data, kind),
            }
            logging.info(
                "%s raw %.2f -> %.2f (%.0f s)",
                kind,
                np.mean([v[0] for v in row["before"]["raw"]]),
                np.mean([v[0] for v in row["after"]["raw"]]),
                time.perf_counter() - t0,
            )
            rows.append(row)
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=.:benchmarks python "
        f"benchmarks/finetune_n2n.py {args.fold_a} {args.fold_b} --steps {args.steps} "
        f"--lr {args.lr} --threads {args.threads}"
        + (f" --levels {' '.join(map(str, args.levels))}" if args.levels != [1] else "")
    )
    path = RESULTS / f"finetune_n2n_leave_types_out{suffix}.md"
    path.write_text(report(rows, args, command))
    print(path.read_text())


if __name__ == "__main__":
    main()

"""Does a model carry a local intensity bias? Restore the residual's lowest frequencies.

A diagnostic, not a shipped step. A denoiser's residual ``r = z - d`` (input minus output)
should be noise; its lowest spatial frequencies should then be nearly zero, because the
noise there is small. ``d + G_s * r`` (``G_s`` a Gaussian of ``s`` pixels) puts the
input's lowest frequencies back: it gains where the model shifted local intensities
(dimmed or brightened structures: a bias), and loses the low-frequency noise the model
had removed. A large gain says the model is biased on that data.

For each leave-types-out fold model of ``train_fmd.py``: every ``fmd_dev`` image of the
types it never saw (``out of fold``) and of the types it trained on (``in fold``), every
level, FMD scoring (four 256x256 crops, peak 255), the model and ``d + G_s * r`` for
``s`` in 1, 2, 4, 8 px (reflecting borders, truncated at 3 s), clipped to 0..255.

Usage (repository root)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_lowpass.py \\
        runs/dncnn-fmdn-A.safetensors runs/dncnn-fmdn-B.safetensors --name dncnn-fmd-noise

writes ``benchmarks/results/eval_lowpass_<name>.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from scipy.ndimage import gaussian_filter
from train_fmd import held_out_types

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model
from fluoden_batch.train import denoise_whole

SIGMAS = (1.0, 2.0, 4.0, 8.0)


def restore_low(noisy: np.ndarray, denoised: np.ndarray, sigma: float) -> np.ndarray:
    """``denoised + G_sigma * (noisy - denoised)``, clipped to 0..255 (float64)."""
    residual = noisy - denoised
    low = gaussian_filter(residual, sigma, mode="reflect", truncate=3.0)
    return np.clip(denoised + low, 0, 255)


def score(weights: Path, types: list[str], fmd: Path) -> dict:
    """``scores[(level, type, method)]`` = list of FMD PSNR (dB) per image."""
    loaded = load_model(weights)
    norm = loaded.metadata.normalisation
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for level, kind, z, gt in fmd_images(fmd, types):
        d = denoise_whole(loaded.module, z, clip=(0, 255), normalisation=norm).astype(np.float64)
        scores[(level, kind, "noisy")].append(fmd_scores(z, gt, 255.0)[0])
        scores[(level, kind, "model")].append(fmd_scores(d, gt, 255.0)[0])
        for s in SIGMAS:
            out = restore_low(z, d, s)
            scores[(level, kind, f"s{s:g}")].append(fmd_scores(out, gt, 255.0)[0])
    return scores


def table(scores: dict) -> list[str]:
    """Markdown rows: per level, each type and the mean over the types."""
    cols = ["noisy", "model", *(f"s{s:g}" for s in SIGMAS)]
    lines = [
        "| level | type | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for level in LEVELS:
        kinds = sorted({k for (lv, k, _) in scores if lv == level})
        for kind in [*kinds, "mean"]:
            vals = [
                np.mean([np.mean(scores[(level, k, c)]) for k in kinds])
                if kind == "mean"
                else np.mean(scores[(level, kind, c)])
                for c in cols
            ]
            name = f"**{kind}**" if kind == "mean" else kind
            lines.append(f"| {level} | {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", type=Path, help="weights trained with train_fmd.py --fold A")
    parser.add_argument("fold_b", type=Path, help="weights trained with train_fmd.py --fold B")
    parser.add_argument("--name", required=True, help="name for the report")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {args.data} (set FLUODEN_DATA or --data)")
    started = time.perf_counter()
    out_of_fold: dict = {}
    in_fold: dict = {}
    for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
        other = "B" if fold == "A" else "A"
        out_of_fold.update(score(weights, held_out_types(fold), args.data))
        in_fold.update(score(weights, held_out_types(other), args.data))
    command = (
        f"PYTHONPATH=.:benchmarks python benchmarks/eval_lowpass.py {args.fold_a} "
        f"{args.fold_b} --name {args.name} --threads {args.threads}"
    )
    text = "\n".join(
        [
            f"# Low-frequency restoration on `{args.name}` (PSNR dB, FMD scoring)",
            "",
            f"Command (repository root): `{command}`; {time.perf_counter() - started:.0f} s.",
            "",
            "Columns `sS`: the model's output plus its residual smoothed by a Gaussian of S px "
            "(`d + G_S * (z - d)`, the input's lowest frequencies put back); "
            "see the script's docstring. 4 images per type and level.",
            "",
            "## Out of fold (each fold model on the types it never saw)",
            "",
            *table(out_of_fold),
            "",
            "## In fold (each fold model on the types it trained on; raw frame 4 held out, "
            "the rest seen in training)",
            "",
            *table(in_fold),
            "",
        ]
    )
    path = RESULTS / f"eval_lowpass_{args.name}.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

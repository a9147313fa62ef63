"""Does a model carry a local intensity bias? Restore the residual's lowest frequencies.

A diagnostic, not a shipped step. A denoiser's residual ``r = z - d`` (input minus output)
should be noise; its lowest spatial frequencies should then be nearly zero, because the
noise there is small. ``d + G_s * r`` (``G_s`` a Gaussian of ``s`` pixels) puts the
input's lowest frequencies back: it gains where the model shifted local intensities
(dimmed or brightened structures: a bias), and loses the low-frequency noise the model
had removed. A large gain says the model is biased on that data.

Whether to do it can be decided per image without a reference: the ``SURE`` column is
``fluoden denoise --detail sure`` (:mod:`fluoden_batch.restore.detail`) with each image
as its own channel: among ``s`` in 0 (no restoration), 1, 2, 4, 8 px and a blend
``z + w (d_s - z)`` with ``w`` in 0, 0.5, 0.75, 1 (``w = 0``: the input), the output of
lowest Monte-Carlo SURE for the image's Poisson-Gaussian noise, where the residual says
the noise is white (lag-1 correlation under 0.3), else the model's output.

For each leave-types-out fold model of ``train_fmd.py``: every ``fmd_dev`` image of the
types it never saw (``out of fold``) and of the types it trained on (``in fold``), every
level, FMD scoring (four 256x256 crops, peak 255), the model, ``d + G_s * r`` for ``s`` in
1, 2, 4, 8 px (reflecting borders, truncated at 3 s) and the SURE choice, clipped to
0..255. Then the W2S pairs no model trained on (FOV 037-040, channels 1 and 2) with the
fold-A model, scale-invariant PSNR (``eval_w2s.py``).

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
from eval_w2s import pairs, scale_invariant_psnr
from train_fmd import held_out_types

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import normalisation_range, plane_noise
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.restore.detail import SIGMAS as CANDIDATES
from fluoden_batch.restore.detail import (
    Detail,
    choose_detail,
    restore_detail,
    sure_plane,
)
from fluoden_batch.train import denoise_whole

SIGMAS = tuple(s for s in CANDIDATES if s)  # the restorations alone (0: the model)


def sure_choice(module: torch.nn.Module, norm: Normalisation, z: np.ndarray) -> tuple:
    """The model's output ``d``, the output ``--detail sure`` gives for ``z`` as its own
    one-plane channel (:mod:`fluoden_batch.restore.detail`, with the image's own
    Poisson-Gaussian estimate), and the chosen ``(s, w)``."""
    window = normalisation_range(z, norm)

    def model(x: np.ndarray) -> np.ndarray:
        return denoise_whole(module, x, norm=window, normalisation=norm)

    d = model(z).astype(np.float64)
    noise = plane_noise(z)
    detail, _ = choose_detail([sure_plane(z, model, *noise)])
    restored = restore_detail(z, d, detail, noise).astype(np.float64)
    return d, restored, (detail.sigma, detail.weight)


def restore_low(noisy: np.ndarray, denoised: np.ndarray, sigma: float) -> np.ndarray:
    """``denoised + G_sigma * (noisy - denoised)``, clipped to 0..255 (float64)."""
    return np.clip(restore_detail(noisy, denoised, Detail(sigma, 1.0)), 0, 255).astype(np.float64)


def score(weights: Path, types: list[str], fmd: Path) -> dict:
    """``scores[(level, type, method)]`` = list of FMD PSNR (dB) per image."""
    loaded = load_model(weights)
    norm = loaded.metadata.normalisation
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for level, kind, z, gt in fmd_images(fmd, types):
        d, chosen, (s_chosen, w_chosen) = sure_choice(loaded.module, norm, z)
        d = np.clip(d, 0, 255)
        scores[(level, kind, "noisy")].append(fmd_scores(z, gt, 255.0)[0])
        scores[(level, kind, "model")].append(fmd_scores(d, gt, 255.0)[0])
        for s in SIGMAS:
            out = restore_low(z, d, s)
            scores[(level, kind, f"s{s:g}")].append(fmd_scores(out, gt, 255.0)[0])
        sure = fmd_scores(np.clip(chosen, 0, 255), gt, 255.0)[0]
        scores[(level, kind, "SURE")].append(sure)
        scores[(level, kind, "SURE s")].append(s_chosen)
        scores[(level, kind, "SURE w")].append(w_chosen)
    return scores


def table(scores: dict) -> list[str]:
    """Markdown rows: per level, each type and the mean over the types."""
    cols = ["noisy", "model", *(f"s{s:g}" for s in SIGMAS), "SURE", "SURE s", "SURE w"]
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


def w2s_rows(weights: Path, w2s: Path) -> list[str]:
    """Markdown rows: scale-invariant PSNR of the W2S pairs no model trained on."""
    loaded = load_model(weights)
    rows, totals = [], []
    for name, noisy, clean in pairs(w2s):
        d, chosen, (s, w) = sure_choice(loaded.module, loaded.metadata.normalisation, noisy)
        d = np.clip(d, 0, 255)
        vals = [scale_invariant_psnr(noisy, clean), scale_invariant_psnr(d, clean)]
        vals += [scale_invariant_psnr(restore_low(noisy, d, s2), clean) for s2 in SIGMAS]
        vals.append(scale_invariant_psnr(np.clip(chosen, 0, 255), clean))
        totals.append(vals)
        rows.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {s:g} | {w:g} |")
    mean = np.mean(totals, axis=0)
    rows.append("| **mean** | " + " | ".join(f"{v:.2f}" for v in mean) + " | | |")
    return rows


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
    w2s = w2s_rows(args.fold_a, DATA / "w2s_train")
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
            f"## W2S pairs no model trained on (`{args.fold_a}`; scale-invariant PSNR, dB)",
            "",
            "| pair | noisy | model | "
            + " | ".join(f"s{s:g}" for s in SIGMAS)
            + " | SURE | SURE s | SURE w |",
            "|---|" + "---:|" * (len(SIGMAS) + 5),
            *w2s,
            "",
        ]
    )
    path = RESULTS / f"eval_lowpass_{args.name}.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

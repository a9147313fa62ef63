"""Evaluate a weights file on the held-out FMD images (``fmd_dev``) with FMD scoring.

Every ``fmd_dev/<level>/<Type>_<n>.png`` (levels raw, avg2, avg4, avg8, avg16) is denoised
by whole-image inference (percentile normalisation of the image, model, back to grey
levels, clipped to 0..255, not rounded) and scored against ``gt/<Type>_<n>.png`` with
:func:`fluoden_batch.metrics.fmd_scores` (four 256x256 crops, peak 255). The noisy input
is scored the same way; for ``raw`` a classical baseline is added: non-local means
(scikit-image ``denoise_nl_means``, 5x5 patches, 13x13 search, fast mode,
``h = 0.8 * sigma``, ``sigma`` from ``estimate_sigma`` of the raw image).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_fmd.py dncnn-small

writes ``benchmarks/results/eval_fmd_<model name>.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from skimage import io
from skimage.restoration import estimate_sigma

from fluoden_batch.metrics import fmd_scores, psnr, ssim
from fluoden_batch.models import load_model
from fluoden_batch.restore import classical
from fluoden_batch.restore.inference import Dihedral
from fluoden_batch.train import denoise_whole

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
LEVELS = ["raw", "avg2", "avg4", "avg8", "avg16"]
RESULTS = Path(__file__).resolve().parent / "results"
# Published FMD test_mix means over all 12 types (48 images); fmd_dev holds 6 of them.
PUBLISHED_NOISY = dict(zip(LEVELS, [27.22, 30.08, 32.86, 36.03, 39.70], strict=True))


def nlm(image: np.ndarray) -> np.ndarray:
    """Non-local means baseline in grey levels (float64, clipped to 0..255):
    :func:`fluoden_batch.restore.classical.nlm` at the sigma of ``estimate_sigma``."""
    sigma = float(estimate_sigma(image, channel_axis=None))
    return np.clip(classical.nlm(image, sigma), 0, 255)


def fmd_images(
    fmd: Path, types: list[str] | None = None
) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(level, type, noisy, gt)`` of every image of ``fmd`` (an ``fmd_dev`` folder), level
    by level, in file order; of ``types`` only when given. Float64 grey levels."""
    for level in LEVELS:
        for path in sorted((fmd / level).glob("*.png")):
            kind = path.stem.rsplit("_", 1)[0]
            if types is not None and kind not in types:
                continue
            noisy = io.imread(path).astype(np.float64)
            yield level, kind, noisy, io.imread(fmd / "gt" / path.name).astype(np.float64)


def evaluate(
    weights: str | Path,
    fmd: Path,
    types: list[str] | None = None,
    tta: bool = False,
    nlm_baseline: bool = True,
) -> tuple[dict, str, float]:
    """Score noisy input, model and (raw only, unless ``nlm_baseline`` is False) NLM for
    every image (of ``types`` only, when given: the held-out types of a leave-types-out
    fold); ``tta``: the model's mean over the 8 flips/rotations (``fluoden denoise --tta``).

    Returns
    -------
    scores : dict
        ``scores[(level, type, method)]`` = list of (PSNR dB, SSIM) per image.
    name : str
        Model name from the metadata.
    seconds : float
        Mean model inference time per 512x512 image.
    """
    loaded = load_model(weights)
    module = Dihedral(loaded.module) if tta else loaded.module
    scores: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    infer = []
    for level, kind, noisy, gt in fmd_images(fmd, types):
        t0 = time.perf_counter()
        out = denoise_whole(
            module, noisy, clip=(0.0, 255.0), normalisation=loaded.metadata.normalisation
        )
        infer.append(time.perf_counter() - t0)
        scores[(level, kind, "noisy")].append(fmd_scores(noisy, gt, 255.0))
        scores[(level, kind, "model")].append(fmd_scores(out, gt, 255.0))
        for method, image in (("noisy", noisy), ("model", out)):  # as most papers do
            full = (psnr(image, gt, 255.0), ssim(image, gt, 255.0))
            scores[(level, kind, f"{method}_full")].append(full)
        if level == "raw" and nlm_baseline:
            scores[(level, kind, "nlm")].append(fmd_scores(nlm(noisy), gt, 255.0))
    return scores, loaded.metadata.name, float(np.mean(infer))


def _mean(scores: dict, level: str, method: str, kind: str | None = None) -> tuple[float, float]:
    values = [
        v for (lv, k, m), vs in scores.items() for v in vs
        if lv == level and m == method and (kind is None or k == kind)
    ]  # fmt: skip
    return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))


def report(scores: dict, name: str, weights: str, seconds: float, command: str) -> str:
    """Markdown summary: overall per level, then PSNR per sample type."""
    kinds = sorted({k for (_, k, _) in scores})
    n_images = len(scores[("raw", kinds[0], "noisy")]) * len(kinds)
    lines = [
        f"# FMD evaluation of `{name}`",
        "",
        f"Command: `{command}`",
        "",
        f"Weights: `{weights}`. Data: `fmd_dev`, {n_images} images per level "
        f"({len(kinds)} sample types), whole-image inference, output clipped to 0..255; "
        "FMD scoring (mean over four 256x256 crops, peak 255). Model time "
        f"{seconds:.2f} s per 512x512 image on CPU ({torch.get_num_threads()} thread(s)).",
        "",
        "## All types: PSNR (dB) / SSIM",
        "",
        "| level | noisy | model | model - noisy | NLM | published noisy (12 types) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for level in LEVELS:
        (pn, sn), (pm, sm) = _mean(scores, level, "noisy"), _mean(scores, level, "model")
        nl = "-"
        if level == "raw":
            pl, sl = _mean(scores, level, "nlm")
            nl = f"{pl:.2f} / {sl:.3f}"
        lines.append(
            f"| {level} | {pn:.2f} / {sn:.3f} | {pm:.2f} / {sm:.3f} | {pm - pn:+.2f} | {nl} "
            f"| {PUBLISHED_NOISY[level]:.2f} |"
        )

    def four_crop(kind: str, level: str) -> str:
        pn, pm = _mean(scores, level, "noisy", kind)[0], _mean(scores, level, "model", kind)[0]
        nlm_text = f" (NLM {_mean(scores, level, 'nlm', kind)[0]:.2f})" if level == "raw" else ""
        return f"{pn:.2f} -> {pm:.2f}{nlm_text}"

    def whole_image(kind: str, level: str) -> str:
        (pn, sn), (pm, sm) = (_mean(scores, level, m, kind) for m in ("noisy_full", "model_full"))
        return f"{pn:.2f} / {sn:.3f} -> {pm:.2f} / {sm:.3f}"

    for title, cell in (
        ("PSNR (dB) per sample type: noisy -> model (NLM for raw)", four_crop),
        ("Whole 512x512 images (the figure most recent papers report for FMD), PSNR (dB) / "
         "SSIM per sample type: noisy -> model", whole_image),
    ):  # fmt: skip
        lines += ["", f"## {title}", "", "| type | " + " | ".join(LEVELS) + " |"]
        lines.append("|---|" + "---:|" * len(LEVELS))
        lines += [f"| {k} | " + " | ".join(cell(k, lv) for lv in LEVELS) + " |" for k in kinds]
    worse = [lv for lv in LEVELS if _mean(scores, lv, "model")[0] < _mean(scores, lv, "noisy")[0]]
    below = [
        f"{k} {lv}"
        for k in kinds
        for lv in LEVELS
        if _mean(scores, lv, "model", k)[0] < _mean(scores, lv, "noisy", k)[0]
    ]
    lines += [
        "",
        "Levels whose mean over the types scores BELOW the noisy input: "
        + (", ".join(worse) if worse else "none"),
        "",
        "Types and levels (four-crop PSNR) BELOW the noisy input: "
        + (", ".join(below) if below else "none"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="shipped model name or .safetensors path")
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--types", default=None, help="comma list of sample types to score")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--tta", action="store_true", help="8 flips/rotations (denoise --tta)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    types = args.types.split(",") if args.types else None
    if not (args.data / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {args.data} (set FLUODEN_DATA or --data)")
    scores, name, seconds = evaluate(args.weights, args.data, types, args.tta)
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/eval_fmd.py "
        f"{args.weights} --threads {args.threads}"
        + (f" --types {args.types}" if args.types else "")
        + (f" --tag {args.tag}" if args.tag else "")
        + (" --tta" if args.tta else "")
    )
    text = report(
        scores, name + (" with --tta" if args.tta else ""), args.weights, seconds, command
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"eval_fmd_{name}{args.tag}{'_tta' if args.tta else ''}.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Score models on W2S pairs that no shipped or candidate model trained on.

W2S FOV 037-040, channels 1 and 2 (8 pairs: one widefield frame -> the 400-frame mean,
8-bit): ``dncnn-fmd`` trained on channel 0 only, the wide recipe of ``train_fmd.py``
(``--noise-map``) leaves FOV 037-040 out altogether. (``dncnn-small`` trained on every W2S
pair but four, these included: for it they are in-distribution.) Each model denoises the whole frame
(``fluoden_batch.train.denoise_whole`` with its own normalisation and, for a noise-map
model, the frame's estimated (a, b)), output clipped to 0..255. Scores against the mean:
PSNR (peak 255), SSIM, and the scale-invariant PSNR of CARE evaluations (the prediction
fitted to the reference by least squares first). A Gaussian blur of sigma 1 px is the
linear baseline.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_w2s.py dncnn-fmd runs/X.safetensors

writes ``benchmarks/results/eval_w2s.md``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy.ndimage import gaussian_filter

from fluoden_batch.metrics import psnr, ssim
from fluoden_batch.models import load_model
from fluoden_batch.train import denoise_whole

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"
FOVS = ["037", "038", "039", "040"]
CHANNELS = ["1", "2"]


def scale_invariant_psnr(pred: np.ndarray, ref: np.ndarray, peak: float = 255.0) -> float:
    """PSNR after fitting ``a * pred + b`` to ``ref`` by least squares (CARE's figure)."""
    a, b = np.polyfit(pred.ravel(), ref.ravel(), 1)
    return psnr(a * pred + b, ref, peak)


def pairs(w2s: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, noisy, mean) float64 frames of the held-out FOVs and channels."""
    out = []
    for fov in FOVS:
        for ch in CHANNELS:
            noisy = tifffile.imread(w2s / "avg1" / f"input_avg1_{fov}_{ch}.tif")
            clean = tifffile.imread(w2s / "avg400" / f"target_avg400_{fov}_{ch}.tif")
            out.append((f"{fov}_{ch}", noisy.astype(np.float64), clean.astype(np.float64)))
    return out


def scores(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(PSNR, SSIM, scale-invariant PSNR) against the reference, peak 255."""
    return psnr(pred, ref, 255.0), ssim(pred, ref, 255.0), scale_invariant_psnr(pred, ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="shipped model names or .safetensors paths")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_w2s.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w2s = DATA / "w2s_train"
    if not (w2s / "avg1").is_dir():
        raise SystemExit(f"W2S data not found under {w2s} (set FLUODEN_DATA)")
    data = pairs(w2s)
    rows: dict[str, list[tuple[float, float, float]]] = {
        "noisy": [scores(n, c) for _, n, c in data],
        "Gaussian blur, sigma 1 px": [scores(gaussian_filter(n, 1.0), c) for _, n, c in data],
    }
    for spec in args.models:
        loaded = load_model(spec)
        norm = loaded.metadata.normalisation
        outs = [
            denoise_whole(loaded.module, n, clip=(0, 255), normalisation=norm) for _, n, _ in data
        ]
        rows[f"`{spec}` (metadata name {loaded.metadata.name})"] = [
            scores(o, c) for o, (_, _, c) in zip(outs, data, strict=True)
        ]
    lines = [
        "# W2S pairs no model trained on (FOV 037-040, channels 1 and 2)",
        "",
        f"Command: `OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/eval_w2s.py "
        f"{' '.join(args.models)}`",
        "",
        f"{len(data)} pairs, whole 512 x 512 frames, 8-bit; means over the pairs.",
        "",
        "| method | PSNR (dB) | SSIM | scale-invariant PSNR (dB) |",
        "|---|---:|---:|---:|",
    ]
    for name, values in rows.items():
        p, s, si = (float(np.mean([v[i] for v in values])) for i in range(3))
        lines.append(f"| {name} | {p:.2f} | {s:.3f} | {si:.2f} |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

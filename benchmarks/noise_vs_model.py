"""Cost of noise estimation and of the vst protocol next to the DnCNN, and what vst buys.

Run ``python benchmarks/noise_vs_model.py`` from the repository root (about a minute on
one core; ``--quick`` for a 1024 x 1024 plane and one repeat). It prints a markdown
report and writes it to ``benchmarks/results/noise_vs_model.md`` (``--out`` to change).

1. Speed, one thread (the per-worker setting of the pipeline): on one 2048 x 2048 demo
   plane (uint16 data, a=32, b=400), ``estimate`` (single-image Poisson-Gaussian fit),
   the vst protocol's extra pixel-wise work (``gat_forward`` + ``gat_inverse``
   exact unbiased), and ``dncnn-small`` (channels-last fp32, tile 384, the pipeline's
   default), each as seconds per plane (best and median of the repeats) and Mpx/s.
2. Quality: ``whole`` against ``vst`` with the shipped ``dncnn-small`` on one 1024 x 1024
   demo plane at two noise levels, PSNR/SSIM against the clean plane (data range 4095).
   ``(a, b)`` for vst come from the same pooled per-channel estimate the pipeline makes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fluoden_batch.demo import SENSOR_MAX, clean_plane
from fluoden_batch.metrics import psnr, ssim
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import percentile_range
from fluoden_batch.noise import estimate, gat_forward, gat_inverse, simulate
from fluoden_batch.pipeline.statistics import channel_noise, gat_parameters
from fluoden_batch.restore.inference import infer_plane
from fluoden_batch.restore.protocols import PlaneParams, vst, whole

RESULTS = Path(__file__).resolve().parent / "results" / "noise_vs_model.md"
MODEL = "dncnn-small"
TILE = 384


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best and median wall seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def noisy_plane(size: int, a: float, b: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = clean_plane(size, rng)
    z = np.rint(simulate(clean, a, b, clip=(0, SENSOR_MAX), rng=rng))
    return z.astype(np.uint16), clean


def speed(size: int, repeats: int) -> list[str]:
    z, _ = noisy_plane(size, 32.0, 400.0, 0)
    module = load_model(MODEL).module
    mpx = size * size / 1e6
    lo, hi = percentile_range(z, 0.1, 99.9)
    x = ((z - lo) / (hi - lo)).astype(np.float32)
    est = estimate(z)

    def gat() -> None:
        gat_inverse(gat_forward(z, est.a, est.b), est.a, est.b)

    rows = [
        ("`estimate` (a, b)", timed(lambda: estimate(z), repeats)),
        ("vst transforms (`gat_forward` + `gat_inverse`)", timed(gat, repeats)),
        (f"`{MODEL}` forward, tile {TILE}", timed(lambda: infer_plane(module, x, TILE), repeats)),
    ]
    model_best = rows[-1][1][0]
    lines = [
        f"Plane {size} x {size} ({mpx:.2f} Mpx) uint16, demo noise a=32, b=400; one thread; "
        f"best / median of {repeats} after a warm-up.",
        "",
        "| step | s per plane (best / median) | Mpx/s (best) | share of the model's time |",
        "|---|---|---|---|",
    ]
    for name, (best, med) in rows:
        lines.append(
            f"| {name} | {best:.3f} / {med:.3f} | {mpx / best:.2f} | {best / model_best:.1%} |"
        )
    lines += ["", f"Estimate on this plane: a = {est.a:.3f}, b = {est.b:.1f} (truth 32, 400)."]
    return lines


def quality(size: int) -> list[str]:
    module = load_model(MODEL).module
    lines = [
        f"One {size} x {size} demo plane per noise level, `{MODEL}`, PSNR (dB) / SSIM against "
        "the clean plane, data range 4095.",
        "",
        "| a, b | estimated a, b | noisy | whole | vst |",
        "|---|---|---|---|---|",
    ]
    for a, b, seed in ((32.0, 400.0, 1), (8.0, 100.0, 2)):
        z, clean = noisy_plane(size, a, b, seed)
        zf = z.astype(np.float64)
        lo, hi = percentile_range(zf, 0.1, 99.9)
        ga, gb = gat_parameters(channel_noise(zf[None], "zyx")[0])
        tlo, thi = percentile_range(gat_forward(zf, ga, gb), 0.1, 99.9)
        outs = [
            zf,
            whole(module, zf, PlaneParams(lo, hi), TILE).astype(np.float64),
            vst(module, zf, PlaneParams(tlo, thi, ga, gb), TILE).astype(np.float64),
        ]
        scores = [(psnr(o, clean, SENSOR_MAX), ssim(o, clean, SENSOR_MAX)) for o in outs]
        cells = [f"{p:.2f} / {s:.3f}" for p, s in scores]
        lines.append(f"| {a:g}, {b:g} | {ga:.2f}, {gb:.0f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 x 1024 plane, 1 repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    size, repeats = (1024, 1) if args.quick else (2048, 3)
    report = [
        "# Noise estimation and vst next to the DnCNN",
        "",
        f"`python benchmarks/noise_vs_model.py{' --quick' if args.quick else ''}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, 1 thread.",
        "",
        "## Speed",
        "",
        *speed(size, repeats),
        "",
        "## whole vs vst",
        "",
        *quality(1024),
        "",
    ]
    text = "\n".join(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Benchmark of Poisson-Gaussian noise estimation: synthetic accuracy, real data, speed.

Run ``python benchmarks/noise_estimation.py [--quick]`` from the repository root. It prints
the tables and writes them to ``benchmarks/results/noise_estimation.md``.

- Synthetic: fluorescence-like clean images on a 0-4095 scale (smooth background, blurred
  cells with nuclei, filaments, spots), noise simulated for a grid of ``(a, b)`` with
  clipping at 0 and 4095; relative errors of ``a`` and of ``sqrt(b)`` (the latter where
  ``b`` matters: ``b > a * mean(y) / 10``).
- Real: the FMD sample (``<data>/fmd_dev/raw`` single frames, ``gt`` 50-frame means, uint8,
  clipped at 0 and 255). ``data`` is ``$FLUODEN_DATA`` or ``../shared/data`` next to the
  checkout; the part is skipped with a message when absent. The oracle bins pixels by
  ``gt`` (40 quantile bins, >= 500 pixels, <= 0.1 % clipped raw pixels) and fits
  ``var(raw - gt) - 1/12`` (``gt`` rounding) against the bin's mean raw level by weighted
  least squares; the mean raw level, not ``gt``, is the abscissa because the raw frames'
  brightness differs from ``gt`` by up to 10 % (bleaching / laser power).
- Speed: ``estimate`` on a 2048 x 2048 plane, best and median of repeated runs.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from machine import describe
from scipy import ndimage

from fluoden_batch.noise import estimate, simulate
from fluoden_batch.noise.reference import oracle_fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "noise_estimation.md"
DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SENSOR_MAX = 4095.0


def fluorescence_phantom(seed: int, shape: tuple[int, int] = (512, 512), peak: float = 4000.0):
    """Clean fluorescence-like image in [0, peak]: background, cells, filaments, spots."""
    rng = np.random.default_rng(seed)
    h, w = shape
    field = ndimage.gaussian_filter(rng.standard_normal(shape), min(h, w) / 12)
    img = 0.02 * peak + 0.06 * peak * (field - field.min()) / np.ptp(field)
    cells = np.zeros(shape)
    for _ in range(int(rng.integers(8, 20)) * h * w // 512**2):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(15, 50, 2)
        th = rng.uniform(0, np.pi)
        y0, y1 = max(int(cy) - 51, 0), min(int(cy) + 52, h)
        x0, x1 = max(int(cx) - 51, 0), min(int(cx) + 52, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        u = ((yy - cy) * np.cos(th) + (xx - cx) * np.sin(th)) / ry
        v = (-(yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)) / rx
        r2 = u * u + v * v
        cells[y0:y1, x0:x1] += rng.uniform(0.05, 0.3) * peak * (r2 < 1)
        cells[y0:y1, x0:x1] += rng.uniform(0.07, 0.37) * peak * (r2 < 0.3)  # nucleus
    img += ndimage.gaussian_filter(cells, 2.5)
    lines = np.zeros(shape)
    for _ in range(int(rng.integers(10, 30)) * h * w // 512**2):
        steps = int(rng.integers(100, 500))
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, steps))
        path = rng.uniform(0, [h, w]) + np.cumsum(np.stack([np.sin(angle), np.cos(angle)], 1), 0)
        lines[path[:, 0].astype(int) % h, path[:, 1].astype(int) % w] = rng.uniform(0.6, 3) * peak
    img += ndimage.gaussian_filter(lines, 1.3)
    spots = np.zeros(shape)
    n_spots = 300 * h * w // 512**2
    spots.flat[rng.integers(0, h * w, n_spots)] = rng.uniform(2, 9, n_spots) * peak
    img += ndimage.gaussian_filter(spots, 1.5)
    return np.clip(img, 0.0, peak)


def synthetic(quick: bool) -> tuple[list[str], dict]:
    """Relative errors of the estimates over a grid of (a, b) and clean images."""
    gains = [0.5, 2.0, 20.0] if quick else [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
    variances = [0.0, 100.0] if quick else [0.0, 10.0, 30.0, 100.0]
    images = [("cells", 0, 4000.0), ("dim", 3, 1000.0)]
    if not quick:
        images[1:1] = [("cells", 1, 4000.0), ("cells", 2, 3000.0)]
    clean = [
        (f"{kind}{seed} (peak {peak:.0f})", fluorescence_phantom(seed, peak=peak))
        for kind, seed, peak in images
    ]
    lines = [
        "| a | b | images | median rel. err. a | max rel. err. a | "
        "median rel. err. sqrt(b) where b matters (n) | mean a_std / a |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    err_a, err_sb, per_image = [], [], {name: [] for name, _ in clean}
    for a in gains:
        for b in variances:
            ea, esb, rel_std = [], [], []
            for k, (name, y) in enumerate(clean):
                z = simulate(y, a, b, clip=(0.0, SENSOR_MAX), rng=1000 * k + int(10 * a + b))
                est = estimate(z)
                ea.append(abs(est.a - a) / a)
                per_image[name].append(ea[-1])
                rel_std.append(est.a_std / a)
                if b > a * y.mean() / 10:
                    esb.append(abs(math.sqrt(max(est.b, 0.0)) - math.sqrt(b)) / math.sqrt(b))
            err_a += ea
            err_sb += esb
            sb = f"{statistics.median(esb):.3f} ({len(esb)})" if esb else "- (0)"
            lines.append(
                f"| {a:g} | {b:g} | {len(clean)} | {statistics.median(ea):.3f} | {max(ea):.3f} "
                f"| {sb} | {statistics.mean(rel_std):.3f} |"
            )
    lines += [
        "",
        "| image | mean y | median rel. err. a | max rel. err. a |",
        "|---|---:|---:|---:|",
    ]
    for name, y in clean:
        e = per_image[name]
        lines.append(f"| {name} | {y.mean():.0f} | {statistics.median(e):.3f} | {max(e):.3f} |")
    summary = {
        "median_err_a": statistics.median(err_a),
        "p90_err_a": float(np.percentile(err_a, 90)),
        "median_err_sqrt_b": statistics.median(err_sb) if err_sb else math.nan,
        "n_sqrt_b": len(err_sb),
        "n": len(err_a),
    }
    return lines, summary


def noise_whiteness(raw: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Lag-1 autocorrelation of raw - gt and var(raw - gt) / var(Haar HH of raw - gt)."""
    d = raw.astype(np.float64) - gt
    d -= d.mean()
    rho = float(np.mean(d[:, 1:] * d[:, :-1]) + np.mean(d[1:] * d[:-1])) / (2 * d.var())
    hh = (d[0::2, 0::2] - d[0::2, 1::2] - d[1::2, 0::2] + d[1::2, 1::2]) / 2
    return rho, float(d.var() / hh.var())


def real_data() -> tuple[list[str], dict] | None:
    """Estimates on FMD raw frames against the oracle fit from the 50-frame means."""
    folder = DATA / "fmd_dev"
    if not (folder / "raw").is_dir():
        print(f"[real data] skipped: {folder / 'raw'} not found (set FLUODEN_DATA)")
        return None
    from skimage import io

    lines = [
        "| image | oracle a | oracle b | est. a (+- std) | est. b (+- std) | rel. err. a "
        "| levels | clip | noise lag-1 corr. | var(pixel)/var(HH) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    errors: dict[str, list[float]] = {}
    white: list[float] = []  # images whose noise is close to white (var ratio < 1.5)
    for path in sorted((folder / "raw").glob("*.png")):
        raw, gt = io.imread(path), io.imread(folder / "gt" / path.name)
        oa, ob, _n = oracle_fit(raw, gt)
        est = estimate(raw)
        rel = (est.a - oa) / abs(oa)
        errors.setdefault(path.stem.split("_")[0], []).append(abs(rel))
        rho, ratio = noise_whiteness(raw, gt)
        if ratio < 1.5:
            white.append(abs(rel))
        clip = "-" if est.clip is None else f"{est.clip[0]:g}..{est.clip[1]:g}"
        lines.append(
            f"| {path.stem} | {oa:.3f} | {ob:.1f} | {est.a:.3f} +- {est.a_std:.3f} "
            f"| {est.b:.1f} +- {est.b_std:.1f} | {rel:+.3f} | {est.n_levels} | {clip} "
            f"| {rho:.2f} | {ratio:.2f} |"
        )
    every = [e for v in errors.values() for e in v]
    summary = {"median_err_a": statistics.median(every), "n": len(every)}
    summary |= {"white_median_err_a": statistics.median(white) if white else math.nan}
    summary |= {"n_white": len(white)}
    summary |= {f"median_err_a_{k}": statistics.median(v) for k, v in errors.items()}
    return lines, summary


def speed(quick: bool) -> tuple[list[str], dict]:
    """Wall time of estimate() on 512^2 and 2048^2 planes (several dtypes)."""
    lines = ["| plane | dtype | best s | median s | Mpx/s (best) |", "|---|---|---:|---:|---:|"]
    summary = {}
    repeats = 3 if quick else 7
    for n in (512, 2048):
        z = simulate(fluorescence_phantom(0, (n, n)), 2.0, 25.0, clip=(0.0, SENSOR_MAX), rng=0)
        for dtype in (np.float64, np.float32, np.uint16):
            zz = np.round(z).astype(dtype) if dtype == np.uint16 else z.astype(dtype)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                estimate(zz)
                times.append(time.perf_counter() - start)
            mpx = n * n / 1e6 / min(times)
            lines.append(
                f"| {n}x{n} | {np.dtype(dtype).name} | {min(times):.3f} "
                f"| {statistics.median(times):.3f} | {mpx:.1f} |"
            )
            if n == 2048 and dtype == np.float64:
                summary = {"seconds_2048": min(times), "mpx_per_s": mpx}
    return lines, summary


def machine() -> str:
    import scipy

    return describe({"SciPy": scipy.__version__})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report path")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    syn_lines, syn = synthetic(args.quick)
    real = real_data()
    speed_lines, spd = speed(args.quick)
    report = [
        "# Noise estimation benchmark",
        "",
        f"Command: `python benchmarks/noise_estimation.py{' --quick' if args.quick else ''}`  ",
        f"Machine: {machine()}  ",
        f"Total run time: {time.perf_counter() - start:.0f} s",
        "",
        "## Synthetic images (512 x 512, 0-4095 scale, clipped at 0 and 4095)",
        "",
        f"Median relative error of a: **{syn['median_err_a']:.3f}** (target <= 0.10; 90th "
        f"percentile {syn['p90_err_a']:.3f}; {syn['n']} estimates). Median relative error of "
        f"sqrt(b) where b > a * mean(y) / 10: **{syn['median_err_sqrt_b']:.3f}** (target <= "
        f"0.20; {syn['n_sqrt_b']} estimates).",
        "",
        *syn_lines,
        "",
        "## Real data: FMD sample (uint8 512 x 512, single raw frame vs. 50-frame mean)",
        "",
    ]
    if real is None:
        report.append(f"Skipped: no data at {DATA / 'fmd_dev'}.")
    else:
        real_lines, rs = real
        per_type = ", ".join(
            f"{k[len('median_err_a_') :]} {v:.3f}"
            for k, v in rs.items()
            if k.startswith("median_err_a_")
        )
        report += [
            f"Median relative error of a against the oracle: **{rs['median_err_a']:.3f}** "
            f"(target <= 0.20; {rs['n']} images; per modality: {per_type}).",
            "",
            "The last two columns describe the true noise (from raw - gt): for white noise the "
            "lag-1 correlation is 0 and var(pixel)/var(HH) is 1. The estimator, like Foi et "
            "al.'s, measures the fine-scale (white) part of the noise; where the noise is "
            "spatially correlated it sees only var(HH) and underestimates the per-pixel "
            "variance by that ratio.",
            "",
            f"On the {rs['n_white']} images whose noise is close to white (var(pixel)/var(HH) "
            f"< 1.5) the median relative error of a is **{rs['white_median_err_a']:.3f}**. The "
            "WideField frames have strongly correlated noise (lag-1 correlation about 0.6) and "
            "an oracle a close to zero or negative (their per-pixel variance is dominated by a "
            "signal-independent part), so relative errors of a are not meaningful there.",
            "",
            *real_lines,
        ]
    report += [
        "",
        "## Speed of `estimate` (single thread)",
        "",
        f"2048 x 2048 float64 plane: **{spd['seconds_2048']:.3f} s, {spd['mpx_per_s']:.1f} Mpx/s** "
        "(best of the repeats; input conversion included).",
        "",
        *speed_lines,
        "",
    ]
    text = "\n".join(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Photon sweep: the default run against its input and the classical methods, from a
handful of photons per pixel to a clean input.

FMD and W2S each hold a few noise levels of a few microscopes. This sweep asks what the
shipped pipeline does across the range a user's camera may give, including levels
neither dataset has, and on an input that is already clean ("never make a clean input
worse"). The noise is simulated and white: a camera-like Poisson-Gaussian count image
of a reference ``y`` (grey levels 0..255),

    z = Poisson(y P / 255) + N(0, 2^2) + 100,   rounded and stored as uint16,

``P`` the photons at grey level 255 (2 electrons of read noise, a camera offset of 100
counts), and each output is mapped back, ``(out - 100) 255 / P`` clipped to 0..255, and
scored as one whole image against ``y`` (PSNR, peak 255). The row ``clean`` gives the
reference itself as the input (float32), so its input PSNR is infinite and the output's
PSNR says how much the run changed a clean image (higher is better; 50 dB is an RMS
change of 0.8 grey levels).

References, none of them seen by the model run on them:

- ``W2S``: the 400-frame means of W2S FOV 037-040, channels 1 and 2 (8 images that no
  model trained on), one ``(8, 512, 512)`` stack through the shipped default;
- each fmd_dev type: its 50-frame mean (one field of view; the same file for its four
  captures) twice, with independent noise draws, one ``(2, 512, 512)`` stack through the
  fold model that never saw the type (``runs/dncnn-mbd-{A,B}``, as ``figure_fmd.py``'s
  "default, unseen type").

The references are means of many captures and still hold 1/400 and 1/50 of a capture's
noise (for fmd_dev's two-photon and widefield types an RMS of 2-2.3 grey levels). A method
that removes it is charged for it, and an input that keeps it is rewarded, so where the
simulated noise is as weak as the reference's own, the scores rank nothing: the column
``ceiling`` is the PSNR a perfect denoiser (the noise-free image) would score against the
reference, from the reference's own noise read from independent captures (fmd_dev: half
the variance of capture 1 minus capture 3, over 50; W2S: the variance of a frame minus the
400-frame mean fitted to it, over 400), and rows whose input scores within 3 dB of it
are marked ``*``. The ``clean`` row reports each method's RMS change of the input in grey
levels beside the reference's own noise RMS: a change of about that size is the method
removing the reference's noise, not damage.

Methods: ``input``, the default run (``fb.denoise`` with every default but
``dtype="float32"``), ``VST+NLM`` and ``VST+BM3D`` (the latter where the optional
``bm3d`` package is installed), each of the classical ones with the noise (a, b)
estimated from the data as a run does.

Usage (repository root; data in ``../shared/data`` or ``$FLUODEN_DATA``)::

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/noise_sweep.py

writes ``benchmarks/results/noise_sweep.{csv,md,png}`` (26 min on 2 cores); ``--render``
rewrites the .md and .png from the CSV.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from eval_fmd import DATA, RESULTS
from eval_w2s import FOVS
from figure_fmd import FOLD_OF, fold_model
from skimage import io

import fluoden_batch as fb
from fluoden_batch.errors import InputError
from fluoden_batch.metrics import psnr

PHOTONS = [3, 10, 30, 100, 300, 1000, 3000]  # photons at grey level 255
READ_NOISE = 2.0  # electrons (= counts)
OFFSET = 100.0  # counts
CLASSICAL = {"VST+NLM": "vst-nlm", "VST+BM3D": "vst-bm3d"}
MODEL = "default run"


def references() -> dict[str, tuple[np.ndarray, str | None]]:
    """Each set's clean references (N, 512, 512) float64 in grey levels and the model
    to run on it (``None``: the shipped default)."""
    w2s = DATA / "w2s_train" / "avg400"
    sets = {
        "W2S": (
            np.stack(
                [io.imread(w2s / f"target_avg400_{f}_{c}.tif") for f in FOVS for c in (1, 2)]
            ).astype(np.float64),
            None,
        )
    }
    for kind in sorted(FOLD_OF):
        gt = [io.imread(DATA / "fmd_dev" / "gt" / f"{kind}_{i}.png") for i in (1, 2)]
        sets[kind] = (np.stack(gt).astype(np.float64), str(fold_model(kind)))
    return sets


def simulate(y: np.ndarray, photons: float, seed: int) -> np.ndarray:
    """Camera counts (uint16) of clean ``y`` (grey levels) at ``photons`` per grey level
    255."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(y, 0, None) * photons / 255.0).astype(np.float64)
    counts += rng.normal(0.0, READ_NOISE, y.shape) + OFFSET
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def grey(z: np.ndarray, photons: float | None) -> np.ndarray:
    """Counts (or, for the clean row, grey levels) back to grey levels, clipped 0..255."""
    z = np.asarray(z, dtype=np.float64)
    if photons is not None:
        z = (z - OFFSET) * 255.0 / photons
    return np.clip(z, 0, 255)


def run(z: np.ndarray, method: str, model: str | None) -> np.ndarray:
    """``method``'s output for stack ``z`` (same units as ``z``)."""
    if method == MODEL:
        kwargs = {} if model is None else {"model": model}
        return np.asarray(fb.denoise(z, dtype="float32", **kwargs))
    return np.asarray(fb.denoise(z, protocol=CLASSICAL[method], dtype="float32"))


def table(
    rows: list[dict], methods: list[str], key: str, fmt: str, ceilings: dict[str, float]
) -> str:
    """Markdown: one row per set and level (``*``: the input within 3 dB of the set's
    ceiling, where the reference's own noise decides the scores), one column per method,
    then the set's ceiling (dB) and its reference noise (RMS grey levels)."""
    lines = ["| set | photons at 255 | " + " | ".join(methods) + " | ceiling |"]
    lines.append("|---|---:|" + "---:|" * (len(methods) + 1))
    cells = {(r["set"], r["level"], r["method"]): r[key] for r in rows}
    inputs = {(r["set"], r["level"]): r["input_psnr"] for r in rows}
    for name in dict.fromkeys(r["set"] for r in rows):
        for level in dict.fromkeys(r["level"] for r in rows):
            if (name, level) not in inputs:
                continue
            values = [cells.get((name, level, m)) for m in methods]
            text = [_cell(v, fmt) for v in values]
            limited = inputs[name, level] > ceilings[name] - 3
            lines.append(
                f"| {name} | {level}{' *' if limited else ''} | "
                + " | ".join(text)
                + f" | {ceilings[name]:.2f} |"
            )
    return "\n".join(lines)


def reference_noise() -> dict[str, float]:
    """Each set's reference noise, RMS grey levels (see the module docstring)."""
    w2s = DATA / "w2s_train"
    variances = []
    for f in FOVS:
        for c in (1, 2):
            frame = io.imread(w2s / "avg1" / f"input_avg1_{f}_{c}.tif").astype(np.float64)
            mean = io.imread(w2s / "avg400" / f"target_avg400_{f}_{c}.tif").astype(np.float64)
            gain, offset = np.polyfit(mean.ravel(), frame.ravel(), 1)  # stretched apart
            variances.append(np.var(frame - gain * mean - offset) / gain**2 / 400)
    noise = {"W2S": float(np.sqrt(np.mean(variances)))}
    for kind in sorted(FOLD_OF):
        one, three = (
            io.imread(DATA / "fmd_dev" / "raw" / f"{kind}_{i}.png").astype(np.float64)
            for i in (1, 3)
        )
        noise[kind] = float(np.sqrt(np.var(one - three) / 2 / 50))
    return noise


def _cell(value: float | None, fmt: str) -> str:
    """A table cell: blank where not run, "refused" where the method refused the input."""
    if value is None:
        return ""
    if np.isnan(value):
        return "refused"
    return "inf" if np.isinf(value) else format(value, fmt)


def plot(rows: list[dict], methods: list[str], ceilings: dict[str, float], path: Path) -> None:
    """PSNR gain over the input against photons, one panel per set; the levels where the
    input is within 3 dB of the set's ceiling (the reference's own noise decides) are
    shaded."""
    names = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(2, 4, figsize=(15, 7), sharex=True)
    for ax, name in zip(axes.flat, names, strict=False):
        noisy = [r for r in rows if r["set"] == name and r["level"] != "clean"]
        limited = [float(r["level"]) for r in noisy if r["input_psnr"] > ceilings[name] - 3]
        if limited:
            ax.axvspan(
                min(limited) / 1.5, max(limited) * 1.5, color="0.9", label="reference-limited"
            )
        for method in methods[1:]:
            pts = [
                (float(r["level"]), r["psnr"] - r["input_psnr"])
                for r in noisy
                if r["method"] == method
            ]
            ax.semilogx(*zip(*pts, strict=True), marker="o", label=method)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("photons at grey level 255")
        ax.set_ylabel("PSNR - input PSNR (dB)")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(photons: list[float], only: list[str] | None) -> list[dict]:
    """Every set, level and method: rows of PSNR, input PSNR, RMS change and seconds."""
    methods = ["input", MODEL, "VST+NLM"]
    if importlib.util.find_spec("bm3d") is not None:
        methods.append("VST+BM3D")
    rows = []
    start = time.perf_counter()
    for name, (y, model) in references().items():
        if only and name not in only:
            continue
        for k, level_photons in enumerate([*photons, None]):
            level = "clean" if level_photons is None else f"{level_photons:g}"
            if level_photons is None:
                z = y.astype(np.float32)
            else:
                z = simulate(y, level_photons, seed=k)
            outputs, seconds = {"input": grey(z, level_photons)}, {"input": 0.0}
            for method in methods[1:]:
                t0 = time.perf_counter()
                try:
                    outputs[method] = grey(run(z, method, model), level_photons)
                except InputError as exc:  # refused (e.g. noise too flat to estimate)
                    print(f"{name} {level} {method}: refused: {exc}", flush=True)
                    outputs[method] = np.full_like(y, np.nan)
                seconds[method] = time.perf_counter() - t0
            base = np.mean([psnr(outputs["input"][i], y[i], 255.0) for i in range(len(y))])
            for method, out in outputs.items():
                refused = bool(np.isnan(out).any())
                score = [np.nan] if refused else [psnr(out[i], y[i], 255.0) for i in range(len(y))]
                rows.append(
                    {"set": name, "level": level, "method": method, "input_psnr": base}
                    | {"psnr": float(np.mean(score)), "seconds": seconds[method]}
                    | {"rms": float(np.sqrt(np.mean((out - outputs["input"]) ** 2)))}
                )
            print(f"{name} {level} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def read_rows(path: Path) -> list[dict]:
    """The rows of a sweep's CSV (numbers as floats)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    numbers = ("input_psnr", "psnr", "rms", "seconds")
    return [{k: float(v) if k in numbers else v for k, v in r.items()} for r in rows]


def report(rows: list[dict], stem: str) -> None:
    """Write ``stem``.md and ``stem``.png from the sweep's rows."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    noise = reference_noise()
    ceilings = {name: 20 * np.log10(255.0 / rms) for name, rms in noise.items()}
    plot(rows, methods, ceilings, RESULTS / f"{stem}.png")
    if all("seconds" in r for r in rows):
        totals = {m: sum(r["seconds"] for r in rows if r["method"] == m) for m in methods[1:]}
        timing = ", ".join(f"{m} {s:.0f} s" for m, s in totals.items())
    else:
        timing = "not in this CSV (written before it held times; see `runs/noise_sweep.log`)"
    clean = [r for r in rows if r["level"] == "clean"]
    own = "\n".join(f"| {name} | {rms:.2f} |" for name, rms in noise.items())
    (RESULTS / f"{stem}.md").write_text(
        "# Photon sweep: the default run against its input and the classical methods\n\n"
        "Command: `OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python "
        "benchmarks/noise_sweep.py`\n\n"
        f"{__doc__.split(chr(10) + chr(10), 1)[1].split('Usage')[0].strip()}\n\n"
        f"Wall time per method (2 cores): {timing}.\n\n"
        "PSNR (dB) against the reference, mean over each set's images:\n\n"
        f"{table(rows, methods, 'psnr', '.2f', ceilings)}\n\n"
        "The clean row: RMS change of the input (grey levels):\n\n"
        f"{table(clean, methods, 'rms', '.2f', ceilings)}\n\n"
        "Each reference's own noise (RMS grey levels):\n\n"
        f"| set | reference noise |\n|---|---:|\n{own}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photons", nargs="+", type=float, default=PHOTONS)
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (W2S, types)")
    parser.add_argument("--name", default="noise_sweep", help="results file stem")
    parser.add_argument(
        "--render", action="store_true", help="rewrite the .md and .png from the stem's CSV"
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name}.csv"
    if args.render:
        rows = read_rows(path)
    else:
        rows = sweep(args.photons, args.sets)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    report(rows, args.name)


if __name__ == "__main__":
    main()

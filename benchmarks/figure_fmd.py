"""Per-type results figure: what `fluoden denoise` with every default does to each FMD type.

Each ``fmd_dev`` sample type at each level is run as a user would run it: its four
captures of one field of view as one ``(4, 512, 512)`` uint8 array (axes ``zyx``, one
channel), :func:`fluoden_batch.denoise` with every default but ``dtype="float32"`` (so the
score is not that of an 8-bit rounding), the output clipped to 0..255 and each plane
scored against the 50-frame mean with FMD scoring (four 256x256 crops, peak 255).

Methods (rows of the CSV):

- ``input``: the noisy captures.
- ``default, unseen type``: the shipped default's recipe as a fold model that never saw
  the type (``runs/dncnn-mbd-{A,B}.safetensors``, the leave-types-out folds of
  ``train_fmd.py``): the figure to expect on a microscope the model has not met.
- ``default, trained on it``: the shipped ``dncnn-fmd``, which trained on these images
  (in distribution; an upper bound, not a held-out score).
- ``VST+NLM`` and ``VST+BM3D`` (the latter where the optional ``bm3d`` package is
  installed): the classical protocols of the same engine, noise (a, b) estimated once
  for the channel, no reference.

FMD's 50-frame reference holds the input's own captures (``benchmarks/fmd_overlap.py``),
which rewards keeping the input's noise (the input itself scores 1.7 dB better against it
at avg16 than against a noise-free image). So each output is also scored against the
complement reference ``(50 gt - N z) / (50 - N)`` (``N`` captures in the input ``z``),
the mean of the captures the input does not share (column ``psnr_c``; its own noise,
independent of the input's, lowers every method's score alike, so it ranks the methods
and the input as a noise-free reference would, where the input's captures are among the
reference's: ``fmd_overlap.md`` finds them so at avg16 on every type but Confocal_BPAE_B).

Each output is also scored as one whole 512 x 512 image against the 50-frame mean
(columns ``psnr_w`` and ``ssim_w``, peak 255), the figure most recent papers report for
FMD, so the numbers can be set beside the literature's.

Usage (repository root; data in ``../shared/data`` or ``$FLUODEN_DATA``)::

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/figure_fmd.py

writes ``benchmarks/results/figure_fmd.{csv,md,png}``; ``--examples PATH`` also writes a
figure of 128 x 128 crops (input, VST+BM3D or VST+NLM, the unseen-type model, reference)
to ``PATH``, which is not committed (the data are not to be copied into the repository).
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
from eval_fmd import DATA, LEVELS, RESULTS
from skimage import io
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores, psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
FOLD_OF = {t: fold for fold, types in GROUPS.items() for t in types}  # the fold that trained t
UNSEEN = "default, unseen type"
SEEN = "default, trained on it"
CLASSICAL = {"VST+NLM": "vst-nlm", "VST+BM3D": "vst-bm3d"}


def fold_model(kind: str) -> Path:
    """The ``dncnn-mbd`` fold model that never saw sample type ``kind``."""
    other = "B" if FOLD_OF[kind] == "A" else "A"
    return ROOT / "runs" / f"dncnn-mbd-{other}.safetensors"


CAPTURES = {"raw": 1, "avg2": 2, "avg4": 4, "avg8": 8, "avg16": 16}  # frames in the input
REFERENCE = 50  # frames in FMD's gt


def complement(noisy: np.ndarray, gt: np.ndarray, level: str) -> np.ndarray:
    """The mean of the reference's captures that the input at ``level`` does not share,
    ``(50 gt - N z) / (50 - N)``, float64 like ``gt``."""
    n = CAPTURES[level]
    return (REFERENCE * gt - n * noisy.astype(np.float64)) / (REFERENCE - n)


def load(level: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The four captures of ``kind`` at ``level`` (4, 512, 512) uint8 and their references."""
    names = [f"{kind}_{i}.png" for i in range(1, 5)]
    noisy = np.stack([io.imread(DATA / "fmd_dev" / level / n) for n in names])
    gt = np.stack([io.imread(DATA / "fmd_dev" / "gt" / n) for n in names])
    return noisy, gt.astype(np.float64)


def output(noisy: np.ndarray, kind: str, method: str) -> np.ndarray:
    """``method``'s output for one (4, Y, X) stack of type ``kind``, float64 clipped to
    0..255."""
    if method == UNSEEN:
        out = fb.denoise(noisy, model=str(fold_model(kind)), dtype="float32")
    elif method == SEEN:
        out = fb.denoise(noisy, dtype="float32")
    else:
        out = fb.denoise(noisy, protocol=CLASSICAL[method], dtype="float32")
    return np.clip(np.asarray(out, dtype=np.float64), 0, 255)


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    """PSNR against level, one panel per type, one line per method."""
    kinds = sorted({r["type"] for r in rows})
    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharex=True)
    styles = {
        "input": ("0.5", "o", ":"),
        "VST+NLM": ("tab:green", "^", "--"),
        "VST+BM3D": ("tab:purple", "v", "--"),
        UNSEEN: ("tab:blue", "s", "-"),
        SEEN: ("tab:orange", "D", "-"),
    }
    x = np.arange(len(LEVELS))
    for ax, kind in zip(axes.ravel(), kinds, strict=True):
        for method in ["input", *methods]:
            y = [
                np.mean([r["psnr"] for r in rows if (r["type"], r["level"], r["method"]) == k])
                for k in ((kind, lev, method) for lev in LEVELS)
            ]
            color, marker, line = styles[method]
            ax.plot(x, y, color=color, marker=marker, linestyle=line, label=method, ms=4)
        ax.set_title(kind, fontsize=10)
        ax.set_xticks(x, LEVELS)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("PSNR (dB, FMD scoring)")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "fmd_dev, `fluoden denoise` with every default: each type's 4 captures as one array"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples(
    crops: dict[str, dict[str, np.ndarray]], ranges: dict[str, tuple[float, float]], path: Path
) -> None:
    """A grid of raw-level crops: one row per type, one column per method, each row shown
    over ``ranges[type]`` (grey levels: the reference image's 0.5 and 99.5 percentiles)."""
    kinds = sorted(crops)
    columns = list(crops[kinds[0]])
    fig, axes = plt.subplots(len(kinds), len(columns), figsize=(2.2 * len(columns), 2.2 * 6))
    for i, kind in enumerate(kinds):
        lo, hi = ranges[kind]
        for j, name in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(crops[kind][name], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
        axes[i, 0].set_ylabel(kind, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], methods: list[str], levels: list[str], columns: tuple[str, ...]) -> str:
    """Markdown: the mean of the CSV ``columns`` (``("psnr", "ssim")``: shown as PSNR /
    SSIM) per type and level, one column per method, and the means over the types."""
    lines = [
        "| type | level | input | " + " | ".join(methods) + " |",
        "|---|---|" + "---:|" * (len(methods) + 1),
    ]
    kinds = sorted({r["type"] for r in rows})
    for kind in [*kinds, "mean"]:
        for level in levels:
            cells = []
            for method in ["input", *methods]:
                vals = [
                    [r[c] for c in columns]
                    for r in rows
                    if r["level"] == level
                    and r["method"] == method
                    and (kind == "mean" or r["type"] == kind)
                ]
                mean = np.mean(vals, axis=0)
                cells.append(" / ".join(f"{v:.{2 if i == 0 else 3}f}" for i, v in enumerate(mean)))
            name = f"**{kind}**" if kind == "mean" else kind
            lines.append(f"| {name} | {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=Path, default=None, help="write a crops figure here")
    parser.add_argument("--levels", nargs="+", default=LEVELS, choices=LEVELS)
    args = parser.parse_args()
    methods = ["VST+NLM"]
    if importlib.util.find_spec("bm3d") is not None:
        methods.append("VST+BM3D")
    methods += [UNSEEN, SEEN]
    rows, crops, ranges, seconds = [], {}, {}, {m: 0.0 for m in methods}
    start = time.perf_counter()
    for level in args.levels:
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            unshared = complement(noisy, gt, level)
            runs = {"input": noisy.astype(np.float64)}
            for method in methods:
                t0 = time.perf_counter()
                runs[method] = output(noisy, kind, method)
                seconds[method] += time.perf_counter() - t0
            for method, out in runs.items():
                for i in range(len(gt)):
                    p, s = fmd_scores(out[i], gt[i])
                    rows.append(
                        {"type": kind, "level": level, "method": method, "image": i + 1}
                        | {"psnr": p, "ssim": s, "psnr_c": fmd_scores(out[i], unshared[i])[0]}
                        | {
                            "psnr_w": psnr(out[i], gt[i], 255.0),
                            "ssim_w": ssim(out[i], gt[i], 255.0),
                        }
                    )
            if level == "raw":
                window = np.s_[0, 192:320, 192:320]
                best = "VST+BM3D" if "VST+BM3D" in runs else "VST+NLM"
                crops[kind] = {
                    "input (raw)": runs["input"][window],
                    best: runs[best][window],
                    "fluoden, unseen type": runs[UNSEEN][window],
                    "reference (50 frames)": gt[window],
                }
                ranges[kind] = tuple(np.percentile(gt[0], [0.5, 99.5]))
            print(f"{level} {kind} done ({time.perf_counter() - start:.0f} s)", flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "figure_fmd.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        digits = {"psnr": 4, "ssim": 5, "psnr_c": 4, "psnr_w": 4, "ssim_w": 5}
        writer.writerows({**r, **{k: f"{r[k]:.{d}f}" for k, d in digits.items()}} for r in rows)
    if args.levels == LEVELS:
        plot(rows, methods, RESULTS / "figure_fmd.png")
    timing = ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items())
    (RESULTS / "figure_fmd.md").write_text(
        "# fmd_dev per type: `fluoden denoise` with every default\n\n"
        "Command: `OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python "
        "benchmarks/figure_fmd.py`\n\n"
        f"{__doc__.split(chr(10) + chr(10), 1)[1].split('Usage')[0].strip()}\n\n"
        f"Wall time per method (all levels and types, 2 cores): {timing}.\n\n"
        "PSNR (dB) / SSIM, mean over the four captures:\n\n"
        f"{table(rows, methods, args.levels, ('psnr', 'ssim'))}\n\n"
        "PSNR (dB) against the complement reference (the captures the input does not share), "
        "mean over the four captures:\n\n"
        f"{table(rows, methods, args.levels, ('psnr_c',))}\n\n"
        "Whole 512 x 512 images (the figure most recent papers report for FMD), PSNR (dB) / "
        "SSIM against the 50-frame mean, mean over the four captures:\n\n"
        f"{table(rows, methods, args.levels, ('psnr_w', 'ssim_w'))}\n"
    )
    if args.examples is not None and crops:
        examples(crops, ranges, args.examples)


if __name__ == "__main__":
    main()

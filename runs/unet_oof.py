"""`unet-s` rule 2: the U-Net folds out of fold with every default of the run: each
fmd_dev type's four captures at a level as one (4, 512, 512) array through the fold model
that never saw the type, as ``benchmarks/figure_fmd.py``'s "default, unseen type" (FMD
scoring, four 256 px crops against the 50-frame mean), beside that figure's values for
the shipped recipe's folds (`dncnn-mbd`, ``benchmarks/results/figure_fmd.csv``; the runs
are deterministic) and the input.

Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python runs/unet_oof.py [LEVEL ...]
"""

from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from figure_fmd import FOLD_OF, UNSEEN, fold_model, load

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "benchmarks" / "results" / "figure_fmd.csv"


def unet_fold(kind: str) -> Path:
    """The ``unet-s`` fold that never saw ``kind``."""
    return ROOT / "runs" / fold_model(kind).name.replace("dncnn-mbd", "unet-s")


def figure() -> dict[tuple[str, str, str], float]:
    """Mean PSNR over the four captures per (type, level, method) of figure_fmd.csv."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with open(FIGURE, newline="") as f:
        for row in csv.DictReader(f):
            values[row["type"], row["level"], row["method"]].append(float(row["psnr"]))
    return {key: float(np.mean(v)) for key, v in values.items()}


def main() -> None:
    known = figure()
    for level in sys.argv[1:] or ["raw", "avg2", "avg4", "avg8", "avg16"]:
        means: dict[str, list[float]] = {"input": [], "dncnn-mbd": [], "unet-s": []}
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            t0 = time.perf_counter()
            out = fb.denoise(noisy, model=str(unet_fold(kind)), dtype="float32")
            out = np.clip(np.asarray(out, np.float64), 0, 255)
            seconds = time.perf_counter() - t0
            psnr = float(np.mean([fmd_scores(o, g)[0] for o, g in zip(out, gt, strict=True)]))
            means["input"].append(known[kind, level, "input"])
            means["dncnn-mbd"].append(known[kind, level, UNSEEN])
            means["unet-s"].append(psnr)
            print(
                f"{level} {kind}: input {means['input'][-1]:.2f}, dncnn-mbd "
                f"{means['dncnn-mbd'][-1]:.2f}, unet-s {psnr:.2f} ({seconds:.0f} s)",
                flush=True,
            )
        summary = ", ".join(f"{c} {np.mean(v):.2f}" for c, v in means.items())
        print(f"{level} mean: {summary}", flush=True)


if __name__ == "__main__":
    main()

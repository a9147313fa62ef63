"""`unet-s` rule 2: the U-Net folds out of fold with every default of the run, beside the
shipped recipe's (`dncnn-mbd`) folds run the same way in the same sitting: each fmd_dev
type's four captures at a level as one (4, 512, 512) array through the fold model that
never saw the type, as ``benchmarks/figure_fmd.py``'s "default, unseen type" (FMD
scoring, four 256 px crops against the 50-frame mean; also the model alone,
``detail="off"``).

Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python runs/unet_oof.py [LEVEL ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from figure_fmd import FOLD_OF, fold_model, load

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

ROOT = Path(__file__).resolve().parents[1]


def unet_fold(kind: str) -> Path:
    """The ``unet-s`` fold that never saw ``kind`` (the other fold's ``dncnn-mbd`` path's
    fold letter)."""
    return ROOT / "runs" / fold_model(kind).name.replace("dncnn-mbd", "unet-s")


def score(noisy: np.ndarray, gt: np.ndarray, model: Path, detail: str) -> tuple[float, float]:
    """Mean FMD PSNR of the run over the four captures, and its wall time (s)."""
    t0 = time.perf_counter()
    out = fb.denoise(noisy, model=str(model), dtype="float32", detail=detail)
    out = np.clip(np.asarray(out, np.float64), 0, 255)
    psnr = float(np.mean([fmd_scores(o, g)[0] for o, g in zip(out, gt, strict=True)]))
    return psnr, time.perf_counter() - t0


def main() -> None:
    columns = ("dncnn-mbd", "unet-s", "dncnn-mbd alone", "unet-s alone")
    for level in sys.argv[1:] or ["raw", "avg2", "avg4", "avg8", "avg16"]:
        means: dict[str, list[float]] = {c: [] for c in ("input", *columns)}
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            pairs = zip(noisy.astype(np.float64), gt, strict=True)
            means["input"].append(float(np.mean([fmd_scores(n, g)[0] for n, g in pairs])))
            line = [f"{level} {kind}: input {means['input'][-1]:.2f}"]
            for column in columns:
                model = unet_fold(kind) if column.startswith("unet") else fold_model(kind)
                detail = "off" if column.endswith("alone") else "auto"
                psnr, seconds = score(noisy, gt, model, detail)
                means[column].append(psnr)
                line.append(f"{column} {psnr:.2f} ({seconds:.0f} s)")
            print(", ".join(line), flush=True)
        summary = ", ".join(f"{c} {np.mean(v):.2f}" for c, v in means.items())
        print(f"{level} mean: {summary}", flush=True)


if __name__ == "__main__":
    main()

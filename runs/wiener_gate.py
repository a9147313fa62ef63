"""Where does the Wiener step of `runs/wiener.patch` help, and what does the run see there?

Experiment for issue 16 (second round of the Wiener step), on data the out-of-fold
figures do not use: the shipped default `dncnn-fmd` on its own training images (fmd_dev,
each type's 4 captures as one array at every level, as `figure_fmd.py` runs it) and on 12
W2S frames that no held-out pair uses (FOV 001-021, channels 1-2). For every run it
records the detail restoration's choice and the mean lag-1 correlation of the model's
residual from the run's log line, and the scores: FMD gt and complement reference
(`figure_fmd.complement`) for fmd_dev, scale-invariant PSNR against the 400-frame mean for
W2S.

Run it once with the library as on main and once with the patch applied (another
worktree), the same command otherwise::

    PYTHONPATH=<tree>:benchmarks python runs/wiener_gate.py OUT.json
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch
from eval_w2s import scale_invariant_psnr
from figure_fmd import DATA, FOLD_OF, LEVELS, complement, load

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

W2S = [(f, c) for f in ("001", "005", "009", "013", "017", "021") for c in ("1", "2")]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "detail restoration" in msg:
            self.lines.append(msg)


def parse(lines: list[str]) -> dict:
    line = lines[-1] if lines else ""
    corr = re.search(r"residual lag-1 correlation (-?[\d.]+)", line)
    gain = re.search(r"([+-][\d.]+) dB estimated", line)
    wiener = re.search(r"Wiener share ([\d.]+)", line)
    return {
        "line": line,
        "correlation": float(corr.group(1)) if corr else None,
        "gain": float(gain.group(1)) if gain else None,
        "wiener": float(wiener.group(1)) if wiener else 0.0,
    }


def main() -> None:
    torch.set_num_threads(2)
    handler = Lines()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    rows = []
    for level in LEVELS:
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            unshared = complement(noisy, gt, level)
            handler.lines.clear()
            out = np.clip(np.asarray(fb.denoise(noisy, dtype="float32"), np.float64), 0, 255)
            row = {"data": "fmd", "type": kind, "level": level} | parse(handler.lines)
            row["psnr"] = float(np.mean([fmd_scores(out[i], gt[i])[0] for i in range(4)]))
            row["psnr_c"] = float(np.mean([fmd_scores(out[i], unshared[i])[0] for i in range(4)]))
            row["input"] = float(np.mean([fmd_scores(noisy[i], gt[i])[0] for i in range(4)]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    w2s = DATA / "w2s_train"
    for fov, ch in W2S:
        z = tifffile.imread(w2s / "avg1" / f"input_avg1_{fov}_{ch}.tif")
        ref = tifffile.imread(w2s / "avg400" / f"target_avg400_{fov}_{ch}.tif").astype(float)
        handler.lines.clear()
        out = np.asarray(fb.denoise(z, dtype="float32"), np.float64)
        row = {"data": "w2s", "type": f"{fov}_{ch}", "level": "raw"} | parse(handler.lines)
        row["sipsnr"] = scale_invariant_psnr(out, ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(sys.argv[1]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

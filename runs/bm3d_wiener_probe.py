"""Probe: BM3D's block-matched Wiener stage piloted by the default run's output, in fold.

``PYTHONPATH=.:benchmarks .venv/bin/python runs/bm3d_wiener_probe.py raw 4`` (needs the
optional ``bm3d`` package). Each ``dncnn-mbd`` fold model on its own white-noise types'
capture(s) at the level (capture 4's raw frame is held out of training), the default run,
then ``bm3d.bm3d(..., stage_arg=pilot)`` (BM3D's second step alone, with block matching)
in the GAT domain under the run's ``(a, b)``; FMD scoring against the 50-frame mean.
"""

import sys
import time

import bm3d
import numpy as np
from eval_fmd import DATA
from skimage import io
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores
from fluoden_batch.noise.anscombe import gat_forward, gat_inverse
from fluoden_batch.pipeline.params import planned_noise


def read(level: str, kind: str, caps: list[int]) -> np.ndarray:
    return np.stack([io.imread(DATA / "fmd_dev" / level / f"{kind}_{c}.png") for c in caps])


level = sys.argv[1] if len(sys.argv) > 1 else "raw"
caps = [int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "4").split(",")]
for fold in "AB":
    model = f"runs/dncnn-mbd-{fold}.safetensors"
    for kind in GROUPS[fold]:
        if kind.startswith("WideField"):
            continue
        z, gt = read(level, kind, caps), read("gt", kind, caps).astype(float)
        t0 = time.time()
        out = np.clip(np.asarray(fb.denoise(z, model=model, dtype="float32"), float), 0, 255)
        t1 = time.time()
        ((a, b),) = planned_noise(z, "zyx", kind, [])
        res = {"in": [], "run": [], "bmw": [], "half": []}
        tb = 0.0
        for i in range(len(caps)):
            t = time.time()
            x, g = gat_forward(z[i].astype(float), a, b), gat_forward(out[i], a, b)
            w = np.squeeze(np.asarray(bm3d.bm3d(x, 1.0, stage_arg=g), float))
            w = np.clip(gat_inverse(w, a, b, method="exact_unbiased"), 0, 255)
            tb += time.time() - t
            res["in"].append(fmd_scores(z[i].astype(float), gt[i])[0])
            res["run"].append(fmd_scores(out[i], gt[i])[0])
            res["bmw"].append(fmd_scores(w, gt[i])[0])
            res["half"].append(fmd_scores(0.5 * (w + out[i]), gt[i])[0])
        scores = " ".join(f"{k} {np.mean(v):.2f}" for k, v in res.items())
        print(f"{fold} {kind:18s} {level} a={a:.3g} b={b:.3g} {scores}", end=" ")
        print(f"run {t1 - t0:.0f}s bm3d-wiener {tb:.0f}s", flush=True)

"""Planning each plane on its own: fmd_dev's 24 captures of one level with the shipped
default, each plane given to ``fb.denoise`` as a channel (axes ``cyx``: its own window,
noise and restoration), against today's per-type ``zyx`` runs and the one ``zyx`` array
of all 24; FMD scoring, mean per type.

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks .venv/bin/python runs/per_plane_probe.py raw``
"""

import sys
import time

import numpy as np
from figure_fmd import load
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

types = GROUPS["A"] + GROUPS["B"]
level = sys.argv[1] if len(sys.argv) > 1 else "raw"
zs, gts = zip(*(load(level, k) for k in types), strict=True)
z_all, g_all = np.concatenate(zs), np.concatenate(gts)
outputs, seconds = {}, {}
for name, run in {
    "per-type": lambda: np.concatenate([fb.denoise(z, dtype="float32") for z in zs]),
    "per-type-planes": lambda: np.concatenate(
        [fb.denoise(z, axes="cyx", dtype="float32") for z in zs]
    ),
    "one-array": lambda: fb.denoise(z_all, dtype="float32"),
    "one-array-planes": lambda: fb.denoise(z_all, axes="cyx", dtype="float32"),
}.items():
    t = time.perf_counter()
    outputs[name] = np.asarray(run(), np.float64).reshape(z_all.shape)
    seconds[name] = time.perf_counter() - t
outputs["input"] = z_all.astype(np.float64)


def scores(out: np.ndarray) -> list[float]:
    return [
        float(np.mean([fmd_scores(np.clip(out[i], 0, 255), g_all[i])[0] for i in range(j, j + 4)]))
        for j in range(0, 24, 4)
    ]


table = {name: scores(out) for name, out in outputs.items()}
print(f"{level}  " + "  ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
for j, kind in enumerate(types):
    print(f"{kind:18s} " + " ".join(f"{k} {v[j]:.2f}" for k, v in table.items()))
print("mean               " + " ".join(f"{k} {np.mean(v):.2f}" for k, v in table.items()))

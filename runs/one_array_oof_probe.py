"""Out of fold, one array per fold: each ``dncnn-mbd`` fold model on the three fmd_dev types
it never saw (12 captures of one level, three microscopes), each type its own run against
the 12 as one ``(12, 512, 512)`` ``zyx`` array in plane groups (``plane_groups="auto"``)
and in one plan (``"off"``, as before groups); FMD scoring, per type and mean of the six.

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks .venv/bin/python runs/one_array_oof_probe.py raw``
"""

import sys

import numpy as np
from figure_fmd import fold_model, load
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

level = sys.argv[1] if len(sys.argv) > 1 else "raw"
table: dict[str, dict[str, float]] = {}
for types in GROUPS.values():
    model = str(fold_model(types[0]))
    zs, gts = zip(*(load(level, k) for k in types), strict=True)
    z_all, g_all = np.concatenate(zs), np.concatenate(gts)
    outputs = {
        "own run": np.concatenate([fb.denoise(z, model=model, dtype="float32") for z in zs]),
        "groups": fb.denoise(z_all, model=model, dtype="float32"),
        "one plan": fb.denoise(z_all, model=model, plane_groups="off", dtype="float32"),
        "input": z_all,
    }
    for name, out in outputs.items():
        out = np.clip(np.asarray(out, np.float64), 0, 255)
        for j, kind in enumerate(types):
            scores = [fmd_scores(out[i], g_all[i])[0] for i in range(4 * j, 4 * j + 4)]
            table.setdefault(kind, {})[name] = float(np.mean(scores))
names = ["own run", "groups", "one plan", "input"]
print(f"{level}: " + " | ".join(names))
for kind, row in table.items():
    print(f"{kind:18s} " + " ".join(f"{row[n]:6.2f}" for n in names))
print("mean               " + " ".join(f"{np.mean([r[n] for r in table.values()]):6.2f}" for n in names))

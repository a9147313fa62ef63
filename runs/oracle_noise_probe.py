"""Oracle probe: the default run with SURE's ``(a, b)`` read from two captures (the truth,
as ``benchmarks/noise_screen.py`` reads it) instead of the single-image estimate.

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks .venv/bin/python runs/oracle_noise_probe.py``:
each white-noise fmd_dev type and level, its four captures as one array through
``fb.denoise`` with the ``dncnn-mbd`` fold model that never saw the type, once as shipped
and once with ``pipeline.params.planned_noise`` replaced by the two-capture truth; FMD
scoring against the 50-frame mean. Output: ``runs/oracle_noise_probe.log``.
"""

from types import SimpleNamespace

import numpy as np
from eval_fmd import LEVELS
from figure_fmd import fold_model, load
from noise_screen import TYPES, capture_noise

import fluoden_batch as fb
import fluoden_batch.pipeline.params as params
from fluoden_batch.metrics import fmd_scores
from fluoden_batch.pipeline.statistics import gat_parameters

orig = params.planned_noise
TRUE: dict[str, float] = {}


def patched(*args, **kw):
    if TRUE:
        return (gat_parameters(SimpleNamespace(**TRUE)),)
    return orig(*args, **kw)


params.planned_noise = patched
tot: dict[tuple[str, str], list[float]] = {}
for kind in TYPES:
    for level in LEVELS:
        z, gt = load(level, kind)
        if np.array_equal(z[0], z[1]):
            continue
        a, b, med = capture_noise(z.astype(np.float64))
        row = []
        for mode in ("est", "true"):
            TRUE.clear()
            if mode == "true":
                TRUE.update(a=a, b=b)
            out = fb.denoise(z, model=str(fold_model(kind)), dtype="float32")
            out = np.clip(np.asarray(out, float), 0, 255)
            s = float(np.mean([fmd_scores(out[i], gt[i])[0] for i in range(4)]))
            row.append(s)
            tot.setdefault((level, mode), []).append(s)
        print(
            f"{kind:18s} {level:5s} a={a:.3g} b={b:.3g} est {row[0]:.2f} true {row[1]:.2f} "
            f"diff {row[1] - row[0]:+.2f}",
            flush=True,
        )
for (level, mode), v in sorted(tot.items()):
    print(level, mode, f"{np.mean(v):.3f}", len(v))

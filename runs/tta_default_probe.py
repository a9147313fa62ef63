"""`--tta` with every other default, out of fold: each fmd_dev type's four captures at a
level as one (4, 512, 512) array through the fold model that never saw the type, as
``benchmarks/figure_fmd.py``'s "default, unseen type" (FMD scoring), with and without
``tta=True`` (the detail restoration is tuned for the TTA model in the run).

Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python runs/tta_default_probe.py [LEVEL ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from figure_fmd import FOLD_OF, fold_model, load

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores


def main() -> None:
    for level in sys.argv[1:] or ["raw"]:
        means = {False: [], True: []}
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            pairs = zip(noisy.astype(np.float64), gt, strict=True)
            line = [f"{level} {kind}: input {np.mean([fmd_scores(n, g)[0] for n, g in pairs]):.2f}"]
            for tta in (False, True):
                t0 = time.perf_counter()
                out = fb.denoise(noisy, model=str(fold_model(kind)), dtype="float32", tta=tta)
                out = np.clip(np.asarray(out, np.float64), 0, 255)
                score = float(np.mean([fmd_scores(o, g)[0] for o, g in zip(out, gt, strict=True)]))
                means[tta].append(score)
                line.append(
                    f"{'tta' if tta else 'default'} {score:.2f} ({time.perf_counter() - t0:.0f} s)"
                )
            print(", ".join(line), flush=True)
        print(
            f"{level} mean: default {np.mean(means[False]):.2f}, tta {np.mean(means[True]):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

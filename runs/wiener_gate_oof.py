"""The default run of the fold models (figure_fmd.py's "default, unseen type") and of the
shipped default ("trained on it") on every fmd_dev type and level, as `figure_fmd.py`
runs them, without its classical methods; rows as in `figure_fmd.csv`.

    PYTHONPATH=<tree>:benchmarks python runs/wiener_gate_oof.py OUT.csv
"""

from __future__ import annotations

import csv
import sys
import time

import numpy as np
import torch
from figure_fmd import FOLD_OF, LEVELS, SEEN, UNSEEN, complement, load, output

from fluoden_batch.metrics import fmd_scores


def main() -> None:
    torch.set_num_threads(2)
    rows, seconds = [], {UNSEEN: 0.0, SEEN: 0.0}
    for level in LEVELS:
        for kind in sorted(FOLD_OF):
            noisy, gt = load(level, kind)
            unshared = complement(noisy, gt, level)
            for method in (UNSEEN, SEEN):
                t0 = time.perf_counter()
                out = output(noisy, kind, method)
                seconds[method] += time.perf_counter() - t0
                for i in range(len(gt)):
                    p, s = fmd_scores(out[i], gt[i])
                    rows.append(
                        {"type": kind, "level": level, "method": method, "image": i + 1}
                        | {"psnr": round(p, 4), "ssim": round(s, 5)}
                        | {"psnr_c": round(fmd_scores(out[i], unshared[i])[0], 4)}
                    )
            print(level, kind, {k: round(v) for k, v in seconds.items()}, flush=True)
    with open(sys.argv[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("seconds", seconds)


if __name__ == "__main__":
    main()

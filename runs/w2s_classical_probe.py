"""W2S's 8 held-out real pairs (FOV 037-040, channels 1, 2): the engine's classical
protocols (VST+NLM, VST+BM3D; noise estimated from each frame) beside the default run,
each frame its own in-memory run, scale-invariant PSNR against the 400-frame mean.
``--models PATH ...``: the default run with these weights instead of the classical rows.

Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python runs/w2s_classical_probe.py
"""

from __future__ import annotations

import argparse

import numpy as np
from eval_fmd import DATA
from eval_w2s import pairs, scores

import fluoden_batch as fb

CLASSICAL = {"VST+NLM": {"protocol": "vst-nlm"}, "VST+BM3D": {"protocol": "vst-bm3d"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="weights for the default run")
    args = parser.parse_args()
    runs = {"default run": {}}
    if args.models:
        runs = {path: {"model": path} for path in args.models}
    else:
        runs |= CLASSICAL
    table = {name: [] for name in ["noisy", *runs]}
    for pair, noisy, clean in pairs(DATA / "w2s_train"):
        table["noisy"].append(scores(noisy, clean))
        for name, options in runs.items():
            out = fb.denoise(noisy.astype(np.float32), dtype="float32", **options)
            table[name].append(scores(np.clip(np.asarray(out, np.float64), 0, 255), clean))
        print(pair, " ".join(f"{n} {v[-1][2]:.2f}" for n, v in table.items()), flush=True)
    for name, rows in table.items():
        p, s, si = np.mean(rows, axis=0)
        print(f"mean {name}: PSNR {p:.2f} SSIM {s:.3f} SI-PSNR {si:.2f}")


if __name__ == "__main__":
    main()

"""Memory and time of ``--adapt``'s fit as the dataset grows: it reads a fixed number of
patches, wherever they are, so its memory should not grow with the input.

For each size (``(4, side, side)`` uint16 Zarr arrays of Poisson-Gaussian-like noise on a
smooth pattern, chunks ``(1, 512, 512)``, side 4096 and 8192: 4x the data), the fit of
``fluoden_batch.pipeline.adapt.fit_job`` (``n2n``, the shipped default model, 40 steps)
runs in a fresh subprocess, which reports its resident memory before the fit and its peak
(``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` would carry the parent's peak across
``exec``) and the seconds spent reading the patch pool and fitting. Writes
``results/adapt_memory.md``.

Usage::

    PYTHONPATH=. python benchmarks/adapt_memory.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

RESULTS = Path(__file__).resolve().parent / "results"
FRAMES = 4
SIDES = (4096, 8192)

CHILD = r"""
import json, sys, time
import torch
from fluoden_batch.io.source import SourceSpec
from fluoden_batch.models.weights import file_digest, resolve_weights
from fluoden_batch.pipeline.adapt import AdaptJob, fit_job
from fluoden_batch.train.adapt import AdaptSettings

path, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
weights = resolve_weights("dncnn-fmd")
settings = AdaptSettings(path, "tyx", ((0.0, 4000.0),), "n2n", steps, None, 0, str(weights),
                         file_digest(weights), "cpu")

def status(key):  # kB; VmHWM is this process's own peak (ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024


before = status("VmRSS")
t0 = time.perf_counter()
fitted, _ = fit_job(AdaptJob(SourceSpec("zarr", path), settings))
wall = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({"rss_before_mb": before, "rss_peak_mb": peak, "wall_s": wall,
                  "fit_s": fitted.seconds, "train_mpx": fitted.train_mpx}))
"""


def write_input(path: Path, side: int) -> float:
    """A (FRAMES, side, side) uint16 array; returns its size in GB."""
    array = zarr.create_array(str(path), shape=(FRAMES, side, side), chunks=(1, 512, 512),
                              dtype="uint16")  # fmt: skip
    rng = np.random.default_rng(0)
    y, x = np.ogrid[0:side, 0:side]
    clean = 1000 + 800 * np.sin(y / 97.0) * np.cos(x / 61.0)
    for t in range(FRAMES):
        noisy = rng.poisson(clean) + rng.normal(0, 20, clean.shape)
        array[t] = np.clip(noisy, 0, 65535).astype(np.uint16)
    return FRAMES * side * side * 2 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in SIDES:
            path = Path(tmp) / f"in-{side}.zarr"
            gb = write_input(path, side)
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.steps)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row |= {"side": side, "gb": gb, "process_s": time.perf_counter() - t0}
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# Memory of `--adapt`'s fit as the dataset grows",
        "",
        f"Command: `PYTHONPATH=. python benchmarks/adapt_memory.py --steps {args.steps}`",
        "",
        f"`fit_job` (`n2n`, `dncnn-fmd`, {args.steps} steps of 16 patches, 2 torch "
        f"threads) on `({FRAMES}, side, side)` uint16 Zarr arrays (chunks 1 x 512 x 512), each "
        "in a fresh process; peak resident memory is the process's `VmHWM` (torch and "
        "the model included), the fit's own share is the peak less the memory before it.",
        "",
        "| side (px) | input (GB) | patches read (Mpx) | RSS before (MB) | peak RSS (MB) "
        "| fit incl. reading (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']} | {r['gb']:.2f} | {r['train_mpx']:.1f} | "
            f"{r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['wall_s']:.1f} |"
        )
    ratio = rows[-1]["rss_peak_mb"] / rows[0]["rss_peak_mb"]
    lines += [
        "",
        f"4x the data: peak memory x{ratio:.2f} (the same number of patches is read).",
        "",
    ]
    out = RESULTS / "adapt_memory.md"
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()

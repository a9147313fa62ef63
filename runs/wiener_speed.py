"""The Wiener filter before and after its 2026-12-07 rewrite, in one sitting.

Before (commit 9a39f1f): strips of 65 536 patches (32 MiB a coefficient array), the inverse
DCT of every patch and a 64-fold overlap-add. After: strips of 4096 patches (2 MiB, they
stay in cache), the inverse one axis at a time with the overlap-add folded into each (8 + 8
adds). The same filter: both on one simulated 2048 x 2048 plane (the demo's noise, piloted
by VST+NLM), one thread, alternating, three times each; the largest difference printed.
Run it twice: as is, and with glibc's MALLOC_TRIM_THRESHOLD_ set as Dask's nannies set it
(any value turns off glibc's growing mmap threshold, so large arrays are mapped anew).

    PYTHONPATH=. .venv/bin/python runs/wiener_speed.py
    MALLOC_TRIM_THRESHOLD_=65536 PYTHONPATH=. .venv/bin/python runs/wiener_speed.py
"""

from __future__ import annotations

import subprocess
import sys
import time
import types

import numpy as np
from threadpoolctl import threadpool_limits

from fluoden_batch.demo import DEMO_GAIN, DEMO_READ_VAR, clean_plane
from fluoden_batch.noise import simulate
from fluoden_batch.restore import classical

BEFORE = "9a39f1f"


def main() -> None:
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:fluoden_batch/restore/classical.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    old = types.ModuleType("classical_before")
    sys.modules[old.__name__] = old  # its dataclasses look their module up
    exec(compile(source, "classical_before.py", "exec"), old.__dict__)
    rng = np.random.default_rng(0)
    size = 2048
    plane = simulate(clean_plane(size, rng), DEMO_GAIN, DEMO_READ_VAR, rng=rng)
    mpx = size * size / 1e6
    with threadpool_limits(1):
        pilot = classical.vst_nlm(plane, DEMO_GAIN, DEMO_READ_VAR)
        times: dict[str, list[float]] = {"before": [], "after": []}
        outs = {}
        for _ in range(3):
            for name, module in (("before", old), ("after", classical)):
                t = time.perf_counter()
                outs[name] = module.vst_wiener(plane, pilot, DEMO_GAIN, DEMO_READ_VAR)
                times[name].append(time.perf_counter() - t)
    for name, seconds in times.items():
        best = min(seconds)
        print(
            f"{name}: {best:.2f} s best of {', '.join(f'{s:.2f}' for s in seconds)}; "
            f"{mpx / best:.3f} Mpx/s",
            flush=True,
        )
    print(f"speed-up {min(times['before']) / min(times['after']):.2f}x; largest difference "
          f"{np.abs(outs['before'] - outs['after']).max():.2e} grey levels "
          f"(plane range {np.ptp(plane):.0f})")  # fmt: skip


if __name__ == "__main__":
    main()

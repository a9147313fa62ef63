"""fmd_dev's 24 captures of one level (six types, six microscopes or cameras) with the
shipped default: each type its own run, all in one (24, 512, 512) ``zyx`` array, and one
(6, 4, 512, 512) ``czyx`` array (a channel per type); FMD scoring, mean per type.

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks .venv/bin/python runs/one_array_probe.py raw
[detail=off]`` (extra ``key=value`` pairs go to ``fb.denoise``). ``compare`` also serves
``runs/per_plane_probe.py``.
"""

import sys
import time
from collections.abc import Callable

import numpy as np
from figure_fmd import load
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores

TYPES = GROUPS["A"] + GROUPS["B"]


def captures(level: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Each type's (4, 512, 512) captures at ``level``, and the 24 references stacked."""
    zs, gts = zip(*(load(level, k) for k in TYPES), strict=True)
    return list(zs), np.concatenate(gts)


def compare(title: str, runs: dict[str, Callable[[], object]], zs: list, g_all) -> None:
    """Time each of ``runs`` (each gives the 24 outputs), score it per type (FMD scoring,
    mean of a type's 4 captures) beside the input, and print a line per type."""
    z_all = np.concatenate(zs)
    outputs, seconds = {}, {}
    for name, run in runs.items():
        t = time.perf_counter()
        outputs[name] = np.asarray(run(), np.float64).reshape(z_all.shape)
        seconds[name] = time.perf_counter() - t
    outputs["input"] = z_all.astype(np.float64)

    def scores(out: np.ndarray) -> list[float]:
        return [
            float(
                np.mean([fmd_scores(np.clip(out[i], 0, 255), g_all[i])[0] for i in range(j, j + 4)])
            )
            for j in range(0, 24, 4)
        ]

    table = {name: scores(out) for name, out in outputs.items()}
    print(f"{title}  " + "  ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for j, kind in enumerate(TYPES):
        print(f"{kind:18s} " + " ".join(f"{k} {v[j]:.2f}" for k, v in table.items()))
    print("mean               " + " ".join(f"{k} {np.mean(v):.2f}" for k, v in table.items()))


if __name__ == "__main__":
    level = sys.argv[1] if len(sys.argv) > 1 else "raw"
    kw = dict(a.split("=") for a in sys.argv[2:])
    zs, g_all = captures(level)
    z_all = np.concatenate(zs)
    compare(
        f"{level} {kw}",
        {
            "per-type": lambda: np.concatenate([fb.denoise(z, dtype="float32", **kw) for z in zs]),
            "one-array": lambda: fb.denoise(z_all, dtype="float32", **kw),
            "c-axis": lambda: fb.denoise(np.stack(zs), axes="czyx", dtype="float32", **kw),
        },
        zs,
        g_all,
    )

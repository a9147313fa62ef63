"""Planning each plane on its own: fmd_dev's 24 captures of one level with the shipped
default, each plane given to ``fb.denoise`` as a channel (axes ``cyx``: its own window,
noise and restoration), against today's per-type ``zyx`` runs and the one ``zyx`` array
of all 24; FMD scoring, mean per type (``one_array_probe.compare``).

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks:runs .venv/bin/python runs/per_plane_probe.py raw``
"""

import sys

import numpy as np
from one_array_probe import captures, compare

import fluoden_batch as fb

level = sys.argv[1] if len(sys.argv) > 1 else "raw"
zs, g_all = captures(level)
z_all = np.concatenate(zs)
compare(
    level,
    {
        "per-type": lambda: np.concatenate([fb.denoise(z, dtype="float32") for z in zs]),
        "per-type-planes": lambda: np.concatenate(
            [fb.denoise(z, axes="cyx", dtype="float32") for z in zs]
        ),
        "one-array": lambda: fb.denoise(z_all, dtype="float32"),
        "one-array-planes": lambda: fb.denoise(z_all, axes="cyx", dtype="float32"),
    },
    zs,
    g_all,
)

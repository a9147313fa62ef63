"""Per-plane signatures a run could read without a model, on every fmd_dev plane (six
types x five levels x four captures) and 24 W2S frames: the wavelet noise sigma (data
units), the ratio of the stride-2 phases' sigma to it (about 1 for white noise, above 1
for noise correlated between neighbours), and the median level; then the plane groups a
run makes of each type's stack and of all 24 captures of a level.

``PYTHONPATH=.:benchmarks .venv/bin/python runs/plane_signature.py``
"""

import numpy as np
import tifffile
from figure_fmd import DATA, load
from train_fmd import GROUPS

from fluoden_batch.models.normalise import noise_sigma, phase_sigma
from fluoden_batch.pipeline.groups import plane_groups

types = GROUPS["A"] + GROUPS["B"]
for level in ["raw", "avg2", "avg4", "avg8", "avg16"]:
    for kind in types:
        z, _ = load(level, kind)
        s = [noise_sigma(p.astype(float)) for p in z]
        r = [phase_sigma(p.astype(float)) / max(noise_sigma(p.astype(float)), 1e-9) for p in z]
        m = [float(np.median(p)) for p in z]
        print(f"{level:5s} {kind:18s} sigma " + " ".join(f"{v:6.2f}" for v in s)
              + "  ratio " + " ".join(f"{v:5.2f}" for v in r)
              + "  median " + " ".join(f"{v:6.1f}" for v in m))
# the groups a run makes (fluoden_batch.pipeline.groups): each stack alone, and all 24
for level in ["raw", "avg2", "avg4", "avg8", "avg16"]:
    zs = [load(level, kind)[0] for kind in types]
    split = [k for k, z in zip(types, zs, strict=True) if plane_groups(z, "zyx", []) is not None]
    notes: list[str] = []
    plane_groups(np.concatenate(zs), "zyx", notes)
    print(f"{level:5s} stacks split: {split or 'none'}; all 24: {notes}")
for fov in ["001", "005", "009", "013", "017", "021", "025", "029"]:
    for ch in range(3):
        p = tifffile.imread(DATA / "w2s_train" / "avg1" / f"input_avg1_{fov}_{ch}.tif").astype(float)
        print(f"w2s   {fov}_{ch}             sigma {noise_sigma(p):6.3f}  ratio "
              f"{phase_sigma(p) / noise_sigma(p):5.2f}  median {np.median(p):8.3f}")

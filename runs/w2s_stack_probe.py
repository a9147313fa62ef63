"""One microscope, planes of different noise: W2S's 8 held-out frames (FOV 037-040,
channels 1 and 2; widefield, 8-bit) as one (8, Y, X) ``zyx`` array with the shipped
default, planned in groups of similar planes (since the twenty-second session), planned
as one (groups switched off, as before), and each frame its own run. PSNR (peak 255) and
the scale-invariant PSNR against the 400-frame mean, per frame and mean.

``OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks .venv/bin/python runs/w2s_stack_probe.py``
"""

import logging
from unittest import mock

import numpy as np
from eval_w2s import DATA, pairs, scale_invariant_psnr

import fluoden_batch as fb
from fluoden_batch.metrics import psnr

logging.basicConfig(level=logging.INFO, format="%(message)s")
for name in ("distributed", "fluoden_batch.pipeline.arrays"):
    logging.getLogger(name).setLevel(logging.WARNING)
data = pairs(DATA / "w2s_train")
names = [n for n, _, _ in data]
stack = np.stack([z for _, z, _ in data]).astype(np.uint8)
refs = [c for _, _, c in data]
outputs = {"alone": np.stack([fb.denoise(z, dtype="float32") for z in stack])}
logging.getLogger("fluoden_batch.pipeline.arrays").setLevel(logging.INFO)
outputs["grouped"] = fb.denoise(stack, dtype="float32")
logging.getLogger("fluoden_batch.pipeline.arrays").setLevel(logging.WARNING)
with mock.patch("fluoden_batch.pipeline.params.plane_groups", return_value=None):
    outputs["one plan"] = fb.denoise(stack, dtype="float32")
outputs["input"] = stack.astype(np.float32)
for key, out in outputs.items():
    out = np.clip(np.asarray(out, np.float64), 0, 255)
    p = [psnr(o, r, 255.0) for o, r in zip(out, refs, strict=True)]
    s = [scale_invariant_psnr(o, r) for o, r in zip(out, refs, strict=True)]
    print(f"{key:9s} PSNR " + " ".join(f"{v:.2f}" for v in p) + f"  mean {np.mean(p):.2f}"
          + f"  | SI mean {np.mean(s):.2f}")
print("frames   " + " ".join(names))

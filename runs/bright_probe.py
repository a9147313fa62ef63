"""Bright objects in 16-bit data: does the default run spread them?

fmd_dev's training images stand at most about 7 normalisation windows (``40 sigma``)
above their low percentile; a bright bead or nucleus in 16-bit data can stand at 70. The
scene: Confocal_MICE_1's 50-frame mean at ``K`` photons per grey level, 150 Gaussian beads
(sigma 1.2 px) of ``PEAK`` photons, Poisson noise, read noise 1.5, offset 100 (float32).
PSNR (peak ``255 K``) against the clean scene, beads included, by distance from the
nearest bead, for the input, the default run without the beads (the same cell), and the
default run with them: with ``MODEL_RANGE`` (what lies beyond goes around the network)
and without it (``inf``: the network sees everything, as before 2026-12-08).

Usage: OMP_NUM_THREADS=2 python runs/bright_probe.py [K PEAK]   (about 1 min)
"""

from __future__ import annotations

import sys

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio as psnr

import fluoden_batch as fb
import fluoden_batch.models.normalise as normalise

GT = "/work/shared/data/fmd_dev/gt/Confocal_MICE_1.png"
RINGS = ((-1, 0), (0, 3), (3, 10), (10, 20), (20, np.inf))  # px from the nearest bead


def main() -> None:
    k, peak = (float(v) for v in sys.argv[1:3]) if len(sys.argv) > 2 else (4.0, 30000.0)
    rng = np.random.default_rng(0)
    clean = iio.imread(GT).astype(np.float64) * k
    beads = np.zeros_like(clean)
    beads.flat[rng.choice(clean.size, 150, replace=False)] = 1.0
    beads = ndimage.gaussian_filter(beads, 1.2)
    beads *= peak / beads.max()
    dist = ndimage.distance_transform_edt(beads <= 0.05 * peak)
    cell = rng.poisson(clean) + rng.normal(0, 1.5, clean.shape) + 100
    scene = cell + rng.poisson(beads)
    runs = {"input": (scene, clean + beads)}
    runs["no beads"] = (fb.denoise(cell.astype(np.float32), dtype="float32"), clean)
    for name, limit in (("network sees all", np.inf), ("MODEL_RANGE", normalise.MODEL_RANGE)):
        saved, normalise.MODEL_RANGE = normalise.MODEL_RANGE, limit
        try:
            runs[name] = (fb.denoise(scene.astype(np.float32), dtype="float32"), clean + beads)
        finally:
            normalise.MODEL_RANGE = saved
    print(f"K {k:g} photons per grey level, beads of {peak:g} photons; PSNR (dB) by distance")
    for lo, hi in RINGS:
        ring = (dist > lo) & (dist <= hi)
        cells = ", ".join(
            f"{name} {psnr(ref[ring], (out - 100)[ring], data_range=255 * k):.2f}"
            for name, (out, ref) in runs.items()
        )
        print(f"{lo:g}-{hi:g} px ({ring.mean():.1%} of pixels): {cells}", flush=True)


if __name__ == "__main__":
    main()

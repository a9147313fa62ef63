"""Hot pixels (isolated camera defects) and the default run: how far do they spread?

Part 1 plants 0.1 % hot pixels (values 255, 1000, 10000 grey levels) in fmd_dev's
Confocal_MICE_1 raw capture and scores the default run (``--detail off`` and ``sure``;
``--hot-pixels off``, the same with the defects found by hand at 10 sigmas and inpainted,
and the library's ``--hot-pixels keep``)
against the 50-frame mean, PSNR over the pixels that are not hot, over those 3 px or more
from one ("far") and over their 3 px neighbourhoods ("near"). Part 2 finds fmd_dev's own
hot pixels by hand (more than 10 noise sigmas above all 8 neighbours, sigma from the
image's (a, b) at the neighbours' median) and asks whether replacing them by that median for the
model ("inpaint"), then keeping the input value ("keep") or the model's ("remove") at
them, changes the FMD-scored PSNR. ``python runs/hot_pixel_probe.py`` (about 3 min).
"""

import pathlib

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

import fluoden_batch as fb
from fluoden_batch.pipeline.statistics import channel_noise, gat_parameters

ROOT = pathlib.Path("/work/shared/data/fmd_dev")
RING = np.ones((3, 3), bool)
RING[1, 1] = False


def psnr(out: np.ndarray, gt: np.ndarray, where: np.ndarray) -> float:
    err = np.clip(out, 0, 255)[where] - gt[where]
    return 10 * np.log10(255**2 / np.mean(err**2))


def fmd(out: np.ndarray, gt: np.ndarray) -> float:
    crops = [(slice(i, i + 256), slice(j, j + 256)) for i in (0, 256) for j in (0, 256)]
    return float(np.mean([psnr(out[c], gt[c], np.ones((256, 256), bool)) for c in crops]))


def hot_pixels(z: np.ndarray, k: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    (est,) = channel_noise(z, "yx")
    a, b = gat_parameters(est)
    top = ndimage.maximum_filter(z, footprint=RING, mode="reflect")
    med = ndimage.median_filter(z, footprint=RING, mode="reflect")
    sigma = np.sqrt(np.maximum(a * med + b, a * a + max(b, 0.0)))
    return (z - top) / sigma > k, med


def planted() -> None:
    gt = iio.imread(ROOT / "gt/Confocal_MICE_1.png").astype(np.float64)
    z = iio.imread(ROOT / "raw/Confocal_MICE_1.png").astype(np.float32)
    hot = np.random.default_rng(0).random(z.shape) < 0.001
    near = ndimage.binary_dilation(hot, iterations=3)
    for detail in ("off", "sure"):
        for value in (None, 255, 1000, 10000):
            x = z.copy()
            if value is not None:
                x[hot] = value
            out = fb.denoise(x, dtype="float32", detail=detail, hot_pixels="off")
            out = out.astype(np.float64)
            lib = fb.denoise(x, dtype="float32", detail=detail).astype(np.float64)
            found, med = hot_pixels(x.astype(np.float64))
            filled = np.where(found, med, x).astype(np.float32)
            kept = fb.denoise(filled, dtype="float32", detail=detail).astype(np.float64)
            print(
                f"planted {int(hot.sum())} hot pixels at {value}, detail {detail}: not hot "
                f"{psnr(out, gt, ~hot):.2f}, far {psnr(out, gt, ~near):.2f}, near "
                f"{psnr(out, gt, near & ~hot):.2f} dB; {int(found.sum())} found "
                f"({int((found & hot).sum())} planted), inpainted for the model: not hot "
                f"{psnr(kept, gt, ~hot):.2f}, far {psnr(kept, gt, ~near):.2f}, near "
                f"{psnr(kept, gt, near & ~hot):.2f} dB; --hot-pixels keep (the library's "
                f"default): not hot {psnr(lib, gt, ~hot):.2f}"
            )


def own() -> None:
    for kind in ("WideField_BPAE_B", "WideField_BPAE_G", "Confocal_MICE"):
        gt = iio.imread(ROOT / f"gt/{kind}_1.png").astype(np.float64)
        for level in ("raw", "avg16"):
            z = iio.imread(ROOT / f"{level}/{kind}_1.png").astype(np.float64)
            hot, med = hot_pixels(z)
            base = fb.denoise(z.astype(np.float32), dtype="float32").astype(np.float64)
            filled = np.where(hot, med, z).astype(np.float32)
            removed = fb.denoise(filled, dtype="float32").astype(np.float64)
            kept = np.where(hot, z, removed)
            print(
                f"{kind} {level}: {int(hot.sum())} hot; FMD PSNR default {fmd(base, gt):.3f}, "
                f"inpaint+keep {fmd(kept, gt):.3f}, inpaint+remove {fmd(removed, gt):.3f}"
            )


if __name__ == "__main__":
    planted()
    own()

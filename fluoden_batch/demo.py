"""A built-in synthetic dataset: fluorescence-like cells and filaments with known noise.

Used by ``fluoden demo`` and by tests: a clean image (cells with brighter nuclei, thin
filaments, smooth background, on a 12-bit scale) and its noisy observation under the
Poisson-Gaussian model, both written as OME-Zarr so the whole pipeline can be measured
against the clean reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from fluoden_batch.io.ngff import ImageMeta, write_attrs
from fluoden_batch.io.store import LEVEL0
from fluoden_batch.noise import simulate

DEMO_GAIN = 32.0  # a: grey levels per photo-electron
DEMO_READ_VAR = 400.0  # b: Gaussian variance (read noise std 20), grey levels^2
SENSOR_MAX = 4095.0


def clean_plane(size: int, rng: np.random.Generator) -> np.ndarray:
    """One clean fluorescence-like plane, float64 (size, size), values in [0, 4095]."""
    cells = np.zeros((size, size))
    n_cells = max(3, size * size // 20000)
    yy, xx = rng.uniform(0, size, (2, n_cells))
    radii = rng.uniform(0.01, 0.025, n_cells) * size
    grid_y, grid_x = np.ogrid[:size, :size]
    for y, x, r in zip(yy, xx, radii, strict=True):
        y0, y1 = int(max(0, y - 2 * r)), int(min(size, y + 2 * r))
        x0, x1 = int(max(0, x - 2 * r)), int(min(size, x + 2 * r))
        d2 = ((grid_y[y0:y1] - y) ** 2 + (grid_x[:, x0:x1] - x) ** 2) / r**2
        cells[y0:y1, x0:x1] += np.where(d2 < 1, 0.5, 0.0) + np.where(d2 < 0.25, 0.6, 0.0)
    filaments = np.zeros((size, size))
    for _ in range(max(2, size // 64)):
        n = size * 2
        angle = np.cumsum(rng.normal(0, 0.05, n)) + rng.uniform(0, 2 * np.pi)
        py = np.clip(rng.uniform(0, size) + np.cumsum(np.sin(angle)), 0, size - 1)
        px = np.clip(rng.uniform(0, size) + np.cumsum(np.cos(angle)), 0, size - 1)
        filaments[py.astype(int), px.astype(int)] += rng.uniform(0.5, 1.5)
    image = ndimage.gaussian_filter(cells, size / 800 + 1.0) + ndimage.gaussian_filter(
        filaments, 1.2
    )
    background = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 16)
    image = 150 + 2200 * image + 400 * (background - background.min()) / np.ptp(background)
    return np.clip(image, 0, SENSOR_MAX)


def _write(path: Path, data: np.ndarray, meta: ImageMeta, chunk: int) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array(
        LEVEL0,
        shape=data.shape,
        chunks=(1, chunk, chunk),
        dtype=data.dtype,
        fill_value=0,
        dimension_names=list(meta.axes),
    )
    array[:] = data
    group.attrs.update(write_attrs(meta, "0.5", LEVEL0))


def make_demo_dataset(
    folder: Path, planes: int = 3, size: int = 2048, chunk: int = 512, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``noisy.zarr`` and ``clean.zarr`` (OME-Zarr 0.5, uint16, axes zyx) in ``folder``.

    Noise: a = 32 grey levels per photon, b = 400 (read noise std 20), clipped to 0..4095.

    Returns
    -------
    noisy, clean : Path
        The two image groups.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    clean = np.stack([clean_plane(size, rng) for _ in range(planes)])
    noisy = simulate(clean, DEMO_GAIN, DEMO_READ_VAR, clip=(0, SENSOR_MAX), rng=rng)
    meta = ImageMeta(
        axes="zyx",
        scale=[1.0, 0.1, 0.1],
        units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
        name="fluoden-demo",
    )
    paths = folder / "noisy.zarr", folder / "clean.zarr"
    for path, data in zip(paths, (noisy, clean), strict=True):
        _write(path, np.rint(data).astype(np.uint16), meta, chunk)
    return paths

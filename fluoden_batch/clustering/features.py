"""Per-pixel features for clustering, and the intensity histogram that makes the
intensity-only case fast.

Features (columns, in this order when asked for):

- ``intensity``: the pixel value (data units);
- ``local_mean``: mean over a ``window x window`` box around the pixel (data units);
- ``local_std``: standard deviation over the same box (data units);
- ``coords``: two columns ``y``, ``x``: row and column divided by (height - 1) and
  (width - 1), so 0..1 across the block.

Every column is then standardised, ``(value - offset) / scale`` with the column's mean
and standard deviation over the block (scale 1 for a constant column), so distances and
``eps`` are in units of standard deviations. Box filters use mirror padding at the block
edge: to get features that do not depend on where a block ends, compute them on the
block plus a halo of ``window // 2`` pixels and crop the labels afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fluoden_batch.errors import InputError

__all__ = [
    "FEATURES",
    "FeatureScaling",
    "FeatureSpec",
    "Histogram",
    "PixelFeatures",
    "intensity_histogram",
    "pixel_features",
]

FEATURES = ("intensity", "local_mean", "local_std", "coords")


@dataclass(frozen=True)
class FeatureSpec:
    """Which per-pixel features to cluster on.

    Attributes
    ----------
    names : tuple of str
        A non-empty subset of ``("intensity", "local_mean", "local_std", "coords")``;
        the default ``("intensity",)`` clusters on intensity alone (exact histogram path).
    window : int
        Side of the box for ``local_mean`` / ``local_std``, pixels, odd, >= 3.
    """

    names: tuple[str, ...] = ("intensity",)
    window: int = 7

    def __post_init__(self) -> None:
        names = tuple(self.names)
        unknown = [n for n in names if n not in FEATURES]
        if not names or unknown or len(set(names)) != len(names):
            raise InputError(
                f"features {names!r}: use a non-empty, duplicate-free subset of {FEATURES}"
            )
        if self.window < 3 or self.window % 2 == 0:
            raise InputError(f"feature window {self.window}: must be an odd integer >= 3")
        object.__setattr__(self, "names", tuple(n for n in FEATURES if n in names))

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the feature columns (``coords`` gives ``y`` and ``x``)."""
        return tuple(c for n in self.names for c in (("y", "x") if n == "coords" else (n,)))

    @property
    def intensity_only(self) -> bool:
        """True when the only feature is the intensity (the histogram path applies)."""
        return self.names == ("intensity",)


@dataclass(frozen=True)
class FeatureScaling:
    """Affine standardisation of the feature columns: ``scaled = (raw - offset) / scale``.

    Attributes
    ----------
    columns : tuple of str
        Column names.
    offset, scale : tuple of float
        Per column, in the column's units (``scale > 0``).
    """

    columns: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, columns: tuple[str, ...], mean: np.ndarray, std: np.ndarray) -> FeatureScaling:
        """Scaling from per-column mean and standard deviation (std 0 gives scale 1)."""
        std = np.where(np.asarray(std) > 0, std, 1.0)
        return cls(columns, tuple(map(float, mean)), tuple(map(float, std)))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (..., n_columns) to standardised ones, float64."""
        return (np.asarray(raw, dtype=np.float64) - self.offset) / self.scale

    def invert(self, scaled: np.ndarray) -> np.ndarray:
        """Standardised values (..., n_columns) back to raw units, float64."""
        return np.asarray(scaled, dtype=np.float64) * self.scale + self.offset


@dataclass(frozen=True)
class PixelFeatures:
    """Standardised features of every pixel of a block.

    Attributes
    ----------
    x : ndarray, shape (height * width, n_features), float32
        Standardised features, pixels in C order.
    scaling : FeatureScaling
        How to get the raw values back.
    """

    x: np.ndarray
    scaling: FeatureScaling


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"clustering needs a non-empty 2-D (Y, X) block, got shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise InputError(f"clustering needs a real-valued block, got dtype {image.dtype}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError("clustering needs finite pixel values; the block has NaN or inf")
    return image


def pixel_features(image: np.ndarray, spec: FeatureSpec | None = None) -> PixelFeatures:
    """Standardised per-pixel features of a 2-D block.

    Parameters
    ----------
    image : ndarray, shape (height, width), real dtype
        One Y/X block, data units; must be finite.
    spec : FeatureSpec, optional
        Features to compute (default: intensity only).

    Returns
    -------
    PixelFeatures
        ``x`` of shape (height * width, n_features), float32, and the scaling.
    """
    image = _check_image(image)
    spec = spec or FeatureSpec()
    data = image.astype(np.float64)
    cols: list[np.ndarray] = []
    if "intensity" in spec.names:
        cols.append(data)
    if "local_mean" in spec.names or "local_std" in spec.names:
        mean = ndimage.uniform_filter(data, spec.window, mode="mirror")
        if "local_mean" in spec.names:
            cols.append(mean)
        if "local_std" in spec.names:
            mean_sq = ndimage.uniform_filter(data * data, spec.window, mode="mirror")
            cols.append(np.sqrt(np.maximum(mean_sq - mean * mean, 0.0)))
    if "coords" in spec.names:
        h, w = image.shape
        yy, xx = np.meshgrid(
            np.linspace(0.0, 1.0, h) if h > 1 else np.zeros(1),
            np.linspace(0.0, 1.0, w) if w > 1 else np.zeros(1),
            indexing="ij",
        )
        cols += [yy, xx]
    mean = np.array([c.mean() for c in cols])
    scaling = FeatureScaling.fit(spec.columns, mean, np.array([c.std() for c in cols]))
    x = np.empty((image.size, len(cols)), dtype=np.float32)
    for j, col in enumerate(cols):
        x[:, j] = ((col - scaling.offset[j]) / scaling.scale[j]).ravel()
    return PixelFeatures(x, scaling)


@dataclass(frozen=True)
class Histogram:
    """The block's intensities as distinct values (or bins) with pixel counts.

    Attributes
    ----------
    values : ndarray, shape (m,), float64
        Distinct values in increasing order (exact), or the mean value of the pixels in
        each non-empty bin (quantised), data units.
    counts : ndarray, shape (m,), int64
        Pixels per value.
    index : ndarray, shape (height * width,), intp
        For every pixel (C order), its position in ``values``.
    exact : bool
        True when every entry holds a single distinct pixel value, so clustering the
        weighted values is clustering the pixels.
    step : float
        Quantisation step, data units: 1 for integer data, the bin width otherwise.
    """

    values: np.ndarray
    counts: np.ndarray
    index: np.ndarray
    exact: bool
    step: float

    def scaling(self) -> FeatureScaling:
        """Standardisation of the intensity (pixel-weighted mean and std of ``values``)."""
        mean = np.average(self.values, weights=self.counts)
        std = np.sqrt(np.average((self.values - mean) ** 2, weights=self.counts))
        return FeatureScaling.fit(("intensity",), np.array([mean]), np.array([std]))


def intensity_histogram(image: np.ndarray, bins: int = 4096) -> Histogram:
    """Compress a block's intensities to at most a few thousand weighted values.

    Integer blocks whose value range spans at most 65536 levels are counted level by
    level (exact, whatever ``bins``). Other blocks are cut into ``bins`` equal-width bins
    between their minimum and maximum; each non-empty bin is represented by the mean of
    its pixels, and the histogram is exact only if no bin holds two different values
    (otherwise each pixel is moved by less than one bin width, ``(max - min) / bins``).

    Parameters
    ----------
    image : ndarray, shape (height, width), real dtype
        One Y/X block, finite.
    bins : int
        Number of bins for non-integer (or very wide integer) data, >= 2.

    Returns
    -------
    Histogram
    """
    image = _check_image(image)
    if bins < 2:
        raise InputError(f"histogram bins {bins}: must be >= 2")
    flat = image.ravel()
    lo, hi = flat.min(), flat.max()
    if flat.dtype.kind in "ui" and int(hi) - int(lo) < 65536:
        code = (flat.astype(np.int64) - int(lo)).astype(np.intp)
        counts = np.bincount(code)
        levels = np.flatnonzero(counts)
        lookup = np.zeros(len(counts), dtype=np.intp)
        lookup[levels] = np.arange(len(levels))
        return Histogram(levels + float(lo), counts[levels], lookup[code], True, 1.0)
    step = (float(hi) - float(lo)) / bins
    if step == 0.0:  # a constant float block
        one = np.zeros(flat.size, dtype=np.intp)
        return Histogram(np.array([float(lo)]), np.array([flat.size]), one, True, 1.0)
    code = np.minimum(((flat - lo) / step).astype(np.intp), bins - 1)
    counts = np.bincount(code, minlength=bins)
    occupied = np.flatnonzero(counts)
    labels = code + 1  # ndimage labels start at 1
    index = occupied + 1
    values = np.asarray(ndimage.mean(flat, labels, index), dtype=np.float64)
    spread = np.asarray(ndimage.maximum(flat, labels, index)) - ndimage.minimum(flat, labels, index)
    lookup = np.zeros(bins, dtype=np.intp)
    lookup[occupied] = np.arange(len(occupied))
    return Histogram(values, counts[occupied], lookup[code], bool(np.all(spread == 0)), step)

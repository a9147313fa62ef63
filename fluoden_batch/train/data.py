"""Training data: image pairs or clean images, patch sampling, synthetic noise.

Images are 2-D planes kept in memory as float32 in their stored units (grey levels).
Every patch is normalised the way inference normalises a plane: ``lo``/``hi`` are the
normalisation range (:class:`~fluoden_batch.models.weights.Normalisation`: the 0.1/99.9
percentiles, or the 0.1 percentile plus 40 noise sigmas) of the whole NOISY image the
patch is cut from, and the clean target goes through the same map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import (
    in_range,
    map_parameters,
    noise_map,
    normalisation_range,
    plane_noise,
)
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.noise import simulate
from fluoden_batch.train.planes import ImageRef, describe_location, keyed_images

__all__ = [
    "PatchDraw",
    "PatchSampler",
    "TrainImage",
    "ValImage",
    "load_images",
    "load_noisy",
    "load_pairs",
    "match_brightness",
    "match_pairs",
    "split_validation",
    "validation_images",
]

NORMALISATION = Normalisation()  # the default (percentile) normalisation


@dataclass(frozen=True)
class TrainImage:
    """One training image (and its real noisy version, if any).

    Attributes
    ----------
    key : str
        Identifier shared by the noisy and the clean file (the glob's wildcard parts).
    clean : ndarray, float32, shape (H, W)
        Clean reference in stored units.
    noisy : ndarray, float32, shape (H, W), or None
        Real noisy observation in the same units; None for clean-only data.
    clip : (float, float) or None
        Value range of the stored integer dtype (e.g. (0, 255) for uint8): synthetic noise
        is clipped to it. None for float images.
    source : str
        Where the clean image is (a file, or an array plane), for the metadata.
    noisy_source : str
        Where the noisy image is ("" without one), for messages.
    """

    key: str
    clean: np.ndarray
    noisy: np.ndarray | None
    clip: tuple[float, float] | None
    source: str
    noisy_source: str = ""

    @property
    def data_range(self) -> float:
        """Peak-to-peak range for PSNR: the dtype range, else the clean image's range."""
        if self.clip is not None:
            return self.clip[1] - self.clip[0]
        return float(np.ptp(self.clean)) or 1.0


@dataclass(frozen=True)
class ValImage:
    """A full validation image: noisy input, clean reference (float32, (H, W), image units),
    the PSNR data range and the dtype range the denoised output is clipped to (or None)."""

    key: str
    noisy: np.ndarray
    clean: np.ndarray
    data_range: float
    clip: tuple[float, float] | None


def _dtype_clip(dtype: np.dtype) -> tuple[float, float] | None:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def match_pairs(
    noisy_dir: Path, noisy_glob: str, clean_dir: Path, clean_glob: str
) -> list[tuple[str, ImageRef, ImageRef]]:
    """Pair noisy and clean images by key (:func:`~fluoden_batch.train.planes.keyed_images`).

    In folders the key is the text matched by the globs' wildcards: ``input_avg1_*.tif``
    and ``target_avg400_*.tif`` pair ``input_avg1_001_0.tif`` with
    ``target_avg400_001_0.tif`` under the key ``"001_0"``. Arrays (Zarr, OME-Zarr, TIFF
    stacks) pair plane by plane. Every image must have a partner.

    Returns
    -------
    list of (key, noisy image, clean image), sorted by key.
    """
    noisy = keyed_images(noisy_dir, noisy_glob)
    clean = keyed_images(clean_dir, clean_glob)
    lonely = sorted(set(noisy) ^ set(clean))
    if lonely:
        raise InputError(
            f"{len(lonely)} images have no partner between "
            f"{describe_location(noisy_dir, noisy_glob)} and "
            f"{describe_location(clean_dir, clean_glob)}, e.g. keys {lonely[:5]}"
        )
    return [(k, noisy[k], clean[k]) for k in sorted(noisy)]


def match_brightness(
    clean: np.ndarray,
    noisy: np.ndarray,
    clip: tuple[float, float] | None = None,
    where: str = "the clean image",
) -> np.ndarray:
    """``clean`` mapped to ``noisy``'s brightness: ``gain * clean + offset``, fitted by least
    squares of ``noisy`` on ``clean``.

    Noise has zero mean, so where the pair shows one scene the fit recovers how the two
    brightness scales relate (FMD's averages of the same frames: about 1 and 0). Pixels at
    ``clip``'s limits (saturated or cut at zero in either image) are left out of the fit.

    Parameters
    ----------
    clean, noisy : ndarray, shape (H, W)
        The reference and its noisy partner, stored units.
    clip : (float, float) or None
        The stored dtype's value range, or None (floats: every pixel fits).
    where : str
        Names the reference in the error.

    Returns
    -------
    ndarray, float32, shape (H, W)
        The reference in the noisy image's units (not clipped).

    Raises
    ------
    InputError
        The fitted gain is not positive: the two images do not show one scene alike.
    """
    c = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noisy, dtype=np.float64)
    keep = np.ones(c.shape, dtype=bool)
    if clip is not None:
        keep = (c > clip[0]) & (c < clip[1]) & (n > clip[0]) & (n < clip[1])
    x, y = c[keep], n[keep]
    var = float(x.var()) if x.size > 1 else 0.0
    gain = float(((x - x.mean()) * (y - y.mean())).mean() / var) if var > 0 else 0.0
    if not gain > 0:
        raise InputError(
            f"{where}: its brightness does not follow its noisy partner's (fitted gain "
            f"{gain:.3g}); they do not look like one scene, so it cannot be matched"
        )
    offset = float(y.mean() - gain * x.mean())
    return (gain * c + offset).astype(np.float32)


def load_pairs(
    noisy_dir: Path,
    noisy_glob: str,
    clean_dir: Path,
    clean_glob: str,
    match: bool = False,
) -> list[TrainImage]:
    """Load matched (noisy, clean) pairs; see :func:`match_pairs` for the rule.

    ``match``: each reference is brought to its noisy partner's brightness
    (:func:`match_brightness`), for pairs whose brightness was scaled apart.
    """
    images = []
    for key, noisy_ref, clean_ref in match_pairs(noisy_dir, noisy_glob, clean_dir, clean_glob):
        noisy, clean = noisy_ref.read(), clean_ref.read()
        if noisy.shape != clean.shape:
            raise InputError(
                f"{noisy_ref.where} {noisy.shape} and {clean_ref.where} {clean.shape} differ"
            )
        clip = _dtype_clip(clean.dtype)
        target = clean.astype(np.float32)
        if match:
            noisy_clip = _dtype_clip(noisy.dtype)
            both = clip if clip == noisy_clip else None
            target = match_brightness(target, noisy, both, clean_ref.where)
        noisy32 = noisy.astype(np.float32)
        images.append(TrainImage(key, target, noisy32, clip, clean_ref.where, noisy_ref.where))
    return images


def load_images(folder: Path, glob: str) -> list[TrainImage]:
    """Load clean images only (synthetic-noise training), keyed as :func:`match_pairs`."""
    images = []
    for key, ref in keyed_images(folder, glob).items():
        image = ref.read()
        if np.issubdtype(image.dtype, np.floating) and np.nanmin(image) < 0:
            raise InputError(f"{ref.where}: negative intensities cannot take Poisson noise")
        images.append(
            TrainImage(key, image.astype(np.float32), None, _dtype_clip(image.dtype), ref.where)
        )
    return images


def load_noisy(folder: Path, glob: str) -> list[tuple[str, np.ndarray, str]]:
    """Noisy images only, keyed as :func:`~fluoden_batch.train.planes.keyed_images`.

    Returns
    -------
    list of (key, image float32 (H, W), where the image is), sorted by key.
    """
    refs = keyed_images(folder, glob)
    return [(key, ref.read().astype(np.float32), ref.where) for key, ref in refs.items()]


def split_validation(
    images: list[TrainImage], val_keys: list[str]
) -> tuple[list[TrainImage], list[TrainImage]]:
    """Split ``images`` into (training, validation) by key; unknown keys are an error."""
    known = {im.key for im in images}
    unknown = sorted(set(val_keys) - known)
    if unknown:
        raise InputError(
            f"validation keys {unknown} not found (keys look like {sorted(known)[:3]})"
        )
    held = set(val_keys)
    train = [im for im in images if im.key not in held]
    if not train:
        raise InputError("no training images left after holding out the validation keys")
    return train, [im for im in images if im.key in held]


def _draw_noise_params(
    rng: np.random.Generator, a_range: tuple[float, float], b_range: tuple[float, float]
) -> tuple[float, float]:
    """``a`` log-uniform on ``a_range``, ``b`` uniform on ``b_range``."""
    a = math.exp(rng.uniform(math.log(a_range[0]), math.log(a_range[1])))
    return a, float(rng.uniform(b_range[0], b_range[1]))


def validation_images(
    images: list[TrainImage],
    *,
    seed: int,
    a_range: tuple[float, float] | None = None,
    b_range: tuple[float, float] | None = None,
) -> list[ValImage]:
    """Validation inputs: the real noisy image, or one fixed synthetic draw per clean image.

    The synthetic draws use their own generator seeded from ``seed`` so that they do not
    disturb the training stream and are the same in every run and resume.
    """
    rng = np.random.default_rng([seed, 1])
    out = []
    for im in images:
        if im.noisy is not None:
            noisy = im.noisy
        else:
            if a_range is None or b_range is None:
                raise InputError("clean-only validation images need a_range and b_range")
            a, b = _draw_noise_params(rng, a_range, b_range)
            noisy = simulate(im.clean, a, b, clip=im.clip, rng=rng).astype(np.float32)
        out.append(ValImage(im.key, noisy, im.clean, im.data_range, im.clip))
    return out


@dataclass(frozen=True)
class PatchDraw:
    """Where one training patch comes from (see :meth:`PatchSampler.draw`).

    Attributes
    ----------
    index : int
        Index of the training image.
    noisy : ndarray, shape (H, W)
        The whole noisy image, image units: the real one, or a fresh synthetic draw
        (float64) on the clean image.
    synthetic : bool
        Whether ``noisy`` is synthetic.
    lo, hi : float
        Normalisation range (image units) of ``noisy``.
    y, x : int
        Top-left corner of the patch, pixels.
    rot : int
        Quarter turns (``np.rot90``) applied to the patch, 0..3.
    flip : bool
        Whether the rotated patch is then mirrored left-right.
    noise : (float, float) or None
        Poisson-Gaussian ``(a, b)`` of ``noisy`` (data units) for the noise map; None
        without one.
    """

    index: int
    noisy: np.ndarray
    synthetic: bool
    lo: float
    hi: float
    y: int
    x: int
    rot: int
    flip: bool
    noise: tuple[float, float] | None = None

    def orient(self, patch: np.ndarray) -> np.ndarray:
        """``patch`` (shape (P, P)) rotated and flipped as drawn (a view)."""
        turned = np.rot90(patch, self.rot)
        return turned[:, ::-1] if self.flip else turned


class PatchSampler:
    """Random normalised training patches with the 8 flips/rotations of the square.

    Parameters
    ----------
    images : list of TrainImage
        Training images, each at least ``patch_size`` pixels on both sides.
    patch_size : int
        Side of the square patches in pixels.
    synthetic_fraction : float
        Probability that a patch of a paired image uses synthetic instead of real noise
        (clean-only images always use synthetic noise).
    a_range, b_range : (float, float) or None
        Poisson gain (image units, log-uniform) and Gaussian variance (image units squared,
        uniform) ranges, sampled per patch; needed when any patch is synthetic.
    correlation_range : (float, float) or None
        Lag-1 spatial correlation of synthetic noise, uniform per patch
        (:func:`~fluoden_batch.noise.simulate.correlate`); None: independent pixels.
    normalisation : Normalisation
        How each patch is normalised: with the range of its whole noisy image
        (:func:`~fluoden_batch.models.normalise.normalisation_range`), as inference does.
    noise_map : bool
        Give each input a second channel, its noise map
        (:func:`~fluoden_batch.models.normalise.noise_map`) from the ``(a, b)`` of its whole
        noisy image: estimated from the image as inference does
        (:func:`~fluoden_batch.models.normalise.plane_noise`), or the ``(a, b)`` that drew a
        synthetic patch of independent pixels (correlated synthetic noise: estimated too,
        since the single-image estimator sees less of correlated noise than its variance,
        and inference will feed the model that estimate).
    """

    def __init__(
        self,
        images: list[TrainImage],
        patch_size: int,
        *,
        synthetic_fraction: float = 0.0,
        a_range: tuple[float, float] | None = None,
        b_range: tuple[float, float] | None = None,
        correlation_range: tuple[float, float] | None = None,
        normalisation: Normalisation = NORMALISATION,
        noise_map: bool = False,
    ) -> None:
        small = [im.key for im in images if min(im.clean.shape) < patch_size]
        if small:
            raise InputError(f"images smaller than the {patch_size}px patch: {small[:5]}")
        needs_noise = synthetic_fraction > 0 or any(im.noisy is None for im in images)
        if needs_noise and (a_range is None or b_range is None):
            raise InputError("synthetic noise needs a_range and b_range")
        self.images, self.patch_size = images, patch_size
        self.synthetic_fraction = synthetic_fraction
        self.a_range, self.b_range = a_range, b_range
        self.correlation_range = correlation_range
        self.normalisation = normalisation
        self._ranges = [
            None if im.noisy is None else normalisation_range(im.noisy, normalisation)
            for im in images
        ]
        self.noise_map = noise_map
        self._noise = [
            None if im.noisy is None or not noise_map else plane_noise(im.noisy) for im in images
        ]

    def draw(self, rng: np.random.Generator) -> PatchDraw:
        """Draw where the next patch comes from, using (and advancing) ``rng``.

        The draws, in this order: image, real or synthetic noise (and its ``a``, ``b``,
        correlation where ``correlation_range`` is set, and pixels), patch corner,
        rotation, flip.
        """
        p = self.patch_size
        j = int(rng.integers(len(self.images)))
        im = self.images[j]
        if im.noisy is None or rng.random() < self.synthetic_fraction:
            assert self.a_range is not None and self.b_range is not None
            a, b = _draw_noise_params(rng, self.a_range, self.b_range)
            rho = float(rng.uniform(*self.correlation_range)) if self.correlation_range else 0.0
            noisy = simulate(im.clean, a, b, clip=im.clip, rng=rng, correlation=rho)
            lo, hi = normalisation_range(noisy, self.normalisation)
            noise = plane_noise(noisy) if rho and self.noise_map else (a, b)
            synthetic = True
        else:
            noisy = im.noisy
            lo, hi = self._ranges[j]  # type: ignore[misc]
            synthetic, noise = False, self._noise[j]
        h, w = im.clean.shape
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        return PatchDraw(j, noisy, synthetic, lo, hi, y, x, k, flip, noise)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch using (and advancing) ``rng``.

        Returns
        -------
        inputs : ndarray, float32, shape (batch_size, C, P, P)
            Normalised noisy patches (C = 1), or them and their noise maps (C = 2).
        targets : ndarray, float32, shape (batch_size, 1, P, P)
            The clean patches under the same map.
        """
        p = self.patch_size
        inputs = np.empty((batch_size, 2 if self.noise_map else 1, p, p), np.float32)
        targets = np.empty((batch_size, 1, p, p), np.float32)
        for i in range(batch_size):
            d = self.draw(rng)
            window = (slice(d.y, d.y + p), slice(d.x, d.x + p))
            for src, dst in ((d.noisy, inputs), (self.images[d.index].clean, targets)):
                dst[i, 0] = in_range(d.orient(src[window]), d.lo, d.hi)
            if self.noise_map:
                assert d.noise is not None
                inputs[i, 1] = noise_map(inputs[i, 0], *map_parameters(*d.noise, d.lo, d.hi))
        return inputs, targets

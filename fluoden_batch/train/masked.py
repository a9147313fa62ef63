"""Masked training: patches of the masked protocol's parts, and its validation.

The masked protocol (:mod:`fluoden_batch.clustering.masked`) denoises each cluster part
``z_k = where(L == k, z, clip(s, B_k))`` of a plane separately (``s`` the smoothed plane,
``B_k`` the cluster's intensity band), so a model for it must learn to denoise such parts:
the real noisy pixels of one intensity cluster, flat band-edge values outside. Each
training patch of :class:`MaskedPatchSampler`:

1. is drawn like a :class:`~fluoden_batch.train.data.PatchSampler` patch (image, real or
   synthetic noise, corner, rotation, flip; same normalisation: the range of the whole
   noisy image, as inference normalises the whole plane, never a part);
2. draws ``K`` from ``clusters``; the centres are K-means means of the image's
   intensities (:func:`fit_centres`): of the real noisy image, or, for a synthetic-noise
   patch, of the clean image (a fresh noise draw per patch would need a fit per patch;
   the clean image's centres are close to the noisy ones where it matters, the cluster
   cores). Centres are cached per (image, K, real/synthetic);
3. labels its noisy pixels and smooths the noisy image on the patch plus a margin of the
   smoothing radius (:func:`patch_masks`), so both equal those of the whole image;
4. picks one cluster ``k`` present in the patch, uniformly, and returns
   ``input = z_k`` and ``target = where(L == k, clean, clip(s, B_k))``: outside the
   cluster both hold the same fill (from the noisy image, as at inference), inside the
   model learns the clean image.

A patch holding one cluster only (or ``K = 1``) is left whole, as inference leaves a block
of one cluster whole; with ``clusters = [1]`` the sampler gives exactly the patches of a
:class:`~fluoden_batch.train.data.PatchSampler` from the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fluoden_batch.clustering import cluster_image
from fluoden_batch.clustering.masked import (
    label_by_centres,
    masked_denoise,
    masked_part,
    smooth,
    smoothing_radius,
)
from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import in_range, normalisation_range
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.train.data import NORMALISATION, PatchSampler, TrainImage
from fluoden_batch.train.inference import denoise_whole

__all__ = ["MaskedDenoiser", "MaskedPatchSampler", "fit_centres", "patch_masks"]


def fit_centres(image: np.ndarray, k: int) -> np.ndarray:
    """The masked protocol's centres of one image: K-means on its intensities.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensities, image units, finite.
    k : int
        Number of clusters asked for (>= 1).

    Returns
    -------
    ndarray, shape (n,), float64, strictly increasing, ``n <= k``
        Cluster means in image units (fewer than ``k`` when the image has fewer distinct
        values). Exact K-means on the intensity histogram, CPU, seed 0: the same image
        gives the same centres on every machine.
    """
    result = cluster_image(np.asarray(image), "kmeans", k=k, seed=0, backend="cpu")
    return np.unique(result.means)


def patch_masks(
    plane: np.ndarray, y: int, x: int, size: int, centres: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Masked-protocol labels and smoothed plane of the patch ``plane[y:y+size, x:x+size]``.

    Computed on the patch plus a margin of :func:`smoothing_radius` pixels (cut at the
    image borders, where the smoothing mirrors the plane as it does on the whole plane),
    so they equal ``masked_labels(plane, centres, sigma)`` and ``smooth(plane, sigma)``
    of the whole image, cropped to the patch.

    Parameters
    ----------
    plane : ndarray, shape (H, W)
        Noisy intensities, image units.
    y, x : int
        Top-left corner of the patch, pixels.
    size : int
        Side of the square patch, pixels.
    centres : ndarray, shape (n,), increasing
        Cluster centres, image units.
    sigma : float
        Label smoothing width, pixels.

    Returns
    -------
    labels : ndarray, shape (size, size), int32, values 0..n-1
    smoothed : ndarray, shape (size, size), float64, image units
    """
    m = smoothing_radius(sigma)
    h, w = plane.shape
    top, left = max(y - m, 0), max(x - m, 0)
    region = plane[top : min(y + size + m, h), left : min(x + size + m, w)]
    smoothed = smooth(region, sigma)[y - top : y - top + size, x - left : x - left + size]
    return label_by_centres(smoothed, centres), smoothed


class MaskedPatchSampler(PatchSampler):
    """Training patches of masked-protocol parts (the procedure in the module doc).

    Parameters
    ----------
    images : list of TrainImage
        Training images, each at least ``patch_size`` pixels on both sides.
    patch_size : int
        Side of the square patches in pixels.
    clusters : list of int
        Values of ``K`` (>= 1), one drawn uniformly per patch.
    sigma : float
        Label smoothing width in pixels (>= 0); the one inference will use.
    synthetic_fraction, a_range, b_range, normalisation
        As for :class:`~fluoden_batch.train.data.PatchSampler`.
    """

    def __init__(
        self,
        images: list[TrainImage],
        patch_size: int,
        *,
        clusters: list[int],
        sigma: float,
        synthetic_fraction: float = 0.0,
        a_range: tuple[float, float] | None = None,
        b_range: tuple[float, float] | None = None,
        normalisation: Normalisation = NORMALISATION,
    ) -> None:
        super().__init__(
            images,
            patch_size,
            synthetic_fraction=synthetic_fraction,
            a_range=a_range,
            b_range=b_range,
            normalisation=normalisation,
        )
        if not clusters or min(clusters) < 1:
            raise InputError(f"clusters must be a non-empty list of K >= 1, got {clusters}")
        smoothing_radius(sigma)  # validates sigma
        self.clusters, self.sigma = list(clusters), sigma
        self._centres: dict[tuple[int, int, bool], np.ndarray] = {}

    def centres(self, index: int, k: int, synthetic: bool) -> np.ndarray:
        """Cached :func:`fit_centres` of image ``index``: of its clean version when
        ``synthetic`` (or when it has no real noisy one), else of its real noisy one."""
        key = (index, k, synthetic)
        if key not in self._centres:
            im = self.images[index]
            source = im.clean if synthetic or im.noisy is None else im.noisy
            self._centres[key] = fit_centres(source, k)
        return self._centres[key]

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch using (and advancing) ``rng``.

        The draws of :meth:`PatchSampler.draw`, then ``K`` (only when ``clusters`` has
        several values), then the cluster (only when the patch holds several).

        Returns
        -------
        inputs, targets : ndarray, float32, shape (batch_size, 1, P, P)
            Normalised masked noisy parts and the clean image inside the part's cluster
            (the part's own fill outside), under the same map.
        """
        p = self.patch_size
        inputs = np.empty((batch_size, 1, p, p), np.float32)
        targets = np.empty_like(inputs)
        for i in range(batch_size):
            d = self.draw(rng)
            n = len(self.clusters)
            k = self.clusters[int(rng.integers(n))] if n > 1 else self.clusters[0]
            window = (slice(d.y, d.y + p), slice(d.x, d.x + p))
            noisy, clean = d.noisy[window], self.images[d.index].clean[window]
            if k > 1:
                centres = self.centres(d.index, k, d.synthetic)
                labels, smoothed = patch_masks(d.noisy, d.y, d.x, p, centres, self.sigma)
                present = np.flatnonzero(np.bincount(labels.ravel(), minlength=len(centres)))
                if len(present) > 1:
                    part = int(present[rng.integers(len(present))])
                    noisy = masked_part(noisy, labels, smoothed, centres, part)
                    clean = masked_part(clean, labels, smoothed, centres, part)
            inputs[i, 0] = in_range(d.orient(noisy), d.lo, d.hi)
            targets[i, 0] = in_range(d.orient(clean), d.lo, d.hi)
        return inputs, targets


@dataclass(frozen=True)
class MaskedDenoiser:
    """The masked protocol on one whole validation image, as users will run it.

    Centres fitted on the image itself (:func:`fit_centres`, ``clusters`` of them),
    labels of the whole image, each part denoised by the model under the normalisation of
    the whole image, parts merged by the labels
    (:func:`~fluoden_batch.clustering.masked.masked_denoise`).

    Attributes
    ----------
    clusters : int
        K of the centres (>= 1).
    sigma : float
        Label smoothing width, pixels.
    normalisation : Normalisation
        The model's input normalisation, taken on the whole image.
    """

    clusters: int
    sigma: float
    normalisation: Normalisation = field(default_factory=Normalisation)

    def __call__(
        self,
        model: torch.nn.Module,
        image: np.ndarray,
        *,
        clip: tuple[float, float] | None = None,
        device: torch.device | str = "cpu",
    ) -> np.ndarray:
        """Denoise ``image`` (shape (H, W), image units); float32 (H, W), image units."""
        norm = normalisation_range(image, self.normalisation)
        centres = fit_centres(image, self.clusters)
        out = masked_denoise(
            lambda part: denoise_whole(model, part, norm=norm, device=device),
            image,
            centres,
            self.sigma,
        )
        return np.clip(out, *clip) if clip is not None else out

"""Denoising protocols: how one Y/X plane goes from data units through the model and back.

Every protocol has the same signature, ``protocol(module, plane, params, tile, precision)``
-> float32 plane in data units, and is built from pixel-wise maps around
:func:`~fluoden_batch.restore.inference.infer_plane` with parameters fixed per channel
for the whole run (:class:`PlaneParams`). Pixel-wise maps commute with cropping, so a
block read with its halo gives exactly the pixels of whole-image application.

- ``whole``: ``normalise -> model -> denormalise`` (the model sees raw intensities; what
  lies beyond ``MODEL_RANGE`` windows goes around it:
  :func:`~fluoden_batch.models.normalise.split_range`). A
  network with a noise map (:class:`~fluoden_batch.models.ffdnet.FFDNet`) also gets
  ``sqrt(max(a x + b, 0))`` of the channel's ``(a, b)`` in model units, pixel by pixel.
  With ``--detail sure``, then the channel's detail restoration
  (:mod:`fluoden_batch.restore.detail`; a Gaussian that reaches its radius further).
- ``vst``: ``gat_forward(z, a, b) -> normalise -> model -> denormalise ->
  gat_inverse(exact_unbiased)``: the generalized Anscombe transform makes
  Poisson-Gaussian noise close to unit-variance Gaussian, so a Gaussian denoiser serves
  it, and the exact unbiased inverse (Makitalo & Foi 2013) maps the denoised values back
  without the bias of the algebraic inverse. ``(a, b)`` come from one estimate per
  channel made at planning, never per block (per-block values would differ between
  neighbouring blocks and leave seams).
- ``masked``: labels from ``K`` intensity centres fixed per channel on the
  Gaussian-smoothed plane, one ``whole`` pass per cluster present on the plane with
  everything outside the cluster set to the smoothed plane clipped to the cluster's
  intensity band, each pixel taken from its own cluster's pass (definition in
  :mod:`fluoden_batch.clustering.masked`). Not pixel-wise: the smoothing reaches
  :func:`~fluoden_batch.clustering.masked.smoothing_radius` pixels, which the block's
  halo adds to the model's receptive radius.
- ``nlm``, ``vst-nlm``, ``bm3d``, ``vst-bm3d``: the classical baselines of
  :mod:`fluoden_batch.restore.classical`, no model, with the channel's ``(a, b)`` (and
  ``level`` for the plain ones), so users can compare on their own data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from fluoden_batch.clustering.masked import masked_denoise
from fluoden_batch.errors import InputError
from fluoden_batch.models.normalise import (
    denormalise,
    map_parameters,
    normalise,
    split_range,
    with_noise_map,
)
from fluoden_batch.noise import gat_forward, gat_inverse
from fluoden_batch.restore.classical import CLASSICAL
from fluoden_batch.restore.detail import Detail, restore_detail
from fluoden_batch.restore.inference import Network, infer_plane, needs_noise_map

__all__ = [
    "MODEL_PROTOCOLS",
    "PROTOCOLS",
    "PlaneParams",
    "Protocol",
    "get_protocol",
    "masked",
    "vst",
    "whole",
]


@dataclass(frozen=True)
class PlaneParams:
    """Per-channel parameters of a protocol (small, picklable).

    Attributes
    ----------
    lo, hi : float
        Normalisation window in the units the model is fed (data units for ``whole``,
        GAT units for ``vst``).
    a, b : float or None
        Poisson-Gaussian parameters, data units: of the GAT (``vst``), or of the noise map
        of a network that takes one (``whole``; then in the units the model is fed).
    centres : tuple of float or None
        Increasing cluster centres, data units (``masked``, and the labels of
        ``--save-labels``).
    sigma : float
        Label smoothing width, pixels (with ``centres``).
    level : float or None
        Typical intensity of the channel, data units (the plain classical denoisers take
        their noise std at it: :mod:`fluoden_batch.restore.classical`).
    detail : Detail or None
        ``whole``: the detail restoration after the model (``--detail sure``,
        :mod:`fluoden_batch.restore.detail`); None: none.
    floor : float
        The channel's zero-signal intensity, data units, where the GAT is inverted
        (``vst``, the VST classical protocols, the detail restoration;
        :func:`~fluoden_batch.noise.gat_inverse`): 0, or below it for data that go below 0.
    """

    lo: float
    hi: float
    a: float | None = None
    b: float | None = None
    centres: tuple[float, ...] | None = None
    sigma: float = 0.0
    level: float | None = None
    detail: Detail | None = None
    floor: float = 0.0


Protocol = Callable[[Network | None, np.ndarray, PlaneParams, int | None, str], np.ndarray]


def whole(
    module: Network,
    plane: np.ndarray,
    params: PlaneParams,
    tile: int | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Denoise a plane of raw intensities: normalise, model, denormalise.

    Parameters
    ----------
    module : DnCNN or Dihedral
        Inference model (:class:`~fluoden_batch.restore.inference.Dihedral`: with
        test-time augmentation).
    plane : ndarray, shape (H, W)
        Intensities in data units.
    params : PlaneParams
        ``lo``/``hi`` of the normalisation in data units; ``a``/``b`` for a network with a
        noise map; ``detail``: restored after the model
        (:func:`~fluoden_batch.restore.detail.restore_detail`).
    tile, precision
        As in :func:`~fluoden_batch.restore.inference.infer_plane`.

    Returns
    -------
    ndarray, shape (H, W), float32, data units
    """
    x, excess = split_range(normalise(plane, params.lo, params.hi))  # bright: around it
    if needs_noise_map(module):
        if params.a is None or params.b is None:
            raise InputError("a network with a noise map needs the noise parameters a and b")
        x = with_noise_map(x, *map_parameters(params.a, params.b, params.lo, params.hi))
    out = denormalise(infer_plane(module, x, tile, precision) + excess, params.lo, params.hi)
    if params.detail is not None and not params.detail.identity:
        noise = None if params.a is None or params.b is None else (params.a, params.b)
        out = restore_detail(plane, out, params.detail, noise, floor=params.floor)
    return out


def vst(
    module: Network,
    plane: np.ndarray,
    params: PlaneParams,
    tile: int | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Denoise a plane in the variance-stabilised domain and map the result back.

    ``params.lo``/``params.hi`` are the normalisation range of the *transformed* data and
    ``params.a``/``params.b`` the GAT parameters (``a > 0``). Same arguments and result
    as :func:`whole`.
    """
    if params.a is None or params.b is None:
        raise InputError("the vst protocol needs the noise parameters a and b")
    # in the GAT domain the noise is unit-variance Gaussian: a noise map of (a, b) = (0, 1)
    stable = replace(params, a=0.0, b=1.0)
    den = whole(module, gat_forward(plane, params.a, params.b), stable, tile, precision)
    inverse = gat_inverse(den, params.a, params.b, method="exact_unbiased", floor=params.floor)
    return inverse.astype(np.float32)


def masked(
    module: Network,
    plane: np.ndarray,
    params: PlaneParams,
    tile: int | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Denoise a plane cluster by cluster and merge the parts by the cluster labels.

    Labels come from ``params.centres`` on the plane smoothed with ``params.sigma``
    (:func:`~fluoden_batch.clustering.masked.masked_labels`); each cluster present is
    denoised with :func:`whole` (``lo``/``hi`` in data units), so a plane of one cluster
    costs one pass and gives the :func:`whole` result, and ``K`` clusters cost ``K``.
    Same arguments and result as :func:`whole`.
    """
    if params.centres is None:
        raise InputError("the masked protocol needs the cluster centres")
    return masked_denoise(
        lambda part: whole(module, part, params, tile, precision),
        plane,
        params.centres,
        params.sigma,
    )


def _classical(name: str) -> Protocol:
    method = CLASSICAL[name]

    def protocol(
        module: Network | None,
        plane: np.ndarray,
        params: PlaneParams,
        tile: int | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """A classical denoiser of the plane (no model), with the channel's ``(a, b)``."""
        if params.a is None or params.b is None:
            raise InputError(f"the {name} protocol needs the noise parameters a and b")
        level = 0.0 if params.level is None else params.level
        plane = np.asarray(plane, dtype=np.float64)
        return method.fn(plane, params.a, params.b, level, params.floor)

    return protocol


MODEL_PROTOCOLS: dict[str, Protocol] = {"whole": whole, "vst": vst, "masked": masked}
PROTOCOLS: dict[str, Protocol] = {**MODEL_PROTOCOLS, **{n: _classical(n) for n in CLASSICAL}}


def get_protocol(name: str) -> Protocol:
    """The protocol function called ``name``; :class:`InputError` for an unknown one."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError(f"unknown protocol {name!r}; available: {', '.join(PROTOCOLS)}") from None

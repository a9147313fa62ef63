"""Detail restoration after the model, tuned without a reference by SURE (``--detail sure``).

A denoiser that meets a sample unlike its training data tends to shift local intensities:
it dims or spreads small bright structures. Its residual ``r = z - d`` (input minus
output) then holds signal at low spatial frequencies, where the noise is weak. The
restoration puts the input's lowest frequencies back and may blend towards the input::

    out = z + w (d + G_s * (z - d) - z)

``G_s`` a Gaussian of ``s`` pixels (0: none), ``w`` in [0, 1] (0: the input itself).
Before that, the model's output may be blended with non-local means of the same plane
(VST+NLM, :func:`~fluoden_batch.restore.classical.vst_nlm` with the channel's ``(a, b)``)::

    d <- (1 - beta) d + beta n

``beta`` in :data:`BLENDS`: a small network sees a few dozen pixels around each one,
NLM averages similar patches across a 13x13 search window, and where the noise is white
their errors differ enough that a blend beats both (measured in the README). Last, the
result may be used as the pilot of an empirical Wiener filter of the input (BM3D's second
step without block matching, :func:`~fluoden_batch.restore.classical.vst_wiener`)::

    out <- (1 - gamma) out + gamma Wiener(z; pilot = out)

``gamma`` in :data:`WIENERS`: the filter keeps of each 8x8 DCT coefficient of the input
the share the pilot says is signal, so it puts back structure the pilot holds too weakly
and removes noise the pilot left, from the data itself. Which ``(s, w, beta)`` is best
depends on the data and the model; it is chosen per channel, once, on a sample of the
input, as the candidate of lowest Stein's unbiased risk estimate (SURE; Stein 1981) for
heteroscedastic Gaussian noise of variance ``v = a d + b`` (the channel's
Poisson-Gaussian ``(a, b)``), and then ``gamma`` for that candidate, the same way::

    SURE(out) = mean((out - z)^2) - mean(v) + 2 mean(v * d out / d z)

which in expectation equals the mean squared error against the noise-free image. The
divergence term comes from one Rademacher probe and one more forward pass of the model
and of NLM (Monte-Carlo SURE; Ramani, Blu & Unser 2008), and since ``out`` is linear in
``d`` and ``n``, one probe serves every candidate (the Wiener filter, not linear in its
pilot, takes two more passes of the filter for the chosen one). SURE needs spatially white
noise: where the lag-1 correlation of the model's residual on the sample, or on any one
sampled plane, reaches :data:`CORRELATED` (camera noise of widefield microscopes), nothing
is changed, and the Wiener filter is tried only where that correlation is
:data:`WIENER_CORRELATION` or above (an anti-correlated residual: the model keeps the
noise's low frequencies, as on nearly clean inputs, where the filter's estimated gain was
not borne out).
``w = 0`` is a candidate, so on white noise SURE also keeps a model from making a clean
input worse, up to the estimate's precision.

Measured (``benchmarks/eval_lowpass.py``): with the fold models of ``dncnn-fmd-v1``'s
recipe, which had learned to change brightness, the white-noise FMD types they never saw
gain 0.4-2 dB and held-out W2S widefield pairs lose 0.27 dB on average (SURE undoes part
of a brightness change that the scale-invariant W2S score ignores). With ``dncnn-fmd-v2``'s
(references matched to their inputs' brightness): +0.05 dB at raw, +0.59 dB at
avg16 (where models lower nearly clean inputs), +0.05 dB on W2S; with ``dncnn-fmd-v3``'s
(trained on 2500 steps more): +0.03, +0.32 and +0.01 dB; with the current, dilated
``dncnn-fmd``'s: +0.01, +0.17 and +0.02 dB. On by default (``--detail auto``) since
``dncnn-fmd-v3``. The NLM blend, with SURE's ``(a, b)`` under :data:`NOISE_SCREEN`
(``benchmarks/figure_fmd.py``, the default run): out of fold raw +0.10 dB, held-out W2S
+0.92 dB, no FMD type at any level more than 0.02 dB lower; the pipeline about a fifth
slower where SURE takes it. The Wiener filter after it, off where the residual is
anti-correlated: out of fold raw +0.10 dB (+0.19 to +0.22 on three of the four
white-noise types), held-out W2S +0.65 dB (every pair up), no FMD type at any level more
than 0.05 dB lower.

Everything here is pixel-wise, NLM (reach :data:`~fluoden_batch.restore.classical.NLM_REACH`),
a Gaussian or the Wiener filter (:data:`~fluoden_batch.restore.classical.WIENER_REACH`),
together of reach :func:`detail_radius`, so a block read with that much more
halo gives exactly the pixels of whole-plane application.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from fluoden_batch.errors import InputError
from fluoden_batch.restore.classical import NLM_REACH, WIENER_REACH, vst_nlm, vst_wiener

__all__ = [
    "BLENDS",
    "CORRELATED",
    "NOISE_SCREEN",
    "SIGMAS",
    "WEIGHTS",
    "WIENERS",
    "WIENER_CORRELATION",
    "Detail",
    "SurePlane",
    "candidate_risks",
    "choose_detail",
    "detail_radius",
    "lag1_correlation",
    "restore_detail",
    "sure_plane",
    "sure_risk",
    "wiener_risks",
]

SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0)  # px; 0: no low frequencies put back
WEIGHTS = (0.0, 0.5, 0.75, 1.0)  # blend towards the model's (restored) output
BLENDS = (0.0, 0.25, 0.5, 0.75)  # share of VST+NLM in the model's output (0: the model)
WIENERS = (0.0, 0.5, 1.0)  # share of the Wiener filter piloted by the restoration (0: none)
CORRELATED = 0.3  # lag-1 correlation of the residual from which the noise is not white
# The Wiener filter is tried only where the residual's lag-1 correlation is this or above:
# an anti-correlated residual (the model keeps the noise's low frequencies, as on nearly
# clean inputs) is where its SURE-estimated gain was not borne out (measured in the README).
WIENER_CORRELATION = -0.10
# The channel's (a, b) for SURE come from the estimator with this smoothness screen (its
# default is 0.02): SURE told too much noise favours smoother candidates, and on nearly
# clean frames structure leaks past the default screen (measured in the README).
NOISE_SCREEN = 0.005
TRUNCATE = 3.0  # Gaussian reach in sigmas


@dataclass(frozen=True)
class Detail:
    """One restoration: ``d' = (1 - nlm) d + nlm n``, then
    ``out = z + weight (d' + G_sigma * (z - d') - z)`` (``n``: VST+NLM of the plane), then
    ``out <- (1 - wiener) out + wiener Wiener(z; pilot = out)``.

    Attributes
    ----------
    sigma : float
        Gaussian width, pixels (0: no low frequencies put back).
    weight : float
        Share of the (restored) model output, 0..1 (1 - weight of the input).
    nlm : float
        Share of VST+NLM in the model's output, 0..1 (0: none, NLM is not computed).
    wiener : float
        Share of the Wiener filter piloted by the result, 0..1 (0: none, not computed).
    """

    sigma: float = 0.0
    weight: float = 1.0
    nlm: float = 0.0
    wiener: float = 0.0

    @property
    def identity(self) -> bool:
        """Whether it leaves the model's output unchanged."""
        return self.sigma == 0 and self.weight == 1 and self.nlm == 0 and self.wiener == 0

    @staticmethod
    def stored(details: Sequence[Detail]) -> list[list[float]]:
        """``details`` (one per channel) as OUT's provenance keeps them: ``[[sigma, weight,
        nlm, wiener], ...]``."""
        return [[d.sigma, d.weight, d.nlm, d.wiener] for d in details]

    @staticmethod
    def from_stored(rows: Sequence[Sequence[float]]) -> tuple[Detail, ...]:
        """The inverse of :meth:`stored` (also of what earlier runs stored: ``[sigma,
        weight]`` before the NLM blend, ``[sigma, weight, nlm]`` before the Wiener filter;
        the missing shares 0)."""
        return tuple(Detail(*(float(v) for v in row)) for row in rows)


def detail_radius(detail: Detail | None) -> int:
    """Pixels the restoration reads around each output pixel (its block halo): the
    Gaussian's reach, plus NLM's where the blend takes NLM (the Gaussian reads NLM's
    output), plus the Wiener filter's where it is used (it reads their result)."""
    if detail is None:
        return 0
    gaussian = int(TRUNCATE * detail.sigma + 0.5) if detail.sigma else 0
    return gaussian + (NLM_REACH if detail.nlm else 0) + (WIENER_REACH if detail.wiener else 0)


def _low(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(x, sigma, mode="reflect", truncate=TRUNCATE)


def restore_detail(
    noisy: np.ndarray,
    denoised: np.ndarray,
    detail: Detail,
    noise: tuple[float, float] | None = None,
    *,
    floor: float = 0.0,
) -> np.ndarray:
    """``detail`` applied to one plane (module docstring).

    Parameters
    ----------
    noisy, denoised : ndarray, shape (H, W)
        The model's input and output, data units.
    detail : Detail
    noise : (a, b), optional
        The channel's Poisson-Gaussian parameters (``a > 0``), needed where ``detail.nlm``
        or ``detail.wiener`` is not 0 (InputError without them).
    floor : float
        The channel's zero-signal intensity, data units, for the GAT's inverse
        (:func:`~fluoden_batch.noise.gat_inverse`).

    Returns
    -------
    ndarray, float32, shape (H, W)
    """
    z = np.asarray(noisy, dtype=np.float64)
    d = np.asarray(denoised, dtype=np.float64)
    if (detail.nlm or detail.wiener) and noise is None:
        raise InputError(
            "a detail restoration with an NLM blend or a Wiener filter needs the noise (a, b)"
        )
    if detail.nlm:
        d = (1 - detail.nlm) * d + detail.nlm * vst_nlm(z, *noise, floor=floor)
    if detail.sigma:
        d = d + _low(z - d, detail.sigma)
    out = z + detail.weight * (d - z)
    if detail.wiener:
        out = out + detail.wiener * (vst_wiener(z, out, *noise, floor=floor) - out)
    return out.astype(np.float32)


def lag1_correlation(r: np.ndarray) -> float:
    """Lag-1 autocorrelation of a plane ``r`` (H, W), or pooled over the planes of a stack
    (..., H, W), each plane's mean removed (mean of Y and X; 0 for a constant one)."""
    r = np.asarray(r, dtype=np.float64)
    r = r - r.mean(axis=(-2, -1), keepdims=True)
    var = float((r * r).mean())
    if var == 0 or min(r.shape[-2:]) < 2:
        return 0.0
    lag = (r[..., 1:, :] * r[..., :-1, :]).mean() + (r[..., 1:] * r[..., :-1]).mean()
    return float(lag / 2 / var)


@dataclass(frozen=True)
class SurePlane:
    """What one sampled plane says about every candidate, and what SURE of the Wiener
    filter after the chosen one needs (:func:`wiener_risks`).

    Attributes
    ----------
    risks : dict of (sigma, weight, nlm) -> float
        SURE of each candidate, summed over the plane's pixels (data units squared).
    pixels : int
    correlation : float
        Lag-1 correlation of the model's residual.
    noisy, denoised, probe, jacobian_probe, variance : ndarray, shape (H, W)
        The plane ``z``, the model's output ``d``, the probe ``p``, ``J p`` and the noise
        variance ``v = a d + b`` (data units, squared for ``v``).
    step : float
        The probe's step ``eps`` (data units): ``J p = (model(z + eps p) - d) / eps``.
    nlm : (ndarray, ndarray) or None
        VST+NLM of ``z`` and its Jacobian times ``p`` (None where ``a`` is 0).
    noise : (float, float)
        The channel's ``(a, b)``.
    floor : float
        The channel's zero-signal intensity (data units) for the GAT's inverse.
    """

    risks: dict[tuple[float, float, float], float]
    pixels: int
    correlation: float
    noisy: np.ndarray
    denoised: np.ndarray
    probe: np.ndarray
    jacobian_probe: np.ndarray
    variance: np.ndarray
    step: float
    nlm: tuple[np.ndarray, np.ndarray] | None
    noise: tuple[float, float]
    floor: float = 0.0


def sure_plane(
    noisy: np.ndarray,
    model: Callable[[np.ndarray], np.ndarray],
    a: float,
    b: float,
    seed: int = 0,
    *,
    floor: float = 0.0,
) -> SurePlane:
    """SURE of every candidate ``(s, w, nlm)`` on one plane.

    Parameters
    ----------
    noisy : ndarray, shape (H, W)
        A sampled plane, data units.
    model : callable
        The run's denoising of a plane (data units in and out), as every block will do it.
    a, b : float
        Poisson-Gaussian parameters of the channel (``Var[z | y] = a y + b``; ``a > 0``
        for the NLM and Wiener candidates, which are left out otherwise).
    seed : int
        Seeds the probe.
    floor : float
        The channel's zero-signal intensity, data units (the GAT's inverse in the NLM and
        Wiener candidates; :func:`~fluoden_batch.noise.gat_inverse`).
    """
    z = np.asarray(noisy, dtype=np.float64)
    d = np.asarray(model(z), dtype=np.float64)
    # floored where a pedestal (b < 0) makes it <= 0, relative to the variance of zero
    # signal or of one photo-electron (a^2): the same share at every scale of the data
    v = np.maximum(a * d + b, 1e-6 * max(abs(b), a * a) or np.finfo(np.float64).tiny)
    probe = np.random.default_rng(seed).choice([-1.0, 1.0], size=z.shape)
    eps = 0.05 * float(np.sqrt(v.mean()))
    jp = (np.asarray(model(z + eps * probe), dtype=np.float64) - d) / eps  # Jacobian x probe
    nlm = None
    if a > 0:
        n = vst_nlm(z, a, b, floor=floor)
        nlm = (n, (vst_nlm(z + eps * probe, a, b, floor=floor) - n) / eps)
    risks = candidate_risks(z, d, probe, jp, v * probe, float(v.sum()), nlm)
    correlation = lag1_correlation(z - d)
    return SurePlane(risks, z.size, correlation, z, d, probe, jp, v, eps, nlm, (a, b), floor)


def _blended(
    denoised: np.ndarray,
    jacobian_probe: np.ndarray,
    nlm: tuple[np.ndarray, np.ndarray] | None,
    beta: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``d' = (1 - beta) d + beta n`` and its ``J p``."""
    if not beta:
        return denoised, jacobian_probe
    return (
        (1 - beta) * denoised + beta * nlm[0],
        (1 - beta) * jacobian_probe + beta * nlm[1],
    )


def _restored(
    noisy: np.ndarray, d: np.ndarray, probe: np.ndarray, jp: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """``d + G_s * (z - d)`` and its ``J p``."""
    if not sigma:
        return d, jp
    return d + _low(noisy - d, sigma), jp + _low(probe - jp, sigma)


def candidate_risks(
    noisy: np.ndarray,
    denoised: np.ndarray,
    probe: np.ndarray,
    jacobian_probe: np.ndarray,
    covariance_probe: np.ndarray,
    noise: float,
    nlm: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[tuple[float, float, float], float]:
    """SURE of every candidate ``(s, w, beta)``, summed over the plane's pixels.

    Parameters
    ----------
    noisy, denoised : ndarray, shape (H, W)
        The model's input ``z`` and output ``d``, data units.
    probe : ndarray, shape (H, W)
        The Monte-Carlo probe ``p`` (zero mean, unit variance per pixel).
    jacobian_probe : ndarray, shape (H, W)
        The model's Jacobian times the probe, ``J p``.
    covariance_probe : ndarray, shape (H, W)
        The noise covariance times the probe, ``Sigma p`` (white noise: ``v * p``).
    noise : float
        ``trace(Sigma)``, the noise variance summed over the pixels.
    nlm : (ndarray, ndarray), optional
        VST+NLM of ``z`` and its Jacobian times the probe, shape (H, W) each: adds the
        blends ``beta`` of :data:`BLENDS`; without it only ``beta = 0``.

    Returns
    -------
    dict of (sigma, weight, beta) -> float
        ``sum((out - z)^2) - trace(Sigma) + 2 (Sigma p) . (J_out p)`` per candidate, data
        units squared; ``J_out p`` follows from ``J p`` (and NLM's) because ``out`` is
        linear in ``d`` (and ``n``).
    """
    z = noisy
    risks = {}
    for beta in BLENDS if nlm is not None else (0.0,):
        d, jp = _blended(denoised, jacobian_probe, nlm, beta)
        for s in SIGMAS:
            ds, js = _restored(z, d, probe, jp, s)
            for w in WEIGHTS:
                out, jo = z + w * (ds - z), (1 - w) * probe + w * js
                risks[(s, w, beta)] = sure_risk(z, out, jo, covariance_probe, noise)
    return risks


def wiener_risks(plane: SurePlane, detail: Detail) -> dict[float, float]:
    """SURE of ``detail`` followed by the Wiener filter at each share of :data:`WIENERS`,
    summed over the plane's pixels (data units squared).

    The restoration's output ``o`` and ``J_o p`` follow from the plane's probe as in
    :func:`candidate_risks`; the filter's ``J p`` is ``(W(z + eps p; o + eps J_o p) -
    W(z; o)) / eps``, exact for the linear restoration and a finite difference for the
    filter (two runs of it). Empty where the plane has no NLM (``a`` is 0: no GAT).
    """
    if plane.nlm is None:
        return {}
    z, p, eps = plane.noisy, plane.probe, plane.step
    d, jp = _blended(plane.denoised, plane.jacobian_probe, plane.nlm, detail.nlm)
    ds, js = _restored(z, d, p, jp, detail.sigma)
    out, jo = z + detail.weight * (ds - z), (1 - detail.weight) * p + detail.weight * js
    filtered = vst_wiener(z, out, *plane.noise, floor=plane.floor)
    jf = (vst_wiener(z + eps * p, out + eps * jo, *plane.noise, floor=plane.floor) - filtered) / eps
    noise, cov = float(plane.variance.sum()), plane.variance * p
    return {
        g: sure_risk(z, out + g * (filtered - out), jo + g * (jf - jo), cov, noise) for g in WIENERS
    }


def sure_risk(
    noisy: np.ndarray,
    out: np.ndarray,
    jacobian_probe: np.ndarray,
    covariance_probe: np.ndarray,
    noise: float,
) -> float:
    """Monte-Carlo SURE of one estimate ``out`` of the noise-free image, summed over pixels.

    ``sum((out - z)^2) - trace(Sigma) + 2 (Sigma p) . (J_out p)``: in expectation (over the
    noise and the probe ``p``) the summed squared error of ``out`` against the noise-free
    image, for noise of covariance ``Sigma`` (Ramani, Blu & Unser 2008).

    Parameters
    ----------
    noisy, out : ndarray, shape (H, W) or any, the same for all arguments
        The noisy input ``z`` and the estimate computed from it.
    jacobian_probe : ndarray
        ``J_out p``, the estimate's Jacobian (with respect to ``z``) times the probe.
    covariance_probe : ndarray
        ``Sigma p`` (white noise: the per-pixel variance times ``p``).
    noise : float
        ``trace(Sigma)``, the noise variance summed over the pixels.
    """
    return float(((out - noisy) ** 2).sum() - noise + 2 * (covariance_probe * jacobian_probe).sum())


def choose_detail(planes: Sequence[SurePlane]) -> tuple[Detail, str]:
    """The candidate of lowest pooled SURE over ``planes``, then the Wiener share of lowest
    pooled SURE after it (:func:`wiener_risks`), and why, in words.

    No change (``Detail()``) where there is nothing to pool or where the residual
    correlation says the noise is not white: on average, or on any one plane (planes of one
    channel from different microscopes: one restoration for all would be chosen on the
    white-noise planes' SURE and applied to the others too).
    """
    if not planes:
        return Detail(), "no plane sampled: the model's output is kept"
    correlations = [p.correlation for p in planes]
    correlation = float(np.mean(correlations))
    if correlation >= CORRELATED:
        return Detail(), (
            f"the noise is spatially correlated (lag-1 {correlation:.2f} in the model's "
            f"residual, from {CORRELATED}): SURE does not hold, the model's output is kept; "
            "repeated captures along t can fit the model to such noise (--adapt n2n), and a "
            "camera the model was not trained on may do better with --phase-split"
        )
    if max(correlations) >= CORRELATED:
        white = [c for c in correlations if c < CORRELATED]
        return Detail(), (
            f"the noise is spatially correlated on {len(planes) - len(white)} of the "
            f"{len(planes)} sampled planes (lag-1 up to {max(correlations):.2f} in the "
            f"model's residual, from {CORRELATED}; the others {min(white):.2f} to "
            f"{max(white):.2f}): SURE does not hold there, the model's output is kept; if "
            "the planes come from different microscopes, give each microscope its own "
            "channel (a c axis) or its own run"
        )
    pixels = sum(p.pixels for p in planes)
    keys = set.intersection(*(set(p.risks) for p in planes))  # NLM only where all have it
    pooled = {k: sum(p.risks[k] for p in planes) / pixels for k in sorted(keys)}
    (s, w, beta), risk = min(pooled.items(), key=lambda kv: kv[1])
    model_risk = pooled[(0.0, 1.0, 0.0)]
    detail = Detail(s, w, beta)
    tried = correlation >= WIENER_CORRELATION
    shares = [wiener_risks(p, detail) for p in planes] if tried else []
    if shares and all(shares):  # every plane has the filter's candidates (a > 0)
        wiener = {g: sum(r[g] for r in shares) / pixels for g in WIENERS}
        gamma = min(wiener, key=wiener.get)
        detail, risk = Detail(s, w, beta, gamma), wiener[gamma]
    gain = 10 * np.log10(model_risk / risk) if risk > 0 and model_risk > 0 else float("nan")
    return detail, (
        f"sigma {s:g} px, weight {w:g}, VST+NLM share {beta:g}, Wiener share "
        f"{detail.wiener:g}{'' if tried else ' (not tried: residual anti-correlated)'} "
        f"(SURE {risk:.4g} against the model's {model_risk:.4g} per "
        f"pixel, {gain:+.2f} dB estimated; residual lag-1 correlation {correlation:.2f})"
    )

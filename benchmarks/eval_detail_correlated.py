"""An experiment for the next step of ``--detail``: SURE for spatially correlated noise.

``--detail sure`` (:mod:`fluoden_batch.restore.detail`) keeps the model's output where
the noise is correlated (widefield cameras), because SURE's white-noise form does not hold
there. Stein's lemma has a form for any noise covariance ``Sigma``::

    SURE(out) = mean((out - z)^2) - mean(diag Sigma) + 2 mean(Sigma p * J_out p)

(``p`` a Rademacher probe, ``J_out p`` from one more forward pass). Here ``Sigma`` is
modelled as ``D^1/2 K K D^1/2``: ``K`` the filter of
:func:`fluoden_batch.noise.simulate.correlate` (``[c, 1, c]`` per axis) and ``D`` the
per-pixel Poisson-Gaussian variance, both read from the image at two scales: the wavelet
estimator (:func:`fluoden_batch.noise.estimate`, diagonal Haar detail of neighbours) reads
``(1 - rho_1)**2`` of the variance of such noise, the same estimator on the four phases
``z[i::2, j::2]`` reads ``(1 - rho_2)**2`` of it, and under the kernel ``rho_2`` is a
function of ``rho_1``, so their ratio gives ``rho_1`` and the variance. (The first
version of this experiment took ``rho`` from the model's residual instead; see the
README.) Not shipped; this script measures whether it would work.

For each leave-types-out fold model of ``train_fmd.py``, the two widefield types, every
level, FMD scoring, ``in`` (the fold trained on the type) and ``out`` (it never saw it):
the model, and the output of lowest correlated SURE over the candidates of ``--detail``;
``var``: the variance read over the truth's (``z - gt``).

Usage (repository root)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_detail_correlated.py \\
        runs/dncnn-mbd-A.safetensors runs/dncnn-mbd-B.safetensors

writes ``benchmarks/results/eval_detail_correlated.md`` (``--inflate K``: SURE's covariance
times K, ``..._inflateK.md``).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from scipy.optimize import brentq
from train_fmd import held_out_types

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import normalisation_range
from fluoden_batch.noise import estimate
from fluoden_batch.noise.simulate import MAX_CORRELATION, correlate, kernel_coefficient
from fluoden_batch.restore.detail import Detail, candidate_risks, restore_detail
from fluoden_batch.train import denoise_whole


def lag_ratio(c: float) -> tuple[float, float]:
    """``((1 - rho_2) / (1 - rho_1))**2`` and ``rho_1`` of the kernel ``[c, 1, c]``."""
    n = 1.0 + 2.0 * c * c
    r1, r2 = 2.0 * c / n, c * c / n
    return ((1.0 - r2) / (1.0 - r1)) ** 2, r1


def two_scale(z: np.ndarray) -> tuple[float, float, float]:
    """``(a, b)`` of the per-pixel variance and ``rho`` of one plane (module docstring)."""
    fine, level = estimate(z), float(z.mean())
    coarse = [estimate(z[i::2, j::2]) for i in (0, 1) for j in (0, 1)]
    ratio = np.mean([e.a * level + e.b for e in coarse]) / (fine.a * level + fine.b)
    c_max = kernel_coefficient(MAX_CORRELATION)
    if ratio <= 1:
        rho = 0.0
    elif ratio >= lag_ratio(c_max)[0]:
        rho = MAX_CORRELATION
    else:
        rho = lag_ratio(brentq(lambda c: lag_ratio(c)[0] - ratio, 0.0, c_max))[1]
    scale = 1.0 / (1.0 - rho) ** 2
    return fine.a * scale, fine.b * scale, rho


def correlated_sure(module: torch.nn.Module, norm, z: np.ndarray, inflate: float = 1.0) -> tuple:
    """The model's output, the correlated-SURE choice, its ``(s, w)``, ``rho`` and the
    per-pixel variance read (at the output); SURE's covariance is the one read times
    ``inflate``."""
    window = normalisation_range(z, norm)

    def model(x: np.ndarray) -> np.ndarray:
        return denoise_whole(module, x, norm=window, normalisation=norm).astype(np.float64)

    d = model(z)
    a, b, rho = two_scale(z)
    v = np.maximum(a * d + b, 1e-3)
    read = float(v.mean())
    v = v * inflate
    p = np.random.default_rng(0).choice([-1.0, 1.0], size=z.shape)
    sv = np.sqrt(v)
    sigma_p = sv * correlate(correlate(sv * p, rho), rho)
    eps = 0.05 * float(np.sqrt(v.mean()))
    jp = (model(z + eps * p) - d) / eps
    risks = candidate_risks(z, d, p, jp, sigma_p, float(v.sum()))
    s, w = min(risks, key=risks.__getitem__)
    return d, restore_detail(z, d, Detail(s, w)).astype(np.float64), (s, w), rho, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", type=Path, help="weights trained with train_fmd.py --fold A")
    parser.add_argument("fold_b", type=Path, help="weights trained with train_fmd.py --fold B")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--inflate",
        type=float,
        default=1.0,
        help="SURE's covariance: the one read times this (a margin for a variance read low)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    scores: dict = defaultdict(list)
    kinds = ["WideField_BPAE_B", "WideField_BPAE_G"]
    for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
        loaded = load_model(weights)
        for level, kind, z, gt in fmd_images(DATA / "fmd_dev", kinds):
            seen = "out" if kind in held_out_types(fold) else "in"
            d, out, (s, w), rho, v = correlated_sure(
                loaded.module, loaded.metadata.normalisation, z, args.inflate
            )
            key = (level, kind, seen)
            for name, image in (("noisy", z), ("model", d), ("SURE", out)):
                scores[(*key, name)].append(fmd_scores(np.clip(image, 0, 255), gt, 255.0)[0])
            for name, value in (("s", s), ("w", w), ("rho", rho), ("var", v / (z - gt).var())):
                scores[(*key, name)].append(value)
    cols = ["noisy", "model", "SURE", "s", "w", "rho", "var"]
    lines = [
        "# Correlated-noise SURE on the widefield types (experiment, not shipped)",
        "",
        f"Command (repository root): `PYTHONPATH=.:benchmarks python "
        f"benchmarks/eval_detail_correlated.py {args.fold_a} {args.fold_b}"
        f"{f' --inflate {args.inflate:g}' if args.inflate != 1 else ''}`; "
        f"{time.perf_counter() - started:.0f} s. FMD PSNR (dB), 4 images per row; `fold`: "
        "`in` where the fold model trained on the type, `out` where it never saw it; `s`, "
        "`w`, `rho`: means of the choices and of the noise correlation read; `var`: the "
        "per-pixel variance read over the truth's (`z - gt`).",
        "",
        "| level | type | fold | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---:|" * len(cols),
    ]
    for level in LEVELS:
        for kind in kinds:
            for seen in ("in", "out"):
                vals = [np.mean(scores[(level, kind, seen, c)]) for c in cols]
                lines.append(
                    f"| {level} | {kind} | {seen} | " + " | ".join(f"{v:.2f}" for v in vals) + " |"
                )
    suffix = f"_inflate{args.inflate:g}" if args.inflate != 1 else ""
    path = RESULTS / f"eval_detail_correlated{suffix}.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()

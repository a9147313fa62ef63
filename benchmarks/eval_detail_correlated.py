"""An experiment for the next step of ``--detail``: SURE for spatially correlated noise.

``--detail sure`` (:mod:`fluoden_batch.restore.detail`) keeps the model's output where
the noise is correlated (widefield cameras), because SURE's white-noise form does not hold
there. Stein's lemma has a form for any noise covariance ``Sigma``::

    SURE(out) = mean((out - z)^2) - mean(diag Sigma) + 2 mean(Sigma p * J_out p)

(``p`` a Rademacher probe, ``J_out p`` from one more forward pass). Here ``Sigma`` is
modelled as ``D^1/2 K K D^1/2``: ``K`` the lag-1 correlation kernel of
:func:`fluoden_batch.noise.simulate.correlate` at the lag-1 correlation ``rho`` of the
model's residual, ``D`` the Poisson-Gaussian variance ``a d + b`` of the single-image
estimate scaled up by what a fine-scale estimator misses of noise of that correlation
(measured on simulated noise: the ratio of the per-pixel variance to the Haar-HH
variance). Not shipped; this script measures whether it would work.

For each leave-types-out fold model of ``train_fmd.py``, the widefield types it never saw,
every level, FMD scoring: the model, and the output of lowest correlated SURE over the
candidates of ``--detail``.

Usage (repository root)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_detail_correlated.py \\
        runs/dncnn-fmdn-A.safetensors runs/dncnn-fmdn-B.safetensors

writes ``benchmarks/results/eval_detail_correlated.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from train_fmd import held_out_types

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import normalisation_range, plane_noise
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.restore.detail import (
    Detail,
    candidate_risks,
    lag1_correlation,
    restore_detail,
)
from fluoden_batch.train import denoise_whole

WHITE = np.random.default_rng(123).normal(0, 1, (512, 512))


def missed(rho: float) -> float:
    """Per-pixel variance over Haar-HH variance of white noise correlated to ``rho``."""
    c = correlate(WHITE, rho)
    hh = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2
    return float(c.var() / hh.var())


def correlated_sure(module: torch.nn.Module, norm, z: np.ndarray) -> tuple:
    """The model's output, the correlated-SURE choice, its ``(s, w)`` and ``rho``."""
    window = normalisation_range(z, norm)

    def model(x: np.ndarray) -> np.ndarray:
        return denoise_whole(module, x, norm=window, normalisation=norm).astype(np.float64)

    d = model(z)
    rho = min(max(lag1_correlation(z - d), 0.0), 0.7)
    a, b = plane_noise(z)
    v = np.maximum(a * d + b, 1e-3) * missed(rho)
    p = np.random.default_rng(0).choice([-1.0, 1.0], size=z.shape)
    sv = np.sqrt(v)
    sigma_p = sv * correlate(correlate(sv * p, rho), rho)
    eps = 0.05 * float(np.sqrt(v.mean()))
    jp = (model(z + eps * p) - d) / eps
    risks = candidate_risks(z, d, p, jp, sigma_p, float(v.sum()))
    s, w = min(risks, key=risks.__getitem__)
    return d, restore_detail(z, d, Detail(s, w)).astype(np.float64), (s, w), rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", type=Path, help="weights trained with train_fmd.py --fold A")
    parser.add_argument("fold_b", type=Path, help="weights trained with train_fmd.py --fold B")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    scores: dict = defaultdict(list)
    for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
        loaded = load_model(weights)
        kinds = [k for k in held_out_types(fold) if k.startswith("WideField")]
        for level, kind, z, gt in fmd_images(DATA / "fmd_dev", kinds):
            d, out, (s, w), rho = correlated_sure(loaded.module, loaded.metadata.normalisation, z)
            for name, image in (("noisy", z), ("model", d), ("SURE", out)):
                scores[(level, kind, name)].append(fmd_scores(np.clip(image, 0, 255), gt, 255.0)[0])
            scores[(level, kind, "s")].append(s)
            scores[(level, kind, "w")].append(w)
            scores[(level, kind, "rho")].append(rho)
    cols = ["noisy", "model", "SURE", "s", "w", "rho"]
    lines = [
        "# Correlated-noise SURE on the widefield types (experiment, not shipped)",
        "",
        f"Command (repository root): `PYTHONPATH=.:benchmarks python "
        f"benchmarks/eval_detail_correlated.py {args.fold_a} {args.fold_b}`; "
        f"{time.perf_counter() - started:.0f} s. FMD PSNR (dB), 4 images per row; `s`, `w`, "
        "`rho`: means of the choices and of the residual's lag-1 correlation.",
        "",
        "| level | type | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for level in LEVELS:
        for kind in sorted({k for (lv, k, _) in scores if lv == level}):
            vals = [np.mean(scores[(level, kind, c)]) for c in cols]
            lines.append(f"| {level} | {kind} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    path = RESULTS / "eval_detail_correlated.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()

"""Would SURE choosing the model's noise scale help? A probe without training (issue 16).

The default model sees ``(x - lo) / (40 m sigma)`` with ``m = 1`` and ``sigma`` the
wavelet noise estimate: ``m`` is FFDNet's noise-level knob (``m < 1`` denoises more,
``m > 1`` less). On a microscope the model has not met, the estimate and what the model
learnt to expect can disagree. Each image here is its own default run (every default,
the detail restoration tuned by SURE for that ``m``) at each ``m``; the run's note gives
SURE of its output (per pixel). Compared: ``m = 1`` (today), the ``m`` of lowest SURE, and
the ``m`` of highest PSNR (an oracle no run has).

Decided on images that are not issue 16's out-of-fold figure: each fold model on its own
types' raw capture 4 (which its training holds out), and the shipped model on W2S's 8
held-out pairs (channels it never trained on). ``--oof`` scores the out-of-fold images,
once a rule is fixed.

Usage: OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python runs/noise_scale_probe.py [--oof]
"""

from __future__ import annotations

import argparse
import logging
import re

import numpy as np
from eval_fmd import DATA
from eval_w2s import pairs, scores
from figure_fmd import FOLD_OF, ROOT, fold_model, load

import fluoden_batch as fb
import fluoden_batch.pipeline.statistics as statistics
from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models.normalise import normalisation_window

SCALES = (0.6, 0.8, 1.0, 1.25, 1.6)
_SURE = re.compile(r"\(SURE ([0-9.e+-]+) against the model's ([0-9.e+-]+) per pixel")


class _Notes(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


def run(noisy: np.ndarray, model: str, scale: float) -> tuple[np.ndarray, float]:
    """The default run of ``noisy`` with the window ``scale`` times as wide, and SURE of
    its output per pixel (the restoration's, else the model's)."""

    def window(lo, hi, sigma, norm):
        lo, top = normalisation_window(lo, hi, sigma, norm)
        return lo, lo + scale * (top - lo)

    statistics.normalisation_window = window
    notes = _Notes()
    logger = logging.getLogger("fluoden_batch.pipeline.arrays")
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    try:
        out = fb.denoise(noisy.astype(np.float32), model=model, dtype="float32")
    finally:
        logger.removeHandler(notes)
        statistics.normalisation_window = normalisation_window
    found = [m for n in notes.texts if (m := _SURE.search(n))]
    risk = float(found[0].group(1)) if found else float("nan")
    return np.clip(np.asarray(out, np.float64), 0, 255), risk


def images(oof: bool):
    """(name, noisy, reference, model path, scorer) of the probe's images."""
    if oof:
        for kind in sorted(FOLD_OF):
            noisy, gt = load("raw", kind)
            for i in range(4):
                yield f"{kind}_{i + 1}", noisy[i], gt[i], str(fold_model(kind)), _fmd
        return
    for kind, fold in sorted(FOLD_OF.items()):
        noisy, gt = load("raw", kind)
        path = ROOT / "runs" / f"dncnn-mbd-{fold}.safetensors"
        yield f"{kind}_4 (in fold)", noisy[3], gt[3], str(path), _fmd
    for name, noisy, clean in pairs(DATA / "w2s_train"):
        yield f"W2S {name}", noisy, clean, "dncnn-fmd", _w2s


def _fmd(out: np.ndarray, gt: np.ndarray) -> float:
    return fmd_scores(out, gt)[0]


def _w2s(out: np.ndarray, clean: np.ndarray) -> float:
    return scores(out, clean)[2]  # scale-invariant PSNR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oof", action="store_true", help="the out-of-fold images")
    args = parser.parse_args()
    rows = []
    for name, noisy, ref, model, score in images(args.oof):
        got = {m: run(noisy, model, m) for m in SCALES}
        psnr = {m: score(out, ref) for m, (out, _) in got.items()}
        risk = {m: r for m, (_, r) in got.items()}
        chosen = min(SCALES, key=lambda m: risk[m] if np.isfinite(risk[m]) else np.inf)
        best = max(SCALES, key=psnr.get)
        rows.append((psnr[1.0], psnr[chosen], psnr[best]))
        cells = " ".join(f"m={m:g} {psnr[m]:.2f} (SURE {risk[m]:.4g})" for m in SCALES)
        print(f"{name}: {cells}; SURE's m={chosen:g} {psnr[chosen] - psnr[1.0]:+.2f} dB, "
              f"best m={best:g} {psnr[best] - psnr[1.0]:+.2f}", flush=True)  # fmt: skip
    today, chosen, best = np.mean(rows, axis=0)
    worst = min(c - t for t, c, _ in rows)
    print(f"mean: m=1 {today:.2f}, SURE's m {chosen:.2f} ({chosen - today:+.2f}; worst image "
          f"{worst:+.2f}), best m {best:.2f} ({best - today:+.2f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

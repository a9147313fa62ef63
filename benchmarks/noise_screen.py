"""How much noise does the single-image estimator read on real frames, by screen strength?

For each white-noise ``fmd_dev`` type (confocal, two-photon) and level, the truth needs no
reference: captures 1 and 2 are two frames of one field, so ``(z1 - z2) / sqrt(2)`` is
pure noise of one frame; its variance, binned by the intensity of the mean of captures 3
and 4 (20 equal-count bins), is fitted by ``var = a y + b``. Each capture's
:func:`fluoden_batch.noise.estimate` with smoothness screen ``max_leakage`` (the default
0.02; 0.005, what the detail restoration uses, ``restore.detail.NOISE_SCREEN``; 0.001)
is compared with that line at the median intensity: the ratio read / truth, mean over
the four captures. Some fmd_dev levels hold captures that share frames (their
differences are far smaller than a frame's noise over the averaging factor); those rows
are marked and not a measure of the estimator, and a level whose captures 1 and 2 are
the same file is skipped.

Usage (repository root; data in ``../shared/data`` or ``$FLUODEN_DATA``)::

    PYTHONPATH=.:benchmarks python benchmarks/noise_screen.py

writes ``benchmarks/results/noise_screen.md``.
"""

from __future__ import annotations

import numpy as np
from eval_fmd import DATA, LEVELS, RESULTS
from figure_fmd import CAPTURES, load

from fluoden_batch.errors import NoiseEstimationError
from fluoden_batch.noise import estimate

TYPES = ["Confocal_BPAE_B", "Confocal_MICE", "TwoPhoton_BPAE_G", "TwoPhoton_BPAE_R"]
SCREENS = (0.02, 0.005, 0.001)


def capture_noise(z: np.ndarray) -> tuple[float, float, float]:
    """``(a, b)`` of one frame's noise from two captures, and the median intensity."""
    noise = (z[0] - z[1]) / np.sqrt(2)
    level = 0.5 * (z[2] + z[3])
    edges = np.unique(np.quantile(level, np.linspace(0, 1, 21)))
    idx = np.clip(np.digitize(level, edges[1:-1]), 0, len(edges) - 2)
    rows = [
        (level[idx == k].mean(), noise[idx == k].var())
        for k in range(len(edges) - 1)
        if np.count_nonzero(idx == k) > 200
    ]
    x, v = np.array(rows).T
    a, b = np.linalg.lstsq(np.vstack([x, np.ones_like(x)]).T, v, rcond=None)[0]
    return float(a), float(b), float(np.median(level))


def main() -> None:
    lines = [
        "# Single-image noise estimate against the noise of two captures",
        "",
        "Command: `PYTHONPATH=.:benchmarks python benchmarks/noise_screen.py`",
        "",
        __doc__.split("\n\n", 1)[1].split("Usage")[0].strip(),
        "",
        "| type | level | truth at the median (grey levels^2) | "
        + " | ".join(f"read / truth, screen {s:g}" for s in SCREENS)
        + " |",
        "|---|---|---:|" + "---:|" * len(SCREENS),
    ]
    raw_truth = {}
    for kind in TYPES:
        for level in LEVELS:
            z = load(level, kind)[0].astype(np.float64)
            if np.array_equal(z[0], z[1]):
                lines.append(f"| {kind} | {level} (captures 1 and 2 identical) | - |" + " - |" * 3)
                continue
            a, b, med = capture_noise(z)
            truth = a * med + b
            raw_truth.setdefault(kind, truth)
            ratios = []
            for screen in SCREENS:
                reads = []
                for plane in z:
                    try:
                        est = estimate(plane, max_leakage=screen)
                    except NoiseEstimationError:
                        continue
                    reads.append((est.a * med + est.b) / truth)
                ratios.append(f"{np.mean(reads):.2f}" if reads else "fails")
            shared = truth < 0.5 * raw_truth[kind] / CAPTURES[level]
            mark = " (captures share frames)" if shared else ""
            lines.append(f"| {kind} | {level}{mark} | {truth:.2f} | " + " | ".join(ratios) + " |")
            print(lines[-1], flush=True)
    (RESULTS / "noise_screen.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    assert DATA.is_dir(), f"no data at {DATA}"
    main()

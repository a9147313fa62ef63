"""Does FMD's reference share the input's noise? The variance of ``input - gt`` against
two predictions.

FMD's reference (``gt``) is the mean of 50 captures of the field; each noisy image at
level ``avgN`` is a mean of ``N`` captures. With ``s2`` the noise variance of one capture
(read from the difference of two distinct raw captures of the field,
``var(raw_i - raw_j) / 2``), the noise of ``input - gt`` has variance

- ``s2 (1/N - 1/50)`` if the input's ``N`` captures are among the reference's 50,
- ``s2 (1/N + 1/50)`` if they are not.

Where they are, the reference holds ``N/50`` of the input's own noise, so a method is
rewarded for keeping it: the input itself scores ``10 log10((1/N) / (1/N - 1/50))`` dB
better against ``gt`` than against the noise-free image (1.7 dB at avg16), and a denoiser
that removes the noise loses that bonus. The complement reference ``(50 gt - N z) / (50 -
N)``, the mean of the 50 - N captures the input does not share, has noise independent of
the input's: scored against it, methods rank as against the noise-free image (each score
lowered by the same ``s2 / (50 - N)``). ``benchmarks/figure_fmd.py`` reports both.

Usage (repository root; data in ``../shared/data`` or ``$FLUODEN_DATA``)::

    PYTHONPATH=.:benchmarks python benchmarks/fmd_overlap.py

writes ``benchmarks/results/fmd_overlap.md``.
"""

from __future__ import annotations

import itertools

import numpy as np
from eval_fmd import LEVELS, RESULTS
from figure_fmd import CAPTURES, FOLD_OF, REFERENCE, load


def capture_variance(kind: str) -> float:
    """Noise variance of one capture (grey levels squared): half the variance of the
    difference of two distinct raw captures, averaged over the distinct pairs (fmd_dev
    holds one exact copy: WideField_BPAE_B_2 of _1)."""
    raw, _ = load("raw", kind)
    raw = raw.astype(np.float64)
    halves = [np.var(raw[i] - raw[j]) / 2 for i, j in itertools.combinations(range(4), 2)]
    return float(np.mean([h for h in halves if h > 0]))


def main() -> None:
    lines = [
        "# Does FMD's reference share the input's noise?",
        "",
        "Command (repository root): `PYTHONPATH=.:benchmarks python benchmarks/fmd_overlap.py`",
        "",
        "`var(input - gt) / s2` per type and level (mean over the 4 images; `s2` the noise "
        "variance of one capture, from two distinct raw captures), against the predictions "
        f"`1/N - 1/{REFERENCE}` (the input's N captures among gt's {REFERENCE}) and "
        f"`1/N + 1/{REFERENCE}` (independent). Below the table: how much better the input "
        "scores against gt than against a noise-free reference where its captures are among "
        "gt's.",
        "",
        "| type | s2 (grey^2) | "
        + " | ".join(f"{lv}: measured (among / independent)" for lv in LEVELS)
        + " |",
        "|---|---:|" + "---:|" * len(LEVELS),
    ]
    for kind in sorted(FOLD_OF):
        s2 = capture_variance(kind)
        cells = []
        for level in LEVELS:
            n = CAPTURES[level]
            noisy, gt = load(level, kind)
            measured = np.mean(
                [np.var(z.astype(np.float64) - g) for z, g in zip(noisy, gt, strict=True)]
            )
            among, apart = 1 / n - 1 / REFERENCE, 1 / n + 1 / REFERENCE
            cells.append(f"{measured / s2:.4f} ({among:.4f} / {apart:.4f})")
        lines.append(f"| {kind} | {s2:.1f} | " + " | ".join(cells) + " |")
    bonus = [10 * np.log10((1 / n) / (1 / n - 1 / REFERENCE)) for n in CAPTURES.values()]
    lines += [
        "",
        "The input's bonus against gt where its captures are among gt's (dB): "
        + ", ".join(f"{lv} {b:.2f}" for lv, b in zip(LEVELS, bonus, strict=True))
        + ".",
        "",
    ]
    path = RESULTS / "fmd_overlap.md"
    path.write_text("\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()

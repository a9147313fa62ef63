"""``--phase-split`` against the default run, on fmd_dev and W2S: where does it help, where not?

Phase-split inference (:class:`fluoden_batch.restore.inference.PhaseSplit`) runs the model
on the four stride-2 phases of a plane and interleaves them. A camera whose noise is
correlated between neighbouring pixels (FMD's widefield types: lag-1 0.57-0.61) is nearly
white two pixels apart, where a model trained on white noise can remove it.

For each set below, every ``fmd_dev`` image of the set's types at every level, FMD scoring
(four 256x256 crops, peak 255), each image as its own one-plane channel:

- ``input``;
- ``default``: the model, then ``--detail sure`` (:mod:`fluoden_batch.restore.detail`),
  as ``fluoden denoise`` runs it by default;
- ``phase split``: the same with ``--phase-split`` (window ``lo`` the image's 0.1
  percentile, ``sigma`` by :func:`~fluoden_batch.models.normalise.phase_sigma`, as
  :func:`~fluoden_batch.pipeline.statistics.channel_ranges` plans it; then the detail
  restoration tuned for the split model, its SURE under the ``(a, b)`` read on the phases
  as the pipeline plans them).

Sets (``train_fmd.py`` leave-types-out folds; ``-cam``: nested folds without either
widefield type):

- ``nested``: ``dncnn-mctl-{A,B}-cam`` on the types they never saw (both widefield cameras
  unseen);
- ``in fold``: ``dncnn-mbd-A`` on WideField_BPAE_B, ``-B`` on WideField_BPAE_G (cameras they
  trained on);
- ``out of fold``: ``dncnn-mbd-A`` on fold B's types, ``-B`` on fold A's (one widefield
  camera seen, the other not);
- ``in distribution``: the shipped ``dncnn-fmd`` on every type (it trained on all six);
- ``w2s``: the shipped ``dncnn-fmd`` on the 8 W2S pairs no model trained on (another lab's
  widefield microscope, ``eval_w2s.py``): scale-invariant PSNR against the 400-frame mean,
  and each frame's lag-1 noise correlation (``z`` minus the mean).

Usage (repository root, the ``runs/`` fold weights present)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_phase_split.py [--sets nested ...]

writes ``benchmarks/results/eval_phase_split.md`` (``--out`` for another file; the committed
W2S set: ``--sets w2s --out benchmarks/results/eval_phase_split_w2s.md``).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from eval_w2s import pairs, scale_invariant_psnr
from train_fmd import GROUPS

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import LoadedModel, load_model
from fluoden_batch.models.normalise import (
    noise_sigma,
    normalisation_window,
    percentile_range,
    phase_sigma,
    plane_noise,
)
from fluoden_batch.noise.planes import estimate_region
from fluoden_batch.restore.detail import choose_detail, restore_detail, sure_plane
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.train import denoise_whole

ALL_TYPES = sorted(GROUPS["A"] + GROUPS["B"])
RUNS = "runs"  # the fold weights, committed (relative to the repository root)
SETS: dict[str, list[tuple[str, list[str]]]] = {
    "nested": [
        (f"{RUNS}/dncnn-mctl-A-cam.safetensors", [*GROUPS["B"], "WideField_BPAE_B"]),
        (f"{RUNS}/dncnn-mctl-B-cam.safetensors", [*GROUPS["A"], "WideField_BPAE_G"]),
    ],
    "in fold": [
        (f"{RUNS}/dncnn-mbd-A.safetensors", ["WideField_BPAE_B"]),
        (f"{RUNS}/dncnn-mbd-B.safetensors", ["WideField_BPAE_G"]),
    ],
    "out of fold": [
        (f"{RUNS}/dncnn-mbd-A.safetensors", GROUPS["B"]),
        (f"{RUNS}/dncnn-mbd-B.safetensors", GROUPS["A"]),
    ],
    "in distribution": [("dncnn-fmd", ALL_TYPES)],
    "w2s": [("dncnn-fmd", [])],
}
METHODS = ("input", "default", "phase split")


def noise(z: np.ndarray, split: bool) -> tuple[float, float]:
    """Poisson-Gaussian ``(a, b)`` of ``z`` for the detail restoration's SURE: the
    single-image estimate, with ``split`` pooled from the four stride-2 phases (as the
    pipeline plans it under ``--phase-split``); :func:`plane_noise`'s fallback where the
    estimator cannot fit."""
    if not split:
        return plane_noise(z)
    found = estimate_region(z, (slice(None), slice(None)), phase_split=True)
    return plane_noise(z) if isinstance(found, str) else (float(found.a), float(found.b))


def default_run(model: LoadedModel, z: np.ndarray, split: bool) -> tuple[np.ndarray, np.ndarray]:
    """``z`` (H, W, grey levels) denoised as ``fluoden denoise`` does for a one-plane
    channel, with or without ``--phase-split``: the model's output, and it followed by
    ``--detail sure`` (the default run); both float64, clipped to 0..255."""
    norm = model.metadata.normalisation
    network = inference_network(model.module, phase_split=split)
    lo, hi = percentile_range(z, norm.low, norm.high)
    window = normalisation_window(lo, hi, phase_sigma(z) if split else noise_sigma(z), norm)

    def apply(x: np.ndarray) -> np.ndarray:
        return denoise_whole(network, x, norm=window, normalisation=norm)

    d = apply(z).astype(np.float64)
    found = noise(z, split)
    detail, _ = choose_detail([sure_plane(z, apply, *found)])
    restored = np.clip(restore_detail(z, d, detail, found), 0, 255).astype(np.float64)
    return np.clip(d, 0, 255), restored


def score_set(pairs: list[tuple[str, list[str]]], fmd: Path, log: Callable[[str], None]) -> dict:
    """``scores[(level, type, method)]`` = list of FMD PSNR (dB) per image."""
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name, types in pairs:
        model = load_model(name)
        for level, kind, z, gt in fmd_images(fmd, types):
            outs = {
                "input": z,
                "default": default_run(model, z, False)[1],
                "phase split": default_run(model, z, True)[1],
            }
            for method, image in outs.items():
                scores[(level, kind, method)].append(fmd_scores(image, gt, 255.0)[0])
        log(f"{name}: {', '.join(types)} done")
    return scores


def w2s_rows(w2s: Path) -> list[str]:
    """Markdown rows: per W2S pair, the noise's lag-1 correlation and the scale-invariant
    PSNR (dB) of the input, the default run and the phase split; then the means."""
    model = load_model("dncnn-fmd")
    lines = [
        "| pair | noise lag-1 | input | default | phase split | change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for name, z, clean in pairs(w2s):
        vals = [scale_invariant_psnr(z, clean)]
        vals += [scale_invariant_psnr(default_run(model, z, s)[1], clean) for s in (False, True)]
        r = z - clean
        rho = float(np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1])
        rows.append(vals)
        cells = " | ".join(f"{v:.2f}" for v in vals)
        lines.append(f"| {name} | {rho:.2f} | {cells} | {vals[2] - vals[1]:+.2f} |")
    mean = np.mean(rows, axis=0)
    cells = " | ".join(f"**{v:.2f}**" for v in mean)
    lines.append(f"| **mean** | | {cells} | {mean[2] - mean[1]:+.2f} |")
    return lines


def table(scores: dict) -> list[str]:
    """Markdown rows: per level, each type and the mean over the types, PSNR dB."""
    kinds = sorted({k for (_, k, _) in scores})
    head = "| level | type | " + " | ".join(METHODS) + " | change |"
    lines = [head, "|---|---|---:|---:|---:|---:|"]
    for level in LEVELS:
        for kind in [*kinds, "mean"]:
            source = kinds if kind == "mean" else [kind]
            vals = [np.mean([np.mean(scores[(level, k, m)]) for k in source]) for m in METHODS]
            name = f"**{kind}**" if kind == "mean" else kind
            cells = " | ".join(f"{v:.2f}" for v in vals)
            lines.append(f"| {level} | {name} | {cells} | {vals[2] - vals[1]:+.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--fmd", type=Path, default=DATA / "fmd_dev")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_phase_split.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fmd_sets = [s for s in args.sets if s != "w2s"]
    lines = [
        "# `--phase-split` against the default run",
        "",
        "`benchmarks/eval_phase_split.py` (its docstring says what each set and column is)."
        + (" fmd_dev: FMD scoring (four 256x256 crops, peak 255), PSNR dB." if fmd_sets else "")
        + " `change`: phase split minus default.",
    ]
    for name in args.sets:
        models = ", ".join(f"`{Path(m).name.removesuffix('.safetensors')}`" for m, _ in SETS[name])
        if name == "w2s":
            rows = w2s_rows(args.fmd.parent / "w2s_train")
            lines += ["", f"## {name} ({models}; scale-invariant PSNR, dB)", "", *rows]
            continue
        scores = score_set(SETS[name], args.fmd, print)
        lines += ["", f"## {name} ({models})", "", *table(scores)]
    minutes = (time.perf_counter() - t0) / 60
    lines += ["", f"{minutes:.0f} min on {args.threads} CPU thread(s)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

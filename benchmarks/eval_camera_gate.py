"""Gate for camera-noise training recipes: an unseen camera scored inside the training fold.

Each leave-types-out fold holds one widefield camera, so its validation cannot tell
whether a recipe generalises to a camera it has not met. ``train_fmd.py --fold A-cam``
trains on fold A's types without WideField_BPAE_B (``B-cam``: fold B's without
WideField_BPAE_G); this script scores such nested models on that left-out widefield type,
every level, FMD scoring (:func:`eval_fmd.evaluate`), a control recipe against a candidate,
and prints the gate's three figures (see runs/README.md for the rule fixed before the
runs): the raw mean over the two cameras, the lowest per-level difference, and the nested
fold validation (the weights' ``final_val_psnr_db``).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_camera_gate.py \\
        --control runs/dncnn-mctl-A-cam.safetensors runs/dncnn-mctl-B-cam.safetensors \\
        --candidate runs/dncnn-mcam-A-cam.safetensors runs/dncnn-mcam-B-cam.safetensors \\
        --name camera-noise

writes ``benchmarks/results/eval_camera_gate_<name>.md``. ``--camera-reading``: the
candidate was trained with ``train_fmd.py --camera-reading`` (its second input channel is
the plane's :func:`train_fmd.camera_reading`; the control, without one, is unaffected).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, evaluate
from train_fmd import CAMERA_TYPES, use_camera_reading

from fluoden_batch.models.weights import read_metadata


def camera_scores(weights: list[Path], fmd: Path) -> dict[tuple[str, str], float]:
    """``{(level, type): mean FMD PSNR}`` of the A-cam and B-cam weights on their
    left-out widefield types, and ``(level, "noisy")`` entries for the inputs."""
    out: dict[tuple[str, str], float] = {}
    for path, fold in zip(weights, CAMERA_TYPES, strict=True):
        camera = CAMERA_TYPES[fold][1]
        scores, _, _ = evaluate(path, fmd, [camera], nlm_baseline=False)
        for level in LEVELS:
            out[(level, camera)] = float(np.mean([p for p, _ in scores[(level, camera, "model")]]))
            noisy = float(np.mean([p for p, _ in scores[(level, camera, "noisy")]]))
            out[(level, f"noisy {camera}")] = noisy
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", type=Path, nargs=2, required=True, help="A-cam B-cam")
    parser.add_argument("--candidate", type=Path, nargs=2, required=True, help="A-cam B-cam")
    parser.add_argument("--name", required=True, help="name of the candidate recipe")
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--camera-reading", action="store_true", help="the candidate reads camera_reading"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.camera_reading:
        use_camera_reading()
    cameras = [camera for _, camera in CAMERA_TYPES.values()]
    runs = {"control": args.control, "candidate": args.candidate}
    scores = {kind: camera_scores(paths, args.data) for kind, paths in runs.items()}
    val = {
        kind: float(np.mean([read_metadata(p).training["final_val_psnr_db"] for p in paths]))
        for kind, paths in runs.items()
    }
    rows, diffs = [], {}
    for level in LEVELS:
        cells = []
        for camera in cameras:
            noisy = scores["control"][(level, f"noisy {camera}")]
            ctl, cand = scores["control"][(level, camera)], scores["candidate"][(level, camera)]
            cells.append(f"{noisy:.2f} | {ctl:.2f} | {cand:.2f}")
        means = [np.mean([scores[k][(level, c)] for c in cameras]) for k in runs]
        diffs[level] = means[1] - means[0]
        rows.append(f"| {level} | {' | '.join(cells)} | {diffs[level]:+.2f} |")
    heads = " | ".join(f"{c} input | control | candidate" for c in cameras)
    text = f"""# Camera gate: {args.name}

Nested folds (`train_fmd.py --fold A-cam / B-cam`), each scored on the widefield type its
fold left out (FMD scoring, 4 images per level, PSNR dB).

- control: {", ".join(map(str, args.control))}
- candidate: {", ".join(map(str, args.candidate))}

| level | {heads} | candidate - control (mean) |
|---|{"---:|" * (3 * len(cameras) + 1)}
{chr(10).join(rows)}

Nested fold validation (mean of the two, the folds' own types' raw/4): control
{val["control"]:.2f}, candidate {val["candidate"]:.2f} ({val["candidate"] - val["control"]:+.2f}).

Gate figures: raw mean {diffs["raw"]:+.2f} dB, lowest level {min(diffs.values()):+.2f} dB,
validation {val["candidate"] - val["control"]:+.2f} dB.

Command: `OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/eval_camera_gate.py
--control {" ".join(map(str, args.control))} --candidate
{" ".join(map(str, args.candidate))} --name {args.name} --threads {args.threads}
{"--camera-reading" if args.camera_reading else ""}`
"""
    out = RESULTS / f"eval_camera_gate_{args.name}.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

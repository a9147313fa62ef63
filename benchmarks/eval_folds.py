"""Leave-types-out FMD score: each fold model scored on the sample types it never saw.

``train_fmd.py --fold A`` trains on group A and is scored here on group B, ``--fold B``
the other way round; the two halves together give one out-of-fold figure per sample type
and level for all six ``fmd_dev`` types (FMD scoring, as in :mod:`eval_fmd`).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_folds.py \\
        runs/dncnn-fmd-A.safetensors runs/dncnn-fmd-B.safetensors --name dncnn-fmd

writes ``benchmarks/results/eval_fmd_<name>_leave_types_out.md`` (``--tta``: the mean over
the 8 flips/rotations, ``..._leave_types_out_tta.md``; ``--vst``: models trained by
``train_fmd.py --vst``, run in the variance-stabilised domain).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from eval_fmd import DATA, RESULTS, evaluate, report
from train_fmd import held_out_types, use_vst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", help="weights trained with --fold A")
    parser.add_argument("fold_b", help="weights trained with --fold B")
    parser.add_argument("--name", required=True, help="name of the shipped model they estimate")
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation (8x)")
    parser.add_argument("--vst", action="store_true", help="models of train_fmd.py --vst")
    args = parser.parse_args()
    if args.vst:
        use_vst()
    torch.set_num_threads(args.threads)
    if not (args.data / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {args.data} (set FLUODEN_DATA or --data)")
    scores: dict = {}
    seconds = []
    for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
        part, _, sec = evaluate(weights, args.data, held_out_types(fold), tta=args.tta)
        scores.update(part)  # disjoint keys: (level, type, method) of the held-out types
        seconds.append(sec)
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/eval_folds.py "
        f"{args.fold_a} {args.fold_b} --name {args.name} --threads {args.threads}"
        + (" --tta" if args.tta else "")
        + (" --vst" if args.vst else "")
    )
    text = report(
        scores,
        f"{args.name}, leave-types-out" + (", with --tta" if args.tta else ""),
        f"{args.fold_a} (scored on {', '.join(held_out_types('A'))}) and {args.fold_b} "
        f"(scored on {', '.join(held_out_types('B'))})",
        sum(seconds) / len(seconds),
        command,
    )
    out = RESULTS / f"eval_fmd_{args.name}_leave_types_out{'_tta' if args.tta else ''}.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

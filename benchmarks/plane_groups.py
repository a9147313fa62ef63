"""What planning in plane groups costs: fmd_dev's 24 raw captures of six microscopes as one
``(24, 512, 512)`` ``zyx`` array, denoised in memory with the shipped default, with
``plane_groups="auto"`` (four groups) and ``"off"`` (one plan), alternating, each timed
from the call to its return; the planning alone (``pipeline.params.grouped_values``); and
the signature of one plane (``pipeline.groups.plane_signature``, what a channel of up to
64 planes pays per plane before any grouping). Writes ``results/plane_groups.md``.

Usage::

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/plane_groups.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from figure_fmd import DATA, load
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.config import DenoiseOptions
from fluoden_batch.pipeline.groups import plane_signature
from fluoden_batch.pipeline.params import choose_method, grouped_values
from fluoden_batch.restore.tiles import block_shape, plan_blocks

RESULTS = Path(__file__).resolve().parent / "results"


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def planning(stack: np.ndarray, mode: str) -> float:
    """Seconds of ``grouped_values`` (windows, noise, SURE per channel or group)."""
    options = DenoiseOptions(plane_groups=mode)
    method = choose_method(options, [])
    blocks = plan_blocks(stack.shape, block_shape(stack.shape, (1, 512, 512), options.block_min))
    return seconds(
        lambda: grouped_values(options, stack, "zyx", "the array", blocks, method, False, [])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "plane_groups.md")
    args = parser.parse_args()
    if not (DATA / "fmd_dev").is_dir():
        raise SystemExit(f"fmd_dev not found under {DATA} (set FLUODEN_DATA)")
    stack = np.concatenate([load("raw", k)[0] for k in GROUPS["A"] + GROUPS["B"]])
    mpx = stack.size / 1e6
    rows: dict[str, list[float]] = {"auto": [], "off": [], "plan auto": [], "plan off": []}
    for _ in range(args.repeats):
        for mode in ("auto", "off"):
            rows[mode].append(
                seconds(lambda m=mode: fb.denoise(stack, plane_groups=m, dtype="float32"))
            )
            rows[f"plan {mode}"].append(planning(stack, mode))
    signature = [seconds(lambda i=i: plane_signature(stack, (i,))) for i in range(len(stack))]
    lines = [
        "# Planning in plane groups (fmd_dev, 24 raw captures of six microscopes)",
        "",
        f"Command: `OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/plane_groups.py "
        f"--repeats {args.repeats}`; shipped default, in memory, {mpx:.1f} Mpx; each figure "
        "the best of the repeats (all in brackets), seconds.",
        "",
        "| | `--plane-groups auto` (4 groups) | `--plane-groups off` (one plan) |",
        "|---|---:|---:|",
    ]
    for label, key in (("whole call (planning + blocks)", ""), ("planning alone", "plan ")):
        auto, off = rows[f"{key}auto"], rows[f"{key}off"]
        lines.append(
            f"| {label} | {min(auto):.1f} ({', '.join(f'{v:.1f}' for v in auto)}) | "
            f"{min(off):.1f} ({', '.join(f'{v:.1f}' for v in off)}) |"
        )
    lines += [
        "",
        f"Signature of one 512 x 512 plane (sigma and phase ratio): median "
        f"{1000 * np.median(signature):.1f} ms over the 24 planes. The rest of the call "
        f"(the blocks): {mpx / (min(rows['off']) - min(rows['plan off'])):.2f} Mpx/s with "
        f"one plan, {mpx / (min(rows['auto']) - min(rows['plan auto'])):.2f} with groups.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

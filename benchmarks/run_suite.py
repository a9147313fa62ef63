"""Run the benchmark suite (issue #6): the seed study's questions as reproducible experiments.

Usage (repository root)::

    python benchmarks/run_suite.py            # full suite -> benchmarks/results/
    python benchmarks/run_suite.py --quick    # minutes, synthetic / tiny crops -> results/quick/
    python benchmarks/run_suite.py --only 1,5 --model runs/a.safetensors,runs/b.safetensors

Experiments (modules in ``benchmarks/suite/``), each writing ``<out>/expN_*.md`` and PNGs:

1. clustering algorithms (K-means, DBSCAN, HDBSCAN): silhouette, Davies-Bouldin, WSS, time
2. PSNR / SSIM against the number of K-means clusters K (masked protocol)
3. CNN_whole against CNN_masked, same architecture and training budget
4. robustness to the noise level (FMD raw..avg16, synthetic (a, b) grid)
5. protocol comparison (noisy, NLM, VST+NLM, wavelet, BM3D*, DnCNN whole/masked/vst,
   self-supervised): PSNR, SSIM, seconds per megapixel
6. throughput and scaling (workers, tile, dataset size, clustering block size)

Real-data parts need ``$FLUODEN_DATA`` (or ``../shared/data``) and skip with a message
otherwise. ``<out>/suite.md`` indexes the results with each experiment's status and time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE / "suite"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

EXPERIMENTS = {
    1: "exp1_clustering",
    2: "exp2_clusters_k",
    3: "exp3_whole_vs_masked",
    4: "exp4_robustness",
    5: "exp5_protocols",
    6: "exp6_scaling",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="minutes: synthetic / tiny crops")
    parser.add_argument("--only", default="", help="comma-separated experiment numbers, e.g. 1,3")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results, or results/quick)",
    )
    parser.add_argument(
        "--model",
        default="dncnn-small",
        help="DnCNN for the whole/vst/masked protocols: shipped name, path, or PATH_A,PATH_B "
        "(train_fmd.py fold models, used leave-types-out)",
    )
    parser.add_argument(
        "--masked-model",
        default="dncnn-small-masked",
        help="masked-trained DnCNN (rows skipped when absent)",
    )
    parser.add_argument(
        "--baseline-models",
        default="dncnn-small",
        help="extra DnCNNs for whole-protocol rows in exp 5 (comma-separated)",
    )
    parser.add_argument("--k", type=int, default=3, help="clusters of the masked protocol")
    parser.add_argument("--mask-sigma", type=float, default=2.0, help="label smoothing, px")
    parser.add_argument(
        "--nlm-h", type=float, default=0.8, help="VST+NLM h in units of the unit noise std"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="exp 3 training steps per model (default 1500; quick 20)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument(
        "--n2v-model",
        default="/tmp/n2v_fmd.safetensors",
        help="self-supervised weights of benchmarks/self_supervised.py",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from common import QUICK_RESULTS, RESULTS, Context

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    only = [int(x) for x in args.only.split(",") if x.strip()] or list(EXPERIMENTS)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    ctx = Context(
        quick=args.quick,
        out=out,
        model=args.model,
        masked_model=args.masked_model,
        baseline_models=tuple(m for m in args.baseline_models.split(",") if m),
        k=args.k,
        mask_sigma=args.mask_sigma,
        nlm_h=args.nlm_h,
        steps=args.steps or (20 if args.quick else 1500),
        threads=args.threads,
        n2v_model=args.n2v_model,
        command="python benchmarks/run_suite.py " + shlex.join(shown),
    )
    out.mkdir(parents=True, exist_ok=True)
    print(f"Benchmark suite ({'quick' if args.quick else 'full'}) -> {out}", flush=True)
    summary = []
    t_all = time.perf_counter()
    for number in only:
        name = EXPERIMENTS[number]
        print(f"\n=== {name} ===", flush=True)
        n_msgs = len(ctx.messages)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(name)
            report = module.run(ctx)
            report.write()
            status = "skipped parts" if len(ctx.messages) > n_msgs else "ok"
            files = report.files
        except Exception:
            traceback.print_exc()
            status, files = "FAILED", []
            ctx.say(f"{name} failed: {traceback.format_exc().splitlines()[-1]}")
        seconds = time.perf_counter() - t0
        notes = ctx.messages[n_msgs:]
        summary.append((number, name, status, seconds, files, notes))
        print(f"=== {name}: {status} in {seconds:.0f} s ===", flush=True)
    total = time.perf_counter() - t_all
    write_index(ctx, summary, total)
    print("\nSummary")
    for number, name, status, seconds, files, notes in summary:
        print(f"  {number}. {name:24s} {status:14s} {seconds:7.1f} s  {len(files)} files")
        for note in notes:
            print(f"       - {note}")
    print(f"  total {total:.0f} s; index: {out / 'suite.md'}")
    return 1 if any(s[2] == "FAILED" for s in summary) else 0


def write_index(ctx, summary, total: float) -> None:
    from common import machine_line

    lines = [
        f"# Benchmark suite ({'quick' if ctx.quick else 'full'})",
        "",
        f"Command: `{ctx.command}`  ",
        f"Machine: {machine_line(ctx.threads)}  ",
        f"Total wall time: {total:.0f} s",
        "",
        "| # | experiment | status | wall s | results | notes |",
        "|---:|---|---|---:|---|---|",
    ]
    rows = _earlier_rows(ctx.out / "suite.md", {number for number, *_ in summary})
    for number, name, status, seconds, files, notes in summary:
        links = ", ".join(f"[{f.name}]({f.name})" for f in files) or "-"
        rows[number] = (
            f"| {number} | {name} | {status} | {seconds:.0f} | {links} | "
            + "<br>".join(n.replace("|", "/") for n in notes)
            + " |"
        )
    lines += [rows[n] for n in sorted(rows)]
    (ctx.out / "suite.md").write_text("\n".join(lines) + "\n")


def _earlier_rows(index: Path, rerun: set[int]) -> dict[int, str]:
    """Rows of an existing index for the experiments not run this time (``--only``), so
    that runs of different experiments into one folder keep one index; each such row is
    marked with the command line of its own run."""
    if not index.exists():
        return {}
    text = index.read_text()
    command = next((ln for ln in text.splitlines() if ln.startswith("Command: ")), "")
    rows = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip().isdigit() and int(cells[1]) not in rerun:
            note = command.removeprefix("Command: ").strip().rstrip()
            if note and "(earlier run:" not in line:
                line = line.rstrip().removesuffix("|").rstrip() + f" (earlier run: {note}) |"
            rows[int(cells[1])] = line
    return rows


if __name__ == "__main__":
    sys.exit(main())

"""Seconds per step of ``--adapt single``'s fit and per held-out score, and the system
(kernel) time they spend, with the shipped default model on synthetic 128 px patches.

Each measurement runs in a fresh subprocess (the C allocator's state is per process) with
``--threads`` torch threads: ``--steps`` Neighbor2Neighbor steps of batch 16
(``train.adapt._loss``, backward, Adam), then ``--scores`` calls of ``held_out_sure`` on 48
patches. ``--checkout DIR`` measures another checkout of the package (e.g. a
``git worktree`` of an older commit) beside this one, alternating, ``--repeats`` times
each. System time is mostly page faults: activations over glibc's mmap threshold (32 MiB)
are mapped and zeroed again on every forward pass. Writes ``results/adapt_speed.md``.

Usage::

    PYTHONPATH=. python benchmarks/adapt_speed.py [--checkout /tmp/old] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from fluoden_batch.models.weights import resolve_weights
from fluoden_batch.train import adapt as A
threads, steps, scores = (int(v) for v in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model, _ = A.load_trainable(resolve_weights("dncnn-fmd"))
model.eval()
opt = torch.optim.Adam(model.parameters(), 3e-4)
rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
pool = (rng.random((64, 1, 128, 128)) * 0.3).astype(np.float32)
cpu = torch.device("cpu")

def timed(fn):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return out, time.perf_counter() - t0, r1.ru_stime - r0.ru_stime

def fit():
    for _ in range(steps):
        loss = A._loss(model, pool[rng.integers(64, size=16)], "single", rng, gen, cpu)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())

val = pool[:48]
variance = np.full((48, 1, 128, 128), 1e-3)
loss, fit_s, fit_sys = timed(fit)
sure, score_s, score_sys = timed(lambda: [A.held_out_sure(model, val, variance, cpu)
                                          for _ in range(scores)][-1])
print(json.dumps({"module": A.__file__, "step_s": fit_s / steps, "step_sys": fit_sys / steps,
                  "score_s": score_s / scores, "score_sys": score_sys / scores,
                  "loss": loss, "sure": sure}))
"""


def measure(checkout: Path, threads: int, steps: int, scores: int) -> dict:
    """One fresh process importing ``fluoden_batch`` from ``checkout``."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(steps), str(scores)],
        capture_output=True, text=True, check=True, cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _commit(checkout: Path) -> str:
    """``checkout``'s commit (short hash), or its path where git cannot tell."""
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    return f"`{done.stdout.strip()}`" if done.returncode == 0 else str(checkout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="another checkout to measure beside this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--scores", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    checkouts = [ROOT] + ([args.checkout.resolve()] if args.checkout else [])
    rows = []
    for repeat in range(args.repeats):
        for checkout in reversed(checkouts) if repeat % 2 else checkouts:
            row = measure(checkout, args.threads, args.steps, args.scores)
            rows.append((checkout, row))
            print(checkout, json.dumps(row), flush=True)
    lines = [
        "# `--adapt single`: seconds per fit step and per held-out score",
        "",
        f"`{' '.join(['PYTHONPATH=. python benchmarks/adapt_speed.py', *sys.argv[1:]])}`",
        "",
        f"Shipped default model (17x32 dilated), {args.threads} torch thread(s), batch 16 of "
        f"128 px patches, {args.steps} steps then {args.scores} scores of 48 patches per "
        "process; each row a fresh process, checkouts alternating. `sys`: kernel time "
        "(mostly page faults). Equal `loss` and `SURE` columns: the same arithmetic.",
        "",
        "| checkout | s / step | sys s / step | s / score | sys s / score | loss | SURE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for checkout, r in rows:
        name = "this checkout" if checkout == ROOT else _commit(checkout)
        lines.append(
            f"| {name} | {r['step_s']:.3f} | {r['step_sys']:.3f} | {r['score_s']:.2f} | "
            f"{r['score_sys']:.2f} | {r['loss']:.7g} | {r['sure']:.7g} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "adapt_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

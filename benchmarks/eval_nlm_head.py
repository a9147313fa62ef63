"""A learned fusion of the model and VST+NLM: does a small head generalise across types?

A diagnostic, not a shipped step (rule in ``runs/README.md``, "A learned fusion ...").
For each leave-types-out fold model of ``train_fmd.py`` (``runs/dncnn-mbd-{A,B}``):

- ``d``: the fold model's output of each type's four captures (one ``(4, 512, 512)``
  array through :func:`fluoden_batch.denoise`, ``detail="off"``);
- ``n``: the engine's VST+NLM of the same array (``protocol="vst-nlm"``, the channel's
  noise ``(a, b)`` estimated from the data);
- ``default``: the default run (``fb.denoise`` with every default, ``--detail sure``);
- the head: three 3x3 convolutions (2 -> 16 -> 16 -> 1, ReLU, last layer zero) on
  ``((z - d) / s, (n - d) / s)``, ``s`` the plane's wavelet noise sigma; output
  ``d + s head(...)``. Trained on the fold's own three types, captures 1-3 of every level
  (MSE in noise units, 64 px patches with flips and rotations, Adam 1e-3 with cosine
  decay); capture 4 is the in-fold validation. Out of fold: each fold's head behind its
  model on the other fold's types, all four captures.

FMD scoring (four 256x256 crops, peak 255), outputs clipped to 0..255.

Usage (repository root; data in ``../shared/data`` or ``$FLUODEN_DATA``)::

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/eval_nlm_head.py

writes ``benchmarks/results/eval_nlm_head.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from eval_fmd import LEVELS, RESULTS
from figure_fmd import ROOT, load
from train_fmd import GROUPS

import fluoden_batch as fb
from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models.normalise import noise_sigma

TYPES = sorted(t for group in GROUPS.values() for t in group)
OTHER = {"A": "B", "B": "A"}


def head() -> torch.nn.Sequential:
    """The fusion head; its last layer starts at zero (the head starts as the model)."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 1, 3, padding=1),
    )
    torch.nn.init.zeros_(net[-1].weight)
    torch.nn.init.zeros_(net[-1].bias)
    return net


def planes(fold: str, kind: str, level: str) -> dict[str, np.ndarray]:
    """Input, gt, ``d``, ``n`` and the default run of one type and level (4, 512, 512)."""
    z, gt = load(level, kind)
    model = str(ROOT / "runs" / f"dncnn-mbd-{fold}.safetensors")
    d = fb.denoise(z, model=model, detail="off", dtype="float32")
    default = fb.denoise(z, model=model, dtype="float32")
    n = fb.denoise(z, protocol="vst-nlm", dtype="float32")
    out = {"z": z, "gt": gt, "d": d, "n": n, "default": default}
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def features(p: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, float]:
    """Head input (2, H, W) of capture ``i`` and its noise sigma ``s``."""
    s = max(noise_sigma(p["z"][i]), 1e-3)
    return np.stack([(p["z"][i] - p["d"][i]) / s, (p["n"][i] - p["d"][i]) / s]), s


def train(data: list[dict[str, np.ndarray]], steps: int, seed: int) -> torch.nn.Sequential:
    """Fit a head on captures 1-3 of ``data`` (one dict per type and level)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for p in data:
        for i in range(3):
            x, s = features(p, i)
            xs.append(x.astype(np.float32))
            ys.append(((p["gt"][i] - p["d"][i]) / s)[None].astype(np.float32))
    net = head()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    size, batch = 64, 32
    for _ in range(steps):
        xb, yb = [], []
        for k in rng.integers(0, len(xs), batch):
            r, c = rng.integers(0, xs[k].shape[1] - size, 2)
            x, y = xs[k][:, r : r + size, c : c + size], ys[k][:, r : r + size, c : c + size]
            turn, flip = int(rng.integers(4)), bool(rng.integers(2))
            x, y = np.rot90(x, turn, (1, 2)), np.rot90(y, turn, (1, 2))
            if flip:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
            xb.append(x.copy())
            yb.append(y.copy())
        loss = torch.mean(
            (net(torch.from_numpy(np.stack(xb))) - torch.from_numpy(np.stack(yb))) ** 2
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net


def apply(net: torch.nn.Sequential, p: dict[str, np.ndarray], i: int) -> np.ndarray:
    """The head behind the model on capture ``i``, grey levels clipped to 0..255."""
    x, s = features(p, i)
    with torch.no_grad():
        r = net(torch.from_numpy(x[None].astype(np.float32)))[0, 0].numpy()
    return np.clip(p["d"][i] + s * r, 0, 255)


def scores(net: torch.nn.Sequential, p: dict[str, np.ndarray], captures: range) -> dict:
    """Mean FMD PSNR of input, model, default run and head over ``captures``."""
    rows = {"input": [], "model": [], "default": [], "head": []}
    for i in captures:
        gt = p["gt"][i]
        rows["input"].append(fmd_scores(p["z"][i], gt)[0])
        rows["model"].append(fmd_scores(np.clip(p["d"][i], 0, 255), gt)[0])
        rows["default"].append(fmd_scores(np.clip(p["default"][i], 0, 255), gt)[0])
        rows["head"].append(fmd_scores(apply(net, p, i), gt)[0])
    return {k: float(np.mean(v)) for k, v in rows.items()}


def table(results: dict) -> list[str]:
    """Markdown rows ``type | level | input | model | default | head | head - default``."""
    lines = [
        "| type | level | input | model | default run | head | head - default |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for level in LEVELS:
        kinds = sorted(k for (k, lv) in results if lv == level)
        for kind in kinds:
            r = results[(kind, level)]
            lines.append(
                f"| {kind} | {level} | {r['input']:.2f} | {r['model']:.2f} | "
                f"{r['default']:.2f} | {r['head']:.2f} | {r['head'] - r['default']:+.2f} |"
            )
        mean = {
            c: np.mean([results[(k, level)][c] for k in kinds]) for c in results[(kinds[0], level)]
        }
        lines.append(
            f"| **mean** | {level} | {mean['input']:.2f} | {mean['model']:.2f} | "
            f"{mean['default']:.2f} | {mean['head']:.2f} | {mean['head'] - mean['default']:+.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_nlm_head.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    cache = {
        (fold, kind, level): planes(fold, kind, level)
        for fold in GROUPS
        for kind in TYPES
        for level in LEVELS
    }
    print(f"planes ready ({time.perf_counter() - start:.0f} s)", flush=True)
    in_fold, nets = {}, {}
    for fold, own in GROUPS.items():
        nets[fold] = train(
            [cache[(fold, k, lv)] for k in own for lv in LEVELS], args.steps, args.seed
        )
        for kind in own:
            for level in LEVELS:
                in_fold[(kind, level)] = scores(nets[fold], cache[(fold, kind, level)], range(3, 4))
        print(f"fold {fold} trained ({time.perf_counter() - start:.0f} s)", flush=True)
    gate = {
        fold: np.mean(
            [in_fold[(k, lv)]["head"] - in_fold[(k, lv)]["default"] for k in own for lv in LEVELS]
        )
        for fold, own in GROUPS.items()
    }
    # Rule 1 (runs/README.md): out of fold is scored only when both folds gain 0.10 dB.
    out_of_fold = {}
    if min(gate.values()) >= 0.10:
        for fold, net in nets.items():
            for kind in GROUPS[OTHER[fold]]:
                for level in LEVELS:
                    out_of_fold[(kind, level)] = scores(net, cache[(fold, kind, level)], range(4))
    text = [
        "# A learned fusion head of the model and VST+NLM",
        "",
        "Command: `OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/eval_nlm_head.py "
        f"--steps {args.steps} --seed {args.seed}`; "
        f"{time.perf_counter() - start:.0f} s on 2 cores.",
        "",
        __doc__.split("\n\n", 1)[1].split("Usage")[0].strip(),
        "",
        "## In fold: capture 4 of each fold's own types (rule 1)",
        "",
        "Head minus default run, mean over the fold's types and levels: "
        + ", ".join(f"fold {f} {g:+.3f} dB" for f, g in gate.items()),
        "",
        *table(in_fold),
        "",
        "## Out of fold: each fold's head on the other fold's types, four captures (rule 2)",
        "",
        *(table(out_of_fold) if out_of_fold else ["Not scored: rule 1 failed."]),
        "",
    ]
    args.out.write_text("\n".join(text))
    print("\n".join(text[10:]), flush=True)


if __name__ == "__main__":
    main()

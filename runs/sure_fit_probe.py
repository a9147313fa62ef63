"""Does `--adapt single` trained on Monte-Carlo SURE beat not fitting? A probe off the scored data.

Experiment for issue 19 (`single`: above the starting model on every type). The shipped
`single` fit trains Neighbor2Neighbor's loss and keeps the weights of lowest held-out SURE;
on FMD's white-noise raw frames SURE kept the start every time. Here the fit's loss is
SURE itself (`fluoden_batch.train.adapt._sure_loss`: the full-resolution output, the
channel's Poisson-Gaussian variance read from the starting model's output, one Rademacher
probe per step, 64 px crops of the 128 px patches), with the same held-out choice.

Data no issue figure uses: 6 W2S frames no held-out pair uses (FOV 001, 009, 017, channels
1 and 2; another lab's widefield microscope), the shipped `dncnn-fmd`, each frame its own
run with every default (`--detail auto`), scale-invariant PSNR against the 400-frame mean.

Needs `git apply runs/sure-fit.patch` (`--loss` sets its `SINGLE_LOSS`: `sure`, `r2r`
Recorrupted-to-Recorrupted, `n2nb` the shipped Neighbor2Neighbor loss).

    PYTHONPATH=.:benchmarks python runs/sure_fit_probe.py [--loss sure|r2r|n2nb] WORK
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tifffile
import torch
from eval_w2s import DATA, scores
from eval_w2s_adapt import run

import fluoden_batch.train.adapt as adapt

FRAMES = [(f, c) for f in ("001", "009", "017") for c in ("1", "2")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--loss", default="sure", choices=["sure", "n2nb", "r2r"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    adapt.SINGLE_LOSS = args.loss
    w2s = DATA / "w2s_train"
    for fov, ch in FRAMES:
        z = tifffile.imread(w2s / "avg1" / f"input_avg1_{fov}_{ch}.tif")
        ref = tifffile.imread(w2s / "avg400" / f"target_avg400_{fov}_{ch}.tif").astype(float)
        work = args.work / f"{fov}_{ch}-{args.loss}"
        work.mkdir(parents=True, exist_ok=True)
        plain, _, _ = run(z, work)
        fitted, prov, seconds = run(z, work, adapt="single")
        record = prov["adapted"]
        print(
            f"{fov}_{ch} {args.loss}: noisy {scores(z.astype(float), ref)[2]:.2f} default "
            f"{scores(plain, ref)[2]:.2f} fitted {scores(fitted, ref)[2]:.2f} | "
            f"{record['seconds']:.0f} s, {record['steps']} steps, kept {record['kept_step']}, "
            f"held-out {record['held_out_loss']}, skipped {record['skipped']}; run {seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()

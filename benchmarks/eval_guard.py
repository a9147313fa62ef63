"""Would a noise-consistency guard keep a model from making clean inputs worse?

The guard (not shipped; this script is the experiment) shrinks the model's residual
``r = z - d`` where it carries more energy than the noise can explain:
``d' = z - g r`` with ``g = min(1, kappa * mean_k(a d + b) / mean_k(r**2))`` over a
``k x k`` box, ``(a, b)`` the single-image Poisson-Gaussian estimate of the plane
(:func:`fluoden_batch.models.normalise.plane_noise`). With ``kappa = 1`` it is the Wiener
gain between "keep the input" and "keep the model", so in expectation it is never worse
than either, IF ``(a, b)`` is right.

Every ``fmd_dev/<level>/<Type>_<n>.png`` of ``--types`` is denoised whole by the weights
(a ``.safetensors`` weights file, or a training checkpoint ``ckpt_*.safetensors``) and
scored with FMD scoring (four 256x256 crops, peak 255) as the input, the model and the
guarded model for each ``k`` and ``kappa``.

Usage (fold A's model on fold A's held-out types)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/eval_guard.py \\
        runs/ckpt-dncnn-map-A/ckpt_000001250.safetensors \\
        --types Confocal_BPAE_B,TwoPhoton_BPAE_R,WideField_BPAE_G

writes ``benchmarks/results/eval_guard_<name>.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from safetensors.torch import load_file
from scipy.ndimage import uniform_filter

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model
from fluoden_batch.models.dncnn import DnCNN
from fluoden_batch.models.normalise import plane_noise
from fluoden_batch.models.weights import Normalisation
from fluoden_batch.train import denoise_whole
from fluoden_batch.train.checkpoint import read_state

VARIANTS = [(k, kappa) for k in (9, 17, 33) for kappa in (1.0, 1.5, 2.0)]


def guard(z: np.ndarray, d: np.ndarray, a: float, b: float, k: int, kappa: float) -> np.ndarray:
    """The guarded output ``z - g (z - d)`` (module docstring), float64, shape of ``z``."""
    r = z - d
    energy = uniform_filter(r * r, k, mode="reflect")
    noise = uniform_filter(np.maximum(a * d + b, 0.0), k, mode="reflect")
    return z - np.minimum(1.0, kappa * noise / np.maximum(energy, 1e-12)) * r


def load(path: Path) -> tuple[torch.nn.Module, Normalisation, str]:
    """The network, its input normalisation and a name, from weights or a checkpoint."""
    if not path.name.startswith("ckpt_"):
        loaded = load_model(path)
        return loaded.module, loaded.metadata.normalisation, loaded.metadata.name
    state = read_state(path)
    config = state["config"]
    if config["architecture"] != "dncnn":
        raise SystemExit(f"{path}: only DnCNN checkpoints are read here")
    net = DnCNN(config["depth"], config["width"], batch_norm=False, noise_map=config["noise_map"])
    tensors = load_file(path)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    step = len(state["losses"])  # one loss per step so far
    return net.eval(), Normalisation(method=config["normalisation"]), f"{config['name']}-{step}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path, help="weights or training checkpoint")
    parser.add_argument("--types", required=True, help="comma list of fmd_dev sample types")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    types = args.types.split(",")
    module, normalisation, name = load(args.weights)
    fmd = DATA / "fmd_dev"
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    started = time.perf_counter()
    for level, kind, z, gt in fmd_images(fmd, types):
        d = denoise_whole(module, z, clip=(0.0, 255.0), normalisation=normalisation)
        d = d.astype(np.float64)
        a, b = plane_noise(z)
        scores[(level, kind, "noisy")].append(fmd_scores(z, gt, 255.0)[0])
        scores[(level, kind, "model")].append(fmd_scores(d, gt, 255.0)[0])
        for k, kappa in VARIANTS:
            out = np.clip(guard(z, d, a, b, k, kappa), 0.0, 255.0)
            scores[(level, kind, f"k{k} x{kappa:g}")].append(fmd_scores(out, gt, 255.0)[0])
    methods = ["noisy", "model"] + [f"k{k} x{kappa:g}" for k, kappa in VARIANTS]
    lines = [
        f"| level | type | {' | '.join(methods)} |",
        "|---|---|" + "---:|" * len(methods),
    ]
    for level in LEVELS:
        for kind in [*types, "mean"]:
            chosen = types if kind == "mean" else [kind]
            row = [np.mean([np.mean(scores[(level, t, m)]) for t in chosen]) for m in methods]
            lines.append(f"| {level} | {kind} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    out = RESULTS / f"eval_guard_{name}.md"
    out.write_text(
        f"# Noise-consistency guard on `{name}` (PSNR dB, FMD scoring)\n\n"
        f"Weights `{args.weights}`, types {', '.join(types)}; "
        f"{time.perf_counter() - started:.0f} s.\n"
        "Columns `kK xKAPPA`: the guard of benchmarks/eval_guard.py with a K x K box and "
        "kappa.\n\n" + "\n".join(lines) + "\n"
    )
    print(out.read_text())


if __name__ == "__main__":
    main()

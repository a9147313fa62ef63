"""Self-supervised DnCNN (Noise2Void, or Noise2Noise on the repeated captures) fitted on
the raw images of ONE fmd_dev type, no gt, scored against gt and compared with VST + NLM
on the same images.

- Type choice (``--type auto``, no gt involved): Noise2Void assumes pixel-wise independent
  noise. For every type, the lag-1 correlation of the difference of two raw captures of
  the same field (noise difference plus any drift; identical files skipped) is measured;
  among the types whose median horizontal and vertical correlations are below 0.1, the
  one with the largest estimated noise std ``sqrt(mean(max(a z + b, 0)))`` (``a, b`` from
  ``fluoden_batch.noise.estimate``) is taken: the noisiest, where a denoiser is needed
  most and the blind spot costs least.
- Training: ``--method n2v`` (``mode = "self_supervised"``, blind-spot masking) or
  ``--method n2n`` (``mode = "noise2noise"``: each of the 4 raw captures of the field of
  view against the mean of the other 3) on ``raw/<Type>_*.png`` only (4 images), DnCNN
  depth 10 width 32, one CPU thread, channels-last. The gt images are read only to log a
  validation PSNR curve (``val_in_training``: they never enter the loss, and the last
  step's weights are used, no model selection).
- Scoring: FMD protocol (``fluoden_batch.metrics.fmd_scores``: four 256x256 crops, peak
  255), whole-image inference clipped to 0..255; also the mean over the 8 flips/rotations
  of the input (test-time augmentation, ``fluoden denoise --tta``).
- VST + NLM: generalized Anscombe with ``(a, b)`` estimated on each raw image, scikit-image
  ``denoise_nl_means`` (5x5 patches, 13x13 search, fast mode, ``sigma=1``) in the
  stabilised domain, ``gat_inverse(method="exact_unbiased")``, clipped to 0..255. ``h`` is
  swept over a small grid and the best mean (chosen on gt: favourable to the baseline) is
  the reference figure.

Usage (repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=. nohup python benchmarks/self_supervised.py \\
        --minutes 12 --checkpoint-dir /tmp/n2v_ckpt > /tmp/n2v.log 2>&1 &

Rerun the same command to resume after an interruption (``--steps`` as reported); it
writes ``benchmarks/results/self_supervised.md``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io
from skimage.restoration import denoise_nl_means

from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import load_model, resolve_weights
from fluoden_batch.noise import estimate, gat_forward, gat_inverse
from fluoden_batch.restore.inference import Dihedral
from fluoden_batch.train import TrainConfig, denoise_whole, train

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
FMD = DATA / "fmd_dev"
RESULTS = Path(__file__).resolve().parent / "results" / "self_supervised.md"
METHODS = {
    "n2v": ("Noise2Void", "N2V", "self_supervised", "blind-spot MSE"),
    "n2n": ("Noise2Noise", "N2N", "noise2noise", "MSE against the mean of the other captures"),
}
OUTPUT = Path("/tmp/n2v_fmd.safetensors")
H_GRID = (0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
MAX_CORR = 0.1


def _read(path: Path) -> np.ndarray:
    return io.imread(path).astype(np.float64)


def _lag1(x: np.ndarray) -> tuple[float, float]:
    x = x - x.mean()
    var = float((x * x).mean()) or 1.0
    return float((x[:, 1:] * x[:, :-1]).mean() / var), float((x[1:] * x[:-1]).mean() / var)


def survey() -> list[dict]:
    """Per type, from raw images only: noise correlation and estimated noise std."""
    kinds = sorted({p.stem.rsplit("_", 1)[0] for p in (FMD / "raw").glob("*.png")})
    rows = []
    for kind in kinds:
        raws = [_read(p) for p in sorted((FMD / "raw").glob(f"{kind}_*.png"))]
        pairs = [(a, b) for a, b in itertools.combinations(raws, 2) if not np.array_equal(a, b)]
        corr = np.median([_lag1(a - b) for a, b in pairs], axis=0)
        sigma = [
            np.sqrt(np.mean(np.maximum(e.a * r + e.b, 0))) for r in raws for e in [estimate(r)]
        ]
        rows.append({"type": kind, "corr": corr, "sigma": float(np.mean(sigma))})
    return rows


def choose(rows: list[dict]) -> str:
    """The noisiest type whose noise looks pixel-wise independent."""
    ok = [r for r in rows if max(r["corr"]) < MAX_CORR]
    return max(ok, key=lambda r: r["sigma"])["type"]


def vst_nlm(raw: np.ndarray, h: float) -> np.ndarray:
    """GAT with (a, b) estimated on ``raw``, NLM at unit sigma, exact unbiased inverse."""
    est = estimate(raw)
    stable = gat_forward(raw, est.a, est.b)
    smooth = denoise_nl_means(
        stable, patch_size=5, patch_distance=6, h=h, sigma=1.0, fast_mode=True
    )
    return np.clip(gat_inverse(smooth, est.a, est.b, method="exact_unbiased"), 0, 255)


def make_config(
    kind: str,
    steps: int,
    output: Path,
    checkpoint_dir: Path | None,
    init_weights: Path | None = None,
    normalisation: str = "percentile",
    method: str = "n2v",
) -> TrainConfig:
    """The experiment's training configuration (gt only scores the curve)."""
    start = f", starting from {init_weights.name}" if init_weights else ""
    long, _, mode, _ = METHODS[method]
    return TrainConfig(
        name=f"{method}-{kind}",
        description=f"{long} DnCNN fitted on the 4 raw fmd_dev {kind} images (no gt){start}.",
        output=output,
        init_weights=init_weights,
        depth=10,
        width=32,
        mode=mode,
        noisy_dir=FMD / "raw",
        noisy_glob=f"{kind}_*.png",
        clean_dir=FMD / "gt",
        clean_glob=f"{kind}_*.png",
        val_keys=["1", "2", "3", "4"],
        val_in_training=True,
        **({"mask_fraction": 0.02, "mask_radius": 2} if method == "n2v" else {}),
        normalisation=normalisation,
        steps=steps,
        batch_size=16,
        patch_size=64,
        lr=1e-3,
        lr_min_ratio=0.01,
        seed=0,
        device="cpu",
        channels_last=True,
        val_every=max(1, steps // 8),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=100,
    )


def calibrate(kind: str, minutes: float, output: Path, method: str) -> int:
    """Steps that fit in ``minutes``: time 3 and 13 steps, the difference is 10 steps."""
    probe = make_config(kind, 1000, output, None, method=method)
    probe = probe.model_copy(update={"val_keys": []})
    times = []
    for n in (3, 13):
        t0 = time.perf_counter()
        train(probe, progress=False, stop_at=n)
        times.append(time.perf_counter() - t0)
    return max(1, int(minutes * 60 / ((times[1] - times[0]) / 10) / 1.05))


def report(kind, rows, scores, h_means, result, command, method) -> str:
    """Markdown: choice table, per-image scores, h sweep, training facts, PSNR curve."""
    best_h = max(h_means, key=lambda h: h_means[h][0])
    long, short, _, loss = METHODS[method]
    lines = [
        f"# Self-supervised ({long}) DnCNN on fmd_dev `{kind}` vs VST + NLM",
        "",
        f"Command (repository root, one CPU thread): `{command}`",
        "",
        "## Type choice (raw images only)",
        "",
        "| type | lag-1 corr. of raw-raw difference (H / V) | est. noise std (grey) |",
        "|---|---:|---:|",
        *(
            f"| {r['type']} | {r['corr'][0]:.3f} / {r['corr'][1]:.3f} | {r['sigma']:.2f} |"
            for r in rows
        ),
        "",
        f"Chosen: **{kind}**, the noisiest type whose noise difference has lag-1 correlation "
        f"below {MAX_CORR} (Noise2Void needs pixel-wise independent noise; the WideField "
        "types fail that by far).",
        "",
        f"## PSNR (dB) / SSIM, FMD scoring; VST + NLM at h = {best_h}",
        "",
        f"| image | noisy | VST + NLM | {short} DnCNN | {short} DnCNN + 8x TTA |",
        "|---|---:|---:|---:|---:|",
    ]
    methods = ("noisy", f"nlm{best_h}", "model", "tta")
    mean = {m: np.mean([v[m] for v in scores.values()], axis=0) for m in methods}
    for name, s in [*scores.items(), ("**mean**", mean)]:
        cells = " | ".join(f"{s[m][0]:.2f} / {s[m][1]:.3f}" for m in methods)
        lines.append(f"| {name} | {cells} |")
    gain = h_means[best_h][0]
    fitted = np.mean([v["model"][0] for v in scores.values()])
    lines += [
        "",
        f"{short} - VST+NLM: **{fitted - gain:+.2f} dB** "
        + ("(beats it)." if fitted > gain else "(does NOT beat it)."),
        "",
        "VST + NLM mean PSNR over the h grid (h in units of the unit noise std): "
        + ", ".join(f"h={h}: {v[0]:.2f}" for h, v in h_means.items()),
        "",
        "## Training",
        "",
    ]
    t = result.metadata.training if result.metadata else {}
    data = (
        f"mask share {1 / 49:.4f} (one pixel per 7x7 cell), replacement radius 2"
        if method == "n2v"
        else "each raw capture against the mean of the other 3 (no gt)"
    )
    lines += [
        f"- {result.step} steps, batch 16 x 64x64, {data}, Adam lr 1e-3 cosine to 1e-5, seed 0",
        f"- DnCNN depth 10 width 32 with batch norm, CPU, {torch.get_num_threads()} thread, "
        f"channels-last, {result.metadata.normalisation.method if result.metadata else '?'} "
        "input normalisation",
        *(
            [f"- Fine-tuned from `{t['init_weights']['path']}` ({t['init_weights']['digest']})"]
            if t.get("init_weights")
            else ["- Trained from scratch (random initialisation)"]
        ),
        f"- Time in the training loop: {result.seconds / 60:.1f} min "
        f"({result.seconds / max(result.step, 1):.2f} s/step, summed over resumed sessions; "
        "the machine's 2 cores were shared with other jobs)",
        f"- Final training loss ({loss}, normalised units): {t.get('final_loss', 0):.5f}",
        "",
        "| step | mean PSNR vs gt, whole 512x512 images (dB) |",
        "|---:|---:|",
        *(f"| {s} | {v:.2f} |" for s, v in result.val_psnr),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--type", default="auto", help="fmd_dev sample type, or auto")
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="n2v",
        help="n2v: Noise2Void blind spot; n2n: Noise2Noise on the type's 4 raw captures",
    )
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimisation steps")
    budget.add_argument("--minutes", type=float, help="time budget; picks --steps")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--init-weights", default=None, help="fine-tune: model name or path")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown written here")
    parser.add_argument(
        "--normalisation",
        choices=["percentile", "noise"],
        default="percentile",
        help="model input normalisation (models.weights.Normalisation)",
    )
    args = parser.parse_args()
    if not (FMD / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {FMD} (set FLUODEN_DATA)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    rows = survey()
    kind = choose(rows) if args.type == "auto" else args.type
    steps = args.steps or calibrate(kind, args.minutes, args.output, args.method)
    logging.info("type %s, %d steps", kind, steps)
    init = resolve_weights(args.init_weights) if args.init_weights else None
    config = make_config(
        kind, steps, args.output, args.checkpoint_dir, init, args.normalisation, args.method
    )
    result = train(config, progress=not args.no_progress)
    loaded = load_model(args.output)
    model, norm = loaded.module, loaded.metadata.normalisation
    scores: dict[str, dict] = {}
    for path in sorted((FMD / "raw").glob(f"{kind}_*.png")):
        raw, gt = _read(path), _read(FMD / "gt" / path.name)
        s = {
            "noisy": fmd_scores(raw, gt),
            "model": fmd_scores(denoise_whole(model, raw, clip=(0, 255), normalisation=norm), gt),
            "tta": fmd_scores(
                denoise_whole(Dihedral(model), raw, clip=(0, 255), normalisation=norm), gt
            ),
        }
        s |= {f"nlm{h}": fmd_scores(vst_nlm(raw, h), gt) for h in H_GRID}
        scores[path.stem] = s
        logging.info("%s %s", path.stem, {k: round(v[0], 2) for k, v in s.items()})
    h_means = {h: np.mean([s[f"nlm{h}"] for s in scores.values()], axis=0) for h in H_GRID}
    command = (
        f"OMP_NUM_THREADS={args.threads} PYTHONPATH=. python benchmarks/self_supervised.py "
        f"--type {kind} --method {args.method} --steps {steps} --threads {args.threads}"
        + (f" --checkpoint-dir {args.checkpoint_dir}" if args.checkpoint_dir else "")
        + (f" --init-weights {args.init_weights}" if args.init_weights else "")
        + (f" --normalisation {args.normalisation}" if args.normalisation != "percentile" else "")
        + (f" --output {args.output}" if args.output != OUTPUT else "")
        + (f" --results {args.results}" if args.results != RESULTS else "")
    )
    text = report(kind, rows, scores, h_means, result, command, args.method)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

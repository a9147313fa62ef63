"""Experiment 3: CNN_whole against CNN_masked, same architecture and training budget.

Two DnCNNs are trained with :func:`fluoden_batch.train.train` from the same configuration
except the mode: ``mode="supervised"`` (CNN_whole, whole images) and ``mode="masked"``
(CNN_masked: trained on the masked parts of ``fluoden_batch/clustering/masked.py`` with
``clusters`` and ``mask_sigma``). Same depth, width, steps, batch, data, seed.

- full: leave-types-out on FMD, the configuration of ``benchmarks/train_fmd.py --fold A``
  (FMD group A types at every noise level -> gt, W2S channel-0 pairs, 30 % synthetic
  patches), scored on the group B types it never saw (raw..avg16); the two trainings
  run side by side, one process and one thread each.
- quick: ~20 steps of a tiny DnCNN on synthetic pairs (demo planes), scored on held-out
  synthetic planes. It checks the code path, not the science.

Each model is scored with the whole protocol and with the masked protocol (K clusters).
"""

from __future__ import annotations

import tempfile
import typing
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from common import (
    LEVELS,
    ROOT,
    Context,
    Image,
    ModelSet,
    Report,
    dncnn_masked,
    dncnn_whole,
    fmd_images,
    fmd_missing,
    mean_scores,
    pyplot,
    score,
    synthetic_image,
    table,
    w2s_missing,
)

NAME = "exp3_whole_vs_masked"
TITLE = "Experiment 3: CNN_whole against CNN_masked (same architecture and budget)"


def masked_training_status() -> str | None:
    """None when ``TrainConfig`` offers ``mode="masked"`` with ``clusters`` and
    ``mask_sigma``, else why not."""
    from fluoden_batch.train import TrainConfig

    fields = TrainConfig.model_fields
    modes = typing.get_args(fields["mode"].annotation)
    missing = [f for f in ("clusters", "mask_sigma") if f not in fields]
    if "masked" not in modes or missing:
        return (
            "CNN_masked not trained: this fluoden_batch has no masked training yet "
            f"(TrainConfig.mode offers {list(modes)}"
            + (f", fields {missing} missing" if missing else "")
            + ")."
        )
    return None


def _train_one(config: dict, threads: int) -> tuple[str, float, int, list]:
    import torch

    from fluoden_batch.train import TrainConfig, train

    torch.set_num_threads(threads)
    result = train(TrainConfig.model_validate(config), progress=False)
    return str(result.output), result.seconds, result.step, result.val_psnr


def _synthetic_pairs(folder: Path, n: int, size: int) -> None:
    """Clean demo planes and noisy versions (a=32, b=400 and a=8, b=100) as uint16 TIFF."""
    import tifffile

    for sub in ("clean", "noisy"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a, b = (32, 400) if i % 2 == 0 else (8, 100)
        im = synthetic_image(a, b, seed=100 + i, size=size)
        tifffile.imwrite(folder / "clean" / f"img_{i}.tif", np.rint(im.clean).astype(np.uint16))
        tifffile.imwrite(folder / "noisy" / f"img_{i}.tif", im.noisy.astype(np.uint16))


def configs(ctx: Context, work: Path) -> tuple[dict, dict | None, str | None, list[str]]:
    """(whole config, masked config or None, why masked is absent, description lines)."""
    from fluoden_batch.train import TrainConfig

    if ctx.quick:
        _synthetic_pairs(work / "data", 6, 128)
        base = TrainConfig(
            name="suite-exp3-whole",
            output=work / "whole.safetensors",
            depth=5,
            width=16,
            mode="supervised",
            noisy_dir=work / "data" / "noisy",
            noisy_glob="img_*.tif",
            clean_dir=work / "data" / "clean",
            clean_glob="img_*.tif",
            val_keys=["5"],
            steps=ctx.steps,
            batch_size=4,
            patch_size=32,
            seed=0,
            device="cpu",
            channels_last=True,
            val_every=max(1, ctx.steps),
        )
        about = [
            "training: 6 synthetic demo planes of 128^2 (a=32, b=400 and a=8, b=100 "
            "alternating), one held out for validation; DnCNN 5x16, batch 4 x 32^2, "
            f"{ctx.steps} steps, seed 0"
        ]
    else:
        from train_fmd import GROUPS, make_config

        base = make_config(
            "A",
            work / "whole.safetensors",
            ctx.steps,
            work / "ckpt-whole",
            depth=10,
            width=32,
            synthetic=0.3,
        )
        base = base.model_copy(update={"name": "suite-exp3-whole", "device": "cpu"})
        about = [
            f"training: `benchmarks/train_fmd.py` fold A configuration: FMD types "
            f"{', '.join(GROUPS['A'])} (raw..avg16 -> gt, capture 4 of raw held out for "
            "validation), W2S channel-0 pairs avg1 -> avg400, 30 % synthetic "
            f"Poisson-Gaussian patches; DnCNN 10x32, batch 16 x 64^2, {ctx.steps} steps, "
            "Adam 1e-3 cosine, seed 0, CPU, one thread per model"
        ]
    whole = base.model_dump()
    why = masked_training_status()
    masked = None
    if why is None:
        values = whole | {
            "name": "suite-exp3-masked",
            "output": work / "masked.safetensors",
            "mode": "masked",
            "clusters": [ctx.k],
            "mask_sigma": ctx.mask_sigma,
        }
        if whole.get("checkpoint_dir"):
            values["checkpoint_dir"] = work / "ckpt-masked"
        try:
            masked = TrainConfig.model_validate(values).model_dump()
        except Exception as exc:
            why = f"CNN_masked not trained: the masked configuration is refused ({exc})."
    return whole, masked, why, about


def eval_images(ctx: Context) -> tuple[list[Image], str]:
    if ctx.quick:
        ims = [
            synthetic_image(a, b, seed=s, size=128)
            for s in (200, 201)
            for a, b in ((32, 400), (8, 100))
        ]
        return ims, "4 held-out synthetic planes 128^2 (seeds 200-201; a, b = 32, 400 and 8, 100)"
    from train_fmd import held_out_types

    types = held_out_types("A")
    ims = [im for lv in LEVELS for im in fmd_images(lv, types=types, per_type=2)]
    return ims, (
        f"FMD group B types never seen in training ({', '.join(types)}), captures 1-2, "
        f"levels {', '.join(LEVELS)} ({len(ims)} images); FMD scoring against gt"
    )


def run(ctx: Context) -> Report:
    rep = Report(ctx, NAME, TITLE)
    if not ctx.quick and ((msg := fmd_missing()) or (msg := w2s_missing())):
        rep.skip(msg)
        return rep
    why = masked_training_status()
    if why and not ctx.quick:
        rep.skip(why + " Experiment 3 skipped: nothing to compare CNN_whole with.")
        return rep
    tmp = tempfile.TemporaryDirectory() if ctx.quick else None
    work = Path(tmp.name) if tmp else ROOT / "runs" / "suite-exp3"
    work.mkdir(parents=True, exist_ok=True)
    try:
        whole_cfg, masked_cfg, why, about = configs(ctx, work)
        rep.data += about
        if why:
            rep.skip(why)
        jobs = {"CNN_whole": whole_cfg} | ({"CNN_masked": masked_cfg} if masked_cfg else {})
        trained = _train_all(jobs, ctx)
        for name, (out, seconds, steps, val) in trained.items():
            last = f"{val[-1][1]:.2f} dB" if val else "-"
            rep.params.append(
                f"{name}: `{Path(out).name}`, {steps} steps in {seconds / 60:.1f} min, last "
                f"validation PSNR {last}"
            )
        images, what = eval_images(ctx)
        rep.data.append("evaluation: " + what)
        rep.params.append(
            f"scoring protocols: whole; masked with K = {ctx.k}, sigma = {ctx.mask_sigma} px "
            "(K-means centres of each plane)"
        )
        _evaluate(rep, ctx, trained, images)
    finally:
        if tmp:
            tmp.cleanup()
    return rep


def _train_all(jobs: dict, ctx: Context) -> dict:
    if ctx.quick or len(jobs) == 1:
        return {name: _train_one(cfg, ctx.threads) for name, cfg in jobs.items()}
    with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(_train_one, cfg, 1) for name, cfg in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def _evaluate(rep: Report, ctx: Context, trained: dict, images: list[Image]) -> None:
    levels = list(dict.fromkeys(im.level for im in images))
    rows, series = [], {}
    for name, (out, *_rest) in trained.items():
        models = ModelSet(out)
        for proto, fn in (
            ("whole", dncnn_whole(models)),
            (f"masked K={ctx.k}", dncnn_masked(models, ctx.k, ctx.mask_sigma)),
        ):
            label = f"{name} ({Path(out).name}), {proto}"
            cells, ys = [], []
            for lv in levels:
                s = mean_scores([score(im, label, fn) for im in images if im.level == lv])
                n = mean_scores(
                    [score(im, "noisy", lambda im: im.noisy) for im in images if im.level == lv]
                )
                cells.append(f"{s.psnr:.2f} / {s.ssim:.3f} ({s.psnr - n.psnr:+.2f})")
                ys.append(s.psnr - n.psnr)
            rows.append([f"{name}, {proto} protocol", *cells])
            series[f"{name}, {proto}"] = ys
    noisy = [
        mean_scores([score(im, "noisy", lambda im: im.noisy) for im in images if im.level == lv])
        for lv in levels
    ]
    rows.insert(0, ["noisy input", *(f"{s.psnr:.2f} / {s.ssim:.3f}" for s in noisy)])
    rep.add(
        "## PSNR (dB) / SSIM (gain over the noisy input), mean over the evaluation images",
        "",
        *table(["model, protocol", *levels], rows),
        "",
    )
    if "CNN_masked" in trained:
        w = np.array(series["CNN_whole, whole"])
        m = np.array(series[f"CNN_masked, masked K={ctx.k}"])
        rep.add(
            "CNN_masked (masked protocol) - CNN_whole (whole protocol): "
            + ", ".join(f"{lv} {d:+.2f} dB" for lv, d in zip(levels, m - w, strict=True))
            + f"; mean {np.mean(m - w):+.2f} dB.",
            "",
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, ys in series.items():
        ax.plot(levels, ys, marker="o", label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("PSNR gain over noisy (dB)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.82))
    rep.figure(fig, subtitle="held-out data; same architecture, steps, data and seed")

"""Experiment 2: PSNR and SSIM against the number of K-means clusters K (masked protocol).

For K = 1..8 every image is denoised with the masked protocol of
``fluoden_batch/clustering/masked.py``: K-means centres of the plane, labels of the
Gaussian-smoothed plane (sigma 2 px by default), each cluster's part (the plane inside the cluster,
the smoothed plane clipped to the cluster's intensity band outside) through the DnCNN
with the normalisation of the full plane, merged by label. K = 1 is the whole-image
protocol. The masked-trained model is added where its weights exist.
"""

from __future__ import annotations

import numpy as np
from common import (
    Context,
    Image,
    Report,
    dncnn_masked,
    fmd_images,
    fmd_missing,
    mean_scores,
    pyplot,
    score,
    synthetic_image,
    table,
    try_model,
)

NAME = "exp2_clusters_k"
TITLE = "Experiment 2: PSNR / SSIM against the number of clusters K (masked protocol)"


def run(ctx: Context) -> Report:
    rep = Report(ctx, NAME, TITLE)
    q = ctx.quick
    ks = [1, 2, 3, 4] if q else list(range(1, 9))
    models, why = try_model(ctx.model)
    if models is None:
        raise RuntimeError(f"model {ctx.model!r} unavailable: {why}")
    variants = {f"masked, {models.label}": models}
    masked_models, why = try_model(ctx.masked_model)
    if masked_models is None:
        rep.skip(f"Masked-trained model rows skipped: `{ctx.masked_model}` unavailable ({why}).")
    else:
        variants[f"masked, {masked_models.label} (masked-trained)"] = masked_models
    size = 256 if q else 512
    datasets: dict[str, list[Image]] = {
        "synthetic a=32, b=400": [synthetic_image(32, 400, seed=s, size=size) for s in (0, 1)]
    }
    rep.data.append(
        f"synthetic: 2 demo planes (seeds 0-1, {size}^2, 0..4095), a=32, b=400; "
        "PSNR/SSIM of the whole plane, data_range 4095"
    )
    if msg := fmd_missing():
        rep.skip(msg)
    else:
        per = 1 if q else 2
        datasets["FMD raw"] = fmd_images("raw", per_type=per, crop=256 if q else None)
        rep.data.append(
            f"FMD raw: captures 1..{per} of each of the 6 `fmd_dev` types "
            f"({len(datasets['FMD raw'])} images{', 256^2 crops' if q else ''}), gt = 50-frame "
            "mean; FMD scoring (mean over 256x256 crops, peak 255), output clipped to 0..255"
        )
    rep.params += [
        f"K = {ks[0]}..{ks[-1]}; K-means centres per plane (`cluster_image(plane, 'kmeans', "
        f"k=K, seed=0).means`), labels of the plane smoothed with sigma = {ctx.mask_sigma} px",
        f"models: {'; '.join(m.describe() for m in variants.values())}",
        f"inference on the whole 512x512 plane (no tiling), CPU, {ctx.threads} torch thread(s)",
    ]
    # results[dataset][variant][kind][K] = Score (mean over the images of that kind)
    results: dict = {}
    for dname, images in datasets.items():
        kinds = sorted({im.kind for im in images})
        noisy = {
            kind: mean_scores(
                [score(im, "noisy", lambda im: im.noisy) for im in images if im.kind == kind]
            )
            for kind in kinds
        }
        results[dname] = {"noisy": {kind: {0: s} for kind, s in noisy.items()}}
        for vname, m in variants.items():
            per_kind: dict = {kind: {} for kind in [*kinds, "mean"]}
            for k in ks:
                fn = dncnn_masked(m, k, ctx.mask_sigma)
                label = f"{vname}, K={k}, sigma={ctx.mask_sigma}"
                all_scores = []
                for kind in kinds:
                    s = [score(im, label, fn) for im in images if im.kind == kind]
                    per_kind[kind][k] = mean_scores(s)
                    all_scores += s
                per_kind["mean"][k] = mean_scores(all_scores)
                print(
                    f"  exp2: {dname} / {vname} / K={k}: {per_kind['mean'][k].psnr:.2f} dB",
                    flush=True,
                )
            results[dname][vname] = per_kind
    for dname, res in results.items():
        rep.add(f"## {dname}: PSNR (dB) / SSIM, mean over images", "")
        for vname in variants:
            per_kind = res[vname]
            kinds = list(per_kind)
            header = ["K", *kinds]
            rows = [
                [k, *(f"{per_kind[kd][k].psnr:.2f} / {per_kind[kd][k].ssim:.3f}" for kd in kinds)]
                for k in ks
            ]
            noisy = res["noisy"]
            mean_noisy = mean_scores([noisy[kd][0] for kd in noisy])
            rows.append(
                [
                    "noisy",
                    *(f"{(noisy[kd][0] if kd in noisy else mean_noisy).psnr:.2f}" for kd in kinds),
                ]
            )
            best = {kd: max(ks, key=lambda k, kd=kd: per_kind[kd][k].psnr) for kd in kinds}
            rows.append(["best K (PSNR)", *(best[kd] for kd in kinds)])
            rep.add(f"### {vname}", "", *table(header, rows), "")
        rep.add(*_conclusions(res, variants, ks), "")
    _plot(rep, results, variants, ks)
    return rep


def _conclusions(res: dict, variants: dict, ks: list[int]) -> list[str]:
    lines = []
    for vname in variants:
        mean = res[vname]["mean"]
        best = max(ks, key=lambda k: mean[k].psnr)
        best_ssim = max(ks, key=lambda k: mean[k].ssim)
        lines.append(
            f"- {vname}: mean PSNR {mean[1].psnr:.2f} dB at K=1 (whole), best "
            f"{mean[best].psnr:.2f} dB at K={best} ({mean[best].psnr - mean[1].psnr:+.2f} dB); "
            f"SSIM {mean[1].ssim:.3f} at K=1, best {mean[best_ssim].ssim:.3f} at "
            f"K={best_ssim}; per-type best K in the table above."
        )
    return lines


def _plot(rep: Report, results: dict, variants: dict, ks: list[int]) -> None:
    plt = pyplot()
    dnames = list(results)
    fig, axes = plt.subplots(2, len(dnames), figsize=(5.2 * len(dnames), 6.2), squeeze=False)
    styles = ["-", "--", ":"]
    for j, dname in enumerate(dnames):
        res = results[dname]
        for i, metric in enumerate(("psnr", "ssim")):
            ax = axes[i, j]
            for v, vname in enumerate(variants):
                per_kind = res[vname]
                for n, kind in enumerate(per_kind):
                    ys = [getattr(per_kind[kind][k], metric) for k in ks]
                    is_mean = kind == "mean"
                    ax.plot(
                        ks,
                        ys,
                        styles[v % 3],
                        color="k" if is_mean else f"C{n}",
                        lw=2.2 if is_mean else 1.0,
                        marker="o",
                        ms=3,
                        label=(kind if v == 0 else None) if len(per_kind) > 2 or is_mean else None,
                    )
            noisy = np.mean([getattr(s[0], metric) for s in res["noisy"].values()])
            ax.axhline(
                noisy, color="grey", lw=0.8, ls="-.", label="noisy (mean)" if i == 0 else None
            )
            ax.set_xlabel("K (clusters)", fontsize=8)
            ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM", fontsize=8)
            ax.set_title(dname, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.legend(fontsize=6, ncol=2)
    names = "; ".join(f"{styles[v % 3]} {vn}" for v, vn in enumerate(variants))
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    rep.figure(fig, subtitle=f"line styles: {names}; black = mean over types")

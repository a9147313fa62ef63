"""Experiment 4: robustness to the noise level.

Every protocol of :func:`common.protocol_set` (noisy input, NLM, VST+NLM, wavelet, BM3D
where installed, DnCNN whole / masked / VST, the masked-trained model where present) on

- FMD at every noise level: ``raw`` (1 frame), ``avg2``, ``avg4``, ``avg8``, ``avg16``
  (means of 2..16 frames), each against the 50-frame gt;
- a grid of synthetic Poisson-Gaussian noise (gain ``a``, read variance ``b``) on demo
  planes (12-bit scale, 0..4095).

PSNR / SSIM per protocol and level (mean over the images of the level), the gain over
the noisy input, and a test of the seed study's claim that clustering (the masked
protocol) makes the models robust to the noise level: per protocol the spread (max - min)
of the gain across levels, and at each level whether masked beats whole.
"""

from __future__ import annotations

import numpy as np
from common import (
    LEVELS,
    Context,
    Image,
    Report,
    Score,
    fmd_crops,
    fmd_missing,
    fmd_types,
    fmt,
    mean_scores,
    protocol_report,
    pyplot,
    score_all,
    synthetic_image,
    table,
)

NAME = "exp4_robustness"
TITLE = "Experiment 4: robustness to the noise level (FMD raw..avg16, synthetic (a, b) grid)"
NOISY = "noisy input"


def _datasets(ctx: Context, rep: Report) -> dict[str, dict[str, list[Image]]]:
    """dataset name -> level -> images, with the data lines of the report."""
    q = ctx.quick
    out: dict[str, dict[str, list[Image]]] = {}
    if msg := fmd_missing():
        rep.skip(msg + " Only the synthetic grid is run.")
    else:
        all_types = fmd_types()
        types = [all_types[0], all_types[-1]] if q else all_types
        levels = ("raw", "avg16") if q else LEVELS
        crop = 128 if q else None
        fmd = {lv: fmd_crops(lv, types, 1 if q else None, crop) for lv in levels}
        n = {lv: len(ims) for lv, ims in fmd.items()}
        out["FMD"] = fmd
        rep.data.append(
            f"FMD (`fmd_dev`): types {', '.join(types)}; "
            + ("capture 1" if q else "all captures")
            + f" of each; levels {', '.join(levels)} ({', '.join(f'{lv} {n[lv]}' for lv in n)} "
            "images"
            + (f", top-left {crop}^2 crops" if crop else ", 512^2")
            + "); reference = the 50-frame gt; FMD scoring (mean over 256x256 crops, or the "
            "whole crop when smaller; peak 255)"
        )
    a_vals = (4, 64) if q else (1, 4, 16, 64)
    b_vals = (0, 1000) if q else (0, 100, 1000)
    seeds = (0,) if q else (0, 1)
    size = 128 if q else 512
    out["synthetic"] = {
        f"a={a:g}, b={b:g}": [synthetic_image(a, b, seed=s, size=size) for s in seeds]
        for a in a_vals
        for b in b_vals
    }
    rep.data.append(
        f"synthetic: demo clean planes (`fluoden_batch.demo.clean_plane`, seeds "
        f"{', '.join(map(str, seeds))}, {size}^2, 0..4095) under Poisson-Gaussian noise "
        f"(`fluoden_batch.noise.simulate`, variance a x + b, clipped, rounded) on the grid "
        f"a in {{{', '.join(map(str, a_vals))}}} x b in {{{', '.join(map(str, b_vals))}}} "
        f"({len(a_vals) * len(b_vals)} levels x {len(seeds)} image(s)); whole-plane PSNR / "
        "SSIM, data_range 4095"
    )
    return out


def run(ctx: Context) -> Report:
    rep, protos = protocol_report(ctx, NAME, TITLE)
    datasets = _datasets(ctx, rep)
    rep.params += [
        "mean over the images of a level; gain = protocol PSNR - noisy-input PSNR (same "
        "images); spread = max - min of the gain over the levels of a data set (0 = "
        "equally useful at every noise level)",
        "claim tested: 'clustering (masked protocol) makes models robust to noise level': "
        "it holds on a data set when the masked protocol's gain spread is smaller than the "
        "whole protocol's (same model) and masked is not below whole at any level",
    ]
    # res[dataset][protocol][level] = mean Score
    res: dict[str, dict[str, dict[str, Score]]] = {}
    for dname, by_level in datasets.items():
        res[dname] = {name: {} for name in protos}
        for lv, ims in by_level.items():
            kept, per, left_out = score_all(ims, protos)
            for msg in left_out:
                rep.skip(msg)
            if not kept:
                rep.skip(f"{dname} level {lv} left out: no image on which every protocol runs.")
                continue
            for name in protos:
                res[dname][name][lv] = mean_scores(per[name])
        if not res[dname][NOISY]:
            del res[dname]
            continue
        for name, row in res[dname].items():
            print(
                f"  exp4: {dname} / {name}: "
                + ", ".join(f"{lv} {s.psnr:.2f}" for lv, s in row.items()),
                flush=True,
            )
    whole = next(n for n in protos if n.startswith("DnCNN whole"))
    masked = next(
        n for n in protos if n.startswith(f"DnCNN masked K={ctx.k}") and "masked-trained" not in n
    )
    trained = next((n for n in protos if "masked-trained" in n), None)
    for dname, per in res.items():
        _tables(rep, dname, per)
    rep.add(*_claim(res, whole, masked, trained, ctx.quick))
    if "FMD" in res:
        _plot_levels(rep, res["FMD"])
    if "synthetic" in res:
        _plot_grid(rep, res["synthetic"])
    return rep


def _gains(per: dict[str, dict[str, Score]]) -> dict[str, np.ndarray]:
    noisy = np.array([s.psnr for s in per[NOISY].values()])
    return {
        name: np.array([s.psnr for s in row.values()]) - noisy
        for name, row in per.items()
        if name != NOISY
    }


def _tables(rep: Report, dname: str, per: dict[str, dict[str, Score]]) -> None:
    levels = list(next(iter(per.values())))
    rows = [
        [name, *(f"{row[lv].psnr:.2f} / {row[lv].ssim:.3f}" for lv in levels)]
        for name, row in per.items()
    ]
    rep.add(
        f"## {dname}: PSNR (dB) / SSIM per level, mean over images",
        "",
        *table(["protocol", *levels], rows),
        "",
    )
    gains = _gains(per)
    rows = [
        [
            name,
            *(f"{x:+.2f}" for x in g),
            f"{g.mean():+.2f}",
            f"{g.min():+.2f} ({levels[int(np.argmin(g))]})",
            f"{g.max() - g.min():.2f}",
        ]
        for name, g in gains.items()
    ]
    rep.add(
        f"### {dname}: PSNR gain over the noisy input (dB)",
        "",
        *table(["protocol", *levels, "mean", "worst (level)", "spread max-min"], rows),
        "",
    )


def _claim(res: dict, whole: str, masked: str, trained: str | None, quick: bool) -> list[str]:
    lines = ["## Is the masked protocol more robust to the noise level?", ""]
    rows = []
    for dname, per in res.items():
        levels = list(per[NOISY])
        gains = _gains(per)
        contenders = [(masked, "masked")] + ([(trained, "masked-trained")] if trained else [])
        for name, short in contenders:
            d = gains[name] - gains[whole]
            rows.append([dname, f"{short} - whole", *(f"{x:+.2f}" for x in d), f"{d.mean():+.2f}"])
        sw, sm = np.ptp(gains[whole]), np.ptp(gains[masked])
        d = gains[masked] - gains[whole]
        wins = [lv for lv, x in zip(levels, d, strict=True) if x > 0]
        losses = [lv for lv, x in zip(levels, d, strict=True) if x < 0]
        helping = [n for n, g in gains.items() if g.min() > 0]
        steadiest = min(helping, key=lambda n: np.ptp(gains[n]), default=None)
        holds = sm < sw and not losses
        if holds:
            verdict = "the claim holds here"
        elif sm < sw:
            verdict = (
                "the claim does not hold here: the spread is smaller, but masked loses to "
                f"whole at {'; '.join(losses)}, so the smaller spread is not more robustness"
            )
        else:
            verdict = (
                "the claim does not hold here: the masked protocol's gain varies more across "
                "the levels than the whole protocol's"
            )
        lines.append(
            f"- {dname}: gain spread across the {len(levels)} levels: whole "
            f"{sw:.2f} dB, masked {sm:.2f} dB; masked beats whole at {len(wins)}/{len(levels)} "
            f"levels" + (f" ({'; '.join(wins)})" if wins else "") + f", mean difference "
            f"{d.mean():+.2f} dB (from {d.min():+.2f} to {d.max():+.2f}): {verdict}. "
            + (
                f"Smallest spread among the protocols that gain at every level: {steadiest} "
                f"({np.ptp(gains[steadiest]):.2f} dB, mean gain {gains[steadiest].mean():+.2f} "
                "dB)."
                if steadiest
                else "No protocol gains over the noisy input at every level."
            )
        )
        if trained:
            st = np.ptp(gains[trained])
            dt = gains[trained] - gains[whole]
            lines.append(
                f"- {dname}, masked-trained model with the masked protocol: spread {st:.2f} dB "
                f"(whole {sw:.2f}), beats whole at {int((dt > 0).sum())}/{len(levels)} levels, "
                f"mean difference {dt.mean():+.2f} dB: by the same test the claim "
                + ("holds" if st < sw and not (dt < 0).any() else "does not hold")
                + " for it."
            )
    if quick:
        lines.append(
            "- Quick mode: one image (a 128^2 crop) per level and type; these numbers check "
            "the code path, they are not evidence for or against the claim."
        )
    lines.append("")
    for dname in res:
        levels = list(res[dname][NOISY])
        sub = [r for r in rows if r[0] == dname]
        lines += [
            f"### {dname}: masked - whole, gain difference per level (dB; > 0: masked better)",
            "",
            *table(["data", "comparison", *levels, "mean"], sub, "ll" + "r" * (len(levels) + 1)),
            "",
        ]
    return lines


def _plot_levels(rep: Report, per: dict[str, dict[str, Score]]) -> None:
    plt = pyplot()
    levels = list(per[NOISY])
    gains = _gains(per)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for i, (name, row) in enumerate(per.items()):
        style = dict(marker="o", ms=3, color=f"C{i % 10}", ls="--" if i >= 10 else "-")
        axes[0].plot(levels, [row[lv].psnr for lv in levels], label=name, **style)
        if name != NOISY:
            axes[1].plot(levels, gains[name], **style)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[0].set_ylabel("PSNR (dB)", fontsize=8)
    axes[1].set_ylabel("PSNR gain over noisy input (dB)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("FMD level (frames averaged)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    fig.tight_layout(rect=(0, 0, 1, 0.84))
    rep.figure(fig, "_fmd", subtitle="FMD: PSNR and gain against the noise level")


def _plot_grid(rep: Report, per: dict[str, dict[str, Score]]) -> None:
    plt = pyplot()
    levels = list(per[NOISY])
    a_vals = list(dict.fromkeys(lv.split(",")[0].split("=")[1] for lv in levels))
    b_vals = list(dict.fromkeys(lv.split(",")[1].split("=")[1] for lv in levels))
    gains = _gains(per)
    panels = [(f"{NOISY}: PSNR (dB)", np.array([s.psnr for s in per[NOISY].values()]))]
    panels += [(f"{name}: gain (dB)", g) for name, g in gains.items()]
    ncol = 4
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.6 * nrow), squeeze=False)
    for ax, (title, values) in zip(axes.flat, panels, strict=False):
        grid = values.reshape(len(a_vals), len(b_vals)).T  # rows b, columns a
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for (r, c), v in np.ndenumerate(grid):
            ax.text(c, r, fmt(v, 1), ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(a_vals)), a_vals)
        ax.set_yticks(range(len(b_vals)), b_vals)
        ax.set_xlabel("a (gain)", fontsize=7)
        ax.set_ylabel("b (read variance)", fontsize=7)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    rep.figure(fig, "_synthetic", subtitle="synthetic (a, b) grid: noisy PSNR, gain per protocol")

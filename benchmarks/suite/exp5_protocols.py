"""Experiment 5: protocol comparison on the same images (PSNR, SSIM, seconds per megapixel).

Every protocol of :func:`common.protocol_set` with ``baselines=True`` (noisy input, NLM,
VST+NLM, wavelet, BM3D / VST+BM3D where the optional ``bm3d`` package is installed, DnCNN
whole / masked / VST, the masked-trained model where present, the extra baseline models)
plus a self-supervised (Noise2Void) DnCNN of ``benchmarks/self_supervised.py`` with the
whole protocol where its weights exist, on

- FMD raw frames (single captures) against the 50-frame gt, with a per-type table;
- synthetic Poisson-Gaussian planes (demo clean planes, 12-bit scale).

Seconds per megapixel are the wall time of the protocol on one image (one process,
``ctx.threads`` torch threads, whole-plane inference) over its size; for the memoised
protocols shared with experiment 4 it is the time of their first run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from common import (
    Context,
    Image,
    ModelSet,
    Report,
    Score,
    dncnn_whole,
    fmd_crops,
    fmd_missing,
    mean_scores,
    protocol_report,
    pyplot,
    score_all,
    synthetic_image,
    table,
)

NAME = "exp5_protocols"
TITLE = "Experiment 5: protocol comparison (PSNR, SSIM, seconds per megapixel)"
NOISY = "noisy input"


def _datasets(ctx: Context, rep: Report) -> dict[str, list[Image]]:
    q = ctx.quick
    out: dict[str, list[Image]] = {}
    if msg := fmd_missing():
        rep.skip(msg + " Only the synthetic images are compared.")
    else:
        crop = 256 if q else None
        out["FMD raw"] = fmd_crops("raw", per_type=1 if q else None, crop=crop)
        n_types = len({im.kind for im in out["FMD raw"]})
        rep.data.append(
            f"FMD raw (`fmd_dev/raw`): {len(out['FMD raw'])} single captures ({n_types} types "
            f"x {'1 capture' if q else 'all captures'}"
            + (f", top-left {crop}^2 crops" if crop else ", 512^2")
            + "), reference = 50-frame gt; FMD scoring (mean over 256x256 crops, or the whole "
            "crop when smaller; peak 255)"
        )
    noise = ((4, 1000), (64, 1000)) if q else ((4, 100), (16, 100), (64, 1000))
    seeds = (0,) if q else (0, 1)
    size = 128 if q else 512
    out["synthetic"] = [synthetic_image(a, b, seed=s, size=size) for a, b in noise for s in seeds]
    rep.data.append(
        f"synthetic: {len(out['synthetic'])} demo planes (`fluoden_batch.demo.clean_plane`, "
        f"seeds {', '.join(map(str, seeds))}, {size}^2, 0..4095) under Poisson-Gaussian noise "
        f"(a, b) in {{{', '.join(f'({a}, {b})' for a, b in noise)}}}, clipped and rounded; "
        "whole-plane PSNR / SSIM, data_range 4095"
    )
    return out


def _self_supervised(ctx: Context, rep: Report, protos: dict) -> str | None:
    path = Path(ctx.n2v_model) if ctx.n2v_model else None
    if path is None or not path.is_file():
        rep.skip(
            f"Self-supervised row skipped: no weights at `{path}` (train them with "
            "`python benchmarks/self_supervised.py --output PATH` and pass `--n2v-model PATH`)."
        )
        return None
    try:
        models = ModelSet(str(path))
    except Exception as exc:
        rep.skip(f"Self-supervised row skipped: `{path}` unreadable ({type(exc).__name__}: {exc}).")
        return None
    name = f"self-supervised DnCNN whole [{models.label}]"
    protos[name] = dncnn_whole(models)
    rep.params.append(
        f"self-supervised: {models.describe()}, Noise2Void weights of "
        "`benchmarks/self_supervised.py` (fitted without gt on the raw frames of one FMD "
        "type), whole protocol"
    )
    return name


def run(ctx: Context) -> Report:
    rep, protos = protocol_report(ctx, NAME, TITLE, baselines=True)
    datasets = _datasets(ctx, rep)
    rep.params += [
        "seconds per megapixel: wall time of one protocol call on one image (noise "
        "estimation, clustering, inference and inverse transforms included; image reading "
        "and scoring excluded) over the image's megapixels, total over the images of a data "
        "set; one process",
        f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in _load())} "
        f"on {os.cpu_count()} CPUs (other jobs on the machine slow the timings down)",
    ]
    _self_supervised(ctx, rep, protos)
    _warm_up(protos)
    rep.params.append(
        "warm-up: every protocol run once on a 128^2 synthetic plane (seed 99) before any "
        "timed call (first-call costs of torch and the model are not timed)"
    )
    res: dict[str, dict[str, list[Score]]] = {}
    for dname, images in datasets.items():
        kept, res[dname], left_out = score_all(images, protos)
        for msg in left_out:
            rep.skip(msg)
        datasets[dname] = kept
        if not kept:
            rep.skip(f"{dname} left out: no image on which every protocol runs.")
            del res[dname]
            continue
        for name, items in res[dname].items():
            m = mean_scores(items)
            print(
                f"  exp5: {dname} / {name}: {m.psnr:.2f} dB, {m.ssim:.3f}, {m.s_per_mpx:.3g} s/Mpx",
                flush=True,
            )
    for dname, per in res.items():
        _tables(rep, dname, per, datasets[dname])
    rep.add(*_conclusions(res, datasets if ctx.quick else None))
    _plot(rep, res)
    return rep


def _warm_up(protos: dict) -> None:
    from fluoden_batch.errors import FluodenError

    image = synthetic_image(16, 100, seed=99, size=128)
    for fn in protos.values():
        with contextlib.suppress(FluodenError):
            fn(image)


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def _tables(rep: Report, dname: str, per: dict[str, list[Score]], images: list[Image]) -> None:
    noisy = mean_scores(per[NOISY])
    rows = []
    for name, items in per.items():
        m = mean_scores(items)
        rows.append(
            [
                name,
                f"{m.psnr:.2f}",
                f"{m.ssim:.3f}",
                f"{m.psnr - noisy.psnr:+.2f}",
                f"{m.s_per_mpx:.3g}",
                f"{1 / m.s_per_mpx:.3g}" if m.seconds > 0 else "-",
            ]
        )
    rep.add(
        f"## {dname}: mean over {len(images)} images",
        "",
        *table(["protocol", "PSNR dB", "SSIM", "gain dB", "s / Mpx", "Mpx / s"], rows),
        "",
    )
    key = "kind" if dname.startswith("FMD") else "level"
    groups = list(dict.fromkeys(getattr(im, key) for im in images))
    if len(groups) < 2:
        return
    rows = []
    for name, items in per.items():
        cells = []
        for g in groups:
            sub = [s for s, im in zip(items, images, strict=True) if getattr(im, key) == g]
            m = mean_scores(sub)
            cells.append(f"{m.psnr:.2f} / {m.ssim:.3f}")
        rows.append([name, *cells])
    what = "type" if key == "kind" else "noise (a, b)"
    rep.add(
        f"### {dname}: PSNR (dB) / SSIM per {what}",
        "",
        *table(["protocol", *groups], rows),
        "",
    )


def _pareto(means: dict[str, Score]) -> list[str]:
    """Protocols no other protocol beats in both PSNR and seconds per megapixel."""
    out = []
    for n, s in means.items():
        dominated = any(
            o.psnr >= s.psnr
            and o.s_per_mpx <= s.s_per_mpx
            and (o.psnr, o.s_per_mpx) != (s.psnr, s.s_per_mpx)
            for m, o in means.items()
            if m != n
        )
        if not dominated:
            out.append(n)
    return sorted(out, key=lambda n: means[n].s_per_mpx)


def _conclusions(res: dict, quick: dict[str, list[Image]] | None) -> list[str]:
    lines = ["## What the numbers say", ""]
    for dname, per in res.items():
        means = {n: mean_scores(v) for n, v in per.items()}
        noisy = means[NOISY]
        denoisers = {n: s for n, s in means.items() if n != NOISY}
        best = max(denoisers, key=lambda n: denoisers[n].psnr)
        best_ssim = max(denoisers, key=lambda n: denoisers[n].ssim)
        helping = {n: s for n, s in denoisers.items() if s.psnr > noisy.psnr}
        fastest = min(helping, key=lambda n: helping[n].s_per_mpx, default=None)
        worse = [n for n, s in denoisers.items() if s.psnr <= noisy.psnr]
        b = denoisers[best]
        lines.append(
            f"- {dname}: highest PSNR {best} ({b.psnr:.2f} dB, {b.psnr - noisy.psnr:+.2f} dB "
            f"over the noisy input, {b.s_per_mpx:.3g} s/Mpx); highest SSIM {best_ssim} "
            f"({denoisers[best_ssim].ssim:.3f})"
            + (
                f"; fastest protocol that improves PSNR: {fastest} "
                f"({helping[fastest].psnr:.2f} dB, {helping[fastest].s_per_mpx:.3g} s/Mpx)"
                if fastest
                else "; no protocol improves PSNR"
            )
            + (f"; not better than the noisy input: {', '.join(worse)}" if worse else "")
            + "."
        )
        for n, s in denoisers.items():
            base = denoisers.get(n.replace(" + TTA", ""))
            if " + TTA" in n and base is not None:
                lines.append(
                    f"- {dname}: test-time augmentation ({n}) changes PSNR by "
                    f"{s.psnr - base.psnr:+.2f} dB and SSIM by {s.ssim - base.ssim:+.3f} at "
                    f"{s.s_per_mpx / base.s_per_mpx:.1f}x the time per megapixel."
                )
        front = _pareto(denoisers)
        lines.append(
            f"- {dname}, best trade-offs (no other protocol both faster and higher PSNR), "
            "fastest first: "
            + "; ".join(
                f"{n} ({denoisers[n].psnr:.2f} dB, {denoisers[n].s_per_mpx:.3g} s/Mpx)"
                for n in front
            )
            + "."
        )
    if quick:
        sizes = ", ".join(
            f"{d} " + "/".join(sorted({f"{im.noisy.shape[0]}^2" for im in ims}))
            for d, ims in quick.items()
        )
        lines.append(
            f"- Quick mode: small images ({sizes}), one per type / noise setting; fixed "
            "costs (model calls, noise estimation) weigh more per megapixel than on full "
            "frames, and so few images make the PSNR differences indicative only."
        )
    return [*lines, ""]


def _plot(rep: Report, res: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(res), figsize=(5.6 * len(res), 4.4), squeeze=False)
    for ax, (dname, per) in zip(axes[0], res.items(), strict=True):
        means = {n: mean_scores(v) for n, v in per.items()}
        for i, (name, s) in enumerate(means.items()):
            if name == NOISY:
                ax.axhline(s.psnr, color="grey", lw=0.8, ls="--", label=f"{NOISY} ({s.psnr:.2f})")
                continue
            ax.scatter(s.s_per_mpx, s.psnr, color=f"C{i % 10}", marker="os^D"[i // 10 % 4])
            ax.annotate(
                name, (s.s_per_mpx, s.psnr), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per megapixel (log)", fontsize=8)
        ax.set_ylabel("PSNR (dB)", fontsize=8)
        ax.set_title(dname, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
        xs = [s.s_per_mpx for n, s in means.items() if n != NOISY]
        ax.set_xlim(min(xs) / 2, max(xs) * 4)
    fig.tight_layout(rect=(0, 0, 1, 0.84))
    rep.figure(fig, subtitle="PSNR against time, mean over images (up-left is better)")

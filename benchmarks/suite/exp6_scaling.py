"""Experiment 6: throughput and scaling on this machine.

Reuses ``benchmarks/throughput.py`` (``gemm_gflops``, ``model_only``, ``write_dataset``,
and the steps of ``pipeline``, run several times on one cluster per worker count) and
``benchmarks/clustering_speed.py`` (``synthetic_plane``, ``timed``):

1. ceilings: fp32 GEMM GFLOP/s (1 thread and one thread per worker), model-only Mpx/s
   and GFLOP/s of the DnCNN on one tile plus halo for each tile size;
2. full pipeline (``fluoden denoise`` on a uint16 OME-Zarr written beforehand, one
   single-threaded worker process each) against the number of workers, the tile size
   (with the halo overhead ``(tile + 2 halo)^2 / tile^2 - 1``, halo = the model's
   receptive radius) and the dataset size (seconds against Mpx with a linear fit, and the
   peak resident memory of each worker); each run against the model-only rate of the
   same workers at the same time and against the GEMM ceiling;
3. clustering time (K-means, DBSCAN, HDBSCAN, ``cluster_image`` with default parameters,
   one thread) against the block size.

Datasets live in a temporary directory that is deleted at the end.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Context, Report, pyplot, table

NAME = "exp6_scaling"
TITLE = "Experiment 6: throughput and scaling (workers, tile, dataset size, clustering block)"


def _settings(ctx: Context) -> dict:
    from fluoden_batch.compute import default_workers

    cores = default_workers()
    workers = sorted({w for w in (1, 2, 4, 8, 16, 32, 64, 128) if w <= cores} | {cores})
    if ctx.quick:
        return dict(
            quick=True,
            cores=cores,
            workers=workers,
            size=512,
            chunk=256,
            block_min=512,
            tiles=(128, 256, 384),
            tile=256,
            base_planes=2,
            planes=(2, 4, 6),
            gemm_n=2048,
            gemm_tries=2,
            repeats=2,
            ceiling_repeats=2,
            blocks=(256, 512, 1024),
            cluster_repeats=3,
        )
    return dict(
        quick=False,
        cores=cores,
        workers=workers,
        size=4096,
        chunk=512,
        block_min=2048 if cores <= 4 else 1024,  # blocks (4 or 16 a plane) >= workers
        tiles=(256, 384, 512),
        tile=384,
        base_planes=2,
        planes=(1, 2, 4),
        gemm_n=4096,
        gemm_tries=3,
        repeats=3,
        ceiling_repeats=5,
        blocks=(256, 512, 1024, 2048),
        cluster_repeats=3,
    )


def _datasets(work: Path, planes: tuple[int, ...], size: int, chunk: int) -> dict[int, Path]:
    """``throughput.write_dataset`` for the largest size; the smaller ones are its first
    planes copied (same data, same metadata), so the clean planes are computed once."""
    import zarr
    from throughput import write_dataset

    largest = max(planes)
    out = {largest: write_dataset(work / f"planes{largest}", largest, size, chunk)}
    src = zarr.open_group(str(out[largest]), mode="r")
    for n in sorted(set(planes) - {largest}):
        (work / f"planes{n}").mkdir()
        path = work / f"planes{n}" / "bench.zarr"
        dst = zarr.open_group(str(path), mode="w", zarr_format=3)
        array = dst.create_array(
            "0", shape=(n, size, size), chunks=src["0"].chunks, dtype=src["0"].dtype
        )
        array[:] = src["0"][:n]
        dst.attrs.update(src.attrs.asdict())
        out[n] = path
    return out


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_mib() -> float:
    """Peak RSS of this process since the last reset (VmHWM), else since its start."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pipeline_runs(configs, data, work: Path, model: str, workers: int, s: dict) -> dict:
    """The steps of ``throughput.pipeline`` for several (planes, tile) on ONE cluster of
    ``workers`` workers (a cluster start and the first model load in every worker cost
    more than a quick run itself): plan, model-only on every worker at once, reset of the
    workers' peak RSS, the run (``fluoden_batch.denoise`` on the client) timed, peak RSS
    read."""
    from throughput import model_only

    import fluoden_batch as fb
    from fluoden_batch.compute import dask_client

    out: dict[tuple[int, int, int], dict] = {}
    with dask_client(workers=workers, dashboard_address="127.0.0.1:0") as client:
        for planes, tile in configs:
            dest = work / f"out-{planes}-{workers}-{tile}.zarr"
            try:
                concurrent = client.run(model_only, model, tile, 1, s["ceiling_repeats"])
                client.run(importlib.import_module, "fluoden_batch.pipeline.worker")
                exact = all(client.run(_reset_peak).values())
                result = fb.denoise(
                    data[planes], dest, model=model, tile=tile, block_min=s["block_min"],
                    client=client,
                )  # fmt: skip
                seconds = result.seconds  # the blocks' wall time, planning excluded
                peaks = client.run(_peak_mib)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            r = {
                "planes": planes,
                "workers": workers,
                "tile": tile,
                "mpx": planes * s["size"] ** 2 / 1e6,
                "blocks": result.blocks_total,
                "seconds": seconds,
                "peak_mib": list(peaks.values()),
                "peak_of_run": exact,
                "ceiling_mpx": sum(m for m, _ in concurrent.values()),
                "ceiling_gflops": sum(g for _, g in concurrent.values()),
            }
            out[(planes, workers, tile)] = r
            print(
                f"  exp6: pipeline {planes} planes, {workers} workers, tile {tile}: "
                f"{r['mpx'] / seconds:.3f} Mpx/s in {seconds:.1f} s",
                flush=True,
            )
    return out


def _busy_cpus(seconds: float = 1.0) -> float:
    """CPUs kept busy by other processes while this one sleeps (``/proc/stat``), NaN
    where unavailable."""

    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        t0, i0 = ticks()
        time.sleep(seconds)
        t1, i1 = ticks()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (1 - (i1 - i0) / max(1, t1 - t0)) * (os.cpu_count() or 1)


def run(ctx: Context) -> Report:
    import torch
    from throughput import gemm_gflops, model_only

    from fluoden_batch.models import load_model

    rep = Report(ctx, NAME, TITLE)
    s = _settings(ctx)
    s["busy"] = _busy_cpus()
    model = ctx.model.split(",")[0].strip()  # one model: the pipeline runs one
    module = load_model(model).module
    halo, fpp = module.receptive_radius, module.flops_per_pixel()
    mpx_plane = s["size"] ** 2 / 1e6
    rep.data += [
        f"synthetic uint16 OME-Zarr (v3, NGFF 0.5) datasets written by "
        f"`throughput.write_dataset`: {', '.join(str(p) for p in s['planes'])} planes of "
        f"{s['size']}^2 ({', '.join(f'{p * mpx_plane:.2f}' for p in s['planes'])} Mpx), "
        f"chunks {s['chunk']}^2; demo clean planes under Poisson-Gaussian noise (a=32, "
        "b=400), the smaller datasets being the first planes of the largest; written to a "
        "temporary directory, deleted afterwards",
        f"worker and tile sweeps on the {s['base_planes']}-plane dataset "
        f"({s['base_planes'] * mpx_plane:.2f} Mpx)",
        f"clustering: top-left blocks of one synthetic {max(s['blocks'])}^2 plane "
        "(`clustering_speed.synthetic_plane`, a=32, b=400, uint16)",
    ]
    rep.params += [
        f"model `{model}`: DnCNN {module.depth}x{module.width}, receptive radius (halo) "
        f"{halo} px, {fpp} FLOP per output pixel (2 x MACs)"
        + ("; only the first of the fold models is timed" if "," in ctx.model else ""),
        f"GEMM: fp32, the faster of torch's BLAS matmul ({s['gemm_n']}^2) and oneDNN's (a "
        f"1x1 convolution of {s['gemm_n'] // 4} channels) (`throughput.gemm_gflops`: mean of "
        f"3 after one warm-up), best of {s['gemm_tries']} calls, "
        "with 1 thread and with as many threads as workers",
        f"model-only: `throughput.model_only` (the fused CPU forward of `fluoden denoise`), "
        f"forward passes of one (tile + 2 x {halo})^2 "
        f"input, mean of {s['repeats']} after a warm-up, 1 thread and {s['cores']} threads "
        "in this process; Mpx/s counts the tile without halo",
        "pipeline: the steps of `throughput.pipeline` (`fluoden denoise`, whole protocol, "
        "fp32, CPU): `plan`, then on a LocalCluster of 1-threaded worker processes "
        f"model-only on every worker at once (mean of {s['ceiling_repeats']}: the fair "
        "ceiling), then `execute` timed from "
        f"the first submission to the last block; min block {s['block_min']} px; one "
        "cluster per worker count, reused for that count's runs (cluster start, planning "
        "and the workers' first model load are not timed); peak RSS of each worker during "
        "`execute` (VmHWM reset before it; where the reset is unsupported, since the "
        "worker started, marked *)",
        f"workers {', '.join(map(str, s['workers']))} at tile {s['tile']}; tiles "
        f"{', '.join(map(str, s['tiles']))} at {max(s['workers'])} workers; dataset sizes at "
        f"{max(s['workers'])} workers, tile {s['tile']}",
        f"clustering: `cluster_image(block, method, backend='cpu')` with default parameters, "
        f"one thread (threadpoolctl), median of {s['cluster_repeats']}",
        f"other load at the start: {s['busy']:.2f} of {os.cpu_count()} CPUs busy with other "
        "processes (from /proc/stat over 1 s while this one slept)",
    ]
    try:
        gemm = {
            w: max(gemm_gflops(w, s["gemm_n"]) for _ in range(s["gemm_tries"]))
            for w in sorted({1, *s["workers"]})
        }
        print("  exp6: GEMM " + ", ".join(f"{w} thr {g:.1f}" for w, g in gemm.items()), flush=True)
        mo = {
            (tile, th): model_only(model, tile, th, s["repeats"])
            for tile in s["tiles"]
            for th in sorted({1, s["cores"]})
        }
        print("  exp6: model-only done", flush=True)
    finally:
        torch.set_num_threads(ctx.threads)
    with tempfile.TemporaryDirectory(prefix="fluoden-exp6-") as tmp:
        work = Path(tmp)
        data = _datasets(work, s["planes"] + (s["base_planes"],), s["size"], s["chunk"])
        top = max(s["workers"])
        plan = [("workers", w, s["base_planes"], w, s["tile"]) for w in s["workers"]]
        plan += [("tile", t, s["base_planes"], top, t) for t in s["tiles"]]
        plan += [("planes", p, p, top, s["tile"]) for p in s["planes"]]
        done: dict[tuple[int, int, int], dict] = {}
        for w in s["workers"]:
            # smallest dataset first: a peak RSS that grows with the data shows either way
            configs = sorted({(planes, tile) for _, _, planes, ww, tile in plan if ww == w})
            done |= _pipeline_runs(configs, data, work, model, w, s)
        runs = {(sweep, value): done[(planes, w, tile)] for sweep, value, planes, w, tile in plan}
    clustering = _clustering(s)
    _report(rep, s, gemm, mo, runs, clustering, halo, fpp)
    return rep


def _clustering(s: dict) -> dict[str, dict[int, float]]:
    from clustering_speed import METHODS, synthetic_plane, timed
    from threadpoolctl import threadpool_limits

    from fluoden_batch.clustering import cluster_image

    plane = synthetic_plane(max(s["blocks"]))
    out: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    with threadpool_limits(1):
        for size in s["blocks"]:
            block = plane[:size, :size]
            for method in METHODS:
                med, _, _ = timed(
                    lambda b=block, m=method: cluster_image(b, m, backend="cpu"),
                    s["cluster_repeats"],
                )
                out[method][size] = med
    print("  exp6: clustering done", flush=True)
    return out


def _overhead(tile: int, halo: int) -> float:
    return (tile + 2 * halo) ** 2 / tile**2 - 1


def _report(rep, s, gemm, mo, runs, clustering, halo, fpp) -> None:
    rep.add(
        "## Ceilings",
        "",
        *table(
            ["fp32 GEMM", "GFLOP/s"],
            [[f"{s['gemm_n']}^2, {w} thread(s)", f"{g:.1f}"] for w, g in gemm.items()],
        ),
        "",
    )
    rows = []
    for (tile, th), (mpx, gf) in mo.items():
        rows.append(
            [
                f"{tile} px",
                th,
                f"{100 * _overhead(tile, halo):.1f} %",
                f"{mpx:.3f}",
                f"{gf:.1f}",
                f"{100 * gf / gemm.get(th, gemm[max(gemm)]):.0f} %",
            ]
        )
    rep.add(
        "### Model-only (one input of tile + halo, in this process)",
        "",
        *table(
            ["tile", "threads", "halo overhead", "Mpx/s", "GFLOP/s", "% of GEMM (same threads)"],
            rows,
        ),
        "",
    )

    def row(label, r):
        rate = r["mpx"] / r["seconds"]
        single = mo.get((r["tile"], 1), (float("nan"),))[0]
        useful = rate * fpp / 1e3  # GFLOP/s of the output pixels (halo work not counted)
        g = gemm.get(r["workers"], gemm[max(gemm)])
        return [
            label,
            r["workers"],
            r["tile"],
            f"{100 * _overhead(r['tile'], halo):.1f} %",
            f"{r['mpx']:.2f}",
            r["blocks"],
            f"{r['seconds']:.1f}",
            f"{rate:.3f}",
            f"{r['ceiling_mpx']:.3f}",
            f"{100 * rate / r['ceiling_mpx']:.0f} %",
            f"{100 * rate / (single * r['workers']):.0f} %",
            f"{useful:.1f} ({100 * useful / g:.0f} %)",
            "/".join(f"{m:.0f}" for m in r["peak_mib"]) + ("" if r["peak_of_run"] else " *"),
        ]

    header = [
        "sweep",
        "workers",
        "tile",
        "halo overhead",
        "Mpx",
        "blocks",
        "wall s",
        "Mpx/s",
        "model-only, all workers at once, Mpx/s",
        "vs that",
        "vs workers x 1-thread model-only",
        "useful GFLOP/s (% of GEMM, same threads)",
        "peak RSS per worker MiB",
    ]
    body = [row(f"{sweep} = {value}", r) for (sweep, value), r in runs.items()]
    rep.add(
        "## Full pipeline",
        "",
        *table(header, body, "l" + "r" * (len(header) - 1)),
        "",
        "'useful GFLOP/s' counts the model's FLOPs of the output pixels only (halo and "
        "block overlap are overhead); 'vs that' compares with model-only on the same "
        "workers at the same moment, so it measures what reading, normalising, writing, "
        "metrics and scheduling cost.",
        "",
    )
    rep.add(*_conclusions(s, gemm, mo, runs, clustering, halo))
    _plot(rep, s, runs, clustering, halo)


def _fit(xs, ys):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * xs + intercept
    ss = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1 - float(np.sum((ys - pred) ** 2)) / ss if ss > 0 else float("nan")
    return slope, intercept, r2


def _conclusions(s, gemm, mo, runs, clustering, halo) -> list[str]:
    lines = ["## What the numbers say", ""]
    by = {
        sw: {v: r for (k, v), r in runs.items() if k == sw} for sw in ("workers", "tile", "planes")
    }
    w = by["workers"]
    if len(w) > 1:
        lo, hi = min(w), max(w)
        rate = {k: r["mpx"] / r["seconds"] for k, r in w.items()}
        speedup = rate[hi] / rate[lo]
        lines.append(
            f"- Workers: {lo} -> {hi} workers: {rate[lo]:.3f} -> {rate[hi]:.3f} Mpx/s, "
            f"speed-up {speedup:.2f} for {hi / lo:.0f}x the workers (parallel efficiency "
            f"{100 * speedup / (hi / lo):.0f} %); model-only on all workers at once "
            f"{w[lo]['ceiling_mpx']:.3f} -> {w[hi]['ceiling_mpx']:.3f} Mpx/s."
        )
    t = by["tile"]
    if t:
        rate = {k: r["mpx"] / r["seconds"] for k, r in t.items()}
        best = max(rate, key=rate.get)
        lines.append(
            "- Tile: "
            + ", ".join(
                f"{k} px {rate[k]:.3f} Mpx/s (halo overhead {100 * _overhead(k, halo):.1f} %)"
                for k in rate
            )
            + f"; fastest {best} px. Model-only, 1 thread: "
            + ", ".join(f"{k} px {mo[(k, 1)][0]:.3f}" for k in rate if (k, 1) in mo)
            + " Mpx/s."
        )
    p = by["planes"]
    if len(p) > 2:
        mpx = [r["mpx"] for r in p.values()]
        sec = [r["seconds"] for r in p.values()]
        spm = [b / a for a, b in zip(mpx, sec, strict=True)]
        slope, intercept, r2 = _fit(mpx, sec)
        spread = (max(spm) - min(spm)) / np.mean(spm)
        flat = spread <= 0.15
        steps = list(itertools.pairwise(spm))
        if intercept > 0 and all(a > b for a, b in steps):
            trend = (
                f"; it falls with the size, which the fit puts on a fixed cost of "
                f"{intercept:.2f} s per run (marginal cost {slope:.3f} s/Mpx)"
            )
        elif all(a < b for a, b in steps):
            trend = "; it rises with the size: the cost grows faster than the data"
        else:
            trend = (
                "; it does not change steadily with the size, so this is measurement noise "
                "(e.g. other load) rather than a size effect"
            )
        peak = [max(r["peak_mib"]) for r in p.values()]
        growth = peak[-1] / peak[0] - 1
        lines.append(
            "- Dataset size: "
            + ", ".join(
                f"{a:.2f} Mpx {b:.1f} s ({c:.2f} s/Mpx)"
                for a, b, c in zip(mpx, sec, spm, strict=True)
            )
            + f"; linear fit seconds = {intercept:.2f} + {slope:.3f} x Mpx (R^2 = {r2:.3f}). "
            + (
                f"Cost per Mpx is flat: its range is {100 * spread:.0f} % of its mean "
                "(flat: at most 15 %)."
                if flat
                else f"Cost per Mpx is not flat: its range is {100 * spread:.0f} % of its "
                f"mean (flat: at most 15 %)" + trend + "."
            )
            + f" Largest worker peak RSS {peak[0]:.0f} -> {peak[-1]:.0f} MiB from the "
            f"smallest to the largest dataset ({100 * growth:+.0f} %): "
            + (
                "memory per worker does not grow with the dataset (under +10 %)."
                if growth < 0.10
                else "memory per worker grows with the dataset (+10 % or more)."
            )
        )
    ratios = [r["mpx"] / r["seconds"] / r["ceiling_mpx"] for r in runs.values()]
    of_gemm = {k: mo[(k, 1)][1] / gemm[1] for k in s["tiles"] if (k, 1) in mo}
    lines.append(
        f"- The pipeline reaches {100 * min(ratios):.0f}-{100 * max(ratios):.0f} % of "
        "model-only on the same workers at the same moment; the model alone reaches "
        + ", ".join(f"{100 * v:.0f} %" for v in of_gemm.values())
        + f" of the 1-thread GEMM ceiling ({gemm[1]:.1f} GFLOP/s) at tiles "
        + ", ".join(map(str, of_gemm))
        + "."
        + (
            " A share above 100 % means the GEMM measurement itself was slowed down (other "
            "load at that moment): the ceiling is then underestimated."
            if max(of_gemm.values(), default=0) > 1
            else ""
        )
    )
    parts, expos = [], []
    for method, times in clustering.items():
        px = [b * b for b in times]
        expo = np.polyfit(np.log(px), np.log(list(times.values())), 1)[0]
        expos.append(expo)
        parts.append(
            f"{method} {min(times.values()):.3f}-{max(times.values()):.3f} s "
            f"(time ~ pixels^{expo:.2f})"
        )
    blocks = list(next(iter(clustering.values())))
    one_thread = max(v[0] for (_, th), v in mo.items() if th == 1)

    def reading(e: float) -> str:
        if e < 0.5:
            return "a fixed cost dominates (the time hardly depends on the pixels)"
        if e < 0.85:
            return "sub-linear in the pixels"
        return "about linear in the pixels or worse"

    lines.append(
        f"- Clustering, blocks {blocks[0]}^2..{blocks[-1]}^2, one thread: "
        + "; ".join(parts)
        + ". Reading of the exponents: "
        + "; ".join(f"{m}: {reading(e)}" for m, e in zip(clustering, expos, strict=True))
        + f". Largest block: {max(max(t.values()) for t in clustering.values()):.3f} s at most, "
        f"against {blocks[-1] ** 2 / 1e6 / one_thread:.1f} s for the DnCNN alone (1 thread, "
        "its best model-only rate above) on as many pixels."
    )
    if s["busy"] >= 0.25:
        lines.append(
            f"- Caveat: other processes kept {s['busy']:.2f} of the {os.cpu_count()} CPUs "
            "busy at the start: every rate here is lower and noisier than on an idle "
            "machine, most of all with as many workers as cores."
        )
    if s["quick"]:
        lines.append(
            "- Quick mode: tiny datasets, so fixed per-run and per-block costs weigh more "
            "than in full mode; the numbers check the code path."
        )
    return [*lines, ""]


def _plot(rep, s, runs, clustering, halo) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.4))
    by = {
        sw: {v: r for (k, v), r in runs.items() if k == sw} for sw in ("workers", "tile", "planes")
    }
    ax = axes[0, 0]
    w = by["workers"]
    ax.plot(list(w), [r["mpx"] / r["seconds"] for r in w.values()], "o-", label="pipeline")
    ax.plot(list(w), [r["ceiling_mpx"] for r in w.values()], "s--", label="model-only, all workers")
    ax.set_xlabel("workers", fontsize=8)
    ax.set_ylabel("Mpx/s", fontsize=8)
    ax.set_xticks(list(w))
    ax.set_title(f"workers (tile {s['tile']})", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    t = by["tile"]
    ax.plot(list(t), [r["mpx"] / r["seconds"] for r in t.values()], "o-", label="pipeline")
    ax.plot(list(t), [r["ceiling_mpx"] for r in t.values()], "s--", label="model-only, all workers")
    for k, r in t.items():
        ax.annotate(
            f"halo +{100 * _overhead(k, halo):.0f} %",
            (k, r["mpx"] / r["seconds"]),
            fontsize=6,
            xytext=(3, -10),
            textcoords="offset points",
        )
    ax.set_xlabel("tile (px)", fontsize=8)
    ax.set_ylabel("Mpx/s", fontsize=8)
    ax.set_xticks(list(t))
    ax.set_title(f"tile ({max(s['workers'])} workers)", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    p = by["planes"]
    mpx = [r["mpx"] for r in p.values()]
    sec = [r["seconds"] for r in p.values()]
    ax.plot(mpx, sec, "o", label="measured")
    if len(p) > 1:
        slope, intercept, _ = _fit(mpx, sec)
        xs = np.linspace(0, max(mpx), 50)
        ax.plot(xs, intercept + slope * xs, "--", label=f"{intercept:.2f} + {slope:.3f} x Mpx")
    ax.set_xlabel("dataset (Mpx)", fontsize=8)
    ax.set_ylabel("wall seconds", fontsize=8)
    ax.set_title(f"dataset size ({max(s['workers'])} workers, tile {s['tile']})", fontsize=8)
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for method, times in clustering.items():
        ax.loglog([b * b for b in times], list(times.values()), "o-", label=method)
    ax.set_xlabel("block pixels", fontsize=8)
    ax.set_ylabel("seconds (median, 1 thread)", fontsize=8)
    ax.set_title("clustering time against block size", fontsize=8)
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.tick_params(labelsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    rep.figure(fig, subtitle="pipeline Mpx/s, dataset scaling, clustering block size")

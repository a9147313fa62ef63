"""Throughput of fluoden-batch on this machine: GEMM ceiling, model-only, full pipeline.

Run: ``python benchmarks/throughput.py`` (about 64 Mpx, a few minutes on 2 cores) or
``--quick`` (16 Mpx). Prints a markdown report and writes it to
``benchmarks/results/throughput.md`` (``--out`` to change).

What is measured
----------------
1. GEMM ceiling: GFLOP/s of a large fp32 matmul on all cores (and on one), the faster of
   torch's BLAS matmul (4096^2) and oneDNN's (a 1x1 convolution of 1024 channels).
2. Model-only: forward passes of the chosen DnCNN on one in-memory tile (plus halo),
   channels-last fp32, fused convolution + ReLU (:class:`fluoden_batch.models.FusedDnCNN`,
   as ``fluoden denoise`` runs it; once also eager PyTorch for comparison), for several
   tile sizes: Mpx/s (of the tile, halo excluded) and
   GFLOP/s (conv FLOPs, 2 x MACs, over tile plus halo), on one thread (the per-worker
   setting) and on all cores in one process; the same architecture at the paper's size
   (17x64) for comparison; and the pipeline's ceiling: model-only on every worker of the
   pipeline's cluster at the same time (same processes, same cores, same tile).
   Beside them, the two classical filters of the detail restoration on one simulated
   2048 x 2048 plane on one thread (as a worker runs them): VST+NLM and the Wiener filter
   piloted by its output, Mpx/s (they run where SURE takes them, on every block).
3. Full pipeline: ``fluoden denoise`` on a uint16 OME-Zarr dataset written beforehand
   (read, normalise, infer, write, metrics, markers) with one single-threaded worker per
   core: Mpx/s from wall time between the first submission and the last block (workers
   warmed up: model loaded and the block code imported, as for the model-only runs; the
   first-use cost of a cold worker is measured by ``startup.py``), and the peak resident
   memory of each worker process, with ``fluoden denoise``'s default ``--detail auto``
   (the detail restoration of :mod:`fluoden_batch.restore.detail`; ``--detail off``
   without it); the planning time (which then runs the model on the planning sample) is
   reported beside the blocks' wall time. ``--phase-split``: the pipeline with ``fluoden
   denoise --phase-split`` (the same model FLOPs per pixel, a halo of ``2 r + 2`` px).
"""

from __future__ import annotations

import argparse
import importlib
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe

import fluoden_batch as fb
from fluoden_batch.compute import dask_client, default_workers
from fluoden_batch.config import DEFAULT_MODEL
from fluoden_batch.io.store import read_provenance
from fluoden_batch.models import Architecture, DnCNN, FusedDnCNN, load_model
from fluoden_batch.models.weights import build_model
from fluoden_batch.restore.inference import infer_plane

RESULTS = Path(__file__).resolve().parent / "results"


def _rate(run, flops: float, repeats: int) -> float:
    run()
    t = time.perf_counter()
    for _ in range(repeats):
        run()
    return flops * repeats / (time.perf_counter() - t) / 1e9


@torch.inference_mode()
def gemm_parts(threads: int, n: int = 4096, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of a large fp32 matmul done two ways on ``threads`` threads.

    ``blas``: ``torch.matmul`` of two n x n matrices (the BLAS torch was built with, MKL
    here). ``onednn``: the same kind of product as oneDNN runs it, a 1x1 convolution of
    n/4 channels over 64 x 64 channels-last pixels (a (4096 x n/4) @ (n/4 x n/4) GEMM).
    MKL's sgemm falls well short of oneDNN on some CPUs (AMD EPYC here), so a ceiling
    from BLAS alone would flatter the convolutions measured against it.
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = n // 4
    x = torch.randn(1, c, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 1, 1).contiguous(memory_format=torch.channels_last)
    return {
        "blas": _rate(lambda: a @ b, 2 * n**3, repeats),
        "onednn": _rate(lambda: torch.nn.functional.conv2d(x, w), 2 * 64 * 64 * c * c, repeats),
    }


def gemm_gflops(threads: int, n: int = 4096, repeats: int = 3) -> float:
    """GEMM ceiling: the faster of the two large fp32 matmuls of :func:`gemm_parts`."""
    return max(gemm_parts(threads, n, repeats).values())


def model_only(
    model_name: str,
    tile: int,
    threads: int,
    repeats: int = 3,
    arch: tuple[int, int] | None = None,
    fused: bool = True,
) -> tuple[float, float]:
    """(Mpx/s, GFLOP/s) of forward passes on a tile of ``tile`` px plus its halo.

    ``arch=(depth, width)`` measures a randomly initialised DnCNN of that shape instead
    (the speed of a convolution does not depend on its weights). ``fused=False`` runs the
    eager PyTorch forward (convolution and ReLU separately) instead of
    :class:`~fluoden_batch.models.FusedDnCNN`, the one ``fluoden denoise`` uses.
    """
    torch.set_num_threads(threads)
    if arch is None:
        module = load_model(model_name).module
    else:
        module = FusedDnCNN(DnCNN(*arch, batch_norm=False).eval())
    if not fused:
        eager = build_model(Architecture.of(module))  # the same network, unfused
        eager.load_state_dict(module.state_dict())
        module = eager.eval()
    module.to(memory_format=torch.channels_last)
    halo = module.receptive_radius
    side = tile + 2 * halo
    x = np.random.default_rng(0).random((side, side), dtype=np.float32)
    infer_plane(module, x)
    t = time.perf_counter()
    for _ in range(repeats):
        infer_plane(module, x)
    seconds = (time.perf_counter() - t) / repeats
    flops = module.flops_per_pixel() * side * side
    return tile * tile / seconds / 1e6, flops / seconds / 1e9


def write_dataset(folder: Path, planes: int, size: int, chunk: int) -> Path:
    import zarr

    from fluoden_batch.demo import DEMO_GAIN, DEMO_READ_VAR, clean_plane
    from fluoden_batch.io.ngff import ImageMeta, write_attrs
    from fluoden_batch.noise import simulate

    group = zarr.open_group(str(folder / "bench.zarr"), mode="w", zarr_format=3)
    array = group.create_array(
        "0", shape=(planes, size, size), chunks=(1, chunk, chunk), dtype="uint16"
    )
    rng = np.random.default_rng(0)
    for z in range(planes):
        array[z] = np.rint(
            simulate(clean_plane(size, rng), DEMO_GAIN, DEMO_READ_VAR, clip=(0, 4095), rng=rng)
        )
    group.attrs.update(write_attrs(ImageMeta(axes="zyx", scale=[1.0, 1.0, 1.0]), "0.5", "0"))
    return folder / "bench.zarr"


def restoration_steps(size: int = 2048) -> dict[str, float]:
    """Mpx/s of the detail restoration's filters on one simulated ``size``-px plane, one
    thread: VST+NLM, then the Wiener filter piloted by its output."""
    from threadpoolctl import threadpool_limits

    from fluoden_batch.demo import DEMO_GAIN, DEMO_READ_VAR, clean_plane
    from fluoden_batch.noise import simulate
    from fluoden_batch.restore.classical import vst_nlm, vst_wiener

    rng = np.random.default_rng(0)
    plane = simulate(clean_plane(size, rng), DEMO_GAIN, DEMO_READ_VAR, rng=rng)
    mpx = size * size / 1e6
    with threadpool_limits(1):
        t = time.perf_counter()
        pilot = vst_nlm(plane, DEMO_GAIN, DEMO_READ_VAR)
        nlm_s = time.perf_counter() - t
        t = time.perf_counter()
        vst_wiener(plane, pilot, DEMO_GAIN, DEMO_READ_VAR)
        wiener_s = time.perf_counter() - t
    return {"VST+NLM": mpx / nlm_s, "Wiener filter (DCT 8x8, stride 1)": mpx / wiener_s}


def _worker_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pipeline(
    dataset: Path,
    out: Path,
    model: str,
    workers: int,
    tile: int,
    block_min: int,
    detail: str,
    phase_split: bool = False,
    hot_pixels: str = "keep",
):
    """Model-only on every worker at once (the fair ceiling), then the full pipeline."""
    with dask_client(workers=workers, dashboard_address="127.0.0.1:0") as client:
        concurrent = client.run(model_only, model, tile, 1, 5)
        client.run(importlib.import_module, "fluoden_batch.pipeline.worker")  # warm, as above
        started = time.perf_counter()
        result = fb.denoise(
            dataset,
            out,
            model=model,
            tile=tile,
            block_min=block_min,
            detail=detail,
            phase_split=phase_split,
            hot_pixels=hot_pixels,
            client=client,
        )  # result.seconds: the blocks' wall time (planning excluded)
        total = time.perf_counter() - started
        peaks = client.run(_worker_peak_rss_mib)
    chosen = read_provenance(out)["parameters"].get("channel_detail")
    return result, result.seconds, total, peaks, concurrent, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 Mpx instead of 64 Mpx")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--tile", type=int, default=384, help="pipeline forward-pass tile")
    parser.add_argument("--block-min", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.md")
    parser.add_argument(
        "--detail",
        choices=["auto", "off", "sure"],
        default="auto",
        help="fluoden denoise --detail (auto, its default, is sure here)",
    )
    parser.add_argument(
        "--hot-pixels",
        choices=["keep", "remove", "off"],
        default="keep",
        help="fluoden denoise --hot-pixels (keep, its default, tests every pixel)",
    )
    parser.add_argument(
        "--phase-split",
        action="store_true",
        help="the pipeline with fluoden denoise --phase-split (model-only rows: the plain model)",
    )
    args = parser.parse_args()
    cores = args.workers

    lines = [
        "# Throughput",
        "",
        f"Machine: {describe({'torch': torch.__version__})}; {cores} cores used, "
        f"model `{args.model}`, fp32, channels-last.",
        f"Command: `python benchmarks/throughput.py {shlex.join(sys.argv[1:])}`",
        "",
    ]
    parts = {threads: gemm_parts(threads) for threads in (cores, 1)}
    g_all, g_one = (max(parts[threads].values()) for threads in (cores, 1))
    lines += [
        "| ceiling: fp32 GEMM | threads | BLAS matmul 4096^2 | oneDNN 1x1 conv, 1024 ch | "
        "ceiling (the faster) |",
        "|---|---|---|---|---|",
        *(
            f"| GFLOP/s | {threads} | {p['blas']:.1f} | {p['onednn']:.1f} | {max(p.values()):.1f} |"
            for threads, p in parts.items()
        ),
        "",
        "| model-only (tile + halo) | threads | Mpx/s | GFLOP/s | % of GEMM ceiling |",
        "|---|---|---|---|---|",
    ]
    for tile in (256, 384, 512, 1024):
        mpx1, gf1 = model_only(args.model, tile, 1)
        lines.append(
            f"| {tile} px, one process | 1 | {mpx1:.3f} | {gf1:.1f} | {100 * gf1 / g_one:.0f}% |"
        )
        mpx, gf = model_only(args.model, tile, cores)
        lines.append(
            f"| {tile} px, one process | {cores} | {mpx:.3f} | {gf:.1f} | {100 * gf / g_all:.0f}% |"
        )
    mpx1, gf1 = model_only(args.model, args.tile, 1, fused=False)
    lines.append(
        f"| {args.tile} px, eager PyTorch (conv and ReLU apart), one process | 1 | {mpx1:.3f} "
        f"| {gf1:.1f} | {100 * gf1 / g_one:.0f}% |"
    )
    for depth, width in ((10, 32), (17, 64)):
        mpx1, gf1 = model_only(args.model, args.tile, 1, arch=(depth, width))
        lines.append(
            f"| DnCNN {depth}x{width} (architecture only), {args.tile} px | 1 | {mpx1:.3f} "
            f"| {gf1:.1f} | {100 * gf1 / g_one:.0f}% |"
        )
    lines += [
        "",
        "| detail restoration step, one 2048^2 plane | threads | Mpx/s |",
        "|---|---|---|",
        *(f"| {name} | 1 | {rate:.3f} |" for name, rate in restoration_steps().items()),
        "",
        "| pipeline ceiling | threads | Mpx/s | GFLOP/s | % of GEMM ceiling |",
        "|---|---|---|---|---|",
    ]
    planes, size = (1, 4096) if args.quick else (4, 4096)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_dataset(Path(tmp), planes, size, 512)
        result, seconds, total, peaks, concurrent, chosen = pipeline(
            dataset, Path(tmp) / "out.zarr", args.model, cores, args.tile, args.block_min,
            args.detail, args.phase_split, args.hot_pixels,
        )  # fmt: skip
    ceiling_mpx = sum(m for m, _ in concurrent.values())
    ceiling_gf = sum(g for _, g in concurrent.values())
    mpx_total = planes * size * size / 1e6
    rate = mpx_total / seconds
    lines += [
        f"| {args.tile} px on all {cores} workers at once (model-only ceiling of the pipeline) "
        f"| 1 x {cores} | {ceiling_mpx:.3f} | {ceiling_gf:.1f} | {100 * ceiling_gf / g_all:.0f}% |",
        "",
        "| full pipeline | value |",
        "|---|---|",
        f"| dataset | {planes} x {size} x {size} uint16 ({mpx_total:.1f} Mpx), 512^2 chunks |",
        f"| workers x threads | {cores} x 1 |",
        f"| tile / min block | {args.tile} / {args.block_min} px |",
        f"| --detail | {args.detail} (chosen per channel, [sigma, weight, NLM share, "
        f"Wiener share]: {chosen}) |",
        f"| --phase-split | {'on' if args.phase_split else 'off'} |",
        f"| --hot-pixels | {args.hot_pixels} ({result.summary.get('hot_pixels', 0)} found) |",
        f"| blocks | {result.blocks_total} |",
        f"| wall time | {seconds:.1f} s (planning and opening included: {total:.1f} s) |",
        f"| throughput | {rate:.3f} Mpx/s |",
        f"| vs model-only on the same workers ({ceiling_mpx:.3f} Mpx/s) "
        f"| {100 * rate / ceiling_mpx:.0f}% |",
        f"| peak RSS per worker | {', '.join(f'{v:.0f}' for v in peaks.values())} MiB |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()

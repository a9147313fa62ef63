"""What a small job pays for a Dask cluster, and the size where a cluster starts to pay off.

For each input size (square uint16 planes stacked to N Mpx, chunks of 1024 px, written
once as OME-Zarr), two end-to-end runs of ``fluoden_batch.denoise(IN, OUT)`` with the
default model, each timed from the call to its return:

- ``here``: ``workers=0``, blocks one after the other in this process (torch on every
  core);
- ``cluster``: ``workers=W`` (one per core), a fresh local cluster started and closed
  inside the call, as the CLI does for large inputs.

Also timed: the start and close of an idle local cluster, and the first model load on
its workers. Writes ``results/startup.md``. The pipeline picks ``here`` for inputs up to
``fluoden_batch.pipeline.execution.IN_PROCESS_PIXELS`` unless a cluster is asked for.

Usage::

    PYTHONPATH=. python benchmarks/startup.py [--sizes 1,4,16,64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

import fluoden_batch as fb
from fluoden_batch.compute import dask_client, default_workers
from fluoden_batch.config import DEFAULT_MODEL
from fluoden_batch.io.ngff import ImageMeta, write_attrs
from fluoden_batch.pipeline.execution import IN_PROCESS_PIXELS

RESULTS = Path(__file__).resolve().parent / "results"
SIDE = 1024


def write_dataset(folder: Path, mpx: int) -> Path:
    """``mpx`` planes of 1024 x 1024 Poisson noise around a ramp, uint16, as OME-Zarr."""
    path = folder / f"in-{mpx}.zarr"
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("0", shape=(mpx, SIDE, SIDE), chunks=(1, SIDE, SIDE), dtype="u2")
    rng = np.random.default_rng(0)
    ramp = np.linspace(20, 400, SIDE)[None, :] * np.ones((SIDE, 1))
    for z in range(mpx):
        array[z] = rng.poisson(ramp).astype(np.uint16)
    group.attrs.update(write_attrs(ImageMeta(axes="zyx", scale=[1.0] * 3), "0.5", "0"))
    return path


def timed_run(inp: Path, out: Path, workers: int) -> float:
    """Seconds of one ``fb.denoise(inp, out)`` call, end to end."""
    t = time.perf_counter()
    fb.denoise(inp, out, workers=workers, dashboard_address="127.0.0.1:0", overwrite=True)
    seconds = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def cluster_start(workers: int) -> tuple[float, float, float]:
    """(start, first model load on every worker, close) of an idle local cluster, s."""
    from fluoden_batch.models import load_model

    t0 = time.perf_counter()
    with dask_client(workers=workers, dashboard_address="127.0.0.1:0") as client:
        t1 = time.perf_counter()
        client.run(lambda: load_model(DEFAULT_MODEL) and None)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16,64", help="input sizes, Mpx (comma list)")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    start, load, close = cluster_start(args.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for mpx in sizes:
            inp = write_dataset(folder, mpx)
            here = timed_run(inp, folder / "here.zarr", 0)
            cluster = timed_run(inp, folder / "cluster.zarr", args.workers)
            rows.append((mpx, here, cluster))
            print(f"{mpx} Mpx: here {here:.1f} s, cluster {cluster:.1f} s", flush=True)
    lines = [
        "# Small inputs: in this process or on a local cluster",
        "",
        f"Command: `PYTHONPATH=. python benchmarks/startup.py --sizes {args.sizes}` "
        f"({args.workers} workers for the cluster runs; default model `{DEFAULT_MODEL}`).",
        "",
        f"Idle local cluster of {args.workers} workers: start {start:.1f} s, first model load "
        f"on every worker {load:.1f} s, close {close:.1f} s.",
        "",
        "| input (Mpx) | in this process (s) | local cluster (s) | cluster / here |",
        "|---:|---:|---:|---:|",
        *(f"| {m} | {h:.1f} | {c:.1f} | {c / h:.2f} |" for m, h, c in rows),
        "",
        f"The pipeline runs inputs up to {IN_PROCESS_PIXELS / 2**20:.0f} Mpx in this process "
        "unless a cluster is asked for (`--workers N`, `--scheduler`, `--profile`, `--tls`).",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

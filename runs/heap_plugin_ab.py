"""What `compute.heap.HeapThresholds` gives workers started with Dask's MALLOC_TRIM_THRESHOLD_.

SLURM and Kubernetes workers (and any scheduler a user starts) run with Dask's
`MALLOC_TRIM_THRESHOLD_=65536`, which fluoden's own local clusters now drop
(`worker_environ`: 0.212 -> 0.261 Mpx/s). A plain `LocalCluster` gives its workers the same
value, so it stands in for them here: `benchmarks/throughput.py`'s dataset (16.8 Mpx, 2
single-threaded workers, tile 384, blocks of 2048 px, every default), the blocks' wall
time (planning excluded), each cluster warmed by one untimed run, two timed runs on each of

- `dask`: a plain LocalCluster, Dask's value, no plugin;
- `plugin`: a plain LocalCluster, Dask's value, `HeapThresholds` registered before its
  first run (as `dask_client` registers it);
- `fluoden`: fluoden's local cluster (`dask_client`, workers without the value);

in the order given (default `dask plugin fluoden`). The first sitting
(`runs/heap_plugin_ab.log`, an earlier form of this script) registered the plugin on the
`dask` cluster after its two runs and ran it twice more, then ran `fluoden`; the second
(`runs/heap_plugin_ab_reversed.log`) is `fluoden plugin dask`.

    PYTHONPATH=.:benchmarks python runs/heap_plugin_ab.py [ORDER ...]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, LocalCluster
from throughput import write_dataset

from fluoden_batch.compute import dask_client
from fluoden_batch.compute.heap import MALLOC_TRIM, HeapThresholds
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.pipeline import execute, plan

MPX = 4096 * 4096 / 1e6
NAME = HeapThresholds.name


def timed(client: Client, dataset: Path, out: Path) -> float:
    """Denoise ``dataset`` into ``out`` with every default: the blocks' wall time (s)."""
    p = plan(DenoiseConfig(input=dataset, output=out, tile=384, block_min=2048))
    started = time.perf_counter()
    execute(p, client)
    return time.perf_counter() - started


def runs(client: Client, dataset: Path, tmp: Path, label: str, count: int = 2) -> None:
    environ = set(client.run(lambda: os.environ.get(MALLOC_TRIM)).values())
    for i in range(count):
        seconds = timed(client, dataset, tmp / f"{label}-{i}.zarr")
        print(f"{label} (workers' {MALLOC_TRIM}: {environ}): {seconds:.1f} s, "
              f"{MPX / seconds:.3f} Mpx/s", flush=True)  # fmt: skip


@contextlib.contextmanager
def cluster(kind: str) -> Iterator[Client]:
    """A fresh 2-worker cluster of ``kind`` (see the module's notes)."""
    if kind == "fluoden":
        with dask_client(workers=2, dashboard_address="127.0.0.1:0") as client:
            yield client
        return
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as local,
        Client(local) as client,
    ):
        if kind == "plugin":
            client.register_plugin(HeapThresholds())
            applied = client.run(lambda dask_worker: dask_worker.plugins[NAME].applied)
            print(f"plugin applied: {applied}", flush=True)
        yield client


def main() -> None:
    order = sys.argv[1:] or ["dask", "plugin", "fluoden"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataset = write_dataset(tmp, 1, 4096, 512)
        for kind in order:
            with cluster(kind) as client:
                timed(client, dataset, tmp / f"warm-{kind}.zarr")
                runs(client, dataset, tmp, kind)


if __name__ == "__main__":
    main()

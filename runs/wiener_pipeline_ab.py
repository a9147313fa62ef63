"""The Wiener step's cost in the pipeline, before and after its 2026-12-07 rewrite.

As `runs/wiener_pipeline.py` (16.8 Mpx, 2 single-threaded workers, tile 384, blocks of
2048 px, the restoration set after planning), in one sitting on one cluster: without the
filter, with the filter of commit 9a39f1f (swapped into every worker's
`fluoden_batch.restore.classical` for that run), and with today's, twice in turn; the
blocks' wall time (planning excluded). The workers start as `fluoden` starts them now
(without Dask's MALLOC_TRIM_THRESHOLD_).

    PYTHONPATH=.:benchmarks .venv/bin/python runs/wiener_pipeline_ab.py  (runs/ is on the path)
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from throughput import write_dataset
from wiener_pipeline import timed_run

from fluoden_batch.compute import dask_client

BEFORE = "9a39f1f"


def use_filter(source: str | None) -> None:
    """In a worker: the Wiener filter of ``source`` (a classical.py), or today's (None)."""
    import sys
    import types

    from fluoden_batch.restore import classical

    if not hasattr(classical, "_today"):
        classical._today = classical.dct_wiener
    if source is None:
        classical.dct_wiener = classical._today
        return
    old = types.ModuleType("classical_before")
    sys.modules[old.__name__] = old
    exec(compile(source, "classical_before.py", "exec"), old.__dict__)
    classical.dct_wiener = old.dct_wiener


def main() -> None:
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:fluoden_batch/restore/classical.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        dask_client(workers=2, dashboard_address="127.0.0.1:0") as client,
    ):
        dataset = write_dataset(Path(tmp), 1, 4096, 512)
        mpx = 4096 * 4096 / 1e6
        runs = 0
        for _ in range(2):
            for name, wiener, filter_source in (
                ("no filter", 0.0, None),
                (f"filter of {BEFORE}", 1.0, source),
                ("filter of today", 1.0, None),
            ):
                client.run(use_filter, filter_source)
                runs += 1
                seconds, _ = timed_run(client, dataset, Path(tmp) / f"out-{runs}.zarr", wiener)
                print(f"{name}: {seconds:.1f} s, {mpx / seconds:.3f} Mpx/s", flush=True)


if __name__ == "__main__":
    main()

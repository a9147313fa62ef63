"""What the Wiener step costs the pipeline where SURE takes it.

`benchmarks/throughput.py`'s dataset (16.8 Mpx of the demo's simulated noise) is one
where SURE takes no filter, so its figure does not show the filter's cost. Here the same
dataset and cluster (2 single-threaded workers, tile 384, blocks of 2048 px) run with the
restoration set after planning, as `tests/integration/test_detail_pipeline.py` sets it:
SURE's choice for this data without the filter and the same with the filter whole, each
twice, alternating, in one sitting; the blocks' wall time (planning excluded).

    PYTHONPATH=.:benchmarks python runs/wiener_pipeline.py
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from distributed import Client
from throughput import write_dataset

from fluoden_batch.compute import dask_client
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.detail import Detail


def timed_run(
    client: Client, dataset: Path, out: Path, wiener: float
) -> tuple[float, list[list[float]]]:
    """Denoise ``dataset`` into ``out`` with SURE's restoration for it, its Wiener share set
    to ``wiener``: the blocks' wall time (s, planning excluded), the restoration as stored."""
    cfg = DenoiseConfig(input=dataset, output=out, tile=384, block_min=2048)
    p = plan(cfg)
    chosen = p.job.channel_detail[0]
    p.job = replace(p.job, channel_detail=(replace(chosen, wiener=wiener),))
    started = time.perf_counter()
    execute(p, client)
    return time.perf_counter() - started, Detail.stored(p.job.channel_detail)


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        dask_client(workers=2, dashboard_address="127.0.0.1:0") as client,
    ):
        dataset = write_dataset(Path(tmp), 1, 4096, 512)
        mpx = 4096 * 4096 / 1e6
        for repeat in range(2):
            for wiener in (0.0, 1.0):
                out = Path(tmp) / f"out-{repeat}-{wiener}.zarr"
                seconds, restoration = timed_run(client, dataset, out, wiener)
                print(
                    f"restoration {restoration}: {seconds:.1f} s, {mpx / seconds:.3f} Mpx/s",
                    flush=True,
                )


if __name__ == "__main__":
    main()

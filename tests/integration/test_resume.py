"""Kill a real CLI run mid-way (process group, SIGKILL), rerun, compare bytes with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import (
    chunk_bytes,
    die_mid_chunk_write,
    make_tiny_weights,
    start_cli_denoise,
    write_image,
)
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.io.store import MARKER_DIR
from fluoden_batch.pipeline import execute, plan

pytestmark = pytest.mark.distributed


def test_killed_run_resumes_only_missing_blocks_byte_identical(client, tmp_path):
    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=6, width=16)
    data = np.random.default_rng(3).integers(0, 4000, (3, 384, 384), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    common = {"input": inp, "model": str(weights), "block_min": 32}

    clean = tmp_path / "clean.zarr"
    execute(plan(DenoiseConfig(output=clean, **common)), client)

    out = tmp_path / "killed.zarr"
    proc = start_cli_denoise(
        inp, out, weights, 2, 20, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    markers = out / MARKER_DIR
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let the killed workers' files settle
    done = len(list(markers.glob("*.json")))
    total = 3 * 12 * 12
    assert 20 <= done < total, f"could not interrupt the run ({done}/{total} blocks done)"
    (markers / ".0.0.0.999.tmp").write_text("{")  # what a kill during a marker write leaves
    die_mid_chunk_write(out / "0")  # and what a kill during a chunk write leaves

    p = plan(DenoiseConfig(output=out, **common))
    assert p.resumed and len(p.pending) == total - done and p.stray_removed == 1
    result = execute(p, client)
    assert result.blocks_run == total - done and result.blocks_skipped == done
    assert chunk_bytes(out) == chunk_bytes(clean)
    assert not list(markers.glob("*.tmp"))


def test_a_model_is_its_weights_when_resuming(tmp_path):
    """The same weights under another name or path resume OUT (a renamed old default);
    other weights under the same name are refused, naming the digest."""
    import shutil

    import fluoden_batch as fb
    from fluoden_batch.errors import OutputError

    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=3, width=8)
    data = np.random.default_rng(0).integers(0, 4000, (96, 96), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (32, 32))
    out = tmp_path / "out.zarr"
    fb.denoise(inp, out, model=str(weights), block_min=32, workers=0)
    markers = sorted((out / MARKER_DIR).glob("*.json"))
    markers[0].unlink()  # one block left to do
    renamed = tmp_path / "old-default.safetensors"
    shutil.copyfile(weights, renamed)
    again = fb.denoise(inp, out, model=str(renamed), block_min=32, workers=0)
    assert again.blocks_run == 1
    make_tiny_weights(weights, depth=3, width=8, seed=1)  # other weights, the same path
    with pytest.raises(OutputError, match=r"other parameters \(model_digest\)"):
        fb.denoise(inp, out, model=str(weights), block_min=32, workers=0)

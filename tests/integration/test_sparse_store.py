"""A store of which almost all chunks are missing: refused unless --allow-sparse; with it,
the plan stays small in memory and an interrupt ends the run promptly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from conftest import make_tiny_weights, write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import InputError
from fluoden_batch.io.lock import lock_path
from fluoden_batch.io.ngff import ImageMeta, write_attrs
from fluoden_batch.io.store import MARKER_DIR
from fluoden_batch.pipeline import plan

SIDE = 10**6  # the 10^6 x 10^6 store: 977 x 977 chunks of 1024, 489 x 489 blocks
BLOCKS = 489 * 489


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> tuple[Path, Path]:
    """A 10^6 x 10^6 uint16 OME-Zarr with one chunk written, and tiny weights."""
    tmp = tmp_path_factory.mktemp("sparse")
    group = zarr.open_group(str(tmp / "huge.zarr"), mode="w", zarr_format=3)
    array = group.create_array("0", shape=(SIDE, SIDE), chunks=(1024, 1024), dtype="uint16")
    array[:1024, :1024] = np.random.default_rng(1).integers(0, 4000, (1024, 1024), np.uint16)
    group.attrs.update(write_attrs(ImageMeta(axes="yx", scale=[1.0, 1.0]), "0.5", "0"))
    return tmp / "huge.zarr", make_tiny_weights(tmp / "w.safetensors")


def test_almost_all_chunks_missing_is_refused_before_out_exists(huge, tmp_path):
    inp, weights = huge
    out = tmp_path / "out.zarr"
    with pytest.raises(
        InputError, match=r"only 1 of its 954,529 chunks are stored.*--allow-sparse"
    ):
        plan(DenoiseConfig(input=inp, output=out, model=str(weights)))
    result = CliRunner().invoke(app, ["denoise", str(inp), str(out), "--model", str(weights)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--allow-sparse" in result.output and not out.exists()
    segment = CliRunner().invoke(app, ["segment", str(inp), str(out)])  # segment alike
    assert segment.exit_code == 2 and len(segment.output.strip().splitlines()) == 1
    assert "--allow-sparse" in segment.output and not out.exists()


def test_allow_sparse_plans_every_block_without_a_list_of_them(huge, tmp_path):
    inp, weights = huge
    p = plan(
        DenoiseConfig(input=inp, output=tmp_path / "o.zarr", model=str(weights), allow_sparse=True)
    )
    assert len(p.blocks) == len(p.pending) == BLOCKS
    assert p.pending.pixels() == SIDE * SIDE
    assert p.pending.flat.nbytes == 8 * BLOCKS  # one index per block, no Block objects
    assert any("warning:" in n and "954,528 missing" in n for n in p.notes)
    p.lock.release()


def test_small_sparse_store_is_a_warning_and_a_dense_one_says_nothing(tmp_path, tiny_weights):
    data = np.zeros((128, 64), np.uint16)
    data[:8, :8] = 100  # one of the 128 chunks stored (write_empty_chunks is off): 99.2 %
    sparse = write_image(tmp_path / "sparse.zarr", data, "yx", (8, 8))
    dense = write_image(tmp_path / "dense.zarr", data + 1, "yx", (8, 8))
    for inp, warned in ((sparse, True), (dense, False)):
        cfg = DenoiseConfig(input=inp, output=tmp_path / f"{inp.stem}.out", model=str(tiny_weights))
        p = plan(cfg)
        p.lock.release()
        assert any("only 1 of its 128 chunks are stored" in n for n in p.notes) == warned


def driver_peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of process ``pid``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_of_a_huge_run_is_prompt_and_its_memory_bounded(huge, tmp_path, sig):
    """Before: 239,121 futures at once, 3.3 GiB driver RSS, and SIGINT still waiting after
    10 minutes. Now: a bounded window of tasks; the CLI exits (130) within seconds."""
    inp, weights = huge
    out = tmp_path / "out.zarr"
    cmd = [sys.executable, "-m", "fluoden_batch.cli", "denoise", str(inp), str(out),
           "--model", str(weights), "--allow-sparse", "--workers", "1",
           "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((out / MARKER_DIR).glob("*.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no block finished in 240 s"
        time.sleep(0.05)
    peak = driver_peak_rss_mib(proc.pid)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert waited < 30, f"{sig.name}: {waited:.1f} s from the signal to the exit"
    assert peak < 1024, f"driver peak RSS {peak:.0f} MiB"
    assert "NameError" not in err and "run the same command again" in " ".join(err.split())
    assert not lock_path(out).exists()

"""Bad input: each case gets a clear error naming the problem, or a documented handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import write_image
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import BlockError, InputError
from fluoden_batch.io.source import open_image
from fluoden_batch.pipeline import execute, plan


def run(client, weights, inp: Path, out: Path, **kw):
    return execute(plan(DenoiseConfig(input=inp, output=out, model=str(weights), **kw)), client)


@pytest.mark.parametrize("dtype", ["float16", "int32", "bool", "complex64"])
def test_unsupported_dtypes_are_refused_by_name(tmp_path, dtype):
    inp = write_image(tmp_path / "in.zarr", np.zeros((8, 8), dtype=dtype), "yx", (8, 8))
    with pytest.raises(InputError, match=f"dtype {np.dtype(dtype)} is not supported"):
        open_image(inp)


def test_empty_array_is_refused(tmp_path):
    zarr.create_array(str(tmp_path / "e.zarr"), shape=(0, 10), chunks=(1, 10), dtype="uint8")
    with pytest.raises(InputError, match="empty array"):
        open_image(tmp_path / "e.zarr")


def test_wrong_ngff_axes_and_escaping_paths_are_refused(tmp_path):
    inp = write_image(tmp_path / "in.zarr", np.zeros((2, 8, 8), np.uint8), "zyx", (1, 8, 8))
    group = zarr.open_group(str(inp), mode="r+")
    attrs = group.attrs.asdict()
    attrs["ome"]["multiscales"][0]["axes"] = [{"name": n} for n in ("x", "z", "y")]
    group.attrs.update(attrs)
    with pytest.raises(InputError, match="axes 'xzy'"):
        open_image(inp)
    attrs["ome"]["multiscales"][0]["axes"] = [{"name": n} for n in "zyx"]
    attrs["ome"]["multiscales"][0]["datasets"][0]["path"] = "../../etc"
    group.attrs.update(attrs)
    with pytest.raises(InputError, match="relative path inside"):
        open_image(inp)


def test_huge_chunks_are_refused_before_reading(tmp_path):
    zarr.create_array(
        str(tmp_path / "bomb.zarr"), shape=(40000, 40000), chunks=(40000, 40000), dtype="uint16"
    )
    with pytest.raises(InputError, match="decompresses to 3052 MiB"):
        open_image(tmp_path / "bomb.zarr")


@pytest.mark.distributed
def test_nan_pixels_fail_their_block_by_name(client, tiny_weights, tmp_path):
    data = np.ones((64, 64), np.float32)
    data[40, 50] = np.nan
    data[41, 50] = np.inf
    inp = write_image(tmp_path / "nan.zarr", data, "yx", (32, 32))
    with pytest.raises(BlockError) as info:
        run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    message = str(info.value)
    assert "1 of 4 blocks failed" in message and "block 1.1" in message
    assert "2 NaN/Inf pixels" in message


@pytest.mark.distributed
def test_constant_zero_tiny_and_saturated_planes(client, tiny_weights, tmp_path):
    data = np.zeros((4, 5, 6), np.uint16)
    data[1] = 1234
    data[2] = 65535
    data[3, :, :3] = 65535
    inp = write_image(tmp_path / "flat.zarr", data, "zyx", (1, 5, 6))
    result = run(client, tiny_weights, inp, tmp_path / "out.zarr")
    table = result.metrics.set_index("block")
    assert table.loc["2.0.0", "saturated_fraction"] == 1.0
    assert table.loc["3.0.0", "saturated_fraction"] == 0.5
    assert table.loc["0.0.0", "saturated_fraction"] == 0.0
    assert result.summary["saturated_fraction"] == pytest.approx(0.375)
    out = zarr.open_array(str(result.output), path="0")[:]
    assert out.shape == data.shape and out.dtype == np.uint16


@pytest.mark.distributed
def test_missing_chunks_are_counted(client, tiny_weights, tmp_path):
    data = np.random.default_rng(0).integers(1, 200, (64, 64), dtype=np.uint8)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (32, 32))
    (inp / "0" / "c" / "1" / "0").unlink()
    result = run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    assert result.summary["missing_chunks"] == 1
    assert result.metrics.set_index("block").loc["1.0", "missing_chunks"] == 1


@pytest.mark.distributed
def test_corrupt_chunk_fails_its_block_by_name(client, tiny_weights, tmp_path):
    data = np.random.default_rng(0).integers(0, 60000, (64, 64), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (32, 32))
    chunk = inp / "0" / "c" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(BlockError) as info:
        run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    message = str(info.value)
    assert "cannot read its chunks" in message and "Zstd" in message
    prov = zarr.open_group(str(tmp_path / "out.zarr")).attrs["fluoden"]
    # the block of the corrupt chunk fails, so do those whose halo reads it
    assert "0.1" in prov["last_run"]["failed"] and not prov["complete"]
    assert (zarr.open_array(str(inp), path="0")[32:, :] == data[32:, :]).all()  # input untouched

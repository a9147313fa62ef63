"""The public Python API: arrays in and out, equal to the store runs and to the CLI."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import fluoden_batch as fb
from conftest import blobs, file_bytes, make_tiny_unet_weights, write_image
from fluoden_batch.cli import app
from fluoden_batch.errors import FluodenError, InputError
from fluoden_batch.noise import simulate
from fluoden_batch.pipeline.execution import IN_PROCESS_PIXELS
from fluoden_batch.restore.block import cast_output

pytestmark = pytest.mark.distributed


def _noisy(planes: int = 2, size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stack = [simulate(blobs(rng, size, 6), 2.0, 9.0, clip=(0, 255), rng=rng) for _ in range(planes)]
    return np.rint(np.stack(stack)).astype(np.uint16)


def _stored(tmp_path, data: np.ndarray, chunks: tuple[int, ...]):
    return write_image(tmp_path / "in.zarr", data, "zyx", chunks)


def _read(out) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["0"][:]


def test_readme_one_liner():
    noisy = np.random.default_rng(0).poisson(50, (512, 512)).astype("uint16")
    out = fb.denoise(noisy)
    assert isinstance(out, np.ndarray) and out.shape == (512, 512) and out.dtype == np.uint16
    assert out.std() < noisy.std() / 2  # it denoised (Poisson noise of std ~7 on a flat 50)


@pytest.mark.parametrize("phase_split", [False, True])
def test_array_equals_store_run_and_dask_equals_numpy(tmp_path, tiny_weights, phase_split):
    data = _noisy()
    inp = _stored(tmp_path, data, (1, 96, 96))  # one chunk per plane: the array's blocks
    opts = {"model": str(tiny_weights), "phase_split": phase_split}
    result = fb.denoise(inp, tmp_path / "out.zarr", workers=0, **opts)
    stored = _read(tmp_path / "out.zarr")
    assert result.blocks_run == 2 and not result.failed
    in_memory = fb.denoise(data, **opts)
    np.testing.assert_array_equal(in_memory, stored)
    lazy = fb.denoise(da.from_array(data, chunks=(1, 96, 96)), **opts)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint16
    np.testing.assert_array_equal(lazy.compute(), in_memory)
    from_path = fb.denoise(inp, **opts)  # a path, no output: an array
    np.testing.assert_array_equal(from_path, in_memory)


@pytest.mark.parametrize(
    ("chunks", "phase_split", "unet"),
    [((64, 50), False, False), ((63, 51), True, False), ((63, 51), False, True)],
)
def test_dask_blocks_with_halo_equal_whole_planes(
    tiny_weights, tmp_path, chunks, phase_split, unet
):
    """A Dask array in uneven chunks: every block reads its halo (with --phase-split from
    the 2-pixel grid, a U-Net's from its pooling grid, also where a chunk starts on an odd
    pixel), so the pixels equal the whole-plane run given the same per-channel values
    (float output: no rounding)."""
    data = _noisy(planes=1, size=150).astype(np.float32)
    model = make_tiny_unet_weights(tmp_path / "unet.safetensors") if unet else tiny_weights
    opts = {"model": str(model), "dtype": "float32", "block_min": 16}
    whole = fb.denoise(data, phase_split=phase_split, **opts)
    parts = fb.denoise(da.from_array(data, chunks=(1, *chunks)), phase_split=phase_split, **opts)
    # the channel window is sampled from other blocks: compare through the map itself
    assert parts.numblocks[-2:] == (3, 3)
    np.testing.assert_allclose(parts.compute(), whole, rtol=0.02, atol=0.5)


@pytest.mark.parametrize("planes", [((1, 1), (2, 1)), ((2,), (1, 2))])
def test_dask_planes_grouped_otherwise_equal_numpy(planes):
    """Blocks of several planes (a Dask array chunked along z or c) give the per-channel
    values one-plane blocks give, here all planes sampled: the noise sigma of the default
    model's normalisation is the median over planes, not over blocks (it was: outputs
    0.001-0.009 grey levels apart)."""
    data = np.stack([_noisy(planes=3, size=64, seed=s) for s in (2, 3)]).astype(np.float32)
    whole = fb.denoise(data, axes="czyx")  # the default model: noise normalisation
    lazy = fb.denoise(da.from_array(data, chunks=(*planes, 64, 64)), axes="czyx")
    assert lazy.numblocks[:2] == tuple(len(p) for p in planes)
    np.testing.assert_array_equal(lazy.compute(), whole)


def test_api_equals_cli_byte_for_byte(tmp_path, tiny_weights):
    data = _noisy(planes=3, size=80, seed=1)
    inp = _stored(tmp_path, data, (1, 40, 40))
    options = ["--model", str(tiny_weights), "--block-min", "40", "--tile", "32"]
    cli = CliRunner().invoke(app, ["denoise", str(inp), str(tmp_path / "cli.zarr"), *options])
    assert cli.exit_code == 0, cli.output
    api = fb.denoise(inp, tmp_path / "api.zarr", model=str(tiny_weights), block_min=40, tile=32)
    assert api.blocks_run == 12
    chunks = file_bytes(tmp_path / "api.zarr" / "0" / "c")
    assert len(chunks) == 12 and chunks == file_bytes(tmp_path / "cli.zarr" / "0" / "c")


def test_existing_client_is_reused_and_left_open(client, tmp_path, tiny_weights):
    data = _noisy(planes=2, size=64, seed=2)
    inp = _stored(tmp_path, data, (1, 32, 32))
    here = fb.denoise(inp, tmp_path / "here.zarr", model=str(tiny_weights), block_min=32)
    there = fb.denoise(
        inp, tmp_path / "there.zarr", model=str(tiny_weights), block_min=32, client=client
    )
    assert client.status == "running" and there.blocks_run == here.blocks_run == 8
    np.testing.assert_array_equal(_read(tmp_path / "there.zarr"), _read(tmp_path / "here.zarr"))
    rows = client.run(lambda: 1)
    assert len(rows) == 2  # the workers are still there


def test_segment_and_noise_api(tmp_path):
    data = _noisy(planes=2, size=96, seed=3)
    inp = _stored(tmp_path, data, (1, 48, 48))
    result = fb.segment(inp, tmp_path / "seg.zarr", clusters=3, block_min=48)
    assert result.blocks_run == 8 and result.summary["max_clusters"] == 3
    cli = CliRunner().invoke(
        app, ["segment", str(inp), str(tmp_path / "cli.zarr"), "-k", "3", "--block-min", "48"]
    )
    assert cli.exit_code == 0, cli.output
    seg, cli_out = (zarr.open_array(str(tmp_path / f), path="labels/clusters/0") for f in
                    ("seg.zarr", "cli.zarr"))  # fmt: skip
    np.testing.assert_array_equal(seg[:], cli_out[:])
    stored = fb.estimate_noise(inp)
    in_memory = fb.estimate_noise(data)
    assert [r["a"] for r in stored] == [r["a"] for r in in_memory] and len(stored) == 2


@pytest.mark.parametrize(
    ("method", "options"),
    [("kmeans", {}), ("dbscan", {}), ("kmeans", {"plane_groups": "off", "axes": "cyx"})],
    ids=["kmeans", "dbscan", "kmeans-channels"],
)
def test_segment_array_equals_store_labels_and_dask_equals_numpy(tmp_path, method, options):
    """An array's labels (no output) are the store run's, block for block: the same
    K-means centres (per plane group, or per channel) or the same DBSCAN blocks."""
    data = _noisy(planes=3, size=96, seed=5)
    data[1] = data[1] // 3 + 40  # a dimmer, other plane: its own group or channel
    axes = options.get("axes", "zyx")
    inp = write_image(tmp_path / "in.zarr", data, axes, (1, 48, 48))
    opts = {"clusters": 3, "block_min": 48, "method": method, **options}
    opts.pop("axes", None)
    fb.segment(inp, tmp_path / "seg.zarr", workers=0, **opts)
    group = zarr.open_group(str(tmp_path / "seg.zarr" / "labels"), mode="r")
    names = sorted(group.group_keys())
    stored = (
        np.stack([group[n]["0"][:] for n in names]) if axes == "cyx" else group[names[0]]["0"][:]
    )
    lazy = fb.segment(da.from_array(data, chunks=(1, 48, 48)), axes=axes, **opts)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.int32
    np.testing.assert_array_equal(lazy.compute(), stored)
    np.testing.assert_array_equal(fb.segment(inp, **opts), stored)  # a path: in memory
    whole = fb.segment(data, axes=axes, **opts)  # one block per plane: K-means seam-free
    if method == "kmeans":
        np.testing.assert_array_equal(whole, stored)
    found = set(np.unique(stored).tolist())
    assert found == {0, 1, 2} if method == "kmeans" else len(found - {-1}) >= 2


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint32"])
def test_signed_and_32_bit_integers_denoise_as_their_float32_values(tmp_path, dtype):
    """Background-subtracted (negative) or 32-bit integer data: denoised as their float32
    values, rounded and clipped back to the input's dtype, in memory and from a store."""
    data = _noisy(planes=2, size=64).astype(np.int64) - (0 if dtype == "uint32" else 20)
    data = data.astype(dtype)
    as_float = fb.denoise(data.astype(np.float32))
    in_memory = fb.denoise(data)
    assert in_memory.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(in_memory, cast_output(as_float, np.dtype(dtype)))
    assert (in_memory < 0).any() == (dtype != "uint32")
    stored = _stored(tmp_path, data, (1, 64, 64))
    fb.denoise(stored, tmp_path / "out.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"), path="0"), in_memory)


def test_api_errors_are_one_clear_line(tmp_path):
    data = _noisy(planes=1, size=64)
    with pytest.raises(InputError, match="an output path needs a stored input"):
        fb.denoise(data, tmp_path / "out.zarr")
    with pytest.raises(FluodenError, match=r"configuration: tile: .* \(got 3\)$"):
        fb.denoise(data, tile=3)  # the keyword, not the flag (--tile)
    with pytest.raises(FluodenError, match=r"tiles: unknown option \(did you mean 'tile'\?\)"):
        fb.denoise(data, tiles=64)
    with pytest.raises(InputError, match=r"^workers= is for runs with an output path"):
        fb.denoise(data, workers=0)  # a field of the stored run, not a typo
    with pytest.raises(InputError, match=r"^profile= is for runs with an output path"):
        fb.segment(data, profile="local")
    with pytest.raises(InputError, match="axes 'cyx' do not fit"):
        fb.denoise(data[0], axes="cyx")
    with pytest.raises(InputError, match="dtype int64"):
        fb.denoise(data.astype(np.int64))
    holed = data.astype(np.float32)
    holed[..., 5, 7] = np.nan  # named as a store run names it, not "values are NaN/Inf ..."
    with pytest.raises(InputError, match=r"the array, block 0\.0\.0 .*: 1 NaN/Inf pixels; fill"):
        fb.denoise(holed)
    assert not (tmp_path / "out.zarr").exists()


def test_small_inputs_run_here_larger_on_a_cluster():
    from fluoden_batch.config import ComputeOptions
    from fluoden_batch.pipeline.execution import client_for

    with client_for(ComputeOptions(), IN_PROCESS_PIXELS) as c:
        assert c is None
    with client_for(ComputeOptions(workers=0), 10 * IN_PROCESS_PIXELS) as c:
        assert c is None
    with client_for(ComputeOptions(dashboard_address="127.0.0.1:0"), IN_PROCESS_PIXELS + 1) as c:
        assert c is not None and len(c.scheduler_info()["workers"]) >= 1


def test_classical_protocols_need_no_model(tmp_path):
    """--protocol vst-nlm: no model, (a, b) per channel; blocks with the NLM reach as halo
    equal the whole plane, and the store run equals the array run."""
    from fluoden_batch.pipeline.statistics import channel_noise, gat_parameters
    from fluoden_batch.restore.classical import vst_nlm

    rng = np.random.default_rng(4)
    ramp = np.linspace(20, 300, 90)[None, :] * np.ones((90, 1))
    data = rng.poisson(ramp, (2, 90, 90)).astype(np.uint16)
    inp = _stored(tmp_path, data, (1, 30, 30))
    cli = CliRunner().invoke(
        app, ["denoise", str(inp), str(tmp_path / "out.zarr"), "--protocol", "vst-nlm",
              "--block-min", "30", "--dtype", "float32"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    stored = _read(tmp_path / "out.zarr")
    (est,) = channel_noise(data, "zyx")
    a, b = gat_parameters(est)
    for z in range(2):
        np.testing.assert_allclose(stored[z], vst_nlm(data[z], a, b), rtol=1e-5, atol=1e-4)
    from_array = fb.denoise(data, protocol="vst-nlm", dtype="float32", block_min=30)
    np.testing.assert_array_equal(from_array, stored)
    rows = zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["fluoden"]
    assert rows["model"] == {"name": "vst-nlm", "digest": ""}

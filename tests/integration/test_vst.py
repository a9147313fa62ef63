"""The ``vst`` protocol and per-block noise metrics on a real 2-worker LocalCluster."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.models import load_model
from fluoden_batch.noise import simulate
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import vst

pytestmark = pytest.mark.distributed

A, B = 2.0, 400.0


def noisy(shape: tuple[int, ...], seed: int, a: float = A, b: float = B) -> np.ndarray:
    """uint16 planes: a ramp with broad blobs under Poisson-Gaussian noise, clipped."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for _ in range(math.prod(shape[:-2])):
        n = max(3, h * w // 1000)
        spots = np.zeros((h, w))
        spots.flat[rng.integers(0, h * w, n)] = rng.uniform(0.3, 1.0, n)
        blobs = ndimage.gaussian_filter(spots, 10.0)
        clean = 100 + 2 * yy + 2 * xx + blobs * (2500 / blobs.max())
        planes.append(simulate(np.clip(clean, 0, 4000), a, b, clip=(0, 4095), rng=rng))
    return np.rint(np.stack(planes).reshape(shape)).astype(np.uint16)


def whole_image_vst(weights: Path, data: np.ndarray, job) -> np.ndarray:
    """The vst protocol applied to each whole plane in one forward pass (the model as the
    run applies it: ``job.phase_split``)."""
    module = inference_network(load_model(weights).module, phase_split=job.phase_split)
    out = np.empty(data.shape, dtype=np.float32)
    for idx in np.ndindex(*data.shape[:-2]):
        out[idx] = vst(module, data[idx], job.plane_params(0))
    return out


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(64, 130), st.integers(64, 130)),
    chunk=st.tuples(st.integers(24, 64), st.integers(24, 64)),
    block_min=st.integers(24, 96),
    tile=st.integers(32, 80),
    seed=st.integers(0, 1000),
)
@pytest.mark.parametrize("phase_split", [False, True])
def test_tiled_vst_equals_whole_image_vst(
    client, tiny_weights, shape, chunk, block_min, tile, seed, phase_split
):
    data = noisy(shape, seed)
    with tempfile.TemporaryDirectory() as tmp:
        inp = write_image(Path(tmp) / "in.zarr", data, "zyx", (1, *chunk))
        p = plan(
            DenoiseConfig(
                input=inp,
                output=Path(tmp) / "out.zarr",
                model=str(tiny_weights),
                protocol="vst",
                dtype="float32",
                block_min=block_min,
                tile=tile,
                phase_split=phase_split,
            )
        )
        execute(p, client)
        got = zarr.open_array(str(Path(tmp) / "out.zarr"), path="0")[:]
    assert p.job.protocol == "vst" and p.job.channel_noise is not None
    expected = whole_image_vst(tiny_weights, data, p.job)
    assert np.abs(got - expected).max() < 1e-4 * np.ptp(data)


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory):
    """czyx uint16, channel 0 with (A, B), channel 1 with (4A, 2B); 192 px chunks."""
    data = np.concatenate([noisy((1, 1, 384, 384), 1), noisy((1, 1, 384, 384), 2, 4 * A, 2 * B)])
    return write_image(tmp_path_factory.mktemp("vst") / "in.zarr", data, "czyx", (1, 1, 192, 192))


def test_vst_run_metrics_carry_noise_near_the_truth(client, tiny_weights, two_channels, tmp_path):
    out = tmp_path / "out.zarr"
    cfg = DenoiseConfig(
        input=two_channels, output=out, model=str(tiny_weights), protocol="vst", block_min=192
    )
    p = plan(cfg)
    assert any("trained for the 'whole' protocol" in n for n in p.notes)
    (a0, b0, floor0), (a1, b1, floor1) = p.job.channel_noise
    assert floor0 == floor1 == 0.0  # the data are >= 0: the GAT's inverse as always
    assert a0 == pytest.approx(A, rel=0.15) and a1 == pytest.approx(4 * A, rel=0.15)
    assert math.sqrt(b0) == pytest.approx(math.sqrt(B), rel=0.15)
    assert math.sqrt(b1) == pytest.approx(math.sqrt(2 * B), rel=0.15)
    result = execute(p, client)

    table = pd.read_parquet(out / "metrics.parquet")
    assert len(table) == 8 and table["noise_planes"].eq(1).all()
    for c, (a, b) in enumerate([(A, B), (4 * A, 2 * B)]):
        rows = table[table["start_c"] == c]
        assert rows["noise_a"].mean() == pytest.approx(a, rel=0.15)
        # per-block b is the loosest figure: 192 x 192 px blocks hold few level sets
        assert math.sqrt(rows["noise_b"].mean()) == pytest.approx(math.sqrt(b), rel=0.25)
    assert result.summary["noise_a"] == pytest.approx(table["noise_a"].mean())
    prov = zarr.open_group(str(out), mode="r").attrs["fluoden"]
    assert prov["parameters"]["protocol"] == "vst"
    # floor 0: stored as [a, b], as before the floor was planned (earlier outputs resume)
    assert prov["parameters"]["channel_noise"] == [list(n[:2]) for n in p.job.channel_noise]
    den = zarr.open_array(str(out), path="0")[:]
    assert den.dtype == np.uint16 and den.shape == (2, 1, 384, 384)

    again = plan(cfg)  # resume: the stored (a, b) are reused, nothing left to do
    assert again.resumed and not again.pending
    assert again.job.channel_noise == p.job.channel_noise

    with pytest.raises(OutputError, match="protocol"):
        plan(cfg.model_copy(update={"protocol": "whole"}))
    refused = CliRunner().invoke(  # the CLI refuses before starting any cluster
        app, ["denoise", str(two_channels), str(out), "--model", str(tiny_weights)]
    )
    assert refused.exit_code == 2 and "protocol" in refused.output
    assert "--overwrite" in " ".join(refused.output.split())
    redo = plan(cfg.model_copy(update={"protocol": "whole", "overwrite": True, "detail": "off"}))
    assert not redo.resumed and len(redo.pending) == 8
    # --detail off with whole plans no noise of its own: the blocks get the hot pixels'
    # test's estimate, which is not a stored parameter
    assert redo.job.channel_noise is not None
    assert "channel_noise" not in zarr.open_group(str(out)).attrs["fluoden"]["parameters"]


def test_whole_run_has_noise_metrics_and_flat_blocks_get_none(client, tiny_weights, tmp_path):
    data = noisy((1, 128, 128), 3)
    data[0, :64, :64] = 500  # a constant block: no estimate, but the block succeeds
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 64, 64))
    out = tmp_path / "out.zarr"
    result = execute(
        plan(DenoiseConfig(input=inp, output=out, model=str(tiny_weights), block_min=64)), client
    )
    table = pd.read_parquet(out / "metrics.parquet").set_index("block")
    assert result.blocks_total == 4 and not result.failed
    assert table.loc["0.0.0", "noise_a"] is None or np.isnan(table.loc["0.0.0", "noise_a"])
    assert table.loc["0.0.0", "noise_planes"] == 0
    assert table.drop(index="0.0.0")["noise_a"].notna().all()
    assert result.summary["noise_a"] > 0


def test_vst_on_data_without_usable_noise_is_refused_at_planning(tiny_weights, tmp_path):
    inp = write_image(tmp_path / "flat.zarr", np.full((64, 64), 9, np.uint16), "yx", (64, 64))
    with pytest.raises(InputError, match="protocol whole"):
        plan(
            DenoiseConfig(
                input=inp, output=tmp_path / "o.zarr", model=str(tiny_weights), protocol="vst"
            )
        )
    assert not (tmp_path / "o.zarr").exists()

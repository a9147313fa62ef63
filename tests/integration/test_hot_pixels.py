"""``--hot-pixels`` on a real LocalCluster: blocks equal the whole plane, defects on block
edges included; keep / remove / off; counted; a recorded parameter where not the default."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

import fluoden_batch as fb
from conftest import make_tiny_weights, write_image
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import FluodenError
from fluoden_batch.io.store import read_provenance
from fluoden_batch.models import load_model
from fluoden_batch.noise import simulate
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import whole

pytestmark = pytest.mark.distributed

# defects: inside blocks, on the edges of the 27 px chunks (26/27, 53/54), at the border
DEFECTS = [(5, 5), (26, 40), (27, 13), (53, 54), (40, 26), (0, 70), (79, 79)]


def data() -> np.ndarray:
    """Two (80, 80) planes under Poisson-Gaussian noise with camera defects of 20 000."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:80, :80]
    clean = 30 + 2 * xx + 300 * (((yy - 40) ** 2 + (xx - 35) ** 2) < 12**2)
    z = np.stack([simulate(clean.astype(np.float64), 2.0, 16.0, rng=rng) for _ in range(2)])
    for y, x in DEFECTS:
        z[:, y, x] = 20000.0
    return z.astype(np.float32)


def whole_plane(weights, job, plane: np.ndarray, mode: str) -> np.ndarray:
    """What ``--hot-pixels mode`` does to one whole plane, without blocks or tiles."""
    params = job.plane_params(0)
    hot = find_hot(plane, params.a, params.b, 100.0)
    network = inference_network(load_model(weights).module)
    out = whole(network, inpaint(plane, hot), params)
    return np.where(hot, plane, out) if mode == "keep" else out


@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_blocks_equal_the_whole_plane_and_defects_are_counted(client, tiny_weights, tmp_path, mode):
    z = data()
    inp = write_image(tmp_path / "in.zarr", z, "zyx", (1, 27, 27))
    cfg = DenoiseConfig(
        input=inp, output=tmp_path / "out.zarr", model=str(tiny_weights), dtype="float32",
        block_min=16, tile=40, hot_pixels=mode,
    )  # fmt: skip
    p = plan(cfg)
    assert p.job.hot == (mode, 100.0) and p.job.channel_noise is not None  # --detail sure
    result = execute(p, client)
    got = zarr.open_array(str(cfg.output), path="0")[:]
    for k in range(2):
        expected = whole_plane(tiny_weights, p.job, z[k], mode)
        assert np.abs(got[k] - expected).max() < 1e-4 * np.ptp(z[k])
    at = tuple(np.array(DEFECTS).T)
    if mode == "keep":
        assert (got[(slice(None), *at)] == 20000.0).all()
    else:
        assert (got[(slice(None), *at)] < 1000.0).all()
    table = pd.read_parquet(cfg.output / "metrics.parquet")
    assert table["hot_pixels"].sum() == 2 * len(DEFECTS) == result.summary["hot_pixels"]


def test_defects_no_longer_spread(tmp_path):
    """Away from the defects, ``keep`` gives what the same data without them give (the
    defects replaced by their neighbours' median); ``off`` spreads them around. Here 14
    defects in 12 800 pixels fill the top 0.1 %, whose percentile floors the window's
    sigma (a model with the default's noise normalisation): the window is planned on the
    sample with its hot pixels replaced too (it was planned on the raw data: 28 grey
    levels off)."""
    weights = make_tiny_weights(tmp_path / "noise.safetensors", normalisation="noise")
    z = data()
    fixed = z.copy()
    for k in range(2):
        fixed[k] = inpaint(z[k], z[k] == 20000.0)
    outs, windows = {}, {}
    for name, images, mode in (("keep", z, "keep"), ("off", z, "off"), ("fixed", fixed, "off")):
        inp = write_image(tmp_path / f"{name}-in.zarr", images, "zyx", (1, 80, 80))
        cfg = DenoiseConfig(
            input=inp, output=tmp_path / f"{name}.zarr", model=str(weights), dtype="float32",
            hot_pixels=mode,
        )  # fmt: skip
        p = plan(cfg)
        windows[name] = p.job.channel_ranges
        execute(p, None)
        outs[name] = zarr.open_array(str(cfg.output), path="0")[:]
    assert windows["keep"] == windows["fixed"] != windows["off"]
    others = z != 20000.0
    keep = np.abs(outs["keep"] - outs["fixed"])[others].max()
    off = np.abs(outs["off"] - outs["fixed"])[others].max()
    # measured: 107 (279 before bright values went around the network) and 0.0
    assert off > 50.0 and keep < 1.0


def test_the_setting_is_recorded_where_it_is_not_the_default(tiny_weights, tmp_path):
    inp = write_image(tmp_path / "in.zarr", data(), "zyx", (1, 80, 80))
    base = dict(input=inp, output=tmp_path / "out.zarr", model=str(tiny_weights))
    assert "hot_pixels" not in DenoiseConfig(**base).output_parameters()  # earlier OUTs resume
    execute(plan(DenoiseConfig(**base, hot_pixels="off")), None)
    with pytest.raises(FluodenError, match="hot_pixel"):
        plan(DenoiseConfig(**base))  # resuming with another setting would mix two results


def test_detail_off_still_looks_without_storing_the_noise(tiny_weights, tmp_path):
    """--detail off plans no noise for itself: the hot pixels' test estimates it, and it
    stays out of the stored parameters (earlier --detail off outputs resume); flat data,
    whose noise cannot be estimated, say that nothing is looked for."""
    inp = write_image(tmp_path / "in.zarr", data(), "zyx", (1, 80, 80))
    cfg = DenoiseConfig(
        input=inp, output=tmp_path / "o.zarr", model=str(tiny_weights), detail="off"
    )
    p = plan(cfg)
    assert p.job.channel_noise is not None and p.job.channel_detail is None
    result = execute(p, None)
    assert result.summary["hot_pixels"] == 2 * len(DEFECTS)
    params = read_provenance(cfg.output)["parameters"]
    assert "channel_noise" not in params
    again = plan(cfg)  # estimated again, the same
    assert again.resumed and again.job.channel_noise == p.job.channel_noise
    flat = np.full((1, 64, 64), 7.0, np.float32)
    inp = write_image(tmp_path / "flat.zarr", flat, "zyx", (1, 64, 64))
    q = plan(cfg.model_copy(update={"input": inp, "output": tmp_path / "f.zarr"}))
    assert q.job.channel_noise is None
    assert any("hot pixels are not looked for" in n for n in q.notes)
    assert fb.denoise(data()[:1], model=str(tiny_weights), detail="off").shape == (1, 80, 80)


def test_plane_groups_under_detail_off_are_looked_at_group_by_group(tiny_weights):
    """Planes of two microscopes in one stack, --detail off: each group's noise is
    estimated for the hot pixels' test as its own run would estimate it (they were not
    looked at), and each group's output is its own run's."""
    from test_plane_groups import two_microscopes

    stack = two_microscopes()
    for k in range(4):
        stack[k, 30, 30 + k] = 60_000.0
    kw = {"model": str(tiny_weights), "detail": "off", "dtype": "float32"}
    out = fb.denoise(stack, **kw)
    assert (out[:, 30, 30:34][np.eye(4, dtype=bool)] == 60_000.0).all()  # kept as they were
    for members in ([0, 2], [1, 3]):
        np.testing.assert_array_equal(out[members], fb.denoise(stack[members], **kw))

"""One stack of captures from two microscopes: each group of similar planes is planned as
a separate run over its planes would be, in memory and through the batch engine, and a
resume reuses the groups."""

from __future__ import annotations

from unittest import mock

import dask.array as da
import numpy as np
import pytest
import zarr

import fluoden_batch as fb
from conftest import write_image
from fluoden_batch.config import DenoiseConfig, DenoiseOptions
from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.io.store import read_provenance
from fluoden_batch.noise import simulate
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.pipeline.groups import PlaneGroups, plane_groups
from fluoden_batch.pipeline.params import choose_method, grouped_values
from fluoden_batch.restore.tiles import block_shape, plan_blocks

pytestmark = pytest.mark.distributed


def two_microscopes() -> np.ndarray:
    """(4, 96, 96) float32: white Poisson-Gaussian planes (z = 0, 2; a = 2, b = 100)
    between planes with three times the noise, correlated between neighbours (z = 1, 3)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    planes = []
    for z in range(4):
        clean = 200.0 + yy + xx + 600.0 * (rng.random((96, 96)) > 0.995)
        if z % 2 == 0:
            planes.append(simulate(clean, 2.0, 100.0, rng=rng))
        else:
            planes.append(clean + correlate(rng.normal(0, 80, clean.shape), 0.6))
    return np.stack(planes).astype(np.float32)


def test_each_group_equals_its_own_run(tiny_weights, caplog):
    stack = two_microscopes()
    kw = {"model": str(tiny_weights), "detail": "sure", "dtype": "float32"}
    with caplog.at_level("INFO", logger="fluoden_batch.pipeline.arrays"):
        out = fb.denoise(stack, **kw)
    assert "planes: 2 groups of similar noise" in caplog.text
    assert "group 0: noise parameters (a, b): (" in caplog.text
    assert "group 1: detail restoration (SURE on 2 planes)" in caplog.text
    for members in ([0, 2], [1, 3]):
        np.testing.assert_array_equal(out[members], fb.denoise(stack[members], **kw))


def test_the_engine_runs_groups_and_a_resume_reuses_them(client, tiny_weights, tmp_path):
    stack = two_microscopes()
    inp = write_image(tmp_path / "in.zarr", stack, "zyx", (1, 48, 48))
    cfg = DenoiseConfig(
        input=inp,
        output=tmp_path / "out.zarr",
        model=str(tiny_weights),
        detail="sure",
        dtype="float32",
    )
    first = plan(cfg)
    assert first.job.plane_groups == PlaneGroups((4,), (0, 1, 0, 1))
    assert len(first.job.channel_ranges) == 2 and len(first.job.channel_detail) == 2
    execute(first, client)
    written = zarr.open_array(str(tmp_path / "out.zarr"), path="0")[:]
    lazy = fb.denoise(da.from_array(stack, chunks=(1, 48, 48)), **cfg_kw(cfg))
    np.testing.assert_array_equal(written, lazy.compute(scheduler="sync"))
    params = read_provenance(tmp_path / "out.zarr")["parameters"]
    assert params["plane_groups"] == [0, 1, 0, 1] and len(params["channel_noise"]) == 2
    again = plan(cfg)
    assert not again.pending and again.job.plane_groups == first.job.plane_groups
    for key in ("channel_ranges", "channel_noise", "channel_detail"):
        assert getattr(again.job, key) == getattr(first.job, key)
    assert "detail restoration: reused from the run being resumed" in again.notes


def cfg_kw(cfg: DenoiseConfig) -> dict:
    return {"model": cfg.model, "detail": cfg.detail, "dtype": cfg.dtype}


def test_off_and_runs_planned_before_groups_keep_one_plan_per_channel(tiny_weights, tmp_path):
    stack = two_microscopes()
    inp = write_image(tmp_path / "in.zarr", stack, "zyx", (1, 96, 96))
    cfg = DenoiseConfig(input=inp, output=tmp_path / "old.zarr", model=str(tiny_weights))
    # an OUT planned per channel (as before groups existed), then resumed: still per channel
    with mock.patch("fluoden_batch.pipeline.params.plane_groups", return_value=None):
        old = plan(cfg)
    old.lock.release()
    resumed = plan(cfg)
    assert resumed.resumed and resumed.job.plane_groups is None
    assert resumed.job.channel_ranges == old.job.channel_ranges
    resumed.lock.release()
    off = cfg.model_copy(update={"output": tmp_path / "off.zarr", "plane_groups": "off"})
    assert off.output_parameters()["plane_groups"] == "off"
    assert "plane_groups" not in cfg.output_parameters()
    p = plan(off)
    assert p.job.plane_groups is None and len(p.job.channel_ranges) == 1
    assert not any(n.startswith("planes:") for n in p.notes)
    p.lock.release()
    with pytest.raises(OutputError, match="--overwrite"):  # an `off` OUT rerun with auto
        plan(off.model_copy(update={"plane_groups": "auto"}))


def test_a_group_whose_noise_cannot_be_read_is_named(tiny_weights):
    """Two flat planes of pure noise (z = 1, 3) make their own group, where --protocol vst
    cannot estimate the noise: the error names the group and the way out, which one plan
    would take; planes too small for any plan get the error a plan without groups gives."""
    stack = two_microscopes()
    rng = np.random.default_rng(3)
    stack[1::2] = 500 + rng.normal(0, 60, stack[1::2].shape)
    kw = {"model": str(tiny_weights), "protocol": "vst", "dtype": "float32"}
    with pytest.raises(
        InputError,
        match=r"cannot estimate the noise .*\(in plane group 1, z=1,3; "
        "--plane-groups off plans all planes of a channel together\\)$",
    ):
        fb.denoise(stack, **kw)
    assert fb.denoise(stack, plane_groups="off", **kw).shape == stack.shape
    # where one plan would fail too, the error is the input's, said without groups
    small = stack[:, :16, :16].copy()
    assert plane_groups(small, "zyx", []) is not None
    with pytest.raises(InputError, match=r"too small .* use --protocol whole$"):
        fb.denoise(small, **kw)


def test_a_note_every_group_makes_alike_is_said_once(caplog):
    with caplog.at_level("INFO", logger="fluoden_batch.pipeline.arrays"):
        fb.denoise(two_microscopes(), protocol="masked", dtype="float32")
    assert caplog.text.count("cluster backend:") == 1
    assert "group 0: cluster backend" not in caplog.text
    assert "group 0: K-means centres (K=3): " in caplog.text
    assert "group 1: K-means centres (K=3): " in caplog.text


def test_an_adapting_run_plans_one_group_and_says_why(tiny_weights):
    stack = two_microscopes()
    options = DenoiseOptions(model=str(tiny_weights))
    notes: list[str] = []
    method = choose_method(options, notes)
    blocks = plan_blocks(stack.shape, block_shape(stack.shape, (1, 96, 96), 96))
    values, detail, groups = grouped_values(
        options, stack, "zyx", "the array", blocks, method, True, notes
    )
    assert groups is None and detail is None and len(values.ranges) == 1
    assert notes[0] == (
        "warning: the planes differ in their noise (group 0: z=0,2; group 1: z=1,3); "
        "--adapt fits one model to all of them and plans each channel as one: run each "
        "microscope's images separately"
    )
    assert not any(n.startswith(("planes:", "group")) for n in notes)

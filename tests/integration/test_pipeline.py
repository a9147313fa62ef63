"""The whole engine on a real 2-worker LocalCluster with real Zarr stores and a real model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_tiny_weights, write_image
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import FluodenError
from fluoden_batch.io.ngff import ImageMeta
from fluoden_batch.io.source import open_image
from fluoden_batch.models import load_model
from fluoden_batch.models.normalise import denormalise, normalise, percentile_range
from fluoden_batch.noise.simulate import correlate, simulate
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.inference import Dihedral, PhaseSplit, infer_plane

pytestmark = pytest.mark.distributed


def run(client, **kw):
    return execute(plan(DenoiseConfig(**kw)), client)


def whole_image_reference(weights: Path, data: np.ndarray, axes: str, ranges) -> np.ndarray:
    """Denoise each plane in one forward pass (no tiles, no blocks)."""
    module = load_model(weights).module
    out = np.empty(data.shape, dtype=np.float32)
    c = axes.find("c")
    for idx in np.ndindex(*data.shape[:-2]):
        lo, hi = ranges[idx[c] if c >= 0 else 0]
        out[idx] = denormalise(infer_plane(module, normalise(data[idx], lo, hi)), lo, hi)
    return out


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(20, 150), st.integers(20, 150)),
    chunk=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    block_min=st.integers(16, 96),
    tile=st.integers(32, 80),
    seed=st.integers(0, 1000),
)
def test_tiled_pipeline_equals_whole_image_inference(
    client, tiny_weights, shape, chunk, block_min, tile, seed
):
    data = (np.random.default_rng(seed).random(shape) * 1000).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        inp = write_image(Path(tmp) / "in.zarr", data, "zyx", (1, *chunk))
        p = plan(
            DenoiseConfig(
                input=inp,
                output=Path(tmp) / "out.zarr",
                model=str(tiny_weights),
                dtype="float32",
                block_min=block_min,
                tile=tile,
            )
        )
        execute(p, client)
        got = zarr.open_array(str(Path(tmp) / "out.zarr"), path="0")[:]
    expected = whole_image_reference(tiny_weights, data, "zyx", p.job.channel_ranges)
    assert np.abs(got - expected).max() < 1e-4 * np.ptp(data)


CASES = [
    ("yx", (50, 60), (32, 32)),
    ("cyx", (2, 40, 50), (1, 32, 32)),
    ("tczyx", (2, 2, 2, 30, 40), (1, 1, 1, 16, 32)),
]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize(("axes", "shape", "chunks"), CASES)
def test_metadata_round_trip(client, tiny_weights, tmp_path, axes, shape, chunks, version):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    data = np.random.default_rng(0).integers(0, 4000, shape, dtype=np.uint16)
    units = {a: "micrometer" for a in axes if a in "zyx"} | ({"t": "second"} if "t" in axes else {})
    omero = {"channels": [{"label": f"ch{i}", "color": "00FF00"} for i in range(2)]}
    meta = ImageMeta(
        axes=axes,
        scale=[0.5 + i for i in range(len(axes))],
        units=units,
        omero=omero if "c" in axes else None,
        name="cells",
    )
    inp = write_image(tmp_path / "in.zarr", data, axes, chunks, version, meta)
    out = tmp_path / "out.zarr"
    run(client, input=inp, output=out, model=str(tiny_weights), ngff_version=version, block_min=16)

    src, res = open_image(inp), open_image(out)
    assert res.meta.axes == src.meta.axes == axes
    assert res.meta.scale == src.meta.scale and res.meta.units == src.meta.units
    assert res.meta.omero == src.meta.omero
    assert res.ngff_version == version and res.dtype == np.uint16 and res.shape == shape
    assert res.chunks == chunks
    prov = zarr.open_group(str(out), mode="r").attrs["fluoden"]
    assert prov["complete"] and prov["model"]["digest"].startswith("sha256:")
    assert prov["parameters"]["ngff_version"] == version

    nodes = list(Reader(parse_url(str(out)))())
    assert nodes[0].data[0].shape == shape
    assert [a["name"] for a in nodes[0].metadata["axes"]] == list(axes)


def test_reference_metrics_table_and_summary(client, tiny_weights, tmp_path):
    from fluoden_batch.demo import make_demo_dataset

    noisy, clean = make_demo_dataset(tmp_path, planes=2, size=160, chunk=64)
    out = tmp_path / "out.zarr"
    result = run(
        client, input=noisy, output=out, model=str(tiny_weights), reference=clean, block_min=64
    )
    table = pd.read_parquet(out / "metrics.parquet")
    assert len(table) == result.blocks_total == 2 * 3 * 3
    for col in (
        "block",
        "start_y",
        "start_x",
        "seconds",
        "input_mean",
        "input_std",
        "noise_sigma_in",
        "noise_sigma_out",
        "model",
        "psnr_in",
        "psnr_out",
        "ssim_out",
    ):
        assert col in table.columns
    ref = zarr.open_array(str(clean), path="0")[:].astype(np.float64)
    den = zarr.open_array(str(out), path="0")[:].astype(np.float64)
    mse = ((den - ref) ** 2).mean()
    expected = 10 * np.log10(result.summary["data_range"] ** 2 / mse)
    assert result.summary["psnr_out"] == pytest.approx(expected, abs=1e-6)
    assert zarr.open_group(str(out)).attrs["fluoden"]["summary"]["psnr_out"] == pytest.approx(
        expected
    )


def test_a_constant_reference_is_warned_and_scored_against_a_range_of_one(tiny_weights, tmp_path):
    """A constant reference has no peak-to-peak range to score PSNR with: the plan warns
    and names --data-range (its PSNR had been printed against a range of 1 without a
    word)."""
    data = np.random.default_rng(0).poisson(50, (40, 40)).astype(np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (40, 40))
    ref = write_image(tmp_path / "ref.zarr", np.full((40, 40), 7, np.uint16), "yx", (40, 40))
    cfg = DenoiseConfig(input=inp, output=tmp_path / "o.zarr", model=str(tiny_weights))
    p = plan(cfg.model_copy(update={"reference": ref}))
    result = execute(p, None)
    assert result.summary["data_range"] == 1.0
    (note,) = [n for n in p.notes if n.startswith("warning: reference ")]
    assert "is constant in its sampled blocks" in note and "give --data-range" in note


def test_integer_output_is_clipped_and_rounded(client, tiny_weights, tmp_path):
    data = np.full((40, 40), 255, dtype=np.uint8)
    data[::2] = 0
    inp = write_image(tmp_path / "in.zarr", data, "yx", (40, 40))
    run(client, input=inp, output=tmp_path / "u8.zarr", model=str(tiny_weights))
    run(client, input=inp, output=tmp_path / "f.zarr", model=str(tiny_weights), dtype="float32")
    u8 = zarr.open_array(str(tmp_path / "u8.zarr"), path="0")[:]
    f = zarr.open_array(str(tmp_path / "f.zarr"), path="0")[:]
    assert u8.dtype == np.uint8
    assert (u8 == np.clip(np.rint(f), 0, 255)).all()


def test_tiff_input_and_ingest(client, tiny_weights, tmp_path):
    from fluoden_batch.io.ingest import ingest

    data = np.random.default_rng(1).integers(0, 60000, (3, 70, 50), dtype=np.uint16)
    tif = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        tif,
        data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.5},
    )
    zarr_path = ingest(tif, tmp_path / "stack.zarr", chunks=(32, 32))
    src = open_image(zarr_path)
    assert src.meta.axes == "zyx" and src.meta.scale == [1.5, 0.2, 0.2]
    assert (src.array[:] == data).all() and src.chunks == (1, 32, 32)
    a = run(
        client,
        input=tif,
        output=tmp_path / "from_tif.zarr",
        model=str(tiny_weights),
        chunks=(32, 32),
        block_min=16,
    )
    b = run(
        client,
        input=zarr_path,
        output=tmp_path / "from_zarr.zarr",
        model=str(tiny_weights),
        block_min=16,
    )
    assert a.blocks_total == b.blocks_total
    got_a = zarr.open_array(str(a.output), path="0")[:]
    assert (got_a == zarr.open_array(str(b.output), path="0")[:]).all()


def test_tta_run_equals_whole_image_tta_and_is_a_recorded_parameter(client, tiny_weights, tmp_path):
    data = (np.random.default_rng(5).random((2, 70, 90)) * 1000).astype(np.float32)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    out = tmp_path / "out.zarr"
    cfg = dict(
        input=inp, output=out, model=str(tiny_weights), dtype="float32", block_min=32, tile=40
    )
    p = plan(DenoiseConfig(**cfg, tta=True))
    execute(p, client)
    got = zarr.open_array(str(out), path="0")[:]
    tta = Dihedral(load_model(tiny_weights).module)
    lo, hi = p.job.channel_ranges[0]
    expected = np.stack([denormalise(infer_plane(tta, normalise(z, lo, hi)), lo, hi) for z in data])
    plain = whole_image_reference(tiny_weights, data, "zyx", p.job.channel_ranges)
    assert np.abs(got - expected).max() < 1e-4 * np.ptp(data)
    assert np.abs(got - plain).max() > 1e-3 * np.ptp(data)  # TTA changed the result
    assert zarr.open_group(str(out)).attrs["fluoden"]["parameters"]["tta"] is True
    with pytest.raises(FluodenError, match="tta"):
        plan(DenoiseConfig(**cfg))  # resuming without --tta would mix two results


def test_noise_normalised_model_runs_tiled_with_one_window_per_channel(client, tmp_path):
    """A model whose weights say ``normalisation.method = "noise"``: every tile of a channel
    uses the window from the sampled noise level, and tiling still equals whole-image."""
    weights = make_tiny_weights(tmp_path / "noise.safetensors", normalisation="noise")
    rng = np.random.default_rng(6)
    clean = np.linspace(50, 200, 2 * 64 * 96).reshape(2, 64, 96)
    noise = np.stack([rng.normal(0, 2.0, (64, 96)), rng.normal(0, 8.0, (64, 96))])
    data = (clean + noise).astype(np.float32)  # channel 1 is four times noisier
    inp = write_image(tmp_path / "in.zarr", data, "cyx", (1, 32, 32))
    out = tmp_path / "out.zarr"
    p = plan(
        DenoiseConfig(
            input=inp, output=out, model=str(weights), dtype="float32", block_min=32, tile=40
        )
    )
    execute(p, client)
    (lo0, hi0), (lo1, hi1) = p.job.channel_ranges
    assert lo0 == percentile_range(data[0], 0.1, 99.9)[0]
    assert (hi1 - lo1) / (hi0 - lo0) == pytest.approx(4.0, rel=0.25)
    assert hi0 - lo0 == pytest.approx(40 * 2.0, rel=0.25)
    got = zarr.open_array(str(out), path="0")[:]
    expected = whole_image_reference(weights, data, "cyx", p.job.channel_ranges)
    assert np.abs(got - expected).max() < 1e-4 * np.ptp(data)


@pytest.mark.parametrize("chunk", [32, 27])  # 27: blocks that start and end on odd pixels
def test_phase_split_run_equals_whole_image_phase_split(client, tmp_path, chunk):
    """``--phase-split``: the window's sigma is that of the phases (correlated noise reads
    larger there), blocks and tiles equal whole-plane phase-split inference, and the flag
    is a recorded parameter (resuming without it is refused)."""
    weights = make_tiny_weights(tmp_path / "noise.safetensors", normalisation="noise")
    rng = np.random.default_rng(7)
    clean = np.linspace(50, 200, 2 * 70 * 90).reshape(2, 70, 90)
    data = (clean + correlate(rng.normal(0, 4.0, (2, 70, 90)), 0.6)).astype(np.float32)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, chunk, chunk))
    out = tmp_path / "out.zarr"
    cfg = dict(input=inp, output=out, model=str(weights), dtype="float32", block_min=16, tile=40)
    plain = plan(DenoiseConfig(**{**cfg, "output": tmp_path / "plain.zarr"}))
    p = plan(DenoiseConfig(**cfg, phase_split=True))
    execute(p, client)
    (lo, hi), (plo, phi) = p.job.channel_ranges[0], plain.job.channel_ranges[0]
    assert lo == plo and (hi - lo) > 1.5 * (phi - plo)  # the phases see more of the noise
    split = PhaseSplit(load_model(weights).module)
    expected = [denormalise(infer_plane(split, normalise(z, lo, hi)), lo, hi) for z in data]
    got = zarr.open_array(str(out), path="0")[:]
    assert np.abs(got - np.stack(expected)).max() < 1e-4 * np.ptp(data)
    assert zarr.open_group(str(out)).attrs["fluoden"]["parameters"]["phase_split"] is True
    with pytest.raises(FluodenError, match="phase_split"):
        plan(DenoiseConfig(**cfg))  # resuming without --phase-split would mix two results


def test_phase_split_reads_the_noise_on_the_phases(tmp_path):
    """The (a, b) a --phase-split run plans (for its detail restoration, vst and noise
    maps) is the noise of a pixel, which the full plane's finest scale under-reads when
    neighbouring pixels are correlated."""
    rng = np.random.default_rng(5)
    clean = np.tile(np.linspace(20, 200, 128), (128, 1))
    noisy = simulate(clean, 2.0, 40.0, rng=rng, correlation=0.6).astype(np.float32)
    inp = write_image(tmp_path / "in.zarr", noisy, "yx", (64, 64))
    truth = np.mean(2.0 * clean + 40.0)
    read = {}
    for split in (False, True):
        out = tmp_path / f"out-{split}.zarr"
        execute(plan(DenoiseConfig(input=inp, output=out, phase_split=split)), None)
        ((a, b),) = zarr.open_group(str(out)).attrs["fluoden"]["parameters"]["channel_noise"]
        read[split] = np.mean(a * clean + b)
    assert read[False] < 0.6 * truth and read[True] == pytest.approx(truth, rel=0.3)

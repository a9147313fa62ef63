"""OME-TIFF metadata (channel names, colours, physical sizes and units, time increment)
carried into the OME-Zarr that `ingest` and a direct `denoise` of the TIFF write."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05
from typer.testing import CliRunner

import fluoden_batch as fb
from conftest import blobs, write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig, SegmentConfig
from fluoden_batch.errors import InputError
from fluoden_batch.io.ingest import ingest
from fluoden_batch.io.ome import WINDOW_PERCENTILES
from fluoden_batch.io.source import open_image
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.pipeline.segment import run_segment

NAMES, COLOURS, HEX = ["DAPI", "GFP"], [0x0000FFFF, 0x00FF00FF], ["0000FF", "00FF00"]


def ome_tiff(path: Path, data: np.ndarray, axes: str, **metadata: Any) -> Path:
    """Write ``data`` as an OME-TIFF with tifffile's OME-XML writer."""
    tifffile.imwrite(
        path, data, ome=True, photometric="minisblack", metadata={"axes": axes, **metadata}
    )
    return path


def two_channel_stack(path: Path) -> tuple[Path, np.ndarray]:
    """A 2-channel x 5-z x 256 x 256 uint16 OME-TIFF, named, coloured, with sizes in µm."""
    rng = np.random.default_rng(0)
    data = rng.poisson(200, (2, 5, 256, 256)).astype(np.uint16)
    data[1] *= 4
    sizes = {"PhysicalSizeX": 0.1625, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.1625}
    sizes |= {"PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 0.5, "PhysicalSizeZUnit": "µm"}
    channels = {"Name": NAMES, "Color": COLOURS}
    return ome_tiff(path, data, "CZYX", **sizes, Channel=channels), data


def ngff(out: Path) -> dict[str, Any]:
    """The NGFF attributes of an image group (0.4 or 0.5 layout)."""
    attrs = zarr.open_group(str(out), mode="r").attrs.asdict()
    return attrs.get("ome", attrs)


def validate(out: Path, version: str) -> None:
    """Validate with ome-zarr-models, which requires a window for every omero channel."""
    group = zarr.open_group(str(out), mode="r")
    (Image05 if version == "0.5" else Image04).from_zarr(group)


def expected_windows(data: np.ndarray) -> list[dict[str, float]]:
    """Percentile windows of planes z = 0, 2, 4 of each channel (all of each 256^2 plane)."""
    windows = []
    for channel in data:
        sample = channel[[0, 2, 4]].astype(float)
        start, end = np.percentile(sample, WINDOW_PERCENTILES)
        windows.append({"start": start, "end": end, "min": sample.min(), "max": sample.max()})
    return windows


def assert_stack_metadata(attrs: dict[str, Any], data: np.ndarray) -> None:
    ms = attrs["multiscales"][0]
    assert ms["axes"] == [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    level0 = ms["datasets"][0]["coordinateTransformations"][0]
    assert level0 == {"type": "scale", "scale": [1.0, 0.5, 0.1625, 0.1625]}
    channels = attrs["omero"]["channels"]
    assert [(c["label"], c["color"], c["active"]) for c in channels] == [
        (NAMES[0], HEX[0], True),
        (NAMES[1], HEX[1], True),
    ]
    assert [c["window"] for c in channels] == expected_windows(data)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ingest_keeps_names_colours_sizes_and_units(tmp_path, version):
    tif, data = two_channel_stack(tmp_path / "stack.ome.tif")
    out = ingest(tif, tmp_path / "stack.zarr", chunks=(128, 128), ngff_version=version)
    assert_stack_metadata(ngff(out), data)
    validate(out, version)
    node = next(iter(Reader(parse_url(str(out)))()))  # what napari's ome-zarr reader sees
    assert node.metadata["channel_names"] == NAMES
    assert node.metadata["contrast_limits"] == [
        [w["start"], w["end"]] for w in expected_windows(data)
    ]
    shown = CliRunner().invoke(app, ["info", str(out)])
    assert shown.exit_code == 0 and "DAPI (#0000FF), GFP (#00FF00)" in shown.output


def test_time_axis_gets_the_time_increment_and_its_unit(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, (3, 4, 32, 48), dtype=np.uint16)
    tif = ome_tiff(
        tmp_path / "movie.ome.tif",
        data,
        "TZYX",
        TimeIncrement=250,
        TimeIncrementUnit="ms",
        PhysicalSizeX=65,
        PhysicalSizeXUnit="nm",
        PhysicalSizeY=65,
        PhysicalSizeYUnit="nm",
        PhysicalSizeZ=0.3,
        Channel={"Name": ["mCherry"], "Color": [-16776961]},
    )
    out = ingest(tif, tmp_path / "movie.zarr")
    ms = ngff(out)["multiscales"][0]
    assert [(a["name"], a.get("unit")) for a in ms["axes"]] == [
        ("t", "millisecond"),
        ("z", "micrometer"),
        ("y", "nanometer"),
        ("x", "nanometer"),
    ]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [250.0, 0.3, 65.0, 65.0]
    assert [(c["label"], c["color"]) for c in ngff(out)["omero"]["channels"]] == [
        ("mCherry", "FF0000")
    ]
    validate(out, "0.5")


@pytest.mark.distributed
@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_direct_denoise_of_the_tiff_keeps_its_metadata(client, tiny_weights, tmp_path, version):
    tif, data = two_channel_stack(tmp_path / "stack.ome.tif")
    out = tmp_path / "den.zarr"
    options = {"chunks": (128, 128), "ngff_version": version}
    cfg = DenoiseConfig(input=tif, output=out, model=str(tiny_weights), **options)
    result = execute(plan(cfg), client)
    assert not result.failed
    assert_stack_metadata(ngff(result.output), data)  # windows of the input, as sampled
    validate(result.output, version)
    assert open_image(out).description == open_image(tif).description


@pytest.mark.distributed
def test_direct_segment_of_the_tiff_keeps_its_metadata_and_the_labels_its_units(client, tmp_path):
    tif, data = two_channel_stack(tmp_path / "stack.ome.tif")
    cfg = SegmentConfig(
        input=tif, output=tmp_path / "seg.zarr", cluster_backend="cpu", quality=False
    )
    result = run_segment(cfg, client=client)
    assert not result.failed
    assert_stack_metadata(ngff(result.output), data)
    labels = ngff(result.output / "labels" / "clusters-c0")["multiscales"][0]
    assert [(a["name"], a.get("unit")) for a in labels["axes"]] == [
        ("z", "micrometer"),
        ("y", "micrometer"),
        ("x", "micrometer"),
    ]
    assert labels["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.1625, 0.1625]
    validate(result.output, "0.5")


def test_a_tiff_without_ome_metadata_gets_defaults(tmp_path):
    tif = tmp_path / "plain.tif"
    tifffile.imwrite(tif, np.ones((2, 16, 16), np.uint16), photometric="minisblack")
    out = ingest(tif, tmp_path / "plain.zarr")
    attrs = ngff(out)
    assert "omero" not in attrs
    assert [a.get("unit") for a in attrs["multiscales"][0]["axes"]] == [None, None, None]
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        1.0,
        1.0,
        1.0,
    ]
    validate(out, "0.5")


@pytest.mark.parametrize(
    ("write", "shape", "axes", "order"),
    [
        ({"imagej": True, "metadata": {"axes": "TZCYX"}}, (2, 3, 2, 24, 40), "tczyx", (0, 2, 1)),
        ({"ome": True, "metadata": {"axes": "ZCYX"}}, (3, 2, 24, 40), "czyx", (1, 0)),
        ({"photometric": "rgb"}, (24, 40, 3), "cyx", (2, 0, 1)),  # colours last
    ],
    ids=["imagej-TZCYX", "ome-ZCYX", "rgb-YXS"],
)
def test_tiff_axes_out_of_ngff_order_are_read_in_it(tmp_path, write, shape, axes, order):
    """Fiji's hyperstacks store Z before C, an RGB TIFF its colours last: read in NGFF
    order, not labelled in the stored order (a ZCYX stack of 3 z and 2 channels had read
    as 3 channels of 2 z, an RGB image as 24 planes of 40 x 3 pixels)."""
    data = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", data, **write)
    source = open_image(tmp_path / "in.tif")
    assert source.meta.axes == axes
    expected = data.transpose(*order, *range(len(order), data.ndim))  # leading axes moved
    assert source.shape == expected.shape and source.chunks[-3:] == (1, 24, 40)
    np.testing.assert_array_equal(source.array[...], expected)
    lead = (1,) * (data.ndim - 2)
    np.testing.assert_array_equal(source.array[(*lead, slice(3, 9), 5)], expected[lead][3:9, 5])
    np.testing.assert_array_equal(source.array[:, 0], expected[:, 0])
    stored = "".join(axes[order.index(i)] if i in order else axes[i] for i in range(len(axes)))
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "in.tif")], terminal_width=200)
    assert f"{axes} (stored as {stored}, read in NGFF order)" in shown.output


def test_a_hyperstack_denoises_as_the_same_data_stored_in_ngff_order(tmp_path, tiny_weights):
    data = np.random.default_rng(1).poisson(300, (3, 2, 48, 48)).astype(np.uint16)  # z, c
    tifffile.imwrite(tmp_path / "zc.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    stored = write_image(tmp_path / "cz.zarr", data.transpose(1, 0, 2, 3), "czyx", (1, 1, 48, 48))
    runs = {}
    for name, source in (("tif", tmp_path / "zc.tif"), ("zarr", stored)):
        fb.denoise(source, tmp_path / f"{name}.out.zarr", model=str(tiny_weights), workers=0)
        runs[name] = zarr.open_array(str(tmp_path / f"{name}.out.zarr"), path="0", mode="r")
    assert ngff(tmp_path / "tif.out.zarr")["multiscales"][0]["axes"][0]["name"] == "c"
    np.testing.assert_array_equal(runs["tif"][:], runs["zarr"][:])
    lazy = fb.denoise(tmp_path / "zc.tif", model=str(tiny_weights))  # in memory: small
    np.testing.assert_array_equal(lazy, runs["zarr"][:])


@pytest.mark.parametrize(
    ("tiff_axes", "axes", "order"),
    [
        ("QYX", "zyx", ()),  # tifffile's unknown axis: a plain stack, as before
        ("QQYX", "czyx", ()),  # two unknown: the last letters of tczyx
        ("QYXS", "czyx", (3, 0, 1, 2)),  # a sequence of RGB images
        ("YXS", "cyx", (2, 0, 1)),
        ("TZCYX", "tczyx", (0, 2, 1, 3, 4)),
        ("CZYX", "czyx", ()),
    ],
)
def test_tiff_axes_mapping(tiff_axes, axes, order):
    from fluoden_batch.io.source import _tiff_axes

    assert _tiff_axes(tiff_axes, Path("x.tif")) == (axes, order)


def test_two_channel_axes_in_a_tiff_are_refused_by_name(tmp_path):
    tif = tmp_path / "crgb.ome.tif"
    data = np.zeros((2, 16, 16, 3), np.uint8)
    tifffile.imwrite(tif, data, photometric="rgb", ome=True, metadata={"axes": "CYXS"})
    result = CliRunner().invoke(app, ["info", str(tif)])
    assert result.exit_code == 2
    assert "TIFF axes 'CYXS' give two 'c' axes" in " ".join(result.output.split())


def positions(tif: Path) -> list[np.ndarray]:
    """A multi-position OME-TIFF (one image series per position) of different shapes,
    axes, pixel sizes and channel names; returns each position's data."""
    rng = np.random.default_rng(3)
    scenes = [[blobs(rng, 48)[:32, :40] for _ in range(2)], [blobs(rng, 48) for _ in range(3)]]
    data = [rng.poisson(3 * np.stack(planes)).astype(np.uint16) for planes in scenes]
    with tifffile.TiffWriter(tif, ome=True) as writer:
        writer.write(
            data[0],
            photometric="minisblack",
            metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
        writer.write(
            data[1],
            photometric="minisblack",
            metadata={
                "axes": "CYX",
                "PhysicalSizeX": 0.25,
                "PhysicalSizeY": 0.25,
                "Channel": {"Name": ["a", "b", "c"]},
            },
        )
    return data


def test_a_tiff_of_several_series_reads_the_one_asked_and_names_the_others(tmp_path, caplog):
    """A multi-position acquisition: series 0 by default, ``series=1`` the second with
    its own axes, pixel sizes and channel names (its OME image, not the first's); the
    warning names the series left out."""
    tif = tmp_path / "positions.ome.tif"
    data = positions(tif)
    with caplog.at_level(logging.WARNING):
        first, second = open_image(tif), open_image(tif, series=1)
    np.testing.assert_array_equal(first.array[:], data[0])
    np.testing.assert_array_equal(second.array[:], data[1])
    assert (first.meta.axes, first.meta.scale) == ("zyx", [1.0, 0.5, 0.5])
    assert (second.meta.axes, second.meta.scale) == ("cyx", [1.0, 0.25, 0.25])
    assert [c.name for c in second.description.channels] == ["a", "b", "c"]
    assert second.series == ("(2, 32, 40) ZYX", "(3, 48, 48) CYX")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "reads series 0, (2, 32, 40) ZYX, and not 1: (3, 48, 48) CYX" in warned[0]
    assert "reads series 1, (3, 48, 48) CYX, and not 0: (2, 32, 40) ZYX" in warned[1]
    assert all("--series N reads another" in w for w in warned)


def test_info_lists_every_series_once(tmp_path, caplog):
    """`fluoden info` of a multi-position TIFF: a row lists the series and which is shown;
    the reading warning, which says the same, is not logged as well (other commands still
    log it)."""
    tif = tmp_path / "positions.ome.tif"
    positions(tif)
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["info", str(tif), "--series", "1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "0: (2, 32, 40) ZYX; 1: (3, 48, 48) CYX (shown: 1; --series N shows another)" in text
    assert not [r for r in caplog.records if "image series" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        open_image(tif, series=1)
    assert [r for r in caplog.records if "image series" in r.getMessage()]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["info", "{tif}", "--series", "2"], "--series 2: the file holds 2 image series (0 to 1)"),
        (["denoise", "{tif}", "{out}", "--series", "5"], "--series 5: the file holds 2 image"),
        (["denoise", "{zarr}", "{out}", "--series", "1"], "a Zarr store holds one image per group"),
        (["ingest", "{p1}", "{p2}", "{out}", "--series", "1"], "2 image files are a stack"),
        (["estimate-noise", "{tif}", "--series", "-1"], "--series"),
    ],
    ids=["info-range", "denoise-range", "zarr", "ingest-files", "negative"],
)
def test_a_series_the_input_does_not_hold_is_one_line_and_exit_2(tmp_path, args, said):
    tif = tmp_path / "positions.ome.tif"
    positions(tif)
    zarr_in = write_image(tmp_path / "in.zarr", np.zeros((16, 16), np.uint16), "yx", (16, 16))
    planes = [tmp_path / "p1.tif", tmp_path / "p2.tif"]
    for plane in planes:
        tifffile.imwrite(plane, np.zeros((8, 8), np.uint8))
    names = {"tif": tif, "out": tmp_path / "out.zarr", "zarr": zarr_in, "p1": planes[0]}
    names["p2"] = planes[1]
    result = CliRunner().invoke(app, [a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "out.zarr").exists()


@pytest.mark.distributed
def test_a_series_denoises_on_workers_as_its_array_does_and_resumes_only_itself(
    client, tiny_weights, tmp_path
):
    """Series 1 of a multi-position TIFF, denoised on two Dask workers (which reopen
    that series), equals its array denoised in memory; its output carries that series's
    pixel sizes; a rerun with another series is refused as other parameters."""
    tif = tmp_path / "positions.ome.tif"
    data = positions(tif)
    out = tmp_path / "den.zarr"
    cfg = DenoiseConfig(input=tif, output=out, model=str(tiny_weights), series=1)
    result = execute(plan(cfg), client)
    assert not result.failed and result.blocks_run == 3
    written = zarr.open_array(str(out), path="0", mode="r")[:]
    np.testing.assert_array_equal(written, fb.denoise(data[1], model=str(tiny_weights), axes="cyx"))
    np.testing.assert_array_equal(written, fb.denoise(tif, model=str(tiny_weights), series=1))
    ms = ngff(out)["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.25, 0.25]
    assert execute(plan(cfg), client).blocks_run == 0  # resumed: nothing left
    again = CliRunner().invoke(app, ["denoise", str(tif), str(out), "--model", str(tiny_weights)])
    assert again.exit_code == 2 and "other parameters" in again.output and "series" in again.output


def test_ingest_and_segment_and_estimate_noise_read_the_series_asked(tmp_path):
    tif = tmp_path / "positions.ome.tif"
    data = positions(tif)
    ingested = ingest(tif, tmp_path / "second.ome.zarr", series=1)
    np.testing.assert_array_equal(zarr.open_array(str(ingested), path="0", mode="r")[:], data[1])
    assert [c["label"] for c in ngff(ingested)["omero"]["channels"]] == ["a", "b", "c"]
    rows = fb.estimate_noise(tif, series=1)
    assert [r["c"] for r in rows] == [0, 1, 2]
    assert [r["a"] for r in rows] == [r["a"] for r in fb.estimate_noise(data[1], axes="cyx")]
    cfg = SegmentConfig(input=tif, output=tmp_path / "seg.zarr", series=1, cluster_backend="cpu")
    result = run_segment(cfg, client=None)
    assert not result.failed
    labels = zarr.open_group(str(result.output / "labels"), mode="r")
    assert sorted(labels.group_keys()) == ["clusters-c0", "clusters-c1", "clusters-c2"]


def test_series_of_an_array_is_refused(tiny_weights):
    with pytest.raises(InputError, match="an array is one image"):
        fb.denoise(np.zeros((32, 32), np.float32), model=str(tiny_weights), series=1)
    with pytest.raises(InputError, match="series=, workers= apply to a stored image"):
        fb.estimate_noise(np.zeros((32, 32), np.float32), series=1, workers=2)


def broken_copy(tif: Path, old: bytes, new: bytes) -> Path:
    """A copy of ``tif`` with ``old`` replaced by ``new`` (same length) in its OME-XML."""
    assert len(old) == len(new)
    raw = tif.read_bytes()
    assert raw.count(old) == 1
    bad = tif.with_name("bad.ome.tif")
    bad.write_bytes(raw.replace(old, new))
    return bad


def test_unreadable_ome_xml_is_one_warning_and_ingest_uses_defaults(tmp_path, caplog):
    tif, data = two_channel_stack(tmp_path / "stack.ome.tif")
    bad = broken_copy(tif, b"</Pixels>", b"</Pixelz>")
    with caplog.at_level(logging.WARNING):
        out = ingest(bad, tmp_path / "bad.zarr")
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "OME-XML not readable" in warned[0].getMessage()
    attrs = ngff(out)
    assert "omero" not in attrs
    # without its OME-XML the file is a plain stack of 10 pages: read as z, y, x
    ms = attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0]
    assert (zarr.open_array(str(out), path="0")[:] == data.reshape(10, 256, 256)).all()


def test_a_unit_ome_does_not_know_is_one_error_line_and_exit_2(tmp_path):
    tif, _ = two_channel_stack(tmp_path / "stack.ome.tif")
    bad = broken_copy(tif, b'PhysicalSizeZUnit="\xc2\xb5m"', b'PhysicalSizeZUnit="fur"')
    result = CliRunner().invoke(app, ["ingest", str(bad), str(tmp_path / "out.zarr")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0], result.stderr
    assert "PhysicalSizeZUnit 'fur' is not a unit the OME schema knows" in lines[0]
    assert not (tmp_path / "out.zarr").exists()

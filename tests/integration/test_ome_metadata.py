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
from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig, SegmentConfig
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


def test_a_tiff_of_several_series_warns_which_it_reads(tmp_path, caplog):
    """A multi-position acquisition (one series per position): the first is read, and
    the warning names the others, rather than leaving them out without a word."""
    tif = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(tif, ome=True) as writer:
        for planes in (2, 3):
            data = np.full((planes, 32, 32), planes, np.uint16)
            writer.write(data, photometric="minisblack", metadata={"axes": "ZYX"})
    with caplog.at_level(logging.WARNING):
        source = open_image(tif)
    assert source.shape == (2, 32, 32) and int(source.array[1, 0, 0]) == 2
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "holds 2 image series; fluoden reads the first, (2, 32, 32) ZYX" in warned
    assert "not (3, 32, 32) ZYX" in warned


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

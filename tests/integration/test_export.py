"""`fluoden export`: an image (a denoised OUT) as one OME-TIFF, through the CLI; `fluoden
ingest` of the file gives the image back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

import fluoden_batch.io.export as export_module
from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.io.source import open_image
from fluoden_batch.io.store import update_provenance

runner = CliRunner()

OME = {
    "axes": "TCZYX",
    "PhysicalSizeX": 0.2,
    "PhysicalSizeXUnit": "µm",
    "PhysicalSizeY": 0.2,
    "PhysicalSizeYUnit": "µm",
    "PhysicalSizeZ": 1.5,
    "PhysicalSizeZUnit": "µm",
    "TimeIncrement": 30.0,
    "TimeIncrementUnit": "s",
    "Channel": {"Name": ["DAPI", "GFP"]},
}


def _run(*args: object):
    return runner.invoke(app, [*map(str, args)])


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_export_then_ingest_gives_the_image_back(tmp_path, compression):
    """Data, axes, physical sizes with units, and channel names survive the round trip
    OME-TIFF -> OME-Zarr -> OME-TIFF -> OME-Zarr."""
    data = np.random.default_rng(0).integers(0, 60000, (2, 2, 3, 40, 56)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "src.ome.tif", data, ome=True, metadata=OME)
    assert _run("ingest", tmp_path / "src.ome.tif", tmp_path / "a.ome.zarr").exit_code == 0
    result = _run(
        "export", tmp_path / "a.ome.zarr", tmp_path / "a.ome.tif", "--compression", compression
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.ome.tif"), data)
    assert _run("ingest", tmp_path / "a.ome.tif", tmp_path / "b.ome.zarr").exit_code == 0
    a, b = open_image(tmp_path / "a.ome.zarr"), open_image(tmp_path / "b.ome.zarr")
    np.testing.assert_array_equal(b.array[:], a.array[:])
    assert (b.meta.axes, b.meta.scale) == ("tczyx", [30.0, 1.0, 1.5, 0.2, 0.2])
    assert b.meta.units == a.meta.units == {"t": "second", **dict.fromkeys("zyx", "micrometer")}
    assert [c.name for c in b.description.channels] == ["DAPI", "GFP"]


def test_large_planes_are_written_in_tiles(tmp_path, monkeypatch):
    """Planes over PAGE_PIXELS go in tiles (edges cut short), read back equal."""
    monkeypatch.setattr(export_module, "PAGE_PIXELS", 100)
    monkeypatch.setattr(export_module, "TILE", 32)
    data = np.random.default_rng(1).random((2, 100, 130)).astype(np.float32)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 48, 48))
    export_module.export_tiff(inp, tmp_path / "t.tif")
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 32
        np.testing.assert_array_equal(tif.asarray(), data)


def test_an_unfinished_output_and_bad_names_are_one_line(tmp_path):
    inp = write_image(tmp_path / "in.zarr", np.ones((40, 40), np.uint8), "yx", (40, 40))
    update_provenance(inp, complete=False)  # as a denoise run that was stopped leaves it
    cases = [
        (inp, tmp_path / "x.tif", "the run writing it has not finished"),
        (tmp_path / "none.zarr", tmp_path / "x.tif", "no such file or directory"),
        (inp, tmp_path / "x.zarr", "give a name ending .ome.tif or .tif"),
    ]
    for image, out, said in cases:
        result = _run("export", image, out)
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and not out.exists()
    update_provenance(inp, complete=True)
    result = _run("export", inp, inp / "x.tif")
    assert result.exit_code == 2 and "lies inside the input" in result.output
    (tmp_path / "taken.tif").write_bytes(b"mine")
    result = _run("export", inp, tmp_path / "taken.tif")
    assert result.exit_code == 2 and "already exists" in result.output
    assert (tmp_path / "taken.tif").read_bytes() == b"mine"
    assert _run("export", inp, tmp_path / "ok.tif").exit_code == 0
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize("command", ["denoise", "segment", "ingest"])
def test_an_output_named_as_an_image_file_is_refused(tmp_path, command):
    """OME-Zarr outputs are folders: `denoise in.tif out.tif` made a folder named out.tif,
    which no TIFF reader opens. Refused, with the name to use and the way to a TIFF; an
    existing output of that name (written before) still resumes."""
    data = np.zeros((40, 40), np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", data)
    result = _run(command, tmp_path / "in.tif", tmp_path / "out.tif")
    assert result.exit_code == 2
    assert "name it out.ome.zarr, and `fluoden export` it" in " ".join(result.output.split())
    assert not (tmp_path / "out.tif").exists()
    zarr.open_group(str(tmp_path / "old.tif"), mode="w")  # an output of an earlier version
    result = _run(command, tmp_path / "in.tif", tmp_path / "old.tif")
    assert "fluoden writes OME-Zarr images" not in result.output

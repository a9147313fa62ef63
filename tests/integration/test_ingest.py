"""`fluoden ingest` of 2-D image files (PNG, JPEG, TIFF) as one stack, through the CLI."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from fluoden_batch.cli import app
from fluoden_batch.io.source import open_image

runner = CliRunner()


def _planes(n: int, shape=(40, 56), dtype=np.uint16) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 4000, shape).astype(dtype) for _ in range(n)]


def _ingest(*args: object):
    return runner.invoke(app, ["ingest", *map(str, args)])


def test_png_files_stack_in_natural_order(tmp_path):
    """img_10 comes after img_2, though a shell's *.png lists it first."""
    planes = _planes(3)
    names = ["img_1.png", "img_2.png", "img_10.png"]
    for name, plane in zip(names, planes, strict=True):
        imagecodecs.imwrite(tmp_path / name, plane)
    listed = sorted(tmp_path.glob("*.png"))  # img_1, img_10, img_2: as a shell gives them
    result = _ingest(*listed, tmp_path / "out.ome.zarr", "--axes", "tyx")
    assert result.exit_code == 0, result.output
    source = open_image(tmp_path / "out.ome.zarr")
    assert source.meta.axes == "tyx" and source.dtype == np.uint16
    np.testing.assert_array_equal(source.array[:], np.stack(planes))


def test_a_folder_stands_for_its_image_files_and_one_file_is_an_image(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    planes = _planes(2, dtype=np.uint8)
    for i, plane in enumerate(planes):
        tifffile.imwrite(folder / f"frame_{i}.tif", plane)
    (folder / "notes.txt").write_text("not an image")
    info = runner.invoke(app, ["info", str(folder)])  # what to do with it, said on the way
    assert info.exit_code == 2
    assert "a folder of image files: stack them with `fluoden ingest`" in info.output
    assert _ingest(folder, tmp_path / "f.ome.zarr").exit_code == 0
    stack = open_image(tmp_path / "f.ome.zarr")
    assert stack.meta.axes == "zyx"
    np.testing.assert_array_equal(stack.array[:], np.stack(planes))
    imagecodecs.imwrite(tmp_path / "one.png", planes[0])
    assert _ingest(tmp_path / "one.png", tmp_path / "one.ome.zarr").exit_code == 0
    one = open_image(tmp_path / "one.ome.zarr")
    assert one.meta.axes == "yx"
    np.testing.assert_array_equal(one.array[:], planes[0])


@pytest.mark.parametrize(
    ("second", "said"),
    [
        (np.zeros((40, 50), np.uint16), "(40, 50) uint16, but a.png is (40, 56) uint16"),
        (np.zeros((40, 56), np.uint8), "(40, 56) uint8, but a.png is (40, 56) uint16"),
        (np.zeros((40, 56, 3), np.uint16), "a colour (RGB/RGBA) image of shape (40, 56, 3)"),
    ],
)
def test_files_that_do_not_stack_are_refused_naming_the_file(tmp_path, second, said):
    imagecodecs.imwrite(tmp_path / "a.png", _planes(1)[0])
    imagecodecs.imwrite(tmp_path / "b.png", second)
    result = _ingest(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "out.ome.zarr")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{tmp_path / 'b.png'}: {said}" in text
    assert not (tmp_path / "out.ome.zarr").exists()  # removed again: a rerun starts afresh


def test_a_stack_among_files_and_an_empty_folder_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _planes(1)[0])
    tifffile.imwrite(tmp_path / "stack.tif", np.stack(_planes(2)))
    result = _ingest(tmp_path / "a.tif", tmp_path / "stack.tif", tmp_path / "out.ome.zarr")
    assert result.exit_code == 2
    assert "a stack of files takes 2-D images" in " ".join(result.output.split())
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _ingest(empty, tmp_path / "out.ome.zarr")
    assert result.exit_code == 2
    assert f"{empty}: a folder without image files" in " ".join(result.output.split())
    assert not (tmp_path / "out.ome.zarr").exists()

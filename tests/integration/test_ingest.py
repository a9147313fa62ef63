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
        (np.zeros((40, 56, 3), np.uint16), "(3, 40, 56) uint16, but a.png is (40, 56) uint16"),
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


def test_rgb_files_give_their_colours_as_a_channel_axis(tmp_path):
    """An RGB export (one fluorescence channel in green, the others empty) is ingested
    as channels, in NGFF order whatever the stack's axis; an opaque RGBA file as RGB."""
    colour = [np.stack(_planes(3, dtype=np.uint8), axis=-1) for _ in range(2)]
    colour[1] = colour[1] // 2
    imagecodecs.imwrite(tmp_path / "a.png", colour[0])
    opaque = np.concatenate([colour[1], np.full((40, 56, 1), 255, np.uint8)], axis=-1)
    imagecodecs.imwrite(tmp_path / "b.png", opaque)
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    cases = [(files[:1], [], "cyx", (3, 40, 56)), (files, [], "czyx", (3, 2, 40, 56))]
    cases.append((files, ["--axes", "tcyx"], "tcyx", (2, 3, 40, 56)))
    for i, (names, flags, axes, shape) in enumerate(cases):
        result = _ingest(*names, tmp_path / f"{i}.ome.zarr", *flags)
        assert result.exit_code == 0, result.output
        image = open_image(tmp_path / f"{i}.ome.zarr")
        assert (image.meta.axes, image.shape) == (axes, shape)
        expected = np.stack([np.moveaxis(c, -1, 0) for c in colour[: len(names)]])  # (f, c)
        expected = expected[0] if len(names) == 1 else expected
        if axes == "czyx":
            expected = np.swapaxes(expected, 0, 1)
        np.testing.assert_array_equal(image.array[:], expected)
        labels = [ch["label"] for ch in image.meta.omero["channels"]]
        assert labels == ["red", "green", "blue"]


@pytest.mark.parametrize(
    ("files", "flags", "said"),
    [
        (["varying.png"], [], "an RGBA image whose alpha (transparency) varies (0..55)"),
        (["a.png", "a.png"], ["--axes", "tyx"], "axes 'tyx' given for 2 file(s) of RGB images"),
    ],
)
def test_rgb_files_that_cannot_be_channels_are_refused(tmp_path, files, flags, said):
    rgba = np.zeros((40, 56, 4), np.uint8)
    rgba[..., 3] = np.arange(56)[None]
    imagecodecs.imwrite(tmp_path / "varying.png", rgba)
    imagecodecs.imwrite(tmp_path / "a.png", np.ascontiguousarray(rgba[..., :3]))
    result = _ingest(*(tmp_path / f for f in files), tmp_path / "out.ome.zarr", *flags)
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())
    assert not (tmp_path / "out.ome.zarr").exists()


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


def test_shards_are_written_whole_and_kept_by_denoise(tmp_path):
    """``--shards`` writes a sharded NGFF 0.5 image (shards no larger than the chunks
    that cover a plane), equal to the TIFF; `denoise` keeps its shards."""
    data = np.stack(_planes(3, shape=(100, 150)))
    tifffile.imwrite(tmp_path / "stack.tif", data)
    out = tmp_path / "sharded.ome.zarr"
    result = _ingest(tmp_path / "stack.tif", out, "--chunks", "32,32", "--shards", "64,256")
    assert result.exit_code == 0, result.output
    image = open_image(out)
    assert (image.chunks, image.shards) == ((1, 32, 32), (1, 64, 160))
    np.testing.assert_array_equal(image.array[:], data)
    assert len(list((out / "0" / "c").rglob("*"))) == 3 + 3 * 2 + 3 * 2 * 1  # dirs + files
    denoised = tmp_path / "den.zarr"
    run = CliRunner().invoke(app, ["denoise", str(out), str(denoised), "--block-min", "32"])
    assert run.exit_code == 0, run.output
    assert open_image(denoised).shards == (1, 64, 160)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--shards", "48,64"], "--shards (48, 64) must be whole multiples of --chunks (32, 32)"),
        (["--shards", "64,64", "--ngff-version", "0.4"], "--shards needs NGFF 0.5"),
        (["--shards", "64"], "--shards: expected 'Y,X' (two positive integers), got '64'"),
        (["--chunks", "0,32"], "--chunks: expected 'Y,X' (two positive integers), got '0,32'"),
    ],
)
def test_bad_shards_are_one_line(tmp_path, args, said):
    tifffile.imwrite(tmp_path / "p.tif", _planes(1)[0])
    result = _ingest(tmp_path / "p.tif", tmp_path / "o.zarr", "--chunks", "32,32", *args)
    assert result.exit_code == 2 and said in " ".join(result.output.split())
    assert not (tmp_path / "o.zarr").exists()

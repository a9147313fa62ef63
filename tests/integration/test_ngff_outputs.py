"""Every output kind as OME-Zarr readers see it: NGFF 0.5 and 0.4 (nested "/" chunk keys),
labels registered under the image without a channel axis, multiscale pyramids equal to a
reference downsampling, and a run killed while building its pyramid resumed byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from skimage.transform import downscale_local_mean
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig, SegmentConfig
from fluoden_batch.io.ngff import ImageMeta, level_shapes, write_attrs
from fluoden_batch.io.store import MARKER_DIR, PYRAMID_MARKER_DIR, output_shards
from fluoden_batch.pipeline.execution import run_denoise
from fluoden_batch.pipeline.progress import Reporter
from fluoden_batch.pipeline.segment import run_segment
from fluoden_batch.restore.block import cast_output

METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup"}


def _image(tmp_path: Path, shape=(2, 75, 101), chunks=(1, 16, 16)) -> tuple[Path, np.ndarray]:
    """A uint16 cyx image of two channels, physical scales and units, on disk."""
    rng = np.random.default_rng(7)
    level = rng.choice([300, 1500, 3500], size=shape, p=[0.6, 0.3, 0.1])
    data = np.clip(level + rng.normal(0, 80, shape), 0, 4095).astype(np.uint16)
    units = {"y": "micrometer", "x": "micrometer"}
    meta = ImageMeta("cyx", [1.0, 0.25, 0.5], units=units)
    return write_image(tmp_path / "in.zarr", data, "cyx", chunks, meta=meta), data


def _reader_nodes(out: Path) -> list:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return list(Reader(parse_url(str(out)))())


def _validate(out: Path, version: str) -> object:
    """OUT validated by ome-zarr-models as an NGFF image of ``version`` (its labels, their
    level count and dtypes included)."""
    import ome_zarr_models

    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(out), mode="r"))
    assert type(model).__module__ == f"ome_zarr_models.v0{version[-1]}.image"
    assert type(model).__name__ == "Image" and model.labels is not None
    return model


def _run(kind: str, inp: Path, out: Path, version: str, weights: Path, **kw) -> None:
    common = {"input": inp, "output": out, "ngff_version": version, "workers": 0}
    common |= {"cluster_backend": "cpu", "block_min": 32, **kw}
    if kind == "denoise":
        run_denoise(DenoiseConfig(model=str(weights), save_labels=True, **common))
    else:
        run_segment(SegmentConfig(**common))


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("kind", ["denoise", "segment"])
def test_every_output_kind_opens_and_validates(tmp_path, tiny_weights, kind, version):
    from ome_zarr.reader import Label

    inp, data = _image(tmp_path)
    out = tmp_path / f"{kind}.zarr"
    _run(kind, inp, out, version, tiny_weights, levels=3)
    _validate(out, version)

    shapes = level_shapes(data.shape, 3)
    nodes = _reader_nodes(out)
    image, labels = nodes[0], [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert [d.shape for d in image.data] == shapes
    scales = [t[0]["scale"] for t in image.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 0.25, 0.5], [1.0, 0.5, 1.0], [1.0, 1.0, 2.0]]
    assert sorted(n.metadata["name"] for n in labels) == ["clusters-c0", "clusters-c1"]
    for node in labels:  # no channel axis: the shape of one channel, at every level
        assert [d.shape for d in node.data] == [s[1:] for s in shapes]
        assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
        assert node.metadata["color"][0][3] == 0  # background transparent
        assert node.metadata["color"][1][3] == 1
    root = zarr.open_group(str(out), mode="r")
    listed = root["labels"].attrs.asdict()
    assert listed.get("ome", listed)["labels"] == ["clusters-c0", "clusters-c1"]
    attrs = root["labels/clusters-c0"].attrs.asdict()
    assert attrs.get("ome", attrs)["image-label"]["source"] == {"image": "../.."}
    for level in (1, 2):  # the denoised image's and the labels' levels, as for the input's
        np.testing.assert_array_equal(root[str(level)][:], _mean_reference(root[str(level - 1)][:]))
        labels = root[f"labels/clusters-c1/{level - 1}"][:]
        np.testing.assert_array_equal(
            root[f"labels/clusters-c1/{level}"][:], _mode_reference(labels)
        )

    arrays = [p.parent for p in out.rglob(".zarray" if version == "0.4" else "zarr.json")]
    arrays = [a for a in arrays if zarr.open(str(a), mode="r").__class__ is zarr.Array]
    assert len(arrays) == 9  # 3 levels of the image and of each label image
    for array in arrays:
        if version == "0.4":  # NGFF 0.4: zarr v2 with nested "/" chunk keys
            assert json.loads((array / ".zarray").read_text())["dimension_separator"] == "/"
        chunk_files = [p for p in array.rglob("*") if p.is_file() and p.name not in METADATA_FILES]
        assert chunk_files and all(len(p.relative_to(array).parts) > 1 for p in chunk_files)


def _mode_reference(labels: np.ndarray) -> np.ndarray:
    """Most frequent value of each 2x2 window (first in C order on ties), odd edges
    repeated: one window at a time, with collections.Counter."""
    pad = [(0, 0)] * (labels.ndim - 2) + [(0, labels.shape[-2] % 2), (0, labels.shape[-1] % 2)]
    padded = np.pad(labels, pad, mode="edge")
    shape = (*padded.shape[:-2], padded.shape[-2] // 2, padded.shape[-1] // 2)
    out = np.empty(shape, labels.dtype)
    for index in np.ndindex(out.shape):
        *lead, y, x = index
        window = padded[(*lead, slice(2 * y, 2 * y + 2), slice(2 * x, 2 * x + 2))].ravel()
        out[index] = Counter(window.tolist()).most_common(1)[0][0]
    return out


def _mean_reference(image: np.ndarray) -> np.ndarray:
    """skimage's downscale_local_mean of 2x2 windows (odd edges repeated), cast back as
    level 0 is."""
    pad = [(0, 0)] * (image.ndim - 2) + [(0, image.shape[-2] % 2), (0, image.shape[-1] % 2)]
    factors = (1,) * (image.ndim - 2) + (2, 2)
    mean = downscale_local_mean(np.pad(image, pad, mode="edge").astype(np.float64), factors)
    return cast_output(mean, image.dtype)


@pytest.mark.parametrize(
    "where", ["here", pytest.param("dask", marks=[pytest.mark.distributed, pytest.mark.slow])]
)
def test_pyramid_levels_equal_a_reference_downsampling(request, tmp_path, where):
    inp, data = _image(tmp_path, shape=(2, 83, 117), chunks=(1, 16, 16))
    out = tmp_path / "seg.zarr"
    options = {"cluster_backend": "cpu", "block_min": 16, "levels": 5, "quality": False}
    cfg = SegmentConfig(input=inp, output=out, workers=0, **options)
    client = request.getfixturevalue("client") if where == "dask" else None  # 20-26 s
    progress = Recorder()
    result = run_segment(cfg, client=client, reporter=progress)  # several blocks per level
    assert result.summary["blocks"] == result.blocks_total and not result.failed
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(root["0"][:], data)  # level 0: the input's intensities
    image, labels = data, [root[f"labels/clusters-c{c}/0"][:] for c in (0, 1)]
    assert all(set(np.unique(lab)) == {0, 1, 2} for lab in labels)
    for level in range(1, 5):
        image = _mean_reference(image)
        np.testing.assert_array_equal(root[str(level)][:], image)
        for c in (0, 1):
            labels[c] = _mode_reference(labels[c])
            np.testing.assert_array_equal(root[f"labels/clusters-c{c}/{level}"][:], labels[c])
    markers = list((out / PYRAMID_MARKER_DIR).rglob("*.json"))  # one per block of 16x16
    blocks = sum(-(-y // 16) * -(-x // 16) for y, x in level_shapes(data.shape[1:], 5)[1:])
    assert len(markers) == 4 * blocks  # 2 image channels, 2 label images
    # two phases, the blocks then the pyramid, each counted up to its own total
    assert [(label, total, done) for label, total, done, _ in progress.phases] == [
        (f"segmenting ({cfg.method})", result.blocks_total, 0),
        ("pyramid", len(markers), 0),
    ]
    for _, total, _, calls in progress.phases:
        assert [d for d, _ in calls] == list(range(1, total + 1))
        assert {t for _, t in calls} == {total}


class Recorder(Reporter):
    """A reporter that keeps every phase: ``(label, total, done before, [(done, total) of
    each block call])``."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int, int, list[tuple[int, int]]]] = []

    def start(self, label: str, total: int, done: int, *_: object, **__: object) -> None:
        self.phases.append((label, total, done, []))

    def block(self, done: int, total: int) -> None:
        self.phases[-1][3].append((done, total))


def test_pyramid_options_default_and_refusals(tmp_path):
    common = {"input": tmp_path / "in.zarr", "output": tmp_path / "out.zarr"}
    cfg = DenoiseConfig(**common)
    assert [cfg.pyramid_levels((1, n, 300)) for n in (300, 512, 513, 1100, 4096)] == [1, 1, 2, 3, 4]
    assert DenoiseConfig(**common, pyramid=False).pyramid_levels((1, 4096, 4096)) == 1
    assert SegmentConfig(**common, levels=2).pyramid_levels((1, 64, 64)) == 2
    with pytest.raises(ValueError, match="--no-pyramid contradicts --levels 3"):
        SegmentConfig(**common, levels=3, pyramid=False)
    assert "levels" not in cfg.output_parameters()  # outputs from before pyramids resume
    assert DenoiseConfig(**common, levels=3).output_parameters()["levels"] == 3


def _cli_segment(inp: Path, out: Path, **popen: object) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fluoden_batch.cli", "segment", str(inp), str(out),
           "--block-min", "32", "--levels", "5", "--no-quality", "--cluster-backend", "cpu",
           "--workers", "0"]  # fmt: skip
    return subprocess.Popen(cmd, **popen)


def _chunks(out: Path) -> dict[str, bytes]:
    """Every chunk file of every array of OUT (levels and labels), by relative path."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and p.name not in METADATA_FILES
        and ".fluoden" not in p.relative_to(out).parts
        and p.name != "metrics.parquet"
    }


@pytest.mark.slow
def test_kill_during_the_pyramid_phase_then_rerun_is_byte_identical(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.choice([200, 900, 2500], size=(1, 1024, 1024)).astype(np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    clean = tmp_path / "clean.zarr"
    run_segment(
        SegmentConfig(
            input=inp,
            output=clean,
            block_min=32,
            levels=5,
            quality=False,
            cluster_backend="cpu",
            workers=0,
        )
    )
    out = tmp_path / "killed.zarr"
    proc = _cli_segment(
        inp, out, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pyramid = out / PYRAMID_MARKER_DIR
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(pyramid.rglob("*.json"))) < 20:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    level0 = len(list((out / MARKER_DIR).glob("*.json")))
    built = len(list(pyramid.rglob("*.json")))
    total = 2 * sum(4**k for k in range(1, 5))  # image and labels: 16^2, 8^2, 4^2, 2^2 blocks
    assert level0 == 32 * 32 and 20 <= built < total, (level0, built)
    assert _chunks(out) != _chunks(clean)

    rerun = _cli_segment(inp, out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert len(list(pyramid.rglob("*.json"))) == total
    assert _chunks(out) == _chunks(clean)


def _sharded(tmp_path: Path, data: np.ndarray, chunks, shards) -> Path:
    """``data`` (cyx) as a sharded NGFF 0.5 image (Zarr v3 shards of whole chunks)."""
    group = zarr.open_group(str(tmp_path / "sharded.zarr"), mode="w", zarr_format=3)
    array = group.create_array(
        "0", shape=data.shape, chunks=chunks, shards=shards, dtype=data.dtype
    )
    array[:] = data
    group.attrs.update(write_attrs(ImageMeta("cyx", [1.0, 1.0, 1.0]), "0.5", "0"))
    return tmp_path / "sharded.zarr"


@pytest.mark.parametrize("kind", ["denoise", "segment"])
def test_a_sharded_input_gives_an_output_sharded_alike(tmp_path, tiny_weights, kind):
    """The output keeps the input's shards (at every level, the labels too), one task per
    shard, and holds what an unsharded store chunked like those shards gives; NGFF 0.4
    (Zarr v2) cannot: a note says the shards are not kept."""
    _, data = _image(tmp_path, shape=(2, 150, 170))
    sharded = _sharded(tmp_path, data, (1, 16, 16), (1, 48, 64))
    plain = write_image(tmp_path / "plain.zarr", data, "cyx", (1, 48, 64))
    runs = {}
    for name, inp in (("sharded", sharded), ("plain", plain)):
        runs[name] = tmp_path / f"{name}.{kind}.zarr"
        _run(kind, inp, runs[name], "0.5", tiny_weights, levels=5)
    root = zarr.open_group(str(runs["sharded"]), mode="r")
    for level in ("0", "3", "labels/clusters-c0/0"):  # 19 x 22 at level 3: still sharded
        assert (root[level].chunks[-2:], root[level].shards[-2:]) == ((16, 16), (48, 64))
    last = root["4"]  # smaller than a chunk: one cut chunk per shard
    assert last.shape[1:] == (10, 11) and last.chunks == last.shards == (1, 10, 11)
    markers = list((runs["sharded"] / MARKER_DIR).glob("*.json"))
    assert len(markers) == 2 * 4 * 3  # one block per shard (block_min 32 < a shard)
    plain_root = zarr.open_group(str(runs["plain"]), mode="r")
    for path in ("0", "2", "4", "labels/clusters-c0/0", "labels/clusters-c1/4"):
        np.testing.assert_array_equal(root[path][:], plain_root[path][:])
    _validate(runs["sharded"], "0.5")
    shown = CliRunner().invoke(app, ["info", str(runs["sharded"])])
    assert "shards" in shown.output and "(1, 48, 64)" in shown.output
    notes: list[str] = []
    assert output_shards((1, 48, 64), "0.4", None, notes) is None
    assert notes == ["the input's shards (1, 48, 64) are not kept (NGFF 0.4 (Zarr v2) has none)"]


@pytest.mark.distributed
def test_a_sharded_output_resumed_after_losing_shards_is_byte_identical(
    client, tmp_path, tiny_weights
):
    """Shards whose block markers are gone (a node died before it marked them) are
    written again whole by the rerun, here on two Dask workers, which ends byte-identical
    to the first run (in this process)."""
    _, data = _image(tmp_path, shape=(2, 150, 170))
    sharded = _sharded(tmp_path, data, (1, 16, 16), (1, 48, 64))
    out = tmp_path / "out.zarr"
    _run("denoise", sharded, out, "0.5", tiny_weights, levels=2)
    before = _chunks(out)
    markers = sorted((out / MARKER_DIR).glob("*.json"))
    for marker in markers[::5]:  # lose a few blocks: markers and their shards
        block = [int(i) for i in marker.stem.split(".")]
        (out / "0" / "c" / str(block[0]) / str(block[1]) / str(block[2])).unlink()
        marker.unlink()
    for marker in (out / PYRAMID_MARKER_DIR).rglob("*.json"):
        marker.unlink()  # the pyramid is rebuilt from level 0
    cfg = DenoiseConfig(
        input=sharded, output=out, model=str(tiny_weights), save_labels=True, block_min=32,
        levels=2, cluster_backend="cpu",
    )  # fmt: skip
    assert run_denoise(cfg, client=client).blocks_run == len(markers[::5])
    assert _chunks(out) == before

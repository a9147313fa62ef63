"""``fluoden segment``: seam-free tiled K-means, labels under a copy of the image, metrics,
resume, CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import typer
import zarr
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli.segment import segment_command
from fluoden_batch.clustering.masked import label_by_centres
from fluoden_batch.config import SegmentConfig
from fluoden_batch.io.ngff import ImageMeta, read_meta
from fluoden_batch.io.store import MARKER_DIR, read_provenance
from fluoden_batch.noise.simulate import correlate
from fluoden_batch.pipeline.groups import PlaneGroups
from fluoden_batch.pipeline.segment import execute_segment, plan_segment

pytestmark = pytest.mark.distributed


def _blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Three intensity populations (background, cells, bright spots) with noise."""
    rng = np.random.default_rng(seed)
    level = rng.choice([20.0, 90.0, 200.0], size=shape, p=[0.6, 0.3, 0.1])
    return (level + rng.normal(0, 6, shape)).astype(np.float32)


def _labels(out, name="clusters"):
    """Label array and NGFF metadata of OUT/labels/NAME (``open_image`` takes only intensity
    dtypes, uint8/uint16/float32/float64, so the int32 labels are read with the same NGFF
    parser)."""
    group = zarr.open_group(str(out / "labels" / name), mode="r")
    meta, path, _ = read_meta(group.attrs.asdict(), group["0"].ndim)
    return group[path], meta


def _cfg(inp, out, **kw):
    return SegmentConfig(input=inp, output=out, cluster_backend="cpu", block_min=1, **kw)


def _run(client, inp, out, **kw):
    cfg = _cfg(inp, out, **kw)
    p = plan_segment(cfg)
    return p, execute_segment(p, client)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_kmeans_equals_whole_image_assignment(client, tmp_path, seed):
    rng = np.random.default_rng(seed)
    shape = (2, int(rng.integers(37, 70)), int(rng.integers(37, 70)))  # c, y, x
    chunks = (1 + seed % 2, int(rng.integers(9, 23)), int(rng.integers(9, 23)))  # uneven
    data = _blobs(shape, seed)
    data[1] *= 3  # the second channel gets its own centres
    inp = write_image(tmp_path / "in.zarr", data, "cyx", chunks)
    p, result = _run(client, inp, tmp_path / "out.zarr")
    assert result.blocks_run == len(p.blocks) > 4 and not result.failed
    centres = read_provenance(tmp_path / "out.zarr")["parameters"]["centres"]
    assert len(centres) == 2 and all(len(c) == 3 and c == sorted(c) for c in centres)
    labels = np.stack([_labels(tmp_path / "out.zarr", f"clusters-c{c}")[0][:] for c in (0, 1)])
    for ch in range(2):
        whole = label_by_centres(data[ch], centres[ch])
        brute = np.argmin(np.abs(data[ch][..., None] - np.array(centres[ch])), axis=-1)
        np.testing.assert_array_equal(labels[ch], whole)
        np.testing.assert_array_equal(labels[ch], brute)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_output_is_a_label_image_with_metrics(client, tmp_path, version):
    data = _blobs((50, 45), 3)
    meta = ImageMeta("yx", [0.25, 0.5], units={"y": "micrometer", "x": "micrometer"})
    inp = write_image(tmp_path / "in.zarr", data, "yx", (20, 16), meta=meta)
    out = tmp_path / "seg.zarr"
    p, result = _run(client, inp, out, ngff_version=version)
    array, labels_meta = _labels(out)
    assert labels_meta.axes == "yx" and labels_meta.scale == [0.25, 0.5]
    assert labels_meta.units == {"y": "micrometer", "x": "micrometer"}
    assert array.chunks == (20, 16) and array.shape == data.shape and array.dtype == np.int32
    np.testing.assert_array_equal(zarr.open_array(str(out), path="0")[:], data)  # the image
    attrs = zarr.open_group(str(out / "labels" / "clusters"), mode="r").attrs.asdict()
    label = attrs["image-label"] if version == "0.4" else attrs["ome"]["image-label"]
    assert ("version" in label) == (version == "0.4")
    assert {c["label-value"] for c in label["colors"]} >= {0, 1, 2}
    assert (out / "labels" / "clusters" / label["source"]["image"]).resolve() == out.resolve()
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(out)))())  # ome-zarr-py: the image, its labels, a label
    assert any(isinstance(sp, Label) for sp in nodes[-1].specs) and len(nodes) == 3
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert len(metrics) == len(p.blocks) == 9
    assert list(metrics["block"]) == [b.id for b in p.blocks]
    for col in ("silhouette", "davies_bouldin", "wss", "seconds", "n_clusters", "start_y"):
        assert col in metrics
    assert metrics["silhouette"].between(-1, 1).all() and (metrics["wss"] >= 0).all()
    sizes = metrics["cluster_sizes"].map(json.loads)
    assert (sizes.map(lambda d: sum(d.values())) == metrics["height"] * metrics["width"]).all()
    assert result.summary["mean_silhouette"] > 0.5


def test_resume_skips_finished_blocks_and_refuses_changes(client, tmp_path):
    data = _blobs((40, 40), 4)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (16, 16))
    out = tmp_path / "seg.zarr"
    p, _ = _run(client, inp, out)
    first = _labels(out)[0][:]
    markers = sorted((out / MARKER_DIR).glob("*.json"))
    for m in markers[:3]:  # as if the run had been killed before these blocks
        m.unlink()
    p2 = plan_segment(_cfg(inp, out))
    assert p2.resumed and len(p2.pending) == 3
    assert p2.job.centres == p.job.centres  # reused from the provenance
    result = execute_segment(p2, client)
    assert result.blocks_run == 3 and result.blocks_skipped == len(p.blocks) - 3
    np.testing.assert_array_equal(_labels(out)[0][:], first)
    from fluoden_batch.errors import OutputError

    with pytest.raises(OutputError, match="--overwrite"):
        plan_segment(
            SegmentConfig(input=inp, output=out, clusters=4, cluster_backend="cpu", block_min=1)
        )
    p3 = plan_segment(
        SegmentConfig(
            input=inp, output=out, clusters=4, cluster_backend="cpu", block_min=1, overwrite=True
        )
    )
    assert not p3.resumed and len(p3.pending) == len(p3.blocks)


@pytest.mark.parametrize("method", ["dbscan", "hdbscan"])
def test_density_methods_complete(client, tmp_path, method):
    data = np.round(_blobs((40, 36), 5)).astype(np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (20, 18))
    out = tmp_path / "seg.zarr"
    _, result = _run(client, inp, out, method=method)
    assert result.blocks_run == 4 and not result.failed
    labels = _labels(out)[0][:]
    assert labels.min() >= -1 and (labels >= 0).any()
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert (metrics["method"] == method).all() and (metrics["backend"] == "sklearn").all()
    assert (metrics["n_clusters"] >= 1).all()


def _two_microscopes() -> np.ndarray:
    """(4, 96, 96) float32: discs (background 20, rim 90, core 200) under white noise
    (z = 0, 2) between the same discs three times as bright under four times the noise,
    correlated between neighbours (z = 1, 3)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    r2 = (yy % 32 - 16) ** 2 + (xx % 32 - 16) ** 2
    level = np.where(r2 < 40, 200.0, np.where(r2 < 150, 90.0, 20.0))
    planes = [
        level + rng.normal(0, 6, level.shape)
        if z % 2 == 0
        else 3 * level + correlate(rng.normal(0, 24, level.shape), 0.6)
        for z in range(4)
    ]
    return np.stack(planes).astype(np.float32)


def test_kmeans_fits_centres_per_plane_group_as_separate_runs_would(client, tmp_path):
    stack = _two_microscopes()
    inp = write_image(tmp_path / "in.zarr", stack, "zyx", (1, 48, 48))
    out = tmp_path / "seg.zarr"
    p, result = _run(client, inp, out)
    assert p.job.plane_groups == PlaneGroups((4,), (0, 1, 0, 1)) and not result.failed
    assert any(n.startswith("planes: 2 groups") for n in p.notes)
    assert any(n.startswith("K-means centres per group") for n in p.notes)
    params = read_provenance(out)["parameters"]
    assert params["plane_groups"] == [0, 1, 0, 1] and len(params["centres"]) == 2
    labels = _labels(out)[0][:]
    for k, members in enumerate(([0, 2], [1, 3])):
        alone = write_image(tmp_path / f"alone{k}.zarr", stack[members], "zyx", (1, 48, 48))
        _run(client, alone, tmp_path / f"alone{k}-seg.zarr")
        np.testing.assert_array_equal(
            labels[members], _labels(tmp_path / f"alone{k}-seg.zarr")[0][:]
        )
    again = plan_segment(_cfg(inp, out))  # a rerun reuses the groups and their centres
    assert not again.pending and again.job.plane_groups == p.job.plane_groups
    assert again.job.centres == p.job.centres
    again.lock.release()
    off = plan_segment(_cfg(inp, tmp_path / "off.zarr", plane_groups="off"))
    assert off.job.plane_groups is None and len(off.job.centres) == 1
    assert read_provenance(tmp_path / "off.zarr")["parameters"]["plane_groups"] == "off"
    execute_segment(off, client)
    assert not np.array_equal(_labels(tmp_path / "off.zarr")[0][:], labels)
    from fluoden_batch.errors import OutputError

    for output, mode in ((out, "off"), (tmp_path / "off.zarr", "auto")):  # changed: refused
        with pytest.raises(OutputError, match="--overwrite"):
            plan_segment(_cfg(inp, output, plane_groups=mode))


def test_an_output_fitted_per_channel_before_groups_resumes_so(tmp_path):
    inp = write_image(tmp_path / "in.zarr", _two_microscopes(), "zyx", (1, 96, 96))
    out = tmp_path / "seg.zarr"
    assert "plane_groups" not in _cfg(inp, out).output_parameters()
    with mock.patch("fluoden_batch.pipeline.segment.plane_groups", return_value=None):
        old = plan_segment(_cfg(inp, out))
    old.lock.release()
    resumed = plan_segment(_cfg(inp, out))
    assert resumed.resumed and resumed.job.plane_groups is None
    assert resumed.job.centres == old.job.centres and len(resumed.job.centres) == 1
    resumed.lock.release()


def test_a_segment_task_imports_no_torch(tmp_path):
    """A worker unpickling a task with plane groups loads the labelling side only."""
    inp = write_image(tmp_path / "in.zarr", _two_microscopes(), "zyx", (1, 96, 96))
    p = plan_segment(_cfg(inp, tmp_path / "seg.zarr"))
    p.lock.release()
    assert p.job.plane_groups is not None
    code = (
        "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(p.job), capture_output=True, check=True
    )
    assert done.stdout.strip() == b"False"


runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("segment")(segment_command)
    app.command("other")(lambda: None)  # two commands: "segment" stays a subcommand
    return app


def test_cli_help_and_errors(tmp_path):
    app = _app()
    result = runner.invoke(app, ["segment", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in (
        "seam-free",
        "--min-cluster-size",
        "--cluster-backend",
        "--no-quality",
        "label image",
    ):
        assert phrase in text
    missing = runner.invoke(app, ["segment", str(tmp_path / "nope.zarr"), str(tmp_path / "o")])
    assert missing.exit_code == 2 and "nope.zarr" in " ".join(missing.output.split())
    assert not (tmp_path / "o").exists()
    inp = write_image(tmp_path / "in.zarr", _blobs((8, 8), 0), "yx", (8, 8))
    bad = runner.invoke(app, ["segment", str(inp), str(tmp_path / "o"), "--method", "nope"])
    assert bad.exit_code == 2 and "--method" in bad.output


def test_cli_runs_on_the_test_cluster(client, tmp_path):
    inp = write_image(tmp_path / "in.zarr", _blobs((32, 32), 6), "yx", (16, 16))
    out = tmp_path / "seg.zarr"
    args = ["segment", str(inp), str(out), "--block-min", "16", "--cluster-backend", "cpu"]
    result = runner.invoke(_app(), [*args, "--scheduler", client.scheduler.address])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "scikit-learn" in text and "mean silhouette" in text and "4 of 4" in text

"""The ``masked`` protocol and ``--save-labels`` on a real 2-worker LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli import app
from fluoden_batch.clustering.masked import masked_labels
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import OutputError
from fluoden_batch.io.store import MARKER_DIR, read_provenance
from fluoden_batch.models import load_model
from fluoden_batch.noise import simulate
from fluoden_batch.pipeline import execute, plan
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import PROTOCOLS, PlaneParams, whole

pytestmark = pytest.mark.distributed
runner = CliRunner()


def populations(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 planes of three intensity populations (background, cells, bright spots) in
    smooth regions, under Gaussian noise."""
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(int(np.prod(shape[:-2]))):
        field = ndimage.gaussian_filter(rng.normal(size=shape[-2:]), 5.0)
        level = np.digitize(field, np.quantile(field, [0.55, 0.9])) * 900.0 + 100.0
        planes.append(level + rng.normal(0, 90, shape[-2:]))
    return np.stack(planes).reshape(shape).astype(np.float32)


def read_labels(out: Path) -> np.ndarray:
    """The label image of OUT as ome-zarr-py finds it (image -> labels -> clusters)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(out)))())
    found = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(found) == 1 and found[0].metadata["name"] == "clusters"
    assert {0, 1, 2} <= set(found[0].metadata["color"])
    return np.asarray(found[0].data[0].compute())


@pytest.mark.parametrize(
    ("protocol", "sigma", "shape", "chunks", "version", "phase_split"),
    [
        ("masked", 1.0, (2, 150, 131), (1, 40, 48), "0.5", False),
        ("masked", 2.5, (1, 97, 113), (1, 33, 29), "0.4", False),
        ("masked", 1.0, (1, 97, 113), (1, 33, 29), "0.5", True),  # odd blocks, --phase-split
        ("whole", 1.5, (1, 90, 77), (1, 32, 27), "0.5", False),  # labels beside a whole run
    ],
)
def test_tiled_run_equals_whole_plane_application_and_saves_its_labels(
    client, tiny_weights, tmp_path, protocol, sigma, shape, chunks, version, phase_split
):
    data = populations(shape, seed=len(shape) + shape[-1])
    inp = write_image(tmp_path / "in.zarr", data, "zyx", chunks)
    out = tmp_path / "out.zarr"
    cfg = DenoiseConfig(
        input=inp, output=out, model=str(tiny_weights), protocol=protocol, mask_sigma=sigma,
        save_labels=True, cluster_backend="cpu", dtype="float32", block_min=16, tile=40,
        ngff_version=version, phase_split=phase_split,
    )  # fmt: skip
    p = plan(cfg)
    assert "cluster backend: scikit-learn" in " ".join(p.notes) and len(p.blocks) >= 8
    result = execute(p, client)
    (centres,) = p.job.channel_centres
    assert len(centres) == 3 and list(centres) == sorted(centres)
    got = zarr.open_array(str(out), path="0")[:]
    labels = read_labels(out)
    module = inference_network(load_model(tiny_weights).module, phase_split=phase_split)
    params = p.job.plane_params(0)
    for z in range(shape[0]):
        expected = PROTOCOLS[protocol](module, data[z], params)
        assert np.abs(got[z] - expected).max() < 1e-4 * np.ptp(data)
        np.testing.assert_array_equal(labels[z], masked_labels(data[z], centres, sigma))
    assert set(np.unique(labels)) == {0, 1, 2}

    array = zarr.open_array(str(out), path="labels/clusters/0")
    assert array.dtype == np.uint8 and array.chunks == chunks and array.shape == shape
    prov = read_provenance(out)["parameters"]
    assert prov["channel_centres"] == [list(centres)] and prov["mask_sigma"] == sigma
    table = pd.read_parquet(out / "metrics.parquet")
    assert len(table) == len(p.blocks)
    assert table["cluster_silhouette"].between(-1, 1).all() and (table["cluster_wss"] > 0).all()
    assert (table["cluster_davies_bouldin"] >= 0).all()
    sizes = table["cluster_sizes"].map(lambda s: sum(json.loads(s).values()))
    assert (sizes == table["pixels"]).all()
    assert result.summary["cluster_silhouette"] > 0.5


def test_resume_reuses_the_centres_and_changed_cluster_options_are_refused(
    client, tiny_weights, tmp_path
):
    data = populations((1, 96, 96), seed=5)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    out = tmp_path / "out.zarr"
    cfg = DenoiseConfig(
        input=inp, output=out, model=str(tiny_weights), protocol="masked", save_labels=True,
        cluster_backend="cpu", block_min=32,
    )  # fmt: skip
    first = plan(cfg)
    execute(first, client)
    image, labels = (zarr.open_array(str(out), path=a) for a in ("0", "labels/clusters/0"))
    before = image[:], labels[:]
    for marker in sorted((out / MARKER_DIR).glob("*.json"))[:3]:  # as if killed before these
        marker.unlink()
        y, x = (32 * int(i) for i in marker.stem.split(".")[1:])
        image[:, y : y + 32, x : x + 32] = 0
        labels[:, y : y + 32, x : x + 32] = 7

    again = plan(cfg.model_copy(update={"cluster_backend": "auto"}))  # backend: not a change
    assert again.resumed and len(again.pending) == 3
    assert again.job.channel_centres == first.job.channel_centres
    assert any("centres reused" in n for n in again.notes)
    assert execute(again, client).blocks_run == 3
    np.testing.assert_array_equal(image[:], before[0])
    np.testing.assert_array_equal(labels[:], before[1])

    for update, name in (({"clusters": 4}, "clusters"), ({"mask_sigma": 1.0}, "mask_sigma")):
        with pytest.raises(OutputError, match=f"{name}.*--overwrite"):
            plan(cfg.model_copy(update=update))
    with pytest.raises(OutputError, match="save_labels"):
        plan(cfg.model_copy(update={"save_labels": False}))
    fresh = plan(cfg.model_copy(update={"clusters": 2, "overwrite": True}))
    assert not fresh.resumed and len(fresh.pending) == 9
    assert len(fresh.job.channel_centres[0]) == 2


def border_jump(image: np.ndarray, labels: np.ndarray) -> float:
    """Mean absolute difference between neighbours (along y and x) of different labels."""
    jumps = []
    for axis in (0, 1):
        border = np.diff(labels.astype(np.int16), axis=axis) != 0
        jumps.append(np.abs(np.diff(image.astype(np.float64), axis=axis))[border])
    return float(np.concatenate(jumps).mean())


def test_masked_output_has_no_seams_at_mask_borders(client, tmp_path):
    """On a smooth ramp under Poisson-Gaussian noise the mask borders are arbitrary lines
    through a featureless image, so the output must not jump there: the mean jump across
    label borders may exceed 3x the clean ramp's step at those pixels only by the jumps
    that the unmasked output's own error has at the same pixels (its residual noise)."""
    yy, xx = np.mgrid[0:192, 0:192]
    clean = 200 + 2600 * xx / 191 + 200 * yy / 191
    noisy = simulate(clean, 8.0, 100.0, rng=np.random.default_rng(0)).astype(np.float32)
    inp = write_image(tmp_path / "ramp.zarr", noisy, "yx", (64, 64))
    out = tmp_path / "out.zarr"
    cfg = DenoiseConfig(  # the protocol's default model and mask sigma
        input=inp, output=out, protocol="masked", dtype="float32", block_min=64,
        cluster_backend="cpu",
    )  # fmt: skip
    p = plan(cfg)
    execute(p, client)
    masked_out = zarr.open_array(str(out), path="0")[:]
    params = p.job.plane_params(0)
    labels = masked_labels(noisy, params.centres, params.sigma)
    assert len(params.centres) == 3 and np.count_nonzero(np.diff(labels, axis=1)) > 150
    unmasked = whole(load_model(p.job.model_path).module, noisy, PlaneParams(params.lo, params.hi))
    allowed = 3 * border_jump(clean, labels) + border_jump(unmasked - clean, labels)
    assert border_jump(masked_out, labels) <= allowed


def test_cli_options_and_errors(client, tiny_weights, tmp_path):
    text = " ".join(runner.invoke(app, ["denoise", "--help"]).output.split())
    for phrase in ("whole|vst|masked|", "--clusters", "(default: 3)", "--mask-sigma",
                   "(default: 2.0)", "--cluster-backend", "(default: auto)", "--save-labels",
                   "OUTPUT/labels/clusters", "dncnn-small-masked"):  # fmt: skip
        assert phrase in text, phrase
    inp = write_image(tmp_path / "in.zarr", populations((64, 64), 6), "yx", (32, 32))
    out = tmp_path / "out.zarr"
    base = ["denoise", str(inp), str(out), "--model", str(tiny_weights)]
    for bad, word in (
        (["--protocol", "masked", "--clusters", "0"], "clusters"),
        (["--protocol", "masked", "--clusters", "17"], "clusters"),
        (["--protocol", "masked", "--mask-sigma", "-1"], "--mask-sigma"),
        (["--protocol", "nope"], "protocol"),
        (["--save-labels", "--cluster-backend", "nope"], "cluster-backend"),
    ):
        result = runner.invoke(app, [*base, *bad])
        assert result.exit_code == 2 and word in result.output, (bad, result.output)
    assert not out.exists()

    run = [*base, "--protocol", "masked", "--clusters", "2", "--mask-sigma", "0.5",
           "--save-labels", "--cluster-backend", "cpu", "--block-min", "32",
           "--scheduler", client.scheduler.address]  # fmt: skip
    result = runner.invoke(app, run)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "scikit-learn" in text and "mean cluster silhouette" in text
    assert zarr.open_array(str(out), path="labels/clusters/0")[:].max() == 1

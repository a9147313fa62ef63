"""BioImage Model Zoo packages: the package network equals fluoden's per-plane denoising,
the export of the shipped default passes bioimageio.core's test_model offline, and
``--model PACKAGE.zip`` runs the weights inside."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import make_tiny_weights
from fluoden_batch.cli import app
from fluoden_batch.errors import ModelError
from fluoden_batch.models import load_model, read_metadata, resolve_weights, shipped_models
from fluoden_batch.models.bioimageio import export_package, synthetic_input, zoo_network_of
from fluoden_batch.models.normalise import normalisation_range
from fluoden_batch.models.weights import file_digest
from fluoden_batch.restore.protocols import PlaneParams, whole

pytest.importorskip("bioimageio.spec")


def fluoden_whole(weights: Path, plane: np.ndarray) -> np.ndarray:
    """fluoden's own denoising of one plane: normalisation from the plane, ``whole``."""
    lo, hi = normalisation_range(plane, read_metadata(weights).normalisation)
    return whole(load_model(weights).module, plane, PlaneParams(lo, hi))


def planes() -> dict[str, np.ndarray]:
    """Odd shapes, exact zeros (left out of the wavelet estimate), a flat plane."""
    noisy = synthetic_input(96, seed=3)[0, 0]
    clipped = noisy.copy()
    clipped[:40, :50] = 0.0
    return {
        "demo": noisy,
        "odd": noisy[:37, :61].copy(),
        "zeros": clipped,
        "flat": np.full((33, 40), 7.0, np.float32),
    }


@pytest.fixture(scope="module")
def offline(monkeypatch_module: pytest.MonkeyPatch) -> None:
    """No network: any connection attempt fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch_module.setattr(socket.socket, "connect", refuse)
    monkeypatch_module.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def fmd_package(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Path:
    return export_package("dncnn-fmd", tmp_path_factory.mktemp("zoo") / "dncnn-fmd.zip")


@pytest.mark.parametrize(("bias", "dilations"), [(True, None), (False, None), (True, (1, 2, 3, 1))])
@pytest.mark.parametrize("normalisation", ["noise", "percentile"])
@pytest.mark.parametrize("name", ["demo", "odd", "zeros", "flat"])
def test_package_network_equals_fluoden_per_plane(
    tmp_path: Path, normalisation: str, name: str, bias: bool, dilations: tuple[int, ...] | None
) -> None:
    weights = make_tiny_weights(
        tmp_path / "w.safetensors", normalisation=normalisation, bias=bias, dilations=dilations
    )
    net, meta = zoo_network_of(weights)
    plane = planes()[name]
    window = net.window(torch.from_numpy(plane).double())
    assert window == pytest.approx(normalisation_range(plane, meta.normalisation), rel=1e-12)
    with torch.no_grad():
        ours = torch.jit.script(net)(torch.from_numpy(plane)[None, None])[0, 0].numpy()
    reference = fluoden_whole(weights, plane)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-5 * (window[1] - window[0]))


def test_shipped_default_package_passes_test_model_offline(fmd_package: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(fmd_package)
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = {d.name for d in summary.details}
    assert any("torchscript" in t for t in tested) and any(
        "pytorch_state_dict" in t for t in tested
    )


def test_package_output_is_fluoden_denoising_of_its_test_input(fmd_package: Path) -> None:
    with zipfile.ZipFile(fmd_package) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        x = np.load(zf.open("test_input.npy"))
        y = np.load(zf.open("test_output.npy"))
        names = set(zf.namelist())
    shipped = shipped_models()["dncnn-fmd"]
    reference = fluoden_whole(shipped, x[0, 0])
    assert np.abs(y[0, 0] - reference).max() <= 1e-5 * np.ptp(reference)
    assert np.abs(y - x).mean() > 10  # it denoised: the test output is not the input
    assert {c["doi"] for c in rdf["cite"]} == {
        "10.1109/TIP.2017.2662206",
        "10.48550/arXiv.1812.10366",
    }
    assert rdf["license"] == "BSD-3-Clause" and rdf["authors"]
    assert {"weights.pt", "weights_torchscript.pt", "zoo_network.py"} <= names
    assert {rdf["covers"][0]["source"], rdf["documentation"]["source"]} <= names
    assert rdf["attachments"][0]["source"] == "dncnn-fmd.safetensors" in names
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "FluodenDnCNN"


def test_model_option_takes_the_package(
    fmd_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = resolve_weights(fmd_package)
    assert weights.is_relative_to(tmp_path / "cache")
    assert file_digest(weights) == file_digest(shipped_models()["dncnn-fmd"])
    assert resolve_weights(str(fmd_package)) == weights  # extracted once, found again
    assert load_model(fmd_package).metadata.name == "dncnn-fmd"


def test_denoise_with_a_package_equals_denoise_with_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    import zarr

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = make_tiny_weights(tmp_path / "tiny.safetensors", normalisation="percentile")
    package = export_package(weights, tmp_path / "tiny.zip")
    plane = synthetic_input(96, seed=1)[0, 0].astype(np.uint16)
    source = zarr.create_array(
        tmp_path / "in.zarr", shape=plane.shape, chunks=(48, 48), dtype="uint16"
    )
    source[:] = plane
    results = []
    for model in (package, weights):
        out = tmp_path / f"out-{model.suffix[1:]}.zarr"
        args = [
            "denoise",
            str(tmp_path / "in.zarr"),
            str(out),
            "--model",
            str(model),
            "--workers",
            "0",
        ]
        run = CliRunner().invoke(app, args)
        assert run.exit_code == 0, run.output
        group = zarr.open_group(out)
        assert group.attrs["fluoden"]["model"]["name"] == "tiny-test"
        results.append(group["0"][...])
    np.testing.assert_array_equal(results[0], results[1])


def test_foreign_or_tampered_packages_are_refused(
    fmd_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with zipfile.ZipFile(fmd_package) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    rdf = yaml.safe_load(files["rdf.yaml"])
    foreign = tmp_path / "foreign.zip"
    _rezip(foreign, {**files, "rdf.yaml": yaml.safe_dump({**rdf, "config": {}}).encode()})
    result = CliRunner().invoke(app, ["models", "show", str(foreign)])
    assert result.exit_code == 2
    assert "a bioimage.io package that fluoden did not export" in result.output
    assert len(result.output.strip().splitlines()) == 1
    tampered = tmp_path / "tampered.zip"
    weights = bytearray(files["dncnn-fmd.safetensors"])
    weights[-1] ^= 1
    _rezip(tampered, {**files, "dncnn-fmd.safetensors": bytes(weights)})
    with pytest.raises(ModelError, match="do not match their recorded SHA-256"):
        resolve_weights(tampered)


def test_export_refuses_models_a_package_cannot_express(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="'masked' protocol"):
        export_package("dncnn-small-masked", tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def _halos(node: object) -> list[int]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "halo"] + [
            h for v in node.values() for h in _halos(v)
        ]
    return [h for v in node for h in _halos(v)] if isinstance(node, list) else []


def test_export_command(tmp_path: Path, offline: None) -> None:
    weights = make_tiny_weights(
        tmp_path / "tiny.safetensors", normalisation="percentile", dilations=(1, 2, 3, 1)
    )
    result = CliRunner().invoke(app, ["models", "export", str(weights), str(tmp_path / "t.zip")])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
    assert rdf["config"]["fluoden"]["metadata"]["normalisation"]["method"] == "percentile"
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["depth"] == 4 and kwargs["dilations"] == [1, 2, 3, 1]
    assert set(_halos(rdf["outputs"])) == {7}  # the receptive radius: the dilations' sum
    refused = CliRunner().invoke(app, ["models", "export", str(weights), str(tmp_path / "t.tar")])
    assert refused.exit_code == 2


def _rezip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)

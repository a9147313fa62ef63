"""BioImage Model Zoo packages (bioimage.io model spec 0.5) of fluoden models, both ways.

:func:`export_package` writes a zip that bioimage.io tools run without fluoden (checked
with bioimageio.core's ``test_model``; others that run torchscript or pytorch_state_dict
weights are untested): the network of
:mod:`fluoden_batch.models.zoo_network` (DnCNN with fluoden's per-plane normalisation
inside; it takes and returns raw intensities) as ``pytorch_state_dict`` weights with that
file as architecture, and as ``torchscript``; a test input made by fluoden's demo
generator and the package's own output on it; a cover image; the fluoden weights file
itself as an attachment. :func:`package_weights` finds that attachment again, so that
``--model PACKAGE.zip`` runs the very tensors the package holds.

Needs the optional ``bioimageio.spec`` (``pip install fluoden-batch[bioimageio]``) to
export; reading a package back needs only the zip.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import yaml

from fluoden_batch.errors import ModelError
from fluoden_batch.models import zoo_network
from fluoden_batch.models.weights import (
    ModelMetadata,
    build_model,
    file_digest,
    load_trainable,
    resolve_weights,
    write_file,
)
from fluoden_batch.models.zoo_network import FluodenDnCNN

__all__ = ["export_package", "is_package", "package_weights", "synthetic_input", "zoo_network_of"]

CONFIG_KEY = "fluoden"  # the package's config section fluoden writes and reads back
TEST_SIZE = 256  # pixels of the square test image
MIN_SIZE = 16  # smallest output edge, past the halo on both sides
CITATIONS = (
    (
        "Zhang K, Zuo W, Chen Y, Meng D, Zhang L (2017). Beyond a Gaussian denoiser: "
        "residual learning of deep CNN for image denoising. IEEE Trans. Image Process.",
        "10.1109/TIP.2017.2662206",
    ),
    (
        "Zhang Y, Zhu Y, Nichols E, Wang Q, Zhang S, Smith C, Howard S (2019). A Poisson-"
        "Gaussian denoising dataset with real fluorescence microscopy images. CVPR.",
        "10.48550/arXiv.1812.10366",
    ),
)
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def zoo_network_of(path: Path) -> tuple[FluodenDnCNN, ModelMetadata]:
    """The package network (eval mode, tensors of the weights file ``path``).

    Raises
    ------
    ModelError
        For a model the package cannot express: an FFDNet or a noise-map input (they need
        the Poisson-Gaussian parameters of the data), more than one image channel, or a
        protocol other than ``whole`` (``masked`` clusters, ``vst`` needs the parameters).
    """
    model, meta = load_trainable(path)
    arch = meta.architecture
    if arch.name != "dncnn" or arch.noise_map or arch.in_channels != 1:
        raise ModelError(
            f"{meta.name}: only a one-channel DnCNN without a noise map can be exported "
            f"(this is a {arch.describe()} with {arch.in_channels} channel(s))"
        )
    if meta.protocol != "whole":
        raise ModelError(
            f"{meta.name}: trained for the {meta.protocol!r} protocol, which a bioimage.io "
            "package cannot express; only 'whole' models can be exported"
        )
    net = FluodenDnCNN(**_network_kwargs(meta))
    net.load_state_dict(model.state_dict())
    return net.eval(), meta


def synthetic_input(size: int = TEST_SIZE, seed: int = 0) -> np.ndarray:
    """A noisy synthetic fluorescence plane, float32 of shape (1, 1, size, size): the demo's
    cells and filaments with Poisson-Gaussian noise (a = 32, b = 400), 12-bit range."""
    from fluoden_batch.demo import DEMO_GAIN, DEMO_READ_VAR, SENSOR_MAX, clean_plane
    from fluoden_batch.noise import simulate

    rng = np.random.default_rng(seed)
    clean = clean_plane(size, rng)
    noisy = simulate(clean, DEMO_GAIN, DEMO_READ_VAR, clip=(0, SENSOR_MAX), rng=rng)
    return np.rint(noisy).astype(np.float32)[None, None]


def export_package(model: str | Path, output: Path) -> Path:
    """Write the bioimage.io package (zip) of a shipped model name or weights file.

    Returns ``output``. The package is validated while it is written (bioimageio.spec,
    no network); run ``bioimageio.core.test_model`` on it to check the inference too.

    Raises
    ------
    ModelError
        A model the package cannot express (:func:`zoo_network_of`), or a description
        bioimageio.spec refuses.
    """
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError as exc:
        raise ModelError(
            "exporting a bioimage.io package needs bioimageio.spec: "
            "pip install 'fluoden-batch[bioimageio]'"
        ) from exc
    path = resolve_weights(model)
    net, meta = zoo_network_of(path)
    with tempfile.TemporaryDirectory(prefix="fluoden-bioimageio-") as tmp:
        work = Path(tmp)
        descr = _describe(net, meta, path, work)
        with tempfile.TemporaryDirectory(prefix="fluoden-bioimageio-zip-") as zip_dir:
            packed = save_bioimageio_package(descr, output_path=Path(zip_dir) / "model.zip")
            write_file(output, Path(packed).read_bytes())
    return output


def is_package(path: Path) -> bool:
    """Whether ``path`` is a zip holding a bioimage.io description (rdf.yaml)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name in zf.namelist() for name in _RDF_NAMES)


def package_weights(path: Path, cache: Path | None = None) -> Path:
    """The fluoden weights file inside a bioimage.io package fluoden exported.

    It is extracted once to ``cache`` (default: ``$XDG_CACHE_HOME/fluoden/bioimageio``, or
    ``~/.cache/...``) under its SHA-256, which the package's description records and
    which is checked, so every process (a Dask worker too) finds the same file.

    Raises
    ------
    ModelError
        Not a package fluoden exported (no ``config.fluoden`` section naming its weights
        attachment), or an attachment whose bytes do not match the recorded digest.
    """
    with zipfile.ZipFile(path) as zf:
        rdf_name = next(n for n in _RDF_NAMES if n in zf.namelist())
        rdf = yaml.safe_load(zf.read(rdf_name)) or {}
        section = (rdf.get("config") or {}).get(CONFIG_KEY) or {}
        name, digest = section.get("weights"), section.get("weights_sha256")
        if not name or not digest or name not in zf.namelist():
            raise ModelError(
                f"{path}: a bioimage.io package that fluoden did not export (no fluoden "
                "weights inside); fluoden runs only packages made by `fluoden models export`"
            )
        data = zf.read(name)
    if hashlib.sha256(data).hexdigest() != digest:
        raise ModelError(f"{path}: the weights inside do not match their recorded SHA-256")
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "fluoden" / "bioimageio" / digest / Path(name).name
    if not target.is_file():
        write_file(target, data)
    return target


def _network_kwargs(meta: ModelMetadata) -> dict[str, Any]:
    arch, norm = meta.architecture, meta.normalisation
    return {
        "depth": arch.depth,
        "width": arch.width,
        "batch_norm": arch.batch_norm,
        "method": norm.method,
        "low": norm.low,
        "high": norm.high,
        "scale": norm.scale,
        "bias": arch.bias,
        "dilations": list(arch.dilations) if arch.dilations else None,
    }


def _describe(net: FluodenDnCNN, meta: ModelMetadata, weights: Path, work: Path) -> Any:
    """The bioimageio.spec ``ModelDescr`` of the package, its files written to ``work``."""
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromFileDescr,
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        Doi,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    x = synthetic_input()
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    np.save(work / "test_input.npy", x)
    np.save(work / "test_output.npy", y)
    tifffile.imwrite(work / "sample_input.tif", x[0, 0])
    tifffile.imwrite(work / "sample_output.tif", y[0, 0])
    _cover(x[0, 0], y[0, 0], work / "cover.png")
    source = work / "zoo_network.py"
    shutil.copyfile(inspect.getfile(zoo_network), source)
    torch.save(net.state_dict(), work / "weights.pt")
    torch.jit.script(net).save(str(work / "weights_torchscript.pt"))
    shutil.copyfile(weights, work / weights.name)
    (work / "README.md").write_text(_documentation(meta))

    torch_version = Version(torch.__version__.split("+")[0])
    raw, denoised = TensorId("raw"), TensorId("denoised")
    data = IntervalOrRatioDataDescr(type="float32")
    halo = build_model(meta.architecture).receptive_radius
    space = ParameterizedSize(min=2 * halo + MIN_SIZE, step=1)  # the output keeps MIN_SIZE
    return ModelDescr(
        name=f"fluoden {meta.name}",
        description=(meta.description or meta.architecture.describe())[:1024],
        authors=[Author(name="fluoden-batch developers")],
        cite=[CiteEntry(text=text, doi=Doi(doi)) for text, doi in CITATIONS],
        license=LicenseId("BSD-3-Clause"),
        documentation=FileDescr(source=work / "README.md"),
        covers=[FileDescr(source=work / "cover.png")],
        tags=["denoising", "fluorescence-light-microscopy", "2d", "dncnn", "pytorch"],
        inputs=[
            InputTensorDescr(
                id=raw,
                description="one Y/X plane of raw intensities (any float32 units)",
                axes=[
                    BatchAxis(),
                    ChannelAxis(channel_names=[Identifier("intensity")]),
                    SpaceInputAxis(id=AxisId("y"), size=space),
                    SpaceInputAxis(id=AxisId("x"), size=space),
                ],
                test_tensor=FileDescr(source=work / "test_input.npy"),
                sample_tensor=FileDescr(source=work / "sample_input.tif"),
                data=data,
            )
        ],
        outputs=[
            OutputTensorDescr(
                id=denoised,
                description="the denoised plane, in the input's units",
                axes=[
                    BatchAxis(),
                    ChannelAxis(channel_names=[Identifier("intensity")]),
                    SpaceOutputAxisWithHalo(
                        id=AxisId("y"),
                        halo=halo,
                        size=SizeReference(tensor_id=raw, axis_id=AxisId("y")),
                    ),
                    SpaceOutputAxisWithHalo(
                        id=AxisId("x"),
                        halo=halo,
                        size=SizeReference(tensor_id=raw, axis_id=AxisId("x")),
                    ),
                ],
                test_tensor=FileDescr(source=work / "test_output.npy"),
                sample_tensor=FileDescr(source=work / "sample_output.tif"),
                data=data,
            )
        ],
        weights=WeightsDescr(
            pytorch_state_dict=PytorchStateDictWeightsDescr(
                source=work / "weights.pt",
                architecture=ArchitectureFromFileDescr(
                    source=source, callable=Identifier("FluodenDnCNN"), kwargs=_network_kwargs(meta)
                ),
                pytorch_version=torch_version,
            ),
            torchscript=TorchscriptWeightsDescr(
                source=work / "weights_torchscript.pt",
                pytorch_version=torch_version,
                parent="pytorch_state_dict",
            ),
        ),
        attachments=[FileDescr(source=work / weights.name)],
        config={
            CONFIG_KEY: {
                "weights": weights.name,
                "weights_sha256": file_digest(weights).removeprefix("sha256:"),
                "metadata": meta.model_dump(mode="json"),
            }
        },
    )


def _cover(noisy: np.ndarray, denoised: np.ndarray, path: Path) -> None:
    """Input beside output (2:1), both in grey over the input's 0.5-99.5 percentile window."""
    from matplotlib.image import imsave

    lo, hi = np.percentile(noisy, [0.5, 99.5])
    imsave(path, np.concatenate([noisy, denoised], axis=1), cmap="gray", vmin=lo, vmax=hi)


def _documentation(meta: ModelMetadata) -> str:
    arch, norm = meta.architecture, meta.normalisation
    window = (
        f"`hi = lo + {norm.scale:g} * sigma`, sigma the wavelet noise estimate of the plane "
        "(scikit-image's `estimate_sigma`)"
        if norm.method == "noise"
        else f"`hi` its {norm.high:g} percentile"
    )
    scalars = {k: v for k, v in meta.training.items() if not isinstance(v, list | dict)}
    training = "\n".join(f"- {k}: {v}" for k, v in scalars.items()) or "(not recorded)"
    return f"""# fluoden {meta.name}

{meta.description}

A {arch.describe()} (Zhang et al. 2017) exported by fluoden-batch
(`fluoden models export`).

## Input and output
One Y/X plane of raw intensities in, the denoised plane in the same units out. The
network normalises each sample itself, as fluoden does per plane: `lo` is the
{norm.low:g} percentile of the plane, {window}; it runs on `(x - lo) / (hi - lo)` and maps
the result back to the input's units.

## Why the normalisation is inside the network
The bioimage.io spec's `scale_range` preprocessing can express a percentile window, but
no post-processing maps the output back to the input's units, and no operation
expresses a window set by the noise level. So both weight formats hold the whole map
(`zoo_network.py`). Tiled prediction normalises each tile on its own: give the network
whole planes (or tiles large enough to hold representative noise and intensity range);
fluoden itself takes `lo`/`hi` once per channel and tiles exactly.

## Validation
The test input (`test_input.npy`, also `sample_input.tif`) is a synthetic 12-bit plane
(fluoden's demo cells and filaments, Poisson-Gaussian noise a = 32, b = 400);
`test_output.npy` is this network's output on it, which fluoden's own per-plane `whole`
denoising reproduces (fluoden's test suite checks both, and runs bioimageio.core's
`test_model` on the package). To validate on unseen data, denoise noisy captures that
have a clean reference of the same field (e.g. the test set of the Fluorescence
Microscopy Denoising dataset, Zhang et al. 2019: raw frames against the mean of 50) and
compare by PSNR and SSIM with the reference's data range.

## Training
{training}

## Use with fluoden
`fluoden denoise IN OUT --model this-package.zip` runs the fluoden weights file attached
to the package (same tensors), with fluoden's channel-wide normalisation and exact tiling.
"""

"""Weights I/O: safetensors tensors with the model's JSON metadata in the file header.

One ``.safetensors`` file carries everything needed to rebuild a model: the tensors and,
under the header key ``"fluoden"``, a JSON document (:class:`ModelMetadata`) with the
architecture, the normalisation, the training data and the noise model. Pickle-based
checkpoints (``torch.save``) are refused: loading them can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as serialise

from fluoden_batch.config.files import describe_error
from fluoden_batch.errors import ModelError
from fluoden_batch.models.dncnn import DnCNN, fold_batch_norm
from fluoden_batch.models.ffdnet import FFDNet
from fluoden_batch.models.fused import FusedDnCNN
from fluoden_batch.models.unet import UNet

METADATA_KEY = "fluoden"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
ADAPTED_WEIGHTS = Path(".fluoden") / "adapted.safetensors"  # in OUT of denoise --adapt
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

Denoiser = DnCNN | FFDNet | UNet


class Architecture(BaseModel):
    """Network shape; enough to rebuild the module before loading tensors.

    ``dncnn``: :class:`~fluoden_batch.models.dncnn.DnCNN` (``depth``, ``width``,
    ``in_channels``, ``batch_norm``, ``noise_map``, ``bias``, ``dilations``; ``None``
    when every layer is undilated, as in files written before dilations existed). ``ffdnet``:
    :class:`~fluoden_batch.models.ffdnet.FFDNet` (``depth``, ``width``, ``bias``,
    ``map_gain``; always with a noise map, no batch norm). ``unet``:
    :class:`~fluoden_batch.models.unet.UNet` (``levels``, ``width``, ``bias``; ``depth``
    counts its convolutions, ``5 levels + 3``; one channel, no noise map, no batch norm).
    ``noise_map``: the input holds one more channel, the noise level of every pixel.
    """

    model_config = ConfigDict(extra="forbid")
    name: Literal["dncnn", "ffdnet", "unet"] = "dncnn"
    depth: int = Field(17, ge=2, le=64)
    width: int = Field(64, ge=1, le=512)
    in_channels: int = Field(1, ge=1)
    batch_norm: bool = True
    noise_map: bool = Field(False, description="the noise map is an input channel")
    bias: bool = Field(True, description="additive biases (False: bias-free)")
    map_gain: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="ffdnet: factor on the noise map"
    )
    dilations: tuple[int, ...] | None = Field(
        None, description="dncnn: dilation of each convolution (None: all 1)"
    )
    levels: int | None = Field(None, ge=1, le=5, description="unet: pooling steps")

    @model_validator(mode="after")
    def _check_kind(self) -> Architecture:
        if self.name == "ffdnet" and (
            self.batch_norm or self.in_channels != 1 or not self.noise_map or not self.map_gain
        ):
            raise ValueError("an ffdnet has a noise map, no batch norm, 1 channel, a map_gain")
        if self.name != "ffdnet" and self.map_gain is not None:
            raise ValueError("map_gain is an ffdnet field")
        if (self.name == "unet") != (self.levels is not None):
            raise ValueError("levels is a unet's field, and a unet needs it")
        if self.name == "unet" and (
            self.batch_norm
            or self.noise_map
            or self.in_channels != 1
            or self.depth != UNet.convolutions(self.levels or 0)
        ):
            raise ValueError(
                f"a unet has one channel, no noise map, no batch norm and "
                f"{UNet.convolutions(self.levels or 0)} convolutions for {self.levels} levels"
            )
        if self.name == "dncnn" and self.batch_norm and not self.bias:
            raise ValueError("a bias-free dncnn has no batch norm (its shift is a bias)")
        if self.dilations is not None and (
            self.name != "dncnn"
            or len(self.dilations) != self.depth
            or min(self.dilations) < 1
            or set(self.dilations) == {1}
        ):
            raise ValueError(
                f"dilations {list(self.dilations)}: a dncnn's, one per layer ({self.depth}), "
                "each at least 1, not all 1 (leave them out)"
            )
        return self

    @staticmethod
    def stored_dilations(dilations: Sequence[int] | None) -> tuple[int, ...] | None:
        """``dilations`` as this field keeps them: ``None`` when every layer is undilated."""
        return tuple(dilations) if dilations and set(dilations) != {1} else None

    def describe(self) -> str:
        """Short text, e.g. ``DnCNN 10x32, batch norm`` or ``FFDNet 15x64, noise map``."""
        if self.name == "unet":
            free = ", bias-free" if not self.bias else ""
            return f"U-Net {self.levels} levels x{self.width}{free}"
        kind = "FFDNet" if self.name == "ffdnet" else "DnCNN"
        flags = (("batch norm", self.batch_norm), ("noise map", self.noise_map))
        extras = [t for t, on in (*flags, ("bias-free", not self.bias)) if on]
        if self.dilations:
            extras.append(f"dilated (receptive radius {sum(self.dilations)} px)")
        return ", ".join([f"{kind} {self.depth}x{self.width}", *extras])

    @classmethod
    def unet(cls, levels: int, width: int, bias: bool = True) -> Architecture:
        """A U-Net's architecture (its ``depth``, the convolution count, derived)."""
        depth = UNet.convolutions(levels)
        return cls(
            name="unet", depth=depth, width=width, batch_norm=False, bias=bias, levels=levels
        )

    @classmethod
    def of(cls, model: Denoiser) -> Architecture:
        """The architecture of a module."""
        if isinstance(model, UNet):
            return cls.unet(model.levels, model.width, model.bias)
        if isinstance(model, FFDNet):
            return cls(
                name="ffdnet",
                depth=model.depth,
                width=model.width,
                in_channels=model.in_channels,
                batch_norm=False,
                noise_map=True,
                bias=model.bias,
                map_gain=model.map_gain,
            )
        return cls(
            depth=model.depth,
            width=model.width,
            in_channels=model.in_channels,
            batch_norm=model.batch_norm,
            noise_map=model.noise_map,
            bias=model.bias,
            dilations=cls.stored_dilations(model.dilations),
        )


class Normalisation(BaseModel):
    """How raw intensities map to the model's input range: ``x_n = (x - lo) / (hi - lo)``.

    ``lo`` is the ``low`` percentile (in %) of the image (training) or of the channel
    (batch inference, sampled once per run so that every tile uses the same values).

    - ``method="percentile"``: ``hi`` is the ``high`` percentile, so the intensity window
      maps to 0..1 whatever the noise.
    - ``method="noise"``: ``hi = lo + scale * sigma`` with ``sigma`` the image's noise
      standard deviation (wavelet estimate, :func:`~fluoden_batch.models.normalise.noise_sigma`),
      so the noise has about the same size, ``1 / scale``, in model units at every noise
      level and a cleaner input simply has more contrast. The model can then tell a
      16-frame average from a single frame and leave the former alone.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["percentile", "noise"] = "percentile"
    low: float = Field(0.1, ge=0, lt=100, allow_inf_nan=False)
    high: float = Field(99.9, gt=0, le=100, allow_inf_nan=False)
    scale: float = Field(
        40.0, gt=0, allow_inf_nan=False, description="noise method: hi - lo = scale * sigma"
    )

    @model_validator(mode="after")
    def _ordered_window(self) -> Normalisation:
        if not self.low < self.high:
            raise ValueError(
                f"the normalisation window needs low < high, got low={self.low} "
                f"high={self.high} (percentiles)"
            )
        return self


class ModelMetadata(BaseModel):
    """Everything about a weights file except the tensors."""

    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = 1
    name: str
    description: str = ""
    architecture: Architecture = Architecture()
    normalisation: Normalisation = Normalisation()
    protocol: Literal["whole", "masked", "vst"] = "whole"
    training: dict[str, Any] = Field(default_factory=dict)
    noise_model: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    """An inference-ready model (eval mode, batch norm folded) and where it came from."""

    module: Denoiser
    metadata: ModelMetadata
    digest: str
    path: Path

    @property
    def receptive_radius(self) -> int:
        """Halo in pixels that makes tiled inference equal to whole-image inference."""
        return self.module.receptive_radius


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes as ``"sha256:<hex>"``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def shipped_models() -> dict[str, Path]:
    """Weights shipped with the package, by name (file stem)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def resolve_weights(name_or_path: str | Path) -> Path:
    """Return the weights file for a shipped model name or a path.

    An output directory of ``fluoden denoise --adapt`` resolves to the weights its run
    fitted (``OUT/.fluoden/adapted.safetensors``).

    A bioimage.io package (zip) that ``fluoden models export`` wrote resolves to the
    fluoden weights file inside it (:func:`~fluoden_batch.models.bioimageio.package_weights`).

    Raises
    ------
    ModelError
        When neither a file of that path nor a shipped model of that name exists, or for
        a bioimage.io package fluoden did not export.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / ADAPTED_WEIGHTS).is_file():
        return (path / ADAPTED_WEIGHTS).resolve()
    if path.is_file():
        from fluoden_batch.models.bioimageio import is_package, package_weights

        return package_weights(path) if is_package(path) else path.resolve()
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    names = ", ".join(shipped) or "none"
    raise ModelError(f"model {str(name_or_path)!r} is neither a file nor a shipped model ({names})")


def save_weights(model: Denoiser, path: Path, metadata: ModelMetadata) -> str:
    """Write ``model``'s tensors and ``metadata`` to a safetensors file.

    The file is readable by everyone the umask allows (0644 under the usual 022), so a
    group can share a model; see :func:`write_file`.

    Returns the file's digest (see :func:`file_digest`).
    """
    write_file(path, weights_bytes(model, metadata))
    return file_digest(path)


def weights_bytes(model: Denoiser, metadata: ModelMetadata) -> bytes:
    """``model``'s tensors and ``metadata`` as the bytes of a safetensors weights file."""
    arch = metadata.architecture
    if arch != Architecture.of(model):
        raise ModelError(f"metadata architecture {arch} does not match the model")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return serialise(tensors, metadata={METADATA_KEY: metadata.model_dump_json()})


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions a new file gets.

    ``safetensors.torch.save_file`` creates its file with mode 0600 whatever the umask;
    here the bytes go to a temporary file beside ``path`` (one per process and thread)
    created with mode 0666 less the umask (0644 under the usual 022), which then replaces
    ``path`` in one rename, so a reader never sees half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate the JSON metadata of a weights file without loading tensors."""
    path = Path(path)
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    if METADATA_KEY not in header:
        raise ModelError(f"{path}: safetensors file has no '{METADATA_KEY}' metadata")
    try:
        return ModelMetadata.model_validate(json.loads(header[METADATA_KEY]))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: model metadata is not valid JSON ({exc})") from exc
    except ValidationError as exc:
        fields = ModelMetadata.model_fields
        problems = "; ".join(describe_error(e, fields, str) for e in exc.errors())
        raise ModelError(f"{path}: invalid model metadata: {problems}") from exc


def build_model(a: Architecture) -> Denoiser:
    """Instantiate the (untrained) module of architecture ``a``."""
    if a.name == "ffdnet":
        assert a.map_gain is not None
        return FFDNet(a.depth, a.width, a.map_gain, a.bias)
    if a.name == "unet":
        assert a.levels is not None
        return UNet(a.levels, a.width, a.bias)
    return DnCNN(a.depth, a.width, a.in_channels, a.batch_norm, a.noise_map, a.bias, a.dilations)


def load_trainable(path: Path) -> tuple[Denoiser, ModelMetadata]:
    """Load a weights file as it was trained (batch norm not folded), e.g. to fine-tune.

    Raises
    ------
    ModelError
        Invalid metadata (:func:`read_metadata`), tensors that do not match the
        architecture, or a tensor holding NaN/Inf (a diverged training: the fused oneDNN
        convolutions would not even propagate the NaN, and the output would look valid).
    """
    metadata = read_metadata(path)
    model = build_model(metadata.architecture)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items() if _non_finite(v)}
    if bad:
        where = ", ".join(f"{k} ({n})" for k, n in sorted(bad.items())[:3])
        raise ModelError(
            f"{path}: {sum(bad.values())} NaN/Inf weights in {len(bad)} tensor(s): {where}; "
            "the file is unusable (a diverged training?)"
        )
    expected = set(model.state_dict())
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ModelError(
            f"{path}: tensors do not match architecture {metadata.architecture}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ModelError(f"{path}: tensor shapes do not match the metadata: {exc}") from exc
    return model, metadata


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load weights for inference: eval mode, batch norm folded, channels-last on ``device``.

    A DnCNN becomes a :class:`~fluoden_batch.models.fused.FusedDnCNN`: on CPU each
    convolution runs with its ReLU in one oneDNN call. An FFDNet or a U-Net (no batch
    norm) is used as it is.
    """
    path = resolve_weights(name_or_path)
    model, metadata = load_trainable(path)
    module: Denoiser
    if isinstance(model, FFDNet | UNet):
        module = model.eval()
    else:
        module = FusedDnCNN(fold_batch_norm(model.eval()) if model.batch_norm else model.eval())
    # channels-last weights and inputs: about 2x faster oneDNN convolutions on CPU
    module.to(device=device, memory_format=torch.channels_last)
    return LoadedModel(module=module, metadata=metadata, digest=file_digest(path), path=path)


def _non_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds any NaN or Inf."""
    return tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(9)
    # a safetensors file starts with its header's length (8 bytes, little-endian) and the
    # header's "{": a length such as 640 (b"\x80\x02...") is not a pickle
    safetensors = len(head) == 9 and head[8:9] == b"{"
    pickled = head.startswith(_PICKLE_MAGIC) and not safetensors
    if path.suffix in {".pt", ".pth", ".ckpt", ".pkl"} or pickled:
        raise ModelError(
            f"{path}: looks like a pickle/torch.save checkpoint. Loading pickles can run "
            "arbitrary code, so fluoden only reads .safetensors weights; convert it with "
            "`fluoden_batch.models.save_weights` in a trusted environment."
        )

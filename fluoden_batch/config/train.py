"""Configuration of one training run (:class:`TrainConfig`) and its TOML/YAML loader.

Five modes:

- ``"supervised"``: pairs of real noisy and clean images, matched by the wildcard parts of
  ``noisy_glob`` and ``clean_glob``; optionally a share ``synthetic_fraction`` of the
  patches replaces the real noisy input by Poisson-Gaussian noise drawn on the clean image.
- ``"synthetic"``: clean images only; every patch gets Poisson-Gaussian noise with
  ``(a, b)`` drawn from ``a_range`` x ``b_range``.
- ``"self_supervised"``: noisy images only (Noise2Void blind-spot masking, Krull et al.
  2019, see :mod:`fluoden_batch.train.blindspot`). ``clean_dir`` is optional and, when
  given, only scores the ``val_keys`` images; it never enters the loss.
- ``"noise2noise"``: noisy images only, several captures of each field of view
  (Lehtinen et al. 2018): each capture (or, with ``capture_levels``, each mean of a few) is
  the input, the mean of the OTHER captures of its field of view the target.
  ``capture_pattern`` tells which keys are captures of one field of view. ``clean_dir``
  and ``val_in_training`` work as in ``"self_supervised"``.
- ``"masked"``: a model for the masked protocol (:mod:`fluoden_batch.clustering.masked`):
  data as in ``"supervised"`` (pairs, ``extra_pairs``, ``synthetic_fraction``) or, without
  ``noisy_dir``, as in ``"synthetic"``; every patch becomes one cluster part of the
  protocol, with ``K`` drawn from ``clusters`` and labels smoothed by ``mask_sigma``
  (:mod:`fluoden_batch.train.masked`).

Images come from folders of 2-D files or from image arrays (Zarr, OME-Zarr, TIFF stacks),
see :mod:`fluoden_batch.train.planes`.

Intensity units of ``a_range`` / ``b_range`` are those of the clean images as stored
(grey levels, e.g. 0..255 for uint8): ``Var[z | y] = a * y + b``.

The module is long (about 450 lines) because it is one model: some fifty fields, each with
its help text (the CLI's flags are generated from them), and the validators that relate
them; splitting it would scatter one configuration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fluoden_batch.config.files import describe_error, read_config_file
from fluoden_batch.errors import InputError

if TYPE_CHECKING:
    from fluoden_batch.models.weights import Architecture, Normalisation

__all__ = [
    "NOISY_ONLY_MODES",
    "PairSource",
    "TrainConfig",
    "TrainConfigError",
    "load_train_config",
]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PATH_FIELDS = ("output", "clean_dir", "noisy_dir", "checkpoint_dir", "init_weights")
MAX_CLUSTERS = 16  # largest K of masked training
DEFAULT_CAPTURE_PATTERN = r"(.*?)[_-]?\d+"
NOISY_ONLY_MODES = ("self_supervised", "noise2noise")
# fields that only one mode uses: set away from their defaults in another mode, an error
MODE_FIELDS = {
    "masked": ("clusters", "mask_sigma"),
    "noise2noise": ("capture_pattern", "capture_levels"),
}


class TrainConfigError(InputError):
    """A training configuration (file or flags) is invalid; the message names the field."""


class PairSource(BaseModel):
    """One more folder pair of noisy/clean images for supervised or masked training.

    Its image keys are ``"<name>/<key>"`` (``name`` defaults to the noisy folder's name),
    so several noise levels of the same fields of view (e.g. FMD ``raw/`` and ``avg4/``
    against one ``gt/``) stay distinct and can be named in ``val_keys``.
    """

    model_config = ConfigDict(extra="forbid")

    noisy_dir: Path
    noisy_glob: str = "*.tif"
    clean_dir: Path
    clean_glob: str = "*.tif"
    name: str | None = Field(None, min_length=1, description="key prefix (default: folder)")

    @property
    def prefix(self) -> str:
        """The key prefix of this source's images."""
        return self.name or self.noisy_dir.name


class TrainConfig(BaseModel):
    """Everything that determines a training run; equal configs give equal models on CPU.

    Fields ``name``, ``description``, ``output``, ``checkpoint_dir``, ``checkpoint_every``,
    ``val_every`` and ``resume`` do not change the trained weights; every other field must
    match a checkpoint to resume from it.
    """

    model_config = ConfigDict(extra="forbid")

    # what is trained and where it goes
    name: str = Field("dncnn-custom", min_length=1, description="model name (metadata)")
    description: str = Field("", description="free text stored in the weights' metadata")
    output: Path = Field(description="weights file written at the end (.safetensors)")
    architecture: Literal["dncnn", "ffdnet", "unet"] = Field(
        "dncnn",
        description="'dncnn' (Zhang et al. 2017); 'ffdnet': a bias-free body on 2x2 "
        "pixel-unshuffled input that is also given the noise map sqrt(a x + b) "
        "(models.ffdnet), depth/width are its half-resolution layers; 'unet': a residual "
        "U-Net (Ronneberger et al. 2015, as CARE) of `levels` poolings, `width` features "
        "at full resolution doubled at each level (models.unet; depth is not used)",
    )
    depth: int = Field(17, ge=2, le=64, description="convolution layers")
    width: int = Field(64, ge=1, le=512, description="feature channels of the hidden layers")
    levels: int = Field(
        3, ge=1, le=5, description="unet only: pooling steps (the tile grid is 2**levels px)"
    )
    batch_norm: bool = Field(True, description="dncnn only: batch norm in the hidden layers")
    bias: bool = Field(
        True,
        description="DnCNN and U-Net: additive biases; false: a bias-free DnCNN (Mohan et al. "
        "2020; needs batch_norm false), whose output scales with its input, so it treats "
        "every signal-to-noise ratio alike; init_weights with biases are taken without them",
    )
    noise_map: bool = Field(
        False,
        description="dncnn: also give the network the noise map sqrt(a x + b) of its input "
        "(a, b estimated per image) as a second channel (ffdnet always has it)",
    )
    dilations: list[Annotated[int, Field(ge=1, le=64)]] | None = Field(
        None,
        description="dncnn: dilation of each of the depth convolutions (default all 1): a "
        "layer of dilation d sees d pixels further at the same cost; the receptive radius "
        "(tile halo) is their sum. Growing a shallower init_weights, the inserted middle "
        "layers may be dilated (models.dncnn.grown_dilations)",
    )
    init_weights: Path | None = Field(
        None,
        description="start from these weights (fine-tuning): a file or a shipped model name "
        "(e.g. dncnn-fmd) of the same architecture, or a DnCNN of the same width that is "
        "grown into this one (deeper, batch norm folded, a zero-weighted noise-map input) "
        "without changing what it computes",
    )

    # data
    mode: Literal["supervised", "synthetic", "self_supervised", "noise2noise", "masked"] = Field(
        "supervised",
        description="supervised (noisy/clean pairs), synthetic (clean images + simulated "
        "noise), self_supervised (Noise2Void), noise2noise (repeated captures) or masked",
    )
    clean_dir: Path | None = Field(
        None,
        description="clean images: a folder (files matching clean_glob) or an image array "
        "(Zarr, OME-Zarr or TIFF stack: every Y/X plane is an image, keys like 'c0_z5_t3')",
    )
    clean_glob: str = Field("*.tif", description="file pattern in a clean_dir folder")
    noisy_dir: Path | None = Field(
        None, description="noisy images: a folder or an image array, as clean_dir"
    )
    noisy_glob: str = Field("*.tif", description="file pattern in a noisy_dir folder")
    extra_pairs: list[PairSource] = Field(
        default_factory=list,
        description="supervised/masked modes: more noisy/clean folder pairs (keys '<name>/<key>')",
    )
    val_keys: list[str] = Field(
        default_factory=list,
        description="image keys (wildcard parts of the globs) held out for validation",
    )
    val_in_training: bool = Field(
        False,
        description="self_supervised/noise2noise only: also train on the val_keys images "
        "(their clean references only score, never train): fit on the very images you denoise",
    )
    capture_pattern: str = Field(
        DEFAULT_CAPTURE_PATTERN,
        min_length=1,
        description="noise2noise: regular expression matched against each image key (the "
        "glob's wildcard part); its first group names the field of view, and keys that "
        "share it are repeated captures of one scene. The default drops a trailing capture "
        "number: 'cell_3' -> 'cell'",
    )
    capture_levels: list[int] = Field(
        default_factory=lambda: [1],
        description="noise2noise: how many captures each input averages, e.g. [1, 2]: "
        "single captures and means of 2, each against the mean of the rest of its field of "
        "view (the model then also meets cleaner, averaged inputs)",
    )
    match_brightness: bool = Field(
        False,
        description="pairs: bring each clean reference to its noisy partner's brightness "
        "(gain and offset fitted by least squares) before training and validation, for pairs "
        "whose brightness was scaled apart (separate acquisitions; 8-bit exports stretched "
        "one by one, as W2S's): the model then learns to remove noise, not to change "
        "brightness",
    )
    normalisation: Literal["percentile", "noise"] = Field(
        "percentile",
        description="model input range: 'percentile' maps the 0.1..99.9 percentile window to "
        "0..1; 'noise' maps 40 noise standard deviations to 1, so the model sees how noisy "
        "the input is (see models.weights.Normalisation)",
    )
    synthetic_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="supervised/masked modes: share of the patches of real pairs given "
        "synthetic noise instead",
    )
    a_range: tuple[float, float] | None = Field(
        None, description="Poisson gain range (image units), sampled log-uniformly per patch"
    )
    b_range: tuple[float, float] | None = Field(
        None, description="Gaussian variance range (image units squared), uniform per patch"
    )
    noise_correlation: tuple[float, float] | None = Field(
        None,
        description="synthetic noise: range of the lag-1 correlation of neighbouring pixels "
        "(camera-like noise, 0..0.707), uniform per patch; unset: independent pixels",
    )
    mask_fraction: float = Field(
        0.02,
        gt=0.0,
        le=0.25,
        description="self_supervised: share of blind-spot pixels per patch, one per "
        "g x g cell with g = round(1 / sqrt(mask_fraction))",
    )
    mask_radius: int = Field(
        2, ge=1, le=8, description="self_supervised: replacement neighbour window radius"
    )
    clusters: list[int] = Field(
        default_factory=lambda: [2, 3, 4],
        description=f"masked: values of K (1..{MAX_CLUSTERS}, distinct), one drawn per "
        "patch; validation uses the middle one",
    )
    mask_sigma: float = Field(
        1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="masked: label smoothing width in pixels; use the one of inference",
    )

    # optimisation
    steps: int = Field(1000, ge=1, description="optimisation steps")
    batch_size: int = Field(16, ge=1, description="patches per step")
    patch_size: int = Field(64, ge=8, description="patch side, pixels")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: Literal["cosine", "step"] = Field("cosine", description="learning-rate decay")
    lr_min_ratio: float = Field(0.01, ge=0, le=1, description="cosine: final lr / lr")
    lr_step_every: int = Field(1000, ge=1, description="step: decay period in steps")
    lr_step_gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    seed: int = Field(0, ge=0, description="random seed (equal configs give equal models on CPU)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="autocast (CUDA only)")
    channels_last: bool = Field(
        False,
        description="channels-last tensors: about 2x faster training on CPU; False "
        "reproduces runs made before this option bit for bit",
    )

    # bookkeeping
    val_every: int = Field(200, ge=1, description="validation period, steps")
    checkpoint_dir: Path | None = Field(
        None, description="folder for resumable checkpoints (rerun the command to resume)"
    )
    checkpoint_every: int = Field(500, ge=1, description="checkpoint period, steps")
    resume: bool = Field(True, description="continue from the latest checkpoint if any")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("a_range", "b_range")
    @classmethod
    def _check_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"range must satisfy 0 <= low <= high, got {v}")
        return v

    @field_validator("noise_correlation")
    @classmethod
    def _check_correlation(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        from fluoden_batch.noise.simulate import MAX_CORRELATION  # scipy: not at CLI start

        if v is not None and not 0 <= v[0] <= v[1] <= MAX_CORRELATION:
            raise ValueError(f"noise_correlation must satisfy 0 <= low <= high <= 0.707, got {v}")
        return v

    @field_validator("capture_pattern")
    @classmethod
    def _check_capture_pattern(cls, v: str) -> str:
        try:
            groups = re.compile(v).groups
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from exc
        if groups < 1:
            raise ValueError("needs a group (...) that names the field of view")
        return v

    @field_validator("capture_levels")
    @classmethod
    def _check_capture_levels(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"capture_levels must be distinct counts >= 1, got {v}")
        return v

    @field_validator("clusters")
    @classmethod
    def _check_clusters(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("clusters needs at least one value of K")
        if not all(1 <= k <= MAX_CLUSTERS for k in v):
            raise ValueError(f"every K in clusters must be 1..{MAX_CLUSTERS}, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"clusters must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _check_mode(self) -> TrainConfig:
        if self.mode in ("supervised", *NOISY_ONLY_MODES) and self.noisy_dir is None:
            raise ValueError(f"mode {self.mode!r} needs noisy_dir")
        if self.mode in ("supervised", "synthetic", "masked") and self.clean_dir is None:
            raise ValueError(f"mode {self.mode!r} needs clean_dir")
        if self.mode == "synthetic" and self.noisy_dir is not None:
            raise ValueError("mode 'synthetic' uses clean images only; drop noisy_dir")
        if self.match_brightness and (self.noisy_dir is None or self.clean_dir is None):
            raise ValueError("match_brightness needs noisy/clean pairs (noisy_dir and clean_dir)")
        if self.mode in NOISY_ONLY_MODES:
            if self.synthetic_fraction > 0:
                raise ValueError(f"mode {self.mode!r} has no synthetic_fraction")
            if self.val_keys and self.clean_dir is None:
                raise ValueError(
                    f"val_keys in mode {self.mode!r} need clean_dir (references used "
                    "only to score the validation images)"
                )
        elif self.val_in_training:
            raise ValueError("val_in_training is for modes 'self_supervised' and 'noise2noise'")
        if self.extra_pairs and self.mode not in ("supervised", "masked"):
            raise ValueError("extra_pairs is for modes 'supervised' and 'masked' only")
        if self.extra_pairs and self.clean_only:
            raise ValueError(
                "extra_pairs in mode 'masked' need noisy_dir (without it the data are clean "
                "images only)"
            )
        if self.dilations is not None and (
            self.architecture != "dncnn" or len(self.dilations) != self.depth
        ):
            raise ValueError(
                f"dilations: one per convolution of a dncnn ({self.depth} for depth "
                f"{self.depth}), got {len(self.dilations)} for {self.architecture!r}"
            )
        if self.architecture == "unet" and (self.noise_map or self.dilations):
            raise ValueError("architecture 'unet' has no noise map and no dilations")
        if self.architecture == "ffdnet" and self.mode in ("self_supervised", "masked"):
            raise ValueError(
                f"architecture 'ffdnet' trains in modes supervised, synthetic and noise2noise, "
                f"not {self.mode!r}"
            )
        fields = type(self).model_fields
        for mode, names in MODE_FIELDS.items():
            changed = [
                name
                for name in names
                if getattr(self, name) != fields[name].get_default(call_default_factory=True)
            ]
            if self.mode != mode and changed:
                raise ValueError(f"{' and '.join(changed)}: for mode {mode!r} only")
        if (
            self.mode == "masked"
            and self.noisy_dir is None
            and (self.a_range is None or self.b_range is None)
        ):
            raise ValueError(
                "mode 'masked' without noisy_dir puts synthetic noise on every patch: it "
                "needs a_range and b_range"
            )
        prefixes = [src.prefix for src in self.extra_pairs]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"extra_pairs need distinct names, got {prefixes}")
        if self.uses_synthetic and (self.a_range is None or self.b_range is None):
            raise ValueError("synthetic noise needs a_range and b_range")
        if self.noise_correlation is not None and (
            self.mode not in ("supervised", "synthetic") or not self.uses_synthetic
        ):
            raise ValueError(
                "noise_correlation shapes synthetic noise of modes 'supervised' (with "
                "synthetic_fraction > 0) and 'synthetic' only"
            )
        if self.a_range is not None and self.a_range[0] <= 0:
            raise ValueError(f"a_range must be > 0 (log-uniform sampling), got {self.a_range}")
        return self

    @property
    def uses_synthetic(self) -> bool:
        """Whether any training patch gets simulated noise."""
        return self.clean_only or self.synthetic_fraction > 0

    @property
    def clean_only(self) -> bool:
        """Whether the data are clean images only, every patch with synthetic noise."""
        return self.mode == "synthetic" or (self.mode == "masked" and self.noisy_dir is None)

    @property
    def val_clusters(self) -> int:
        """Masked mode: the K of validation, the middle of the sorted ``clusters`` (the
        upper middle for an even count)."""
        return sorted(self.clusters)[len(self.clusters) // 2]

    @property
    def input_normalisation(self) -> Normalisation:
        """The model input normalisation of ``normalisation``, as stored in the weights
        (imported here: the config module stays free of torch for a fast CLI start)."""
        from fluoden_batch.models.weights import Normalisation

        return Normalisation(method=self.normalisation)

    @property
    def model_architecture(self) -> Architecture:
        """The network of this run as stored in the weights (an ffdnet's noise map is
        scaled by the normalisation's ``scale``, so a typical pixel's sigma is about 1)."""
        from fluoden_batch.models.weights import Architecture

        if self.architecture == "unet":
            return Architecture.unet(self.levels, self.width, self.bias)
        if self.architecture == "ffdnet":
            scale = self.input_normalisation.scale
            return Architecture(
                name="ffdnet",
                depth=self.depth,
                width=self.width,
                batch_norm=False,
                noise_map=True,
                bias=False,
                map_gain=scale,
            )
        return Architecture(
            depth=self.depth,
            width=self.width,
            batch_norm=self.batch_norm,
            noise_map=self.noise_map,
            bias=self.bias,
            dilations=Architecture.stored_dilations(self.dilations),
        )


def load_train_config(path: Path | None, **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from a TOML/YAML file and overrides (``None`` = unset).

    Relative paths in the file (``output``, ``clean_dir``, ``noisy_dir``,
    ``checkpoint_dir``, ``init_weights`` and the folders of ``extra_pairs``) are taken
    relative to the file's folder, so a config works from any working directory (an
    ``init_weights`` that is a bare name with no such file there is kept: a shipped model
    name); paths given as overrides are used as given (relative to the working directory).

    Raises
    ------
    TrainConfigError
        Unreadable file or invalid fields; the message names the file and each field.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = read_config_file(path, TrainConfigError)
        base = path.expanduser().resolve().parent
        for key in PATH_FIELDS:
            if isinstance(values.get(key), str):
                p = Path(values[key]).expanduser()
                resolved = p if p.is_absolute() else (base / p).resolve()
                if key == "init_weights" and not resolved.exists() and p.name == values[key]:
                    continue  # a bare name: a shipped model (resolved when training starts)
                values[key] = resolved
        for source in values.get("extra_pairs") or []:
            for key in ("noisy_dir", "clean_dir"):
                if isinstance(source, dict) and isinstance(source.get(key), str):
                    p = Path(source[key]).expanduser()
                    source[key] = p if p.is_absolute() else (base / p).resolve()
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        where = f"config file {path}" if path is not None else "training configuration"
        problems = "; ".join(
            describe_error(e, TrainConfig.model_fields, lambda loc: f"field {loc!r}")
            for e in exc.errors()
        )
        raise TrainConfigError(f"{where}: {problems}") from exc

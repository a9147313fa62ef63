"""Parameters of ``fluoden denoise`` (and :func:`fluoden_batch.denoise`).

Each option is declared once, here: its name, type, default and help. The CLI builds its
flags from these fields (:mod:`fluoden_batch.cli.options`); a TOML/YAML file given with
``--config`` holds any of them, and flags override the file. Unknown keys are errors
(``extra="forbid"``), so a typo in a config file is reported, not ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fluoden_batch.config.compute import ComputeOptions

__all__ = [
    "DEFAULT_MASKED_MODEL",
    "DEFAULT_MODEL",
    "MAX_CLUSTERS",
    "AdaptOptions",
    "Axes",
    "DenoiseConfig",
    "DenoiseOptions",
    "PyramidOptions",
    "Series",
    "parse_yx",
]

DEFAULT_MODEL = "dncnn-fmd"
DEFAULT_MASKED_MODEL = "dncnn-small-masked"  # the default of --protocol masked when shipped
MAX_CLUSTERS = 16

AXES_HELP = "axis names for inputs without metadata, e.g. 'cyx'"
SERIES_HELP = (
    "which image series of a TIFF file that holds several (a multi-position OME-TIFF: one "
    "per position; `fluoden info FILE` lists them), counted from 0"
)
Axes = Annotated[str | None, Field(description=AXES_HELP)]
"""The ``axes`` option of every command that reads an image (declared once, here)."""
Series = Annotated[int, Field(ge=0, description=SERIES_HELP)]
"""The ``series`` option of every command that reads an image (declared once, here)."""


def parse_yx(value: Any) -> Any:
    """``"Y,X"`` (CLI text) as a pair of ints; other values unchanged (pydantic checks them)."""
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected 'Y,X' (two integers), got {value!r}") from None
    return value


ModelProtocol = Literal["whole", "vst", "masked"]
"""Protocols that run a model (``restore.protocols.MODEL_PROTOCOLS`` implements them)."""
ClassicalProtocol = Literal["nlm", "vst-nlm", "bm3d", "vst-bm3d"]
"""Classical baselines without a model (``restore.classical.CLASSICAL`` implements them)."""
MODEL_PROTOCOL_NAMES: tuple[str, ...] = get_args(ModelProtocol)


class DenoiseOptions(BaseModel):
    """How each plane is denoised: the options of :func:`fluoden_batch.denoise` for arrays
    as for stores (:class:`DenoiseConfig` adds the input, the output and the Dask options)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description=f"shipped model name or .safetensors path (default: {DEFAULT_MODEL}; with "
        f"--protocol masked: {DEFAULT_MASKED_MODEL} where it is installed)",
    )
    protocol: Literal[ModelProtocol, ClassicalProtocol] = Field(
        "whole",
        description="whole: the model sees normalised raw intensities; vst: generalized "
        "Anscombe transform with one (a, b) per channel estimated from the data, the model, "
        "then the exact unbiased inverse; masked: pixels are labelled by the nearest of K "
        "intensity centres (fitted once per channel) on the smoothed plane, each cluster is "
        "denoised with everything else set to the smoothed plane clipped to the cluster's "
        "band, and each pixel comes from its own cluster's pass (K passes per plane); "
        "nlm, vst-nlm, bm3d, vst-bm3d: classical baselines without a model (non-local "
        "means, BM3D with the optional bm3d package), with the noise (a, b) estimated per "
        "channel, to compare on your own data",
    )
    clusters: int = Field(
        3,
        ge=1,
        le=MAX_CLUSTERS,
        description="number of intensity clusters K for --protocol masked and --save-labels; "
        "K = 1 is the whole protocol",
    )
    mask_sigma: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="Gaussian smoothing (sigma, pixels) of the plane before labelling, so "
        "masks do not break into speckle; 0 = none; each block reads about 4 sigma more halo",
    )
    cluster_backend: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="where the K-means centres are fitted: auto (cuML when it imports and a "
        "GPU is present, else scikit-learn), gpu (cuML or an error) or cpu; the centres are "
        "stored, so the output does not depend on it",
    )
    dtype: Literal["same", "uint8", "uint16", "float32", "float64"] = Field(
        "same", description="output dtype (integers are rounded and clipped, never wrapped)"
    )
    block_min: int = Field(
        2048, ge=16, description="smallest block (task) size in Y/X, pixels; chunks are grouped"
    )
    tile: int = Field(384, ge=32, description="forward-pass tile size, pixels")
    axes: Axes = None
    series: Series = 0
    device: str = Field("auto", description="torch device: auto, cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or bf16/fp16 autocast on CUDA (faster, less exact)"
    )
    tta: bool = Field(
        False,
        description="test-time augmentation: the mean over each plane's 8 flips and rotations "
        "(8x the model time; usually a few tenths of a dB better)",
    )
    phase_split: bool = Field(
        False,
        description="denoise the four stride-2 phases of every plane separately and "
        "interleave them (same model FLOPs, a wider halo): for a camera whose noise is "
        "strongly correlated between neighbouring pixels (lag-1 about 0.6, as FMD's widefield "
        "cameras; a run's detail note says 'spatially correlated') that the model was not "
        "trained on, where it leaves or smears that noise; loses fine detail (0.3-5 dB) where "
        "the noise is white or weakly correlated, or the model knows the camera",
    )
    hot_pixels: Literal["keep", "remove", "off"] = Field(
        "keep",
        description="isolated camera defects (a pixel more than --hot-pixel-sigmas noise "
        "sigmas above all 8 neighbours) are replaced by their neighbours' median before any "
        "denoiser sees the plane, so that they do not spread over the model's reach; keep: "
        "the output keeps the input's value there; remove: the denoised one; off: not looked "
        "for. Needs the channel's noise (a, b), which every run but --detail off with "
        "--protocol whole estimates",
    )
    hot_pixel_sigmas: float = Field(
        100.0,
        gt=0,
        description="threshold of --hot-pixels in noise standard deviations (FMD's camera "
        "defects stand up to 62 sigmas above their neighbours and do the model little "
        "harm; lower it, e.g. to 20, to remove such defects with --hot-pixels remove)",
    )
    detail: Literal["auto", "off", "sure"] = Field(
        "auto",
        description="sure: after the model, blend in non-local means of the input (VST+NLM, "
        "0-75 %), put back the input's lowest spatial frequencies (a Gaussian of 0-8 px of "
        "the residual), blend towards the input and pass the result as the pilot of an "
        "empirical Wiener filter of the input (0-100 %, where the model's residual is not "
        "anti-correlated), by how much chosen per channel at planning (with --adapt: after "
        "the fit, for the fitted model) by Stein's unbiased risk estimate on a sample "
        "(white noise only: spatially correlated noise keeps the model's output); "
        "--protocol whole only. auto (the default): sure with --protocol whole, else "
        "off. It keeps nearly clean inputs from getting worse (+0.3 dB at "
        "FMD's avg16 on types the model never saw)",
    )
    plane_groups: Literal["auto", "off"] = Field(
        "auto",
        description="auto: where the planes of a channel (up to 64 of them) differ in their "
        "noise, as captures from several microscopes stacked along z or t do, plan each "
        "group of similar planes (noise sigma within 1.5x, correlation alike) on its own: "
        "its normalisation window, noise (a, b) and --detail, as a separate run over those "
        "planes would have (a note names the groups). off: one plan per channel for every "
        "plane, e.g. for a z-stack or time-lapse whose planes must share one plan",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _detail_whole_protocol_only(self) -> DenoiseOptions:
        if self.detail == "sure" and self.protocol != "whole":
            raise ValueError(
                f"--detail restores what the model of --protocol whole removed; --protocol "
                f"{self.protocol} is not supported with it"
            )
        return self

    @model_validator(mode="after")
    def _phase_split_needs_a_model(self) -> DenoiseOptions:
        if self.phase_split and self.protocol not in MODEL_PROTOCOL_NAMES:
            raise ValueError(
                f"--phase-split splits the planes a model denoises; --protocol "
                f"{self.protocol} has no model"
            )
        return self

    @property
    def hot(self) -> tuple[str, float] | None:
        """``(hot_pixels, hot_pixel_sigmas)``, or None with ``--hot-pixels off``."""
        return None if self.hot_pixels == "off" else (self.hot_pixels, self.hot_pixel_sigmas)

    @property
    def labelled(self) -> bool:
        """Whether the run computes cluster labels (``masked``)."""
        return self.protocol == "masked"

    @property
    def restores_detail(self) -> bool:
        """Whether the run restores detail after the model: ``detail = "sure"``, or
        ``"auto"`` with ``protocol = "whole"``."""
        return self.detail == "sure" or (self.detail == "auto" and self.protocol == "whole")


class InputOptions(BaseModel):
    """How much of the input must be stored, shared by ``denoise`` and ``segment``."""

    model_config = ConfigDict(extra="forbid")
    help_panel: ClassVar[str] = "Input"  # --help's section of these options

    allow_sparse: bool = Field(
        False,
        description="run even when 99 % or more of the input's chunks are missing (read as "
        "the fill value; refused otherwise: most likely an incomplete copy)",
    )


class PyramidOptions(BaseModel):
    """The multiscale pyramid of every image an output holds (the image and its labels),
    shared by ``denoise`` and ``segment``."""

    model_config = ConfigDict(extra="forbid")
    help_panel: ClassVar[str] = "Output pyramid"  # --help's section of these options

    levels: int | None = Field(
        None,
        ge=1,
        le=32,
        description="pyramid levels, level 0 included, each halving Y/X (mean of 2x2 "
        "pixels; labels: their most frequent value) (default: down to at most 512 pixels "
        "on the longest side)",
    )
    pyramid: bool = Field(
        True, description="write a multiscale pyramid; --no-pyramid writes level 0 only"
    )

    @model_validator(mode="after")
    def _one_way_to_say_no_pyramid(self) -> PyramidOptions:
        if not self.pyramid and self.levels not in (None, 1):
            raise ValueError(f"--no-pyramid contradicts --levels {self.levels}")
        return self

    def pyramid_levels(self, shape: tuple[int, ...]) -> int:
        """The number of levels of an output of ``shape``: ``levels``, 1 without pyramid,
        else :func:`~fluoden_batch.io.ngff.auto_levels`."""
        from fluoden_batch.io.ngff import auto_levels

        if not self.pyramid:
            return 1
        return self.levels if self.levels is not None else auto_levels(shape)

    def pyramid_parameters(self) -> dict[str, Any]:
        """``levels``/``pyramid`` for the output parameters, only where not the default
        (outputs written before pyramids existed resume unchanged)."""
        data: dict[str, Any] = {}
        if self.levels is not None:
            data["levels"] = self.levels
        if not self.pyramid:
            data["pyramid"] = False
        return data


class AdaptOptions(BaseModel):
    """Fitting the model to the input before denoising it (``--adapt``); store runs only."""

    model_config = ConfigDict(extra="forbid")
    help_panel: ClassVar[str] = "Fit to the data (--adapt)"  # --help's section of these options

    adapt: Literal["none", "auto", "n2n", "single"] = Field(
        "none",
        description="fit the model to INPUT itself before denoising (no clean data needed): "
        "n2n (Noise2Noise between repeated captures along a t axis of a still sample), "
        "single (Neighbor2Neighbor on single frames), auto (n2n where t holds still "
        "repeats, else single); the fitted weights are kept in OUTPUT/.fluoden and reused "
        "on resume",
    )
    adapt_steps: int = Field(
        400,
        ge=1,
        le=100_000,
        description="--adapt: optimisation steps at most (batches of 16 patches); the fit "
        "stops earlier after 3 held-out checks in a row without a better score",
    )
    adapt_minutes: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="--adapt: stop the fit after this many minutes even if steps remain "
        "(the result then depends on the machine's speed)",
    )
    adapt_seed: int = Field(0, ge=0, description="--adapt: seed of the patch draws and batches")

    def adapt_parameters(self) -> dict[str, Any]:
        """The adapt fields for the output parameters, only when adapting (outputs written
        before --adapt existed resume unchanged)."""
        if self.adapt == "none":
            return {}
        return self.model_dump(
            mode="json", include={"adapt", "adapt_steps", "adapt_minutes", "adapt_seed"}
        )


class DenoiseConfig(DenoiseOptions, AdaptOptions, PyramidOptions, InputOptions, ComputeOptions):
    """Parameters of a denoising run from a store into an OME-Zarr.

    Only the fields in :meth:`output_parameters` decide the output; a rerun with the same
    values resumes, a rerun with others is refused unless ``overwrite``. ``model = None``
    means the protocol's default (:data:`DEFAULT_MODEL`, or :data:`DEFAULT_MASKED_MODEL`
    for ``masked`` where it is shipped), resolved at planning.
    """

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(description="Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF")
    output: Path = Field(description="output OME-Zarr image (created; or resumed if it exists)")
    save_labels: bool = Field(
        False,
        description="also write the cluster labels (0 = darkest) as the NGFF label image "
        "OUTPUT/labels/clusters, with cluster sizes and scores per block in the metrics",
    )
    chunks: tuple[int, int] | None = Field(
        None, description="output chunk size in Y/X as 'Y,X' (default: the input's)"
    )
    ngff_version: Literal["0.4", "0.5"] = Field(
        "0.5", description="output NGFF version (0.4 for Fiji)"
    )
    reference: Path | None = Field(
        None, description="clean array of the same shape: adds PSNR/SSIM to the metrics"
    )
    data_range: float | None = Field(
        None, gt=0, description="peak-to-peak range for PSNR/SSIM (default: the reference's)"
    )
    overwrite: bool = Field(False, description="replace an OUTPUT written with other parameters")
    performance_report: Path | None = Field(
        None, description="write a Dask performance report (HTML) here"
    )

    _parse_chunks = field_validator("chunks", mode="before")(parse_yx)

    @field_validator("chunks")
    @classmethod
    def _positive_chunks(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) <= 0:
            raise ValueError(f"chunk sizes must be positive, got {v}")
        return v

    @property
    def labelled(self) -> bool:
        """Whether the run computes cluster labels (``masked`` or ``save_labels``)."""
        return self.protocol == "masked" or self.save_labels

    @model_validator(mode="after")
    def _adapt_whole_protocol_only(self) -> DenoiseConfig:
        if self.adapt != "none" and self.protocol != "whole":
            raise ValueError(
                f"--adapt fits the model of --protocol whole; --protocol {self.protocol} "
                "is not supported with it"
            )
        if self.adapt != "none" and self.phase_split:
            raise ValueError(
                "--adapt is not supported with --phase-split (fitted on the phases, single "
                "lost 1.8-3.0 dB against the phase split alone on FMD's widefield types)"
            )
        return self

    def output_parameters(self) -> dict[str, Any]:
        """The parameters that determine the output, as JSON-compatible values.

        ``clusters`` and ``mask_sigma`` are included only when the run computes labels
        (they change nothing otherwise, so a ``whole`` run resumes whatever they are);
        ``save_labels`` always (it decides whether OUT holds labels for every block).
        ``cluster_backend`` is left out: the centres it fits are stored and reused.
        ``tta``, ``phase_split`` and ``detail`` only when on (``detail`` as ``"sure"``, also
        for ``auto``), ``hot_pixels`` and ``hot_pixel_sigmas`` only when not the defaults,
        ``plane_groups`` only when ``off`` and ``series`` only when not 0, so outputs
        written before they existed resume unchanged.
        """
        keys = [
            "precision",
            "model",
            "protocol",
            "dtype",
            "chunks",
            "block_min",
            "tile",
            "ngff_version",
            "axes",
            "reference",
            "data_range",
            "save_labels",
        ]
        if self.labelled:
            keys += ["clusters", "mask_sigma"]
        if self.tta:
            keys.append("tta")
        if self.phase_split:
            keys.append("phase_split")
        hot = ("hot_pixels", "hot_pixel_sigmas")
        if any(getattr(self, k) != type(self).model_fields[k].default for k in hot):
            keys += hot
        if self.plane_groups == "off":
            keys.append("plane_groups")
        if self.series:
            keys.append("series")
        data = self.model_dump(mode="json", include=set(keys))
        if self.restores_detail:
            data["detail"] = "sure"  # auto and sure alike
        data["input"] = str(self.input.expanduser().resolve())
        return data | self.pyramid_parameters() | self.adapt_parameters()

"""Values ``fluoden denoise`` fixes once per run at planning, and reuses on resume.

- the model: the one asked for, else the protocol's default (:func:`choose_model`);
- ``vst`` and models with a noise map: the Poisson-Gaussian ``(a, b)`` per channel
  (:func:`planned_noise`);
- ``masked`` and ``--save-labels``: the K-means intensity centres per channel
  (:func:`cluster_centres`).

Per-block values would differ between neighbouring blocks and leave seams, so each is
fitted once on a sample of the whole input and stored in OUT's provenance parameters
(``channel_noise``, ``channel_centres``). A resume reads them back (:func:`stored`)
instead of fitting again: a fresh fit on another machine or clustering backend could
differ in the last bits; a changed value makes the parameters differ, and the run is
refused unless ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fluoden_batch.clustering import select_backend
from fluoden_batch.config import (
    DEFAULT_MASKED_MODEL,
    DEFAULT_MODEL,
    ComputeOptions,
    DenoiseConfig,
    DenoiseOptions,
)
from fluoden_batch.errors import InputError, ModelError
from fluoden_batch.io.ngff import channel_count
from fluoden_batch.io.store import stored_parameter
from fluoden_batch.models.weights import (
    ModelMetadata,
    Normalisation,
    file_digest,
    load_trainable,
    resolve_weights,
    shipped_models,
)
from fluoden_batch.noise.estimate import MAX_LEAKAGE, NoiseEstimate
from fluoden_batch.pipeline.groups import PlaneGroups, group_part, plane_groups, stored_rows
from fluoden_batch.pipeline.statistics import (
    channel_centres,
    channel_levels,
    channel_noise,
    channel_planes,
    channel_ranges,
    gat_parameters,
    signal_floor,
)
from fluoden_batch.pipeline.worker import worker_model
from fluoden_batch.restore.classical import CLASSICAL
from fluoden_batch.restore.detail import NOISE_SCREEN, Detail, choose_detail, sure_plane
from fluoden_batch.restore.hot import find_hot, inpaint
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import PlaneParams, whole
from fluoden_batch.restore.tiles import Block, BlockGrid

__all__ = [
    "ChannelValues",
    "Method",
    "channel_values",
    "check_device",
    "choose_method",
    "choose_model",
    "cluster_centres",
    "grouped_values",
    "noise_from_rows",
    "noise_rows",
    "planned_detail",
    "planned_noise",
    "stored",
    "tested_noise",
    "tuned_detail",
]


def choose_model(cfg: DenoiseOptions) -> tuple[str, list[str]]:
    """The model to run (``cfg.model``, else the protocol's default) and plan notes.

    ``masked`` defaults to :data:`~fluoden_batch.config.DEFAULT_MASKED_MODEL` where it is
    shipped, and otherwise falls back to :data:`~fluoden_batch.config.DEFAULT_MODEL`
    (trained on whole images) with a note saying so.
    """
    if cfg.model is not None:
        return cfg.model, []
    if cfg.protocol != "masked":
        return DEFAULT_MODEL, []
    if DEFAULT_MASKED_MODEL in shipped_models():
        return DEFAULT_MASKED_MODEL, []
    return DEFAULT_MODEL, [
        f"note: the masked-trained model {DEFAULT_MASKED_MODEL!r} is not installed; "
        f"using {DEFAULT_MODEL!r} (pass --model to choose another)"
    ]


@dataclass(frozen=True)
class Method:
    """What denoises a run: a model (as asked for, its weights file, digest and metadata)
    or, for the classical protocols, none (``model`` None, ``path`` and ``digest`` empty,
    ``metadata`` None); ``name`` is the model's or the protocol's."""

    name: str
    model: str | None
    path: str
    digest: str
    metadata: ModelMetadata | None


def choose_method(cfg: DenoiseOptions, notes: list[str]) -> Method:
    """The model of a run (:func:`choose_model`), or no model for a classical protocol
    (refused with the reason where its optional package is missing); appends notes."""
    if cfg.protocol in CLASSICAL:
        method = CLASSICAL[cfg.protocol]
        if not method.available():
            raise InputError(
                f"--protocol {cfg.protocol} needs the optional {method.package!r} package "
                f"(pip install {method.package}); it is not a dependency of fluoden-batch "
                "because its licence forbids commercial use"
            )
        if cfg.model is not None:
            notes.append(f"note: --protocol {cfg.protocol} uses no model; --model is ignored")
        return Method(cfg.protocol, None, "", "", None)
    model, more = choose_model(cfg)
    notes.extend(more)
    path = resolve_weights(model)
    _, metadata = load_trainable(path)  # metadata, tensor shapes, finite weights
    channels = metadata.architecture.in_channels
    if channels != 1:
        raise ModelError(
            f"model {path} takes {channels} image channels per pixel; fluoden denoises one "
            "Y/X plane (one channel) at a time and needs a model with in_channels = 1"
        )
    check_device(cfg)
    if metadata.protocol != cfg.protocol:
        notes.append(
            f"warning: model {metadata.name} was trained for the {metadata.protocol!r} "
            f"protocol; running {cfg.protocol!r} feeds it data it was not trained on"
        )
    return Method(metadata.name, model, str(path), file_digest(path), metadata)


def check_device(cfg: DenoiseOptions) -> None:
    """Refuse, before any work, a torch device (or reduced precision) that this machine
    lacks, when the blocks run here: in this process or on a local cluster. The workers
    of a scheduler or a deploy profile are other machines; they meet the device when
    they load the model.

    Raises
    ------
    InputError
        ``cuda`` or ``cuda:N`` without that CUDA device; ``bf16``/``fp16`` without CUDA.
    """
    if isinstance(cfg, ComputeOptions) and (cfg.scheduler is not None or cfg.profile is not None):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = cfg.device
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA"
            raise InputError(
                f"--device {device}: this machine has {have} (torch.cuda.is_available() is "
                f"{count > 0}); use --device cpu or auto"
            )
    elif cfg.precision != "fp32" and (device == "cpu" or count == 0):
        raise InputError(
            f"--precision {cfg.precision} needs a CUDA device; the blocks would run on the "
            "CPU here (use --precision fp32)"
        )


def stored(cfg: DenoiseConfig, out: Path, digest: str, key: str) -> Any:
    """The value ``key`` of the provenance parameters of an OUT planned with the same
    parameters (``cfg.output_parameters()`` and model ``digest``); None when there is no
    such OUT, or when ``overwrite`` asks for a fresh run."""
    same = {**cfg.output_parameters(), "model_digest": digest}
    return stored_parameter(out, same, key, cfg.overwrite)


def planned_noise(
    array: Any,
    axes: str,
    name: str,
    notes: list[str],
    old: Any = None,
    fallback: tuple[float, ...] | None = None,
    phase_split: bool = False,
    screens: tuple[float, ...] = (MAX_LEAKAGE,),
    without: str | None = None,
) -> tuple[tuple[float, float, float] | None, ...]:
    """Poisson-Gaussian ``(a, b)`` per channel and the intensity of zero signal the GAT's
    inverse takes (``floor``), data units: ``old`` (stored by the run being resumed; a run
    stored before the floor was kept has 0), else one pooled estimate per channel
    (:func:`~fluoden_batch.pipeline.statistics.channel_noise`) with ``a`` floored for the
    GAT (:func:`~fluoden_batch.pipeline.statistics.gat_parameters`) and its floor
    (:func:`~fluoden_batch.pipeline.statistics.signal_floor`: 0 unless the data go below
    0); appends a note. Used by ``vst``, the classical protocols, models with a noise map
    and the detail restoration.

    ``fallback``: a noise sigma per channel (data units). Given, a channel whose noise
    cannot be estimated gets signal-independent noise ``(0, sigma**2)`` with a warning
    instead of the error. ``phase_split``: estimated on the stride-2 phases, the images
    ``--phase-split`` feeds the model (for correlated noise a larger variance).
    ``screens``: the estimator's smoothness screens
    (:func:`~fluoden_batch.noise.estimate.estimate`'s ``max_leakage``), tried in turn for
    each channel until one fits, with a note where a channel needed a later one (the
    detail restoration screens harder first); a channel that none fits is an error.
    ``without``: what a channel goes without where its noise cannot be estimated but
    another channel's can (an RGB export's empty channels); it is then None, with a
    warning saying so, and the error stays for a run where no channel can be estimated.
    """
    if old:
        noise = noise_from_rows(old)
    else:
        try:
            noise = tuple(
                None if e is None else (*gat_parameters(e), signal_floor(e))
                for e in _screened_noise(array, axes, name, notes, phase_split, screens, without)
            )
        except InputError as exc:
            if fallback is None:
                raise
            notes.append(
                f"warning: {exc}; the noise map assumes Gaussian noise of each "
                "channel's wavelet sigma"
            )
            noise = tuple((0.0, float(s) ** 2, 0.0) for s in fallback)
    text = ", ".join(
        "unknown"
        if n is None
        else f"({n[0]:.4g}, {n[1]:.4g}" + (f"; zero signal at {n[2]:.4g})" if n[2] else ")")
        for n in noise
    )
    where = " (on the stride-2 phases)" if phase_split and not old else ""
    notes.append(f"noise parameters (a, b) per channel{where}: {text}")
    return noise


def noise_from_rows(
    rows: Sequence[Sequence[float] | None],
) -> tuple[tuple[float, float, float] | None, ...]:
    """The inverse of :func:`noise_rows`: stored rows as ``(a, b, floor)`` (None: a channel
    whose noise could not be estimated)."""
    return tuple(
        None if r is None else (float(r[0]), float(r[1]), float(r[2]) if len(r) > 2 else 0.0)
        for r in rows
    )


def noise_rows(noise: Sequence[tuple[float, float, float] | None]) -> list[list[float] | None]:
    """:func:`planned_noise`'s values as stored in the provenance (``channel_noise``):
    ``[a, b]`` where the floor is 0, as every run stored before the floor was planned (so
    that those resume), ``[a, b, floor]`` where it is not."""
    return [None if n is None else list(n if n[2] else n[:2]) for n in noise]


_HOT_TEST = "the hot pixels' test"


def _detail_noise(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    name: str,
    notes: list[str],
    old: Any = None,
    without: str = "the detail restoration and the hot pixels' test",
) -> tuple[tuple[float, float, float] | None, ...]:
    """:func:`planned_noise` as the detail restoration's SURE (and the hot pixels' test
    where nothing else plans the noise) estimate it: the harder smoothness screen first,
    else (a channel too small or flat for it) the estimator's default; a channel that
    cannot be estimated beside one that can goes ``without`` (None)."""
    return planned_noise(
        array, axes, name, notes, old, phase_split=cfg.phase_split,
        screens=(NOISE_SCREEN, MAX_LEAKAGE), without=without,
    )  # fmt: skip


def tested_noise(
    cfg: DenoiseOptions, values: ChannelValues
) -> tuple[tuple[float, float, float] | None, ...] | None:
    """The noise ``(a, b, floor)`` per channel (per plane group) the blocks get: the
    run's planned one (``values.noise``); else, with ``--hot-pixels`` (``--detail off``
    with ``--protocol whole`` plans none), the one :func:`channel_values` estimated for
    the hot pixels' test (:mod:`fluoden_batch.restore.hot`) as the detail restoration
    would, which is not stored with the run's parameters (deterministic: a resume
    estimates it again, and outputs of earlier versions resume); else None (data whose
    noise cannot be estimated: said where it was planned)."""
    if cfg.hot is None or values.noise is not None:
        return values.noise
    return values.tested


def _screened_noise(
    array: Any,
    axes: str,
    name: str,
    notes: list[str],
    phase_split: bool,
    screens: tuple[float, ...],
    without: str | None = None,
) -> list[NoiseEstimate | None]:
    """:func:`~fluoden_batch.pipeline.statistics.channel_noise` channel by channel, each
    with the first of ``screens`` that fits it (a note where that is not the first); the
    last screen's error where none does, or with ``without`` (:func:`planned_noise`) None
    and a warning, unless no channel fits (the first channel's error)."""
    found: list[NoiseEstimate | None] = []
    failed: list[InputError] = []
    for ch in range(channel_count(array.shape, axes)):
        errors: list[InputError] = []
        for screen in screens:
            try:
                (est,) = channel_noise(
                    array, axes, name=name, phase_split=phase_split, max_leakage=screen,
                    channels=(ch,),
                )  # fmt: skip
            except InputError as exc:
                errors.append(exc)
                continue
            if errors:
                notes.append(
                    f"noise: the smoothness screen ({screens[0]}) could not fit ({errors[0]}); "
                    f"the next screen ({screen}) is used for this channel"
                )
            found.append(est)
            break
        else:
            if without is None:
                raise errors[-1]
            failed.append(errors[-1])
            found.append(None)
    if failed and len(failed) == len(found):
        raise failed[0]
    notes.extend(f"warning: {exc}: this channel goes without {without}" for exc in failed)
    return found


def cluster_centres(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    blocks: list[Block],
    notes: list[str],
    old: Any = None,
    name: str | None = None,
) -> tuple[tuple[float, ...], ...]:
    """K-means centres per channel, increasing, data units: ``old`` (stored by the run
    being resumed), else fitted on a sample of ``blocks``
    (:func:`~fluoden_batch.pipeline.statistics.channel_centres`) on the backend
    ``cfg.cluster_backend`` picks. Appends notes: the backend and why, the centres, and
    the channels with fewer than ``cfg.clusters`` distinct centres. ``name`` names the
    input in errors."""
    if old:
        centres = tuple(tuple(float(v) for v in c) for c in old)
        notes.append("cluster backend: not needed (centres reused from the run being resumed)")
    else:
        engine, reason = select_backend(cfg.cluster_backend)
        notes.append(f"cluster backend: {reason}")
        centres = channel_centres(array, axes, blocks, cfg.clusters, engine, name=name)
    text = "; ".join(", ".join(f"{v:.4g}" for v in c) for c in centres)
    notes.append(f"K-means centres per channel (K={cfg.clusters}): {text}")
    fewer = [str(ch) for ch, c in enumerate(centres) if len(c) < cfg.clusters]
    if fewer:
        notes.append(
            f"note: channel(s) {', '.join(fewer)} hold fewer than {cfg.clusters} distinct "
            "intensity levels in the sampled blocks; fewer clusters are used there"
        )
    return centres


@dataclass(frozen=True)
class ChannelValues:
    """Per-channel values of a run, fixed once (one entry per index of the ``c`` axis).

    Attributes
    ----------
    ranges : tuple of (lo, hi)
        Model input normalisation windows (GAT units for ``vst``).
    noise : tuple of (a, b, floor) or None
        Poisson-Gaussian parameters and the intensity of zero signal
        (:func:`planned_noise`; ``vst``, the classical protocols, a model with a noise
        map, the detail restoration); an entry is None for a channel whose noise could not
        be estimated beside others that could (the detail restoration only).
    centres : tuple of tuple of float or None
        K-means intensity centres (``masked``, ``save_labels``).
    levels : tuple of float or None
        Median intensity of each channel (the classical protocols).
    tested : tuple of (a, b, floor) or None
        With ``--hot-pixels`` where the run plans no noise of its own (``--detail off``
        with ``--protocol whole``): the noise the hot pixels' test uses, estimated as the
        detail restoration would and not stored (:func:`tested_noise`).
    """

    ranges: tuple[tuple[float, float], ...]
    noise: tuple[tuple[float, float, float] | None, ...] | None
    centres: tuple[tuple[float, ...], ...] | None
    levels: tuple[float, ...] | None = None
    tested: tuple[tuple[float, float, float] | None, ...] | None = None


def channel_values(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    name: str,
    blocks: list[Block],
    metadata: ModelMetadata | None,
    notes: list[str],
    stored: Callable[[str], Any] = lambda key: None,
) -> ChannelValues:
    """Everything fixed per channel for a run of ``cfg`` over ``array`` (a Zarr, NumPy or
    Dask array with axes ``axes``), from a sample of ``blocks``; ``stored(key)`` gives the
    values of a run being resumed (``channel_noise``, ``channel_centres``,
    ``channel_levels``). ``metadata`` None: a classical protocol (no model).

    The noise comes first where the run has it: the protocol's (``vst``, classical), else
    the detail restoration's SURE's (``cfg.restores_detail``; a channel that cannot be
    estimated goes without, with a warning), else, with ``--hot-pixels``, the hot pixels'
    test's (``tested``, not stored); then the normalisation windows, on the sample with
    its hot pixels replaced as the blocks will replace them (a camera whose defects fill
    the top 0.1 % of the pixels would otherwise widen the window). A model with a noise
    map plans its noise after the windows (its fallback is the window's sigma) and takes
    them from the sample as it is."""
    classical = metadata is None
    noise, tested = None, None
    if cfg.protocol == "vst" or classical:
        try:
            noise = planned_noise(
                array, axes, name, notes, stored("channel_noise"), phase_split=cfg.phase_split
            )
        except InputError as exc:
            raise InputError(
                f"{exc}, which --protocol {cfg.protocol} needs; use --protocol whole"
            ) from None
    elif metadata is not None and not metadata.architecture.noise_map:
        if cfg.restores_detail:  # SURE's per channel; none where it cannot be estimated
            try:
                noise = _detail_noise(cfg, array, axes, name, notes, stored("channel_noise"))
            except InputError as exc:
                notes.append(f"warning: --detail sure keeps the model's output: {exc}")
        elif cfg.hot is not None:
            try:
                tested = _detail_noise(cfg, array, axes, name, notes, without=_HOT_TEST)
            except InputError as exc:
                notes.append(f"warning: hot pixels are not looked for: {exc}")
    centres = None
    if cfg.labelled:
        old = stored("channel_centres")
        centres = cluster_centres(cfg, array, axes, blocks, notes, old, name)
    levels = None
    if classical:
        old = stored("channel_levels")
        levels = (
            tuple(float(v) for v in old) if old else channel_levels(array, axes, blocks, name=name)
        )
    norm = Normalisation() if metadata is None else metadata.normalisation
    gat = noise if cfg.protocol == "vst" else None  # vst: the window of the GAT's output
    hot = None
    if cfg.hot is not None and (noise or tested):
        hot = (cfg.hot[1], noise or tested)
    ranges = channel_ranges(
        array, axes, blocks, norm, noise=gat, name=name, phase_split=cfg.phase_split, hot=hot
    )
    if metadata is not None and noise is None and metadata.architecture.noise_map:
        sigmas = None
        if norm.method == "noise":  # the window is scale sigmas wide
            sigmas = tuple((hi - lo) / norm.scale for lo, hi in ranges)
        noise = planned_noise(
            array, axes, name, notes, stored("channel_noise"), sigmas, cfg.phase_split
        )
    return ChannelValues(ranges, noise, centres, levels, tested)


def grouped_values(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    name: str,
    blocks: BlockGrid,
    method: Method,
    adapting: bool,
    notes: list[str],
    stored: Callable[[str], Any] = lambda key: None,
) -> tuple[ChannelValues, tuple[Detail, ...] | None, PlaneGroups | None]:
    """The values of a run: :func:`channel_values`, then :func:`planned_detail` (with
    ``method``; without it when ``adapting``: ``--adapt`` tunes after its fit).

    One row per channel; or, where planes of a channel differ in their noise
    (:func:`~fluoden_batch.pipeline.groups.plane_groups`, with ``cfg.plane_groups`` auto,
    not when resuming a run planned per channel), one row per group of similar planes,
    each planned as a run over its planes alone would be. A group's notes are prefixed
    with it and name no channel; a note every group makes alike is said once, without.
    When ``adapting`` (one fit serves every plane), groups are only warned about.

    Returns
    -------
    values : ChannelValues
        One entry per row.
    detail : tuple of Detail or None
        The detail restoration per row (:func:`planned_detail`).
    groups : PlaneGroups or None
        The row of every plane; None: one row per channel.
    """
    tuned = None if adapting else method
    groups = None
    old_groups = stored_rows(stored("plane_groups"))
    # a run being resumed that was planned per channel (before groups existed) stays so
    resumed_per_channel = stored("channel_ranges") is not None and not old_groups
    if cfg.plane_groups == "auto" and not resumed_per_channel:
        groups = plane_groups(array, axes, [] if adapting else notes, old_groups)
    if adapting and groups is not None:
        notes.append(
            f"warning: the planes differ in their noise ({groups.describe(axes)}); --adapt "
            "fits one model to all of them and plans each channel as one: run each "
            "microscope's images separately"
        )
        groups = None
    if groups is None:
        values = channel_values(cfg, array, axes, name, blocks, method.metadata, notes, stored)
        detail, values = planned_detail(cfg, array, axes, name, tuned, values, notes, stored)
        return values, detail, None
    rows = []
    row_notes: list[list[str]] = []
    for row in range(groups.count):
        # one plane deep blocks, as a run over an array of the group's planes has
        part, part_blocks = group_part(array, groups, row, blocks.bshape)
        part_notes: list[str] = []

        def part_stored(key: str, row: int = row) -> Any:
            old = stored(key)
            return None if not old or old[row] is None else [old[row]]

        try:
            values = channel_values(
                cfg, part, "zyx", name, part_blocks, method.metadata, part_notes, part_stored
            )
            detail, values = planned_detail(
                cfg, part, "zyx", name, tuned, values, part_notes, part_stored
            )
        except InputError as exc:
            try:  # would one plan per channel do? (only on this error path: plans again)
                together = channel_values(cfg, array, axes, name, blocks, method.metadata, [])
                planned_detail(cfg, array, axes, name, tuned, together, [])
            except InputError:
                raise  # the input's own problem: said as a run without groups says it
            raise InputError(
                f"{exc} (in plane group {row}, {groups.planes(axes, row)}; "
                "--plane-groups off plans all planes of a channel together)"
            ) from None
        # the group's notes name no channel: its planes are channel 0 of the part
        rows.append((values, detail))
        row_notes.append(
            [n.replace(" per channel", "").replace(", channel 0 (", " (") for n in part_notes]
        )
    shared = set.intersection(*(set(r) for r in row_notes))  # said once, without a group
    notes.extend(n for n in row_notes[0] if n in shared)
    for row, texts in enumerate(row_notes):
        notes.extend(f"group {row}: {n}" for n in texts if n not in shared)
    return _joined([v for v, _ in rows]), _joined_detail([d for _, d in rows]), groups


def _joined(rows: list[ChannelValues]) -> ChannelValues:
    """One :class:`ChannelValues` of one row per group (a group without a noise estimate
    holds None in ``noise``)."""

    def join(field: str) -> Any:
        parts = [getattr(v, field) for v in rows]
        if all(p is None for p in parts):
            return None
        return tuple(None if p is None else p[0] for p in parts)

    return ChannelValues(
        tuple(v.ranges[0] for v in rows),
        join("noise"),
        join("centres"),
        join("levels"),
        join("tested"),
    )


def _joined_detail(rows: list[tuple[Detail, ...] | None]) -> tuple[Detail, ...] | None:
    return None if any(d is None for d in rows) else tuple(d[0] for d in rows)


def planned_detail(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    name: str,
    method: Method | None,
    values: ChannelValues,
    notes: list[str],
    stored: Callable[[str], Any] = lambda key: None,
) -> tuple[tuple[Detail, ...] | None, ChannelValues]:
    """``--detail sure`` (or ``auto`` where it applies: ``cfg.restores_detail``): one
    :class:`~fluoden_batch.restore.detail.Detail` per channel, chosen by SURE on a sample
    of the input with ``method``'s model (:func:`tuned_detail`), or reused from the run
    being resumed (``channel_detail``); None for ``--detail off``, and None with
    ``method`` None (``--adapt``: tuned after the fit, on the fitted model). Needs the
    channel's Poisson-Gaussian ``(a, b)``, planned with the values
    (:func:`channel_values`); a channel whose noise could not be estimated keeps the
    model's output.
    """
    if not cfg.restores_detail:
        return None, values
    if method is None:
        return None, values
    old = stored("channel_detail")
    if old:
        notes.append("detail restoration per channel: reused from the run being resumed")
        return Detail.from_stored(old), values
    return tuned_detail(cfg, array, axes, name, method.path, method.digest, values, notes), values


def tuned_detail(
    cfg: DenoiseOptions,
    array: Any,
    axes: str,
    name: str,
    path: str,
    digest: str,
    values: ChannelValues,
    notes: list[str],
) -> tuple[Detail, ...]:
    """The :class:`~fluoden_batch.restore.detail.Detail` of lowest SURE per channel for
    the model at ``path`` (``digest``) on planes sampled from ``array``
    (:func:`~fluoden_batch.restore.detail.choose_detail`); the model's output unchanged
    (``Detail()``) where ``values.noise`` (or its channel's entry) is None. Appends a
    note per channel.

    The model runs here, on the machine that plans (twice per sampled plane: the plane and
    the plane plus a small probe), as :func:`~fluoden_batch.restore.protocols.whole` runs
    it on every block (same window, tiles, ``--tta``, ``--phase-split``; the run's
    precision where this machine has CUDA, else fp32: a CPU login node can plan a bf16 GPU
    run).
    """
    if values.noise is None:
        return tuple(Detail() for _ in values.ranges)
    device = _planning_device(cfg.device)
    precision = cfg.precision if device.startswith("cuda") else "fp32"
    loaded = worker_model(path, digest, device)  # the block tasks here reuse it
    network = inference_network(loaded.module, cfg.tta, cfg.phase_split)
    details = []
    for ch, ((lo, hi), noise) in enumerate(zip(values.ranges, values.noise, strict=True)):
        if noise is None:  # said where it was planned
            details.append(Detail())
            continue
        a, b, floor = noise
        params = PlaneParams(lo, hi, a, b, floor=floor)

        def model(plane: Any, params: PlaneParams = params) -> Any:
            return whole(network, plane, params, cfg.tile, precision)

        planes = channel_planes(array, axes, ch, name=name)
        if cfg.hot is not None:  # as every block will see them
            planes = [inpaint(p, find_hot(p, a, b, cfg.hot[1])) for p in planes]
        detail, why = choose_detail([sure_plane(p, model, a, b, floor=floor) for p in planes])
        notes.append(f"detail restoration, channel {ch} (SURE on {len(planes)} planes): {why}")
        details.append(detail)
    return tuple(details)


def _planning_device(device: str) -> str:
    """``device`` where this machine has it, else the CPU (``--device cuda`` with a
    scheduler or profile is checked on the workers, not here)."""
    has_cuda = torch.cuda.is_available()
    if device == "auto" or (device.startswith("cuda") and not has_cuda):
        return "cuda" if has_cuda else "cpu"
    return device

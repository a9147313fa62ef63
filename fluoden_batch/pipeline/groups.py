"""Groups of similar planes: a stack of images from several microscopes, planned per group.

Everything a run fixes at planning (the model's normalisation window, the noise ``(a, b)``,
the detail restoration, K-means centres) is fixed per channel, on a sample of all of the
channel's planes. A ``z`` or ``t`` axis of one microscope shares those values, but a stack
of unrelated captures (a folder of images from different instruments, stacked) does not:
one shared noise window costs a widefield capture 2.6 dB among confocal ones
(README, "Images from several microscopes in one array").

So, for a channel of at most :data:`MAX_PLANES` planes, each plane's noise is read without
a model: its wavelet sigma (data units, :func:`~fluoden_batch.models.normalise.noise_sigma`)
and the ratio of its stride-2 phases' sigma to that
(:func:`~fluoden_batch.models.normalise.phase_sigma`: about 1 for white noise, 2-2.5 for a
widefield camera's correlated noise). Planes are grouped by complete linkage so that
within a group no two planes differ by more than a factor :data:`SIGMA_FACTOR` in sigma or
:data:`RATIO_SPREAD` in the ratio. One group per channel (every microscope's own stack
measured here) changes nothing; several, and each group is planned on its own, exactly as
a run over its planes alone would be (:class:`PlaneStack`), and each plane's blocks take
their group's values (``JobSpec.plane_groups``). A longer channel is planned as one, with
a warning where its planes read as more than one camera.

The thresholds: within each of fmd_dev's 30 stacks (six microscopes x five noise levels,
four captures each) the sigmas lie within a factor 1.19 and the ratios within 0.08; across
its microscopes the ratio separates widefield (2.2-2.5) from the rest (1.0-1.5), and sigma
most of the rest (not Confocal_MICE from TwoPhoton_BPAE_R). Planning each plane on its own
changed a microscope's own stack by 0.00 to -0.03 dB (``runs/per_plane_probe.log``), so a
group too many costs little but planning time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from fluoden_batch.io.ngff import channel_count, channel_planes_at
from fluoden_batch.noise.planes import spread
from fluoden_batch.restore.tiles import BlockGrid, plan_blocks

__all__ = [
    "MAX_GROUPS",
    "MAX_PLANES",
    "PlaneGroups",
    "PlaneStack",
    "cluster_signatures",
    "group_part",
    "plane_groups",
    "plane_row",
    "plane_signature",
    "stored_rows",
]

MAX_PLANES = 64  # planes per channel read for their noise; more: one group (a z/t axis)
MAX_GROUPS = 8  # groups per channel at most (each costs the planning of a channel)
SIGMA_FACTOR = 1.5  # largest sigma ratio inside a group
RATIO_SPREAD = 0.3  # largest spread of the phase/plane sigma ratio inside a group
SIGNATURE_SIDE = 512  # side of the central crop a plane's noise is read on


@dataclass(frozen=True)
class PlaneGroups:
    """Which planning row each plane takes.

    Attributes
    ----------
    shape : tuple of int
        The input's shape without its Y/X axes (``c`` included where present).
    rows : tuple of int
        Per plane, flattened over ``shape`` in C order: its row of the run's per-row
        values (``JobSpec.channel_ranges`` ...). Rows are numbered channel by channel.
    """

    shape: tuple[int, ...]
    rows: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of rows (groups over all channels)."""
        return max(self.rows) + 1

    def row(self, index: Sequence[int]) -> int:
        """The row of the plane at ``index`` (its indices on the non-Y/X axes)."""
        return self.rows[int(np.ravel_multi_index(tuple(index), self.shape))]

    def members(self, row: int) -> list[tuple[int, ...]]:
        """The planes of ``row`` (indices on the non-Y/X axes), in C order."""
        return [idx for idx in np.ndindex(*self.shape) if self.row(idx) == row]

    def describe(self, axes: str) -> str:
        """``group r: planes`` for every row, the planes named by ``axes``'s leading axes
        (``group 1: z=4-7,12``; with a ``c`` axis ``group 2: c=1 z=0-3``)."""
        return "; ".join(f"group {r}: {self.planes(axes, r)}" for r in range(self.count))

    def planes(self, axes: str, row: int) -> str:
        """The planes of ``row`` in few words (``z=4-7,12``), named by ``axes``."""
        return _planes(axes[:-2], self.members(row))


def plane_row(groups: PlaneGroups | None, axes: str, index: Sequence[int]) -> int:
    """The row of a run's per-row values (fixed at planning) for the plane at ``index``
    (its indices on the non-Y/X axes of an input with axes ``axes``): its group's, or,
    with ``groups`` None, its channel's (one row per channel index)."""
    if groups is not None:
        return groups.row(index)
    c = axes.find("c")
    return int(index[c]) if c >= 0 else 0


def stored_rows(value: Any) -> list[int] | None:
    """The groups' rows as stored in an OUT's parameters (``plane_groups``), or None where
    it holds none: absent, or the option's ``"off"`` (a run planned per channel)."""
    return value if isinstance(value, list) else None


def _planes(lead: str, members: list[tuple[int, ...]]) -> str:
    """``members`` (indices on the axes ``lead``) in few words: runs of consecutive
    indices where one axis besides ``c`` varies, else the first six and how many more."""
    c = lead.find("c")
    stack = [i for i in range(len(lead)) if i != c]
    if len(stack) == 1:
        (d,) = stack
        channel = f"c={members[0][c]} " if c >= 0 else ""
        return f"{channel}{lead[d]}={_runs([m[d] for m in members])}"
    names = [",".join(f"{a}={i}" for a, i in zip(lead, m, strict=True)) for m in members]
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    return " ".join(names[:6]) + more


def _runs(values: list[int]) -> str:
    """Increasing integers as runs: ``0-3,8,10-11`` (the first eight runs, then how many
    more)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    more = f" and {len(text) - 8} more runs" if len(text) > 8 else ""
    return ",".join(text[:8]) + more


class PlaneStack:
    """Chosen planes of an array as one ``(n, Y, X)`` array, read when sliced.

    Planning reads its sample by slicing (``array[region]``); this gives a group's planes
    that interface without copying them, so that a group is planned exactly as an array
    of its planes alone would be. (Not a Dask array: planning runs where a distributed
    client may be current, and its reads must stay in this process.)
    """

    def __init__(self, array: Any, planes: list[tuple[int, ...]]) -> None:
        self.array, self.planes = array, planes
        self.shape = (len(planes), *array.shape[-2:])
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        picked = range(self.shape[0])[first]
        if isinstance(picked, int):
            return np.asarray(self.array[(*self.planes[picked], *rest)])
        if not picked:  # an empty selection: the shape, nothing read but one plane's slice
            return np.asarray(self.array[(*self.planes[0], *rest)])[None][:0]
        return np.stack([np.asarray(self.array[(*self.planes[i], *rest)]) for i in picked])

    def __repr__(self) -> str:
        return f"PlaneStack({self.array!r}, {len(self.planes)} planes)"


def group_part(
    array: Any, groups: PlaneGroups, row: int, bshape: tuple[int, ...]
) -> tuple[PlaneStack, BlockGrid]:
    """Group ``row``'s planes of ``array`` as an array of their own (axes ``zyx``) and its
    blocks, one plane deep with the Y/X size of ``bshape``: what a run over those planes
    alone would plan on."""
    part = PlaneStack(array, groups.members(row))
    return part, plan_blocks(part.shape, (1, *bshape[-2:]))


def plane_signature(array: Any, index: tuple[int, ...]) -> tuple[float, float]:
    """``(sigma, ratio)`` of the central :data:`SIGNATURE_SIDE` crop of the plane at
    ``index`` (indices on the non-Y/X axes): its wavelet noise sigma (data units) and its
    phases' sigma over that; NaN where it cannot tell (a flat or tiny plane)."""
    # imported here: a ``segment`` worker unpickles PlaneGroups and must not import torch
    from fluoden_batch.models.normalise import noise_sigma, phase_sigma

    h, w = array.shape[-2:]
    y, x = max(0, (h - SIGNATURE_SIDE) // 2), max(0, (w - SIGNATURE_SIDE) // 2)
    crop = array[(*index, slice(y, y + SIGNATURE_SIDE), slice(x, x + SIGNATURE_SIDE))]
    crop = np.asarray(crop, dtype=np.float64)
    sigma = noise_sigma(crop)
    if not sigma > 1e-9 * max(1.0, float(np.abs(crop).max())) or min(crop.shape) < 8:
        return float("nan"), float("nan")
    return sigma, phase_sigma(crop) / sigma


def cluster_signatures(signatures: np.ndarray) -> np.ndarray:
    """Group labels 0, 1, ... (numbered by first appearance) for ``(n, 2)`` signatures
    ``(sigma, ratio)``: complete linkage under :data:`SIGMA_FACTOR` and
    :data:`RATIO_SPREAD`, at most :data:`MAX_GROUPS` groups; a plane without a signature
    (NaN) joins the largest group."""
    good = np.isfinite(signatures).all(axis=1)
    labels = np.zeros(len(signatures), dtype=int)
    if good.sum() >= 2:
        scaled = np.column_stack(
            [np.log(signatures[good, 0]) / np.log(SIGMA_FACTOR), signatures[good, 1] / RATIO_SPREAD]
        )
        tree = linkage(pdist(scaled, "chebyshev"), method="complete")
        found = fcluster(tree, 1.0, criterion="distance")
        if found.max() > MAX_GROUPS:
            found = fcluster(tree, MAX_GROUPS, criterion="maxclust")
        labels[good] = found
        labels[~good] = np.bincount(found).argmax()
    _, first = np.unique(labels, return_index=True)
    order = {label: n for n, label in enumerate(labels[np.sort(first)])}
    return np.array([order[v] for v in labels])


def plane_groups(array: Any, axes: str, notes: list[str], old: Any = None) -> PlaneGroups | None:
    """The groups of similar planes of ``array`` (axes ``axes``), None where every channel
    is one group (the run plans per channel, as it always has). ``old``: the rows stored
    by the run being resumed (reused, not read again). Appends a note naming the groups.

    Channels of more than :data:`MAX_PLANES` planes are one group (a ``z``/``t`` axis of
    one microscope; their planes are not all read), with a warning where
    :data:`MAX_PLANES` planes spread over them read as more than one camera
    (:func:`_warn_cameras`).
    """
    shape = tuple(array.shape[:-2])
    if old:
        groups = PlaneGroups(shape, tuple(int(r) for r in old))
    else:
        c = axes.find("c")
        labels = np.zeros(shape, dtype=int)
        offset = 0
        for ch in range(channel_count(shape, axes)):
            planes = channel_planes_at(array.shape, axes, ch)
            found = np.zeros(len(planes), dtype=int)
            if 2 <= len(planes) <= MAX_PLANES:
                signatures = np.array([plane_signature(array, p) for p in planes])
                found = cluster_signatures(signatures)
            elif len(planes) > MAX_PLANES:
                _warn_cameras(array, axes, planes, ch if c >= 0 else None, notes)
            for p, g in zip(planes, found, strict=True):
                labels[p] = offset + g
            offset += int(found.max()) + 1
        if offset == channel_count(shape, axes):
            return None
        groups = PlaneGroups(shape, tuple(int(v) for v in labels.ravel()))
    notes.append(
        f"planes: {groups.count} groups of similar noise (each planned as a separate run "
        f"over its planes would be): {groups.describe(axes)}"
    )
    return groups


def _warn_cameras(
    array: Any, axes: str, planes: list[tuple[int, ...]], channel: int | None, notes: list[str]
) -> None:
    """Warn where :data:`MAX_PLANES` of ``planes``, spread evenly, differ in their phase
    ratio by more than :data:`RATIO_SPREAD`: noise correlated between neighbours on some
    planes and not on others, which one camera does not give (its ratio varied by 0.08 at
    most over fmd_dev's stacks, 0.02 over W2S's fields of view), whereas sigma alone
    varies within one microscope's stack (2.6x over W2S's fields of view)."""
    sampled = spread(planes, MAX_PLANES)
    ratios = np.array([plane_signature(array, p)[1] for p in sampled])
    if not np.isfinite(ratios).any() or np.nanmax(ratios) - np.nanmin(ratios) <= RATIO_SPREAD:
        return
    lo, hi = int(np.nanargmin(ratios)), int(np.nanargmax(ratios))
    where = f"channel {channel}: " if channel is not None else ""
    named = [_planes(axes[:-2], [sampled[i]]) for i in (lo, hi)]
    notes.append(
        f"warning: {where}the noise of {len(sampled)} planes sampled from {len(planes)} reads "
        f"as more than one camera (neighbour correlation ratio {ratios[lo]:.2f} at "
        f"{named[0]}, {ratios[hi]:.2f} at {named[1]}); past {MAX_PLANES} planes a channel "
        "is planned as one: put images from different microscopes along a c axis, or run "
        "them separately"
    )

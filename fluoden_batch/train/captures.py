"""Noise2Noise training data: repeated noisy captures of the same fields of view.

Lehtinen et al., "Noise2Noise: Learning Image Restoration without Clean Data", ICML 2018:
with zero-mean noise that is independent between captures, a network trained to map one
noisy capture to ANOTHER capture of the same scene minimises the same expected MSE as one
trained against the clean image (up to a constant). Here the target of each capture is the
mean of all the other captures of its field of view: still independent of the input's
noise, with less noise than a single capture, so the gradients are less noisy. Inputs may
also be means of a few captures (``capture_levels``), against the mean of the rest.

The result is a list of :class:`~fluoden_batch.train.data.TrainImage` whose ``clean`` is
that mean, so :class:`~fluoden_batch.train.data.PatchSampler` samples it unchanged.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from fluoden_batch.errors import InputError
from fluoden_batch.train.data import TrainImage

__all__ = ["capture_targets", "group_captures"]


def group_captures(keys: list[str], pattern: str) -> dict[str, list[str]]:
    """Group image keys by field of view: the first group of ``pattern`` (a full match).

    Parameters
    ----------
    keys : list of str
        Image keys (the glob's wildcard parts), e.g. ``["cell_1", "cell_2", "dish_1"]``.
    pattern : str
        Regular expression whose first group names the field of view, e.g.
        ``r"(.*?)[_-]?\\d+"`` (the key without a trailing capture number).

    Returns
    -------
    dict
        Field of view -> its keys (sorted), in sorted order of the fields of view.

    Raises
    ------
    InputError
        A key does not match ``pattern``, or a field of view has a single capture.
    """
    regex = re.compile(pattern)
    groups: dict[str, list[str]] = defaultdict(list)
    unmatched = []
    for key in keys:
        match = regex.fullmatch(key)
        if match is None:
            unmatched.append(key)
        else:
            groups[match.group(1) or ""].append(key)
    if unmatched:
        raise InputError(
            f"capture_pattern {pattern!r} does not match the image keys {unmatched[:5]}"
        )
    single = sorted(fov for fov, members in groups.items() if len(members) < 2)
    if single:
        raise InputError(
            f"noise2noise needs at least 2 captures of each field of view; capture_pattern "
            f"{pattern!r} finds one only for {[groups[f][0] for f in single[:5]]} (set "
            "capture_pattern so that its first group names the field of view)"
        )
    return {fov: sorted(groups[fov]) for fov in sorted(groups)}


def capture_targets(
    captures: list[tuple[str, np.ndarray, str]], pattern: str, levels: Sequence[int] = (1,)
) -> list[TrainImage]:
    """Training images of Noise2Noise: means of captures against the mean of the others.

    Parameters
    ----------
    captures : list of (key, image, path)
        Noisy captures, images float32 of shape (H, W) in data units, ``path`` the file.
    pattern : str
        ``capture_pattern`` (see :func:`group_captures`).
    levels : sequence of int
        How many captures each input averages (``capture_levels``). For level ``k`` and a
        field of view of ``n`` sorted captures there are ``n`` inputs, the means of the
        ``k`` cyclically consecutive captures starting at each one, each against the mean
        of the other ``n - k``: the input and target noise stay independent, and the
        model also meets the cleaner inputs that averaging gives. ``(1,)``: each capture
        against the mean of the others.

    Returns
    -------
    list of TrainImage
        In key order: ``noisy`` the input (a capture, key as given, or a mean, key
        ``"<key>+<key>..."``), ``clean`` the target (float32), ``clip`` None (no synthetic
        noise), ``noisy_source`` the files averaged.

    Raises
    ------
    InputError
        Bad grouping (see :func:`group_captures`), captures of one field of view that differ
        in shape, two bit-identical captures (a copied file: its noise is not independent,
        and the network would learn to copy its input), or a level that leaves no capture
        for the target.
    """
    by_key = {key: (image, path) for key, image, path in captures}
    images = []
    for fov, keys in group_captures(sorted(by_key), pattern).items():
        n = len(keys)
        stack = [by_key[k][0] for k in keys]
        shapes = {im.shape for im in stack}
        if len(shapes) > 1:
            raise InputError(
                f"captures of field of view {fov!r} differ in shape: "
                + ", ".join(f"{by_key[k][1]} {by_key[k][0].shape}" for k in keys)
            )
        for i, j in itertools.combinations(range(n), 2):
            if np.array_equal(stack[i], stack[j]):
                raise InputError(
                    f"{by_key[keys[i]][1]} and {by_key[keys[j]][1]} are identical: "
                    "noise2noise needs captures with independent noise (drop one)"
                )
        too_many = [k for k in levels if not 1 <= k < n]
        if too_many:
            raise InputError(
                f"capture_levels {list(levels)}: field of view {fov!r} has {n} captures, so "
                f"each level must be 1..{n - 1} (a target needs a capture left over)"
            )
        total = np.sum(stack, axis=0, dtype=np.float64)
        for k in levels:
            for start in range(n):
                chosen = [(start + j) % n for j in range(k)]
                part = np.sum([stack[i] for i in chosen], axis=0, dtype=np.float64)
                images.append(
                    TrainImage(
                        "+".join(keys[i] for i in chosen),
                        ((total - part) / (n - k)).astype(np.float32),
                        (part / k).astype(np.float32),
                        None,
                        f"mean of the other captures of {fov!r}",
                        " + ".join(str(by_key[keys[i]][1]) for i in chosen),
                    )
                )
    return sorted(images, key=lambda im: im.key)

"""Cluster masks and the recombination used by the masked denoising protocol.

Definition. Let ``L`` be a label image (any shape, integer, -1 = noise) and let
``P = {l: P_l}`` hold one array per label present in ``L``, each of ``L``'s shape (the
"part" of label ``l``: e.g. the block denoised with everything outside ``L == l``
masked). The recombination is the array ``R`` of that shape with

    R[p] = P_{L[p]}[p]        for every pixel p,

i.e. each pixel takes its value from the part of its own label and from no other. The
masks ``M_l = (L == l)`` of :func:`masks_from_labels` partition the pixels (noise is a
part like any other), so every pixel of ``R`` is written exactly once. Parts of labels
absent from ``L`` are ignored; a missing part is an error. With a single label the
result is that part itself, so a one-cluster block gives exactly the unmasked result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fluoden_batch.errors import InputError

__all__ = ["masks_from_labels", "recombine"]


def masks_from_labels(labels: np.ndarray) -> dict[int, np.ndarray]:
    """One boolean mask per label present, in increasing label order (-1 first if any).

    Parameters
    ----------
    labels : ndarray, integer, any shape
        Label image, -1 = noise.

    Returns
    -------
    dict of int to ndarray
        ``{label: labels == label}``, each bool with ``labels``' shape; the masks are
        disjoint and cover every pixel.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be an integer array, got dtype {labels.dtype}")
    return {int(v): labels == v for v in np.unique(labels)}


def recombine(parts: Mapping[int, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Take each pixel from the part of its label (definition in the module doc).

    Parameters
    ----------
    parts : mapping of int to ndarray
        One array per label present in ``labels``, each with ``labels``' shape.
    labels : ndarray, integer
        Label image, -1 = noise.

    Returns
    -------
    ndarray
        ``labels``' shape, dtype the common type of the parts used.

    Raises
    ------
    InputError
        A label has no part, or a part's shape differs from ``labels``'.
    """
    masks = masks_from_labels(labels)
    missing = sorted(set(masks) - set(parts))
    if missing:
        raise InputError(f"recombine: no part for label(s) {missing}")
    used = {lab: np.asarray(parts[lab]) for lab in masks}
    for lab, part in used.items():
        if part.shape != np.shape(labels):
            raise InputError(
                f"recombine: part of label {lab} has shape {part.shape}, labels {np.shape(labels)}"
            )
    out = np.empty(np.shape(labels), dtype=np.result_type(*used.values()))
    for lab, mask in masks.items():
        out[mask] = used[lab][mask]
    return out

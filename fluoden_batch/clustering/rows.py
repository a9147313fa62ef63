"""Cluster columns of a per-block metrics row (``fluoden segment`` and ``fluoden denoise``).

One function, :func:`block_quality`, so both tables count and score a block's labels the
same way: sizes over the whole block, scores per Y/X plane
(:func:`~fluoden_batch.clustering.quality.cluster_quality`, intensity space) and then
combined over its planes.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from fluoden_batch.clustering.quality import cluster_quality

__all__ = ["block_quality"]


def block_quality(data: np.ndarray, labels: np.ndarray, scores: bool = True) -> dict[str, Any]:
    """Cluster sizes and quality scores of one labelled block, as flat table columns.

    Parameters
    ----------
    data : ndarray, shape (..., H, W)
        The block's input intensities, data units.
    labels : ndarray, same shape, integer
        Its labels, -1 = noise.
    scores : bool
        Also score every Y/X plane (a bounded silhouette sample per plane).

    Returns
    -------
    dict
        ``n_clusters`` (labels >= 0 present), ``n_noise`` (pixels), ``cluster_sizes``
        (JSON ``{"label": pixels}``); with ``scores``: ``silhouette`` and
        ``davies_bouldin`` (means over the planes where they are defined, NaN if none),
        ``wss`` (summed over planes, squared data units) and ``quality_note`` (why scores
        are undefined, empty if they all are defined).
    """
    values, counts = np.unique(labels, return_counts=True)
    row: dict[str, Any] = {
        "n_clusters": int(np.count_nonzero(values >= 0)),
        "n_noise": int(counts[values < 0].sum()),
        "cluster_sizes": json.dumps({str(v): int(n) for v, n in zip(values, counts, strict=True)}),
    }
    if not scores:
        return row
    planes = [cluster_quality(data[i], labels[i]) for i in np.ndindex(*data.shape[:-2])]
    for col in ("silhouette", "davies_bouldin"):
        good = [getattr(q, col) for q in planes if not math.isnan(getattr(q, col))]
        row[col] = float(np.mean(good)) if good else math.nan
    row["wss"] = float(sum(q.wss for q in planes))
    row["quality_note"] = "; ".join(sorted({q.reason for q in planes} - {""}))
    return row

"""One ``segment`` task: label a block, write exactly its chunks (the copy of the
intensities and the labels), then its marker.

Kept apart from :mod:`fluoden_batch.pipeline.segment` (the planning side) so that a Dask
worker unpickling the task imports only what labelling needs: no torch, no model code.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fluoden_batch.clustering import cluster_image
from fluoden_batch.clustering.masked import label_by_centres
from fluoden_batch.clustering.rows import block_quality
from fluoden_batch.io import store
from fluoden_batch.io.labels import LabelSet
from fluoden_batch.io.source import SourceSpec
from fluoden_batch.pipeline.groups import PlaneGroups, plane_row
from fluoden_batch.restore.tiles import Block

__all__ = ["SegmentJob", "label_planes", "segment_block"]


@dataclass(frozen=True)
class SegmentJob:
    """What every task gets (picklable, small); an array's blocks have no ``source``,
    ``output`` or ``labels`` (:func:`~fluoden_batch.pipeline.segment.segment_array`)."""

    source: SourceSpec | None
    output: store.OutputSpec | None  # OUT's level 0: the copy of the input's intensities
    labels: LabelSet | None
    axes: str
    cluster: dict[str, Any]  # cluster_image keywords (backend: the choice resolved at planning)
    centres: tuple[tuple[float, ...], ...] | None  # K-means: per channel (row), increasing
    quality: bool
    plane_groups: PlaneGroups | None = None  # K-means: each plane's row of centres

    def row(self, index: tuple[int, ...]) -> int:
        """The row of ``centres`` for the plane at ``index`` (its indices on the non-Y/X
        axes): its group's, or its channel's."""
        return plane_row(self.plane_groups, self.axes, index)


def label_planes(block: Block, data: np.ndarray, job: SegmentJob) -> tuple[np.ndarray, str]:
    """The labels (int32, ``data``'s shape) of block ``block``'s pixels ``data`` and the
    backend that clustered them (``numpy`` for K-means' nearest centre); call it under
    ``threadpool_limits(1)`` on a worker."""
    labels, backend = np.empty(data.shape, dtype=np.int32), "numpy"
    for lead in np.ndindex(*data.shape[:-2]):
        if job.centres is not None:  # K-means: nearest of the centres fitted at planning
            row = job.row(tuple(s + i for s, i in zip(block.start[:-2], lead, strict=True)))
            labels[lead] = label_by_centres(data[lead], job.centres[row])
        else:
            res = cluster_image(data[lead], **job.cluster)
            labels[lead], backend = res.labels, res.backend
    return labels, backend


def segment_block(block: Block, job: SegmentJob) -> dict[str, Any]:
    """Label one block, write exactly its chunks (intensities and labels), then its marker
    (the metrics row)."""
    from threadpoolctl import threadpool_limits

    assert job.source is not None and job.output is not None and job.labels is not None
    t0 = time.perf_counter()
    data = np.asarray(job.source.open()[block.slices])
    with threadpool_limits(1):
        labels, backend = label_planes(block, data, job)
        quality = block_quality(data, labels, job.quality)
    job.output.write(block.slices, data)
    job.labels.write(block.slices, labels)
    row: dict[str, Any] = {"block": block.id, "method": job.cluster["method"], "backend": backend}
    row |= {f"start_{a}": int(s) for a, s in zip(job.axes, block.start, strict=True)}
    row |= dict(height=block.shape[-2], width=block.shape[-1], planes=math.prod(block.shape[:-2]))
    row |= quality  # sizes, and scores averaged over the block's planes (WSS summed)
    row["seconds"] = time.perf_counter() - t0
    job.output.write_marker(block.id, row)
    return row

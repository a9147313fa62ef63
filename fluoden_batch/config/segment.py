"""Parameters of ``fluoden segment`` (and :func:`fluoden_batch.segment`), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fluoden_batch.config.compute import COMPUTE_FIELDS, ComputeOptions
from fluoden_batch.config.denoise import (
    MAX_CLUSTERS,
    Axes,
    InputOptions,
    PyramidOptions,
    Series,
)

__all__ = ["SegmentConfig", "SegmentOptions"]


class SegmentOptions(BaseModel):
    """How each plane is labelled: the options of :func:`fluoden_batch.segment` for arrays
    as for stores (:class:`SegmentConfig` adds the input, the output and the Dask
    options). The same ideas have the same names as in
    :class:`~fluoden_batch.config.DenoiseOptions` (``clusters``, ``cluster_backend``,
    ``block_min``, ``axes``)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["kmeans", "dbscan", "hdbscan"] = Field(
        "kmeans",
        description="kmeans (seam-free: centres fitted once per channel), dbscan or hdbscan "
        "(clustered per block: labels can change at block borders)",
    )
    clusters: int = Field(3, ge=1, le=MAX_CLUSTERS, description="K-means: number of clusters K")
    eps: float | None = Field(
        None,
        gt=0,
        description="DBSCAN radius in standard deviations of the block's intensities "
        "(default: automatic, from the k-distance knee)",
    )
    min_samples: int | None = Field(
        None,
        ge=1,
        description="DBSCAN: pixels a core point's neighbourhood must hold; HDBSCAN: "
        "neighbours for the core distance (default: from the block size)",
    )
    min_cluster_size: int | None = Field(
        None, ge=2, description="HDBSCAN: smallest cluster, in sampled points (default: 2%)"
    )
    cluster_backend: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="auto (cuML when it imports and a GPU is present, else scikit-learn), "
        "gpu (cuML or an error) or cpu (scikit-learn)",
    )
    block_min: int = Field(
        512, ge=1, description="smallest block (task) size in Y/X, pixels; chunks are grouped"
    )
    axes: Axes = None
    series: Series = 0
    plane_groups: Literal["auto", "off"] = Field(
        "auto",
        description="K-means: where the planes of a channel (up to 64 of them) differ in "
        "their noise, as captures from several microscopes stacked along z or t do, fit "
        "centres per group of similar planes, as fluoden denoise plans them (a note names "
        "the groups); off: one set of centres per channel for every plane",
    )


class SegmentConfig(SegmentOptions, PyramidOptions, InputOptions, ComputeOptions):
    """Parameters of a clustering segmentation run from a store into an OME-Zarr.

    Only :meth:`output_parameters` decide OUT; a rerun with the same values resumes.
    """

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(description="Zarr array, OME-Zarr image (NGFF 0.4/0.5) or TIFF")
    output: Path = Field(
        description="output OME-Zarr image: a copy of the input with the labels registered "
        "under it as OUTPUT/labels/clusters (one per channel: clusters-c0, ...) (created; "
        "or resumed if it exists)"
    )
    ngff_version: Literal["0.4", "0.5"] = Field(
        "0.5", description="output NGFF version (0.4 for Fiji)"
    )
    overwrite: bool = Field(False, description="replace an OUTPUT written with other parameters")
    quality: bool = Field(
        True, description="score every block (silhouette, Davies-Bouldin, WSS) in the metrics"
    )

    def output_parameters(self) -> dict[str, Any]:
        """The parameters that decide OUT, JSON-compatible; K is stored as ``k`` (its name
        in outputs written before the options were unified, so they still resume).
        ``layout`` tells outputs with the labels under the image from the earlier label-only
        ones, which are not resumed. ``plane_groups`` only when ``off`` (and only for
        K-means), ``series`` only when not 0, so outputs written before they existed resume
        unchanged."""
        skip = {"output", "cluster_backend", "overwrite", "levels", "pyramid", "allow_sparse"}
        if self.plane_groups == "auto" or self.method != "kmeans":
            skip.add("plane_groups")
        if self.series == 0:
            skip.add("series")
        skip |= set(COMPUTE_FIELDS)
        data = self.model_dump(mode="json", exclude=skip)
        data["k"] = data.pop("clusters")
        data["layout"] = "image+labels"
        return data | self.pyramid_parameters()

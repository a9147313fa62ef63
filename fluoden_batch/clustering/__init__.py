"""Clustering segmentation of image blocks: K-means, DBSCAN, HDBSCAN on scikit-learn
(CPU) or cuML (GPU), per-pixel features, quality scores and cluster masks.

Per block (e.g. inside a Dask task)::

    result = cluster_image(block, "kmeans", k=3, backend="auto", seed=0)
    quality = cluster_quality(block, result.labels)        # intensity-space scores
    masks = masks_from_labels(result.labels)               # {label: bool mask}
    merged = recombine({lab: denoise(block, m) for lab, m in masks.items()}, result.labels)
"""

from fluoden_batch.clustering.algorithms import MAX_SAMPLES, ClusterResult, Method, cluster_image
from fluoden_batch.clustering.backends import (
    BackendChoice,
    ClusterBackend,
    ClusterBackendError,
    CumlBackend,
    SklearnBackend,
    select_backend,
)
from fluoden_batch.clustering.features import (
    FeatureScaling,
    FeatureSpec,
    Histogram,
    PixelFeatures,
    intensity_histogram,
    pixel_features,
)
from fluoden_batch.clustering.masks import masks_from_labels, recombine
from fluoden_batch.clustering.quality import ClusterQuality, cluster_quality

__all__ = [
    "MAX_SAMPLES",
    "BackendChoice",
    "ClusterBackend",
    "ClusterBackendError",
    "ClusterQuality",
    "ClusterResult",
    "CumlBackend",
    "FeatureScaling",
    "FeatureSpec",
    "Histogram",
    "Method",
    "PixelFeatures",
    "SklearnBackend",
    "cluster_image",
    "cluster_quality",
    "intensity_histogram",
    "masks_from_labels",
    "pixel_features",
    "recombine",
    "select_backend",
]

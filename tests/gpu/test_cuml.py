"""cuML backend against scikit-learn (marked gpu; skipped without cuML and a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from fluoden_batch.clustering import CumlBackend, FeatureSpec, cluster_image, select_backend
from fluoden_batch.clustering.backends import _probe_cuml

USABLE, WHY = _probe_cuml()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not USABLE, reason=WHY)]


def phases(size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated background / cells / nuclei (300 / 1200 / 2500) under light noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=int)
    truth[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    truth[3 * size // 8 : 5 * size // 8, 3 * size // 8 : 5 * size // 8] = 2
    clean = np.array([300.0, 1200.0, 2500.0])[truth]
    return np.round(clean + rng.normal(0, 40, clean.shape)).astype(np.uint16), truth


def test_auto_and_gpu_pick_cuml():
    for choice in ("auto", "gpu"):
        backend, reason = select_backend(choice)
        assert isinstance(backend, CumlBackend) and "CUDA" in reason


@pytest.mark.parametrize("features", [("intensity",), ("intensity", "local_mean")])
def test_kmeans_parity_with_sklearn(features):
    image, truth = phases()
    spec = FeatureSpec(features)
    gpu = cluster_image(image, "kmeans", k=3, features=spec, backend="gpu")
    cpu = cluster_image(image, "kmeans", k=3, features=spec, backend="cpu")
    assert gpu.backend == "cuml" and cpu.backend == "sklearn"
    assert adjusted_rand_score(cpu.labels.ravel(), gpu.labels.ravel()) > 0.99
    assert adjusted_rand_score(truth.ravel(), gpu.labels.ravel()) > 0.99
    np.testing.assert_allclose(gpu.means, cpu.means, rtol=1e-3)  # ordered alike


def test_weighted_dbscan_parity_with_sklearn():
    image, _ = phases()
    cpu = cluster_image(image, "dbscan", backend="cpu")
    gpu = cluster_image(image, "dbscan", eps=cpu.params["eps"], backend="gpu")
    assert adjusted_rand_score(cpu.labels.ravel(), gpu.labels.ravel()) > 0.99


def test_hdbscan_on_gpu_labels_every_pixel_from_a_bounded_sample():
    image, truth = phases(256)
    r = cluster_image(image, "hdbscan", backend="gpu", max_samples=3000)
    assert r.params["n_fit"] == 3000 and r.labels.shape == image.shape
    assigned = r.labels.ravel() >= 0
    assert assigned.mean() > 0.8
    assert adjusted_rand_score(truth.ravel()[assigned], r.labels.ravel()[assigned]) > 0.9

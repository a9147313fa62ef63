"""Clustering backends: one small interface over scikit-learn (CPU) and cuML (CUDA GPU).

A backend runs the three fits the clustering code needs and returns plain NumPy arrays:

- ``kmeans``: Lloyd iterations from given initial centres (the caller draws the
  k-means++ initialisations, so every backend starts from the same centres);
- ``dbscan``: DBSCAN with per-point weights (a point of weight ``w`` counts as ``w``
  points, so clustering distinct values weighted by their pixel counts is exact);
- ``hdbscan``: HDBSCAN on unweighted points.

:func:`select_backend` picks one from ``"auto" | "gpu" | "cpu"`` and says why. cuML is
imported lazily, only when a GPU backend is asked for or probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from fluoden_batch.errors import FluodenError

__all__ = [
    "BackendChoice",
    "ClusterBackend",
    "ClusterBackendError",
    "CumlBackend",
    "SklearnBackend",
    "select_backend",
]

BackendChoice = Literal["auto", "gpu", "cpu"]


class ClusterBackendError(FluodenError):
    """The requested clustering backend cannot be used here (e.g. ``gpu`` without cuML/CUDA)."""


@runtime_checkable
class ClusterBackend(Protocol):
    """What a clustering backend provides. All arrays in and out are NumPy arrays.

    Attributes
    ----------
    name : str
        ``"sklearn"`` or ``"cuml"``.
    """

    name: str

    def kmeans(
        self, x: np.ndarray, init: np.ndarray, weight: np.ndarray | None, max_iter: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Lloyd's K-means from ``init`` until the labels stop changing (or ``max_iter``).

        Parameters
        ----------
        x : ndarray, shape (n, d), float64
            Points.
        init : ndarray, shape (k, d)
            Initial centres.
        weight : ndarray, shape (n,), or None
            Point weights (None = 1 each).
        max_iter : int
            Iteration limit.

        Returns
        -------
        labels : ndarray, shape (n,), int
            Index of each point's centre, 0..k-1.
        centers : ndarray, shape (k, d)
            Final centres.
        inertia : float
            Weighted sum of squared distances of the points to their centre.
        """
        ...

    def dbscan(
        self, x: np.ndarray, eps: float, min_samples: int, weight: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """DBSCAN with Euclidean distance; a point is core when the total weight within
        ``eps`` (itself included) is at least ``min_samples``.

        Returns
        -------
        labels : ndarray, shape (n,), int
            Cluster index per point, -1 for noise.
        core : ndarray, shape (n,), bool
            Whether each point is a core point.
        """
        ...

    def hdbscan(self, x: np.ndarray, min_cluster_size: int, min_samples: int | None) -> np.ndarray:
        """HDBSCAN (excess-of-mass selection); returns labels, shape (n,), -1 for noise."""
        ...


@dataclass(frozen=True)
class SklearnBackend:
    """scikit-learn on the CPU (threads follow OpenMP/threadpoolctl settings)."""

    name: str = "sklearn"

    def kmeans(
        self, x: np.ndarray, init: np.ndarray, weight: np.ndarray | None, max_iter: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        from sklearn.cluster import KMeans

        km = KMeans(len(init), init=init, n_init=1, max_iter=max_iter, tol=0.0)
        km.fit(x, sample_weight=weight)
        return km.labels_, km.cluster_centers_, float(km.inertia_)

    def dbscan(
        self, x: np.ndarray, eps: float, min_samples: int, weight: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.cluster import DBSCAN

        db = DBSCAN(eps=eps, min_samples=min_samples).fit(x, sample_weight=weight)
        core = np.zeros(len(x), dtype=bool)
        core[db.core_sample_indices_] = True
        return db.labels_, core

    def hdbscan(self, x: np.ndarray, min_cluster_size: int, min_samples: int | None) -> np.ndarray:
        from sklearn.cluster import HDBSCAN

        return (
            HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
            .fit(x)
            .labels_
        )


@dataclass(frozen=True)
class CumlBackend:
    """cuML (RAPIDS) on the current CUDA device; results come back as NumPy arrays
    (``output_type="numpy"``)."""

    name: str = "cuml"

    def kmeans(
        self, x: np.ndarray, init: np.ndarray, weight: np.ndarray | None, max_iter: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        from cuml.cluster import KMeans

        km = KMeans(
            n_clusters=len(init),
            init=init,
            n_init=1,
            max_iter=max_iter,
            tol=0.0,
            output_type="numpy",
        )
        km.fit(x, sample_weight=weight)
        return np.asarray(km.labels_), np.asarray(km.cluster_centers_), float(km.inertia_)

    def dbscan(
        self, x: np.ndarray, eps: float, min_samples: int, weight: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from cuml.cluster import DBSCAN

        db = DBSCAN(
            eps=eps, min_samples=min_samples, calc_core_sample_indices=True, output_type="numpy"
        )
        db.fit(x, sample_weight=weight)
        core = np.zeros(len(x), dtype=bool)
        core[np.asarray(db.core_sample_indices_)] = True
        return np.asarray(db.labels_), core

    def hdbscan(self, x: np.ndarray, min_cluster_size: int, min_samples: int | None) -> np.ndarray:
        from cuml.cluster import HDBSCAN

        hdb = HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=min_samples, output_type="numpy"
        )
        return np.asarray(hdb.fit(x).labels_)


@lru_cache(maxsize=1)
def _probe_cuml() -> tuple[bool, str]:
    """Whether cuML imports and a CUDA device is visible, and a sentence saying which
    (probed once per process)."""
    try:
        import cuml
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return False, f"cuML is not usable ({type(exc).__name__}: {exc})"
    try:
        import cupy

        n_devices = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"] if n_devices else b""
    except Exception as exc:  # no driver / no device
        return False, f"cuML {cuml.__version__} imports but no CUDA device is usable ({exc})"
    if not n_devices:
        return False, f"cuML {cuml.__version__} imports but no CUDA device is present"
    name = name.decode() if isinstance(name, bytes) else str(name)
    return True, f"cuML {cuml.__version__} on CUDA device 0 ({name})"


def select_backend(choice: BackendChoice | ClusterBackend = "auto") -> tuple[ClusterBackend, str]:
    """Pick the clustering backend.

    Parameters
    ----------
    choice : {"auto", "gpu", "cpu"} or ClusterBackend
        ``"auto"``: cuML when it imports and a CUDA device is present, else scikit-learn.
        ``"gpu"``: cuML or an error. ``"cpu"``: scikit-learn. A backend object is
        returned as is.

    Returns
    -------
    backend : ClusterBackend
    reason : str
        One line saying which backend was picked and why (for the CLI and logs).

    Raises
    ------
    ClusterBackendError
        ``"gpu"`` was asked for but cuML or a CUDA device is missing, or ``choice`` is
        not one of the accepted values.
    """
    if isinstance(choice, ClusterBackend):
        return choice, f"{choice.name} (given)"
    if choice == "cpu":
        import sklearn

        return SklearnBackend(), f"scikit-learn {sklearn.__version__} (--cluster-backend cpu)"
    if choice not in ("auto", "gpu"):
        raise ClusterBackendError(f"cluster backend {choice!r}: use 'auto', 'gpu' or 'cpu'")
    usable, why = _probe_cuml()
    if usable:
        return CumlBackend(), f"{why} (--cluster-backend {choice})"
    if choice == "gpu":
        raise ClusterBackendError(
            f"--cluster-backend gpu: {why}; install the 'gpu' extra (cuml-cu12) on a machine "
            "with an NVIDIA GPU, or use --cluster-backend cpu"
        )
    import sklearn

    return SklearnBackend(), f"scikit-learn {sklearn.__version__} (auto: {why})"

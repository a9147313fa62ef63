"""Clustering library: backends, features, exact histogram shortcuts, sampling, quality, masks."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import ndimage
from sklearn.cluster import DBSCAN, KMeans
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

from fluoden_batch.clustering import (
    ClusterBackendError,
    CumlBackend,
    FeatureSpec,
    SklearnBackend,
    cluster_image,
    cluster_quality,
    intensity_histogram,
    masks_from_labels,
    pixel_features,
    recombine,
    select_backend,
)
from fluoden_batch.clustering import backends as backends_mod
from fluoden_batch.clustering.fitting import kmeans_fit, kmeans_inits
from fluoden_batch.clustering.neighbours import kdistance_sorted_1d, knee_eps
from fluoden_batch.errors import FluodenError, InputError
from fluoden_batch.noise import simulate


def three_phase(shape=(48, 40), seed=0, dtype=np.uint16) -> np.ndarray:
    """Noisy image of background / cells / nuclei at 300 / 1200 / 2500 (well separated)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    clean = np.full(shape, 300.0)
    clean[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1200.0
    clean[3 * h // 8 : 5 * h // 8, 3 * w // 8 : 5 * w // 8] = 2500.0
    noisy = simulate(clean, 2.0, 100.0, clip=(0, 4095), rng=rng)
    return np.round(noisy).astype(dtype) if np.dtype(dtype).kind in "ui" else noisy.astype(dtype)


def truth(shape=(48, 40)) -> np.ndarray:
    h, w = shape
    t = np.zeros(shape, dtype=int)
    t[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    t[3 * h // 8 : 5 * h // 8, 3 * w // 8 : 5 * w // 8] = 2
    return t


def scaled_pixels(image: np.ndarray, result) -> np.ndarray:
    return result.scaling.apply(image.reshape(-1, 1))


def plain_kmeans(x: np.ndarray, inits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn K-means on every pixel from each init; the lowest-inertia run."""
    runs = [KMeans(len(c), init=c, n_init=1, tol=0.0).fit(x) for c in inits]
    best = min(runs, key=lambda km: km.inertia_)
    return best.labels_, best.cluster_centers_


# --- backends ---------------------------------------------------------------------------


def test_cpu_backend_is_sklearn():
    backend, reason = select_backend("cpu")
    assert isinstance(backend, SklearnBackend)
    assert "scikit-learn" in reason


def test_auto_falls_back_to_sklearn_and_says_why(monkeypatch):
    monkeypatch.setattr(backends_mod, "_probe_cuml", lambda: (False, "cuML is not usable (X)"))
    backend, reason = select_backend("auto")
    assert backend.name == "sklearn"
    assert "auto" in reason and "cuML is not usable" in reason


def test_auto_picks_cuml_when_usable(monkeypatch):
    monkeypatch.setattr(backends_mod, "_probe_cuml", lambda: (True, "cuML 25.02 on CUDA device 0"))
    backend, reason = select_backend("auto")
    assert isinstance(backend, CumlBackend)
    assert "CUDA" in reason


def test_gpu_without_cuml_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backends_mod, "_probe_cuml", lambda: (False, "cuML is not usable (X)"))
    with pytest.raises(ClusterBackendError, match=r"gpu.*cpu") as info:
        select_backend("gpu")
    assert isinstance(info.value, FluodenError)
    with pytest.raises(ClusterBackendError, match="'tpu'"):
        select_backend("tpu")


def test_sklearn_kmeans_recovers_well_separated_phases():
    image = three_phase()
    result = cluster_image(image, "kmeans", k=3, backend="cpu")
    assert adjusted_rand_score(truth().ravel(), result.labels.ravel()) > 0.99
    assert result.backend == "sklearn"


# --- labels: order, dtype, determinism, errors ------------------------------------------


@pytest.mark.parametrize("method", ["kmeans", "dbscan", "hdbscan"])
def test_labels_cover_every_pixel_ordered_by_intensity(method):
    image = three_phase((64, 64))
    r = cluster_image(image, method, backend="cpu", max_samples=800)
    assert r.labels.shape == image.shape and r.labels.dtype == np.int32
    assert set(np.unique(r.labels)) <= set(range(-1, r.n_clusters))
    assert np.all(np.diff(r.means) > 0)  # label 0 = darkest
    for lab in range(r.n_clusters):
        assert np.isclose(image[r.labels == lab].mean(), r.means[lab])
        assert (r.labels == lab).sum() == r.sizes[lab]
    assert (r.labels == -1).sum() == r.n_noise
    again = cluster_image(image, method, backend="cpu", max_samples=800)
    np.testing.assert_array_equal(r.labels, again.labels)  # same seed, same labels
    assert pickle.loads(pickle.dumps(r)).params == r.params  # ships back from a Dask task


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((4, 4, 2)), {}, "2-D"),
        (np.array([[0.0, np.nan]]), {}, "finite"),
        (np.zeros((4, 4)), {"method": "spectral"}, "method"),
        (np.zeros((4, 4)), {"k": 0}, "k=0"),
        (np.zeros((4, 4)), {"method": "dbscan", "eps": -1.0}, "eps"),
        (np.zeros((4, 4)), {"features": "intensity"}, "FeatureSpec"),
    ],
)
def test_bad_input_is_a_readable_error(image, kwargs, match):
    with pytest.raises(InputError, match=match):
        cluster_image(image, backend="cpu", **kwargs)


def test_constant_block_gives_one_cluster_for_every_method():
    image = np.full((16, 16), 700, dtype=np.uint16)
    for method in ("kmeans", "dbscan"):
        r = cluster_image(image, method, backend="cpu")
        assert r.n_clusters == 1 and np.all(r.labels == 0) and r.means[0] == 700
    r = cluster_image(image, "hdbscan", backend="cpu")
    assert r.labels.shape == image.shape  # HDBSCAN may call a single blob noise


# --- exactness of the histogram shortcuts -----------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_kmeans_equals_kmeans_on_every_pixel(seed):
    image = three_phase(seed=seed)
    hist = intensity_histogram(image)
    scaling = hist.scaling()
    points = scaling.apply(hist.values[:, None])
    inits = kmeans_inits(points, hist.counts, 3, 4, seed)
    pixels = scaling.apply(image.reshape(-1, 1))

    lab_hist, cen_hist = kmeans_fit(points, hist.counts, inits, SklearnBackend())
    lab_plain, cen_plain = plain_kmeans(pixels, inits)
    np.testing.assert_array_equal(lab_hist[hist.index], lab_plain)
    np.testing.assert_allclose(cen_hist, cen_plain, rtol=1e-12, atol=1e-12)

    result = cluster_image(image, "kmeans", k=3, n_init=4, seed=seed, backend="cpu")
    rank = np.argsort(np.argsort(cen_plain[:, 0]))  # plain labels renumbered darkest first
    np.testing.assert_array_equal(result.labels.ravel(), rank[lab_plain])
    assert result.params["exact"] is True


@pytest.mark.parametrize("eps", [None, 0.05, 0.2])
def test_histogram_dbscan_equals_dbscan_on_every_pixel(eps):
    image = three_phase()
    result = cluster_image(image, "dbscan", eps=eps, min_samples=12, backend="cpu")
    plain = DBSCAN(eps=result.params["eps"], min_samples=12).fit(scaled_pixels(image, result))
    np.testing.assert_array_equal(result.labels.ravel() == -1, plain.labels_ == -1)
    assert adjusted_rand_score(plain.labels_, result.labels.ravel()) == 1.0
    assert result.params["exact"] is True


def test_float_blocks_are_exact_with_few_values_and_quantised_otherwise():
    few = three_phase(dtype=np.uint16).astype(np.float32)
    hist = intensity_histogram(few)
    assert hist.exact
    np.testing.assert_array_equal(hist.values[hist.index], few.ravel())

    many = three_phase(dtype=np.float64) + np.random.default_rng(5).random((48, 40))
    hist = intensity_histogram(many, bins=64)
    assert not hist.exact and len(hist.values) <= 64
    assert np.abs(hist.values[hist.index] - many.ravel()).max() < hist.step
    r = cluster_image(many, "kmeans", bins=64, backend="cpu")
    assert r.params["exact"] is False
    assert adjusted_rand_score(truth().ravel(), r.labels.ravel()) > 0.99


def test_histogram_of_signed_and_constant_blocks():
    signed = np.array([[-30000, 30000], [-30000, 5]], dtype=np.int16)
    hist = intensity_histogram(signed)
    np.testing.assert_array_equal(hist.values, [-30000, 5, 30000])
    np.testing.assert_array_equal(hist.counts, [2, 1, 1])
    np.testing.assert_array_equal(hist.values[hist.index], signed.ravel())
    const = intensity_histogram(np.full((3, 3), 2.5))
    assert const.exact and const.values.tolist() == [2.5] and const.counts.tolist() == [9]


# --- automatic eps ----------------------------------------------------------------------


def test_kdistance_1d_matches_brute_force():
    rng = np.random.default_rng(3)
    values = np.unique(rng.integers(0, 200, 60)).astype(float)
    weight = rng.integers(1, 6, len(values)).astype(float)
    for m in (1, 4, 17):
        d = np.abs(values[:, None] - values[None, :])
        brute = [min(r for r in d[i] if weight[d[i] <= r].sum() >= m) for i in range(len(values))]
        np.testing.assert_array_equal(kdistance_sorted_1d(values, weight, m), brute)
    assert np.all(np.isinf(kdistance_sorted_1d(values, weight, weight.sum() + 1)))


def test_knee_is_at_the_elbow_of_the_kdistance_curve():
    kdist = np.concatenate([np.linspace(0.1, 0.2, 90), np.linspace(2.0, 10.0, 10)])
    assert knee_eps(kdist) == pytest.approx(0.2)
    assert knee_eps(np.zeros(5)) == 1.0  # constant block
    assert knee_eps(np.array([0.0, 0.0, 0.0, 0.5]), np.array([100.0, 1, 1, 1])) == pytest.approx(
        0.5, rel=1e-8
    )


def test_automatic_eps_joins_one_grey_level_gaps_of_integer_data():
    """A decaying 8-bit histogram: the knee is one grey level, and every one-level gap
    must count as within eps after standardisation (rounding makes them differ by ulps)."""
    levels = np.arange(120)
    image = np.repeat(levels, np.maximum(1, np.round(3000 * np.exp(-levels / 12))).astype(int))
    image = image[: len(image) // 100 * 100].reshape(-1, 100).astype(np.uint8)
    r = cluster_image(image, "dbscan", backend="cpu")
    assert r.params["eps"] * r.scaling.scale[0] == pytest.approx(1.0)
    assert r.n_clusters == 1 and 0 < r.n_noise < 0.01 * image.size


# --- sampling paths: HDBSCAN and local features -----------------------------------------


class SpyBackend(SklearnBackend):
    """scikit-learn, recording how many points each fit receives."""

    fitted: list[int] = []  # noqa: RUF012

    def kmeans(self, x, init, weight, max_iter):
        self.fitted.append(len(x))
        return super().kmeans(x, init, weight, max_iter)

    def dbscan(self, x, eps, min_samples, weight):
        self.fitted.append(len(x))
        return super().dbscan(x, eps, min_samples, weight)

    def hdbscan(self, x, min_cluster_size, min_samples):
        self.fitted.append(len(x))
        return super().hdbscan(x, min_cluster_size, min_samples)


@pytest.mark.parametrize(
    ("method", "features"),
    [
        ("hdbscan", ("intensity",)),
        ("hdbscan", ("intensity", "local_mean")),
        ("kmeans", ("intensity", "local_std")),
        ("dbscan", ("intensity", "local_mean", "coords")),
    ],
)
def test_sampled_fits_stay_bounded_and_label_every_pixel(method, features):
    image = three_phase((96, 96))
    spy = SpyBackend()
    spy.fitted.clear()
    r = cluster_image(image, method, features=FeatureSpec(features), backend=spy, max_samples=700)
    assert spy.fitted and max(spy.fitted) <= 700
    assert r.params["n_fit"] <= 700 and r.params["exact"] is False
    assert r.labels.shape == image.shape
    assert r.n_clusters >= 1 and r.sizes.sum() + r.n_noise == image.size
    assert r.centers.shape == (r.n_clusters, len(FeatureSpec(features).columns))


def test_hdbscan_finds_the_phases():
    r = cluster_image(three_phase((96, 96)), "hdbscan", backend="cpu", max_samples=1500)
    assigned = r.labels.ravel() >= 0
    assert r.n_clusters == 3 and assigned.mean() > 0.8
    assert adjusted_rand_score(truth((96, 96)).ravel()[assigned], r.labels.ravel()[assigned]) > 0.9


# --- features ---------------------------------------------------------------------------


def test_pixel_features_are_standardised_columns():
    image = three_phase().astype(np.float64)
    spec = FeatureSpec(("coords", "local_std", "intensity", "local_mean"), window=5)
    feats = pixel_features(image, spec)
    assert feats.scaling.columns == ("intensity", "local_mean", "local_std", "y", "x")
    assert feats.x.shape == (image.size, 5) and feats.x.dtype == np.float32
    np.testing.assert_allclose(feats.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(feats.x.std(axis=0), 1, atol=1e-5)
    raw = feats.scaling.invert(feats.x)
    np.testing.assert_allclose(raw[:, 0], image.ravel(), rtol=1e-5)
    mean = ndimage.uniform_filter(image, 5, mode="mirror")
    np.testing.assert_allclose(raw[:, 1], mean.ravel(), rtol=1e-5)
    var = ndimage.uniform_filter(image**2, 5, mode="mirror") - mean**2
    np.testing.assert_allclose(raw[:, 2], np.sqrt(np.maximum(var, 0)).ravel(), atol=1e-2)
    assert raw[:, 3].min() == pytest.approx(0, abs=1e-6) and raw[:, 4].max() == pytest.approx(1)


@pytest.mark.parametrize(("names", "window"), [((), 7), (("colour",), 7), (("intensity",), 4)])
def test_bad_feature_specs_are_refused(names, window):
    with pytest.raises(InputError):
        FeatureSpec(names, window)


# --- quality ----------------------------------------------------------------------------


def test_quality_matches_sklearn_on_small_inputs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.7, (40, 2)) for c in (0, 3, 6)])
    labels = np.repeat([0, 1, 2], 40)
    labels[::17] = -1  # some noise: left out of every score
    q = cluster_quality(x, labels)
    keep = labels >= 0
    assert q.silhouette == pytest.approx(silhouette_score(x[keep], labels[keep]), rel=1e-12)
    assert q.davies_bouldin == pytest.approx(davies_bouldin_score(x[keep], labels[keep]), 1e-12)
    wss = sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in range(3))
    assert q.wss == pytest.approx(wss, rel=1e-12)
    assert q.sizes == {-1: int((~keep).sum()), 0: 37, 1: 38, 2: 37}
    assert (q.n_clusters, q.n_noise, q.reason) == (3, 8, "")


def test_quality_on_an_image_scores_intensities_with_a_bounded_sample():
    image = three_phase((64, 64))
    r = cluster_image(image, "kmeans", backend="cpu")
    q = cluster_quality(image, r.labels, sample_size=500, seed=1)
    assert q.n_silhouette == 500 and 0.5 < q.silhouette <= 1
    assert q.wss == pytest.approx(
        sum(((image[r.labels == c] - r.means[c]) ** 2).sum() for c in range(3)), rel=1e-9
    )
    assert q.as_row()["cluster_sizes"].startswith("0:")


@pytest.mark.parametrize(
    ("x", "labels", "n_clusters", "wss"),
    [
        (np.arange(10.0).reshape(10, 1), np.zeros(10, int), 1, 82.5),  # one cluster
        (np.full((6, 1), 3.0), np.zeros(6, int), 1, 0.0),  # constant block
        (np.arange(5.0).reshape(5, 1), np.full(5, -1), 0, 0.0),  # all-noise DBSCAN
        (np.arange(2.0).reshape(2, 1), np.array([0, 1]), 2, 0.0),  # a cluster per point
    ],
)
def test_quality_of_degenerate_clusterings_is_defined(x, labels, n_clusters, wss):
    q = cluster_quality(x, labels)
    assert math.isnan(q.silhouette) and math.isnan(q.davies_bouldin) and q.reason
    assert q.n_clusters == n_clusters and q.wss == pytest.approx(wss)


def test_quality_of_a_constant_block_clustered_for_real():
    image = np.full((8, 8), 9, dtype=np.uint8)
    q = cluster_quality(image, cluster_image(image, "dbscan", backend="cpu").labels)
    assert q.n_clusters == 1 and math.isnan(q.silhouette) and q.wss == 0.0


# --- masks ------------------------------------------------------------------------------


def test_recombine_takes_each_pixel_from_its_labels_part():
    labels = np.array([[0, 1, -1], [1, 1, 0]])
    parts = {lab: np.full(labels.shape, 10.0 * lab) for lab in (-1, 0, 1, 7)}  # 7: ignored
    np.testing.assert_array_equal(recombine(parts, labels), [[0, 10, -10], [10, 10, 0]])
    assert list(masks_from_labels(labels)) == [-1, 0, 1]


def test_recombine_refuses_missing_parts_and_wrong_shapes():
    labels = np.array([[0, 1]])
    with pytest.raises(InputError, match=r"label\(s\) \[1\]"):
        recombine({0: np.zeros((1, 2))}, labels)
    with pytest.raises(InputError, match="shape"):
        recombine({0: np.zeros((1, 2)), 1: np.zeros((2, 1))}, labels)
    with pytest.raises(InputError, match="integer"):
        masks_from_labels(np.zeros((2, 2)))

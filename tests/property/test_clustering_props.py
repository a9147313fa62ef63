"""Properties of the clustering library: masks partition and recombine, histogram shortcuts
keep the DBSCAN / K-means contracts, quality agrees with scikit-learn."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

from fluoden_batch.clustering import cluster_image, cluster_quality, masks_from_labels, recombine
from fluoden_batch.clustering.backends import SklearnBackend
from fluoden_batch.clustering.features import intensity_histogram
from fluoden_batch.clustering.fitting import kmeans_inits
from fluoden_batch.clustering.neighbours import kdistance_sorted_1d

label_images = hnp.arrays(
    np.int32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.integers(-1, 5),
)
FAST = settings(max_examples=40, deadline=None)


@FAST
@given(labels=label_images, seed=st.integers(0, 2**16))
def test_recombination_covers_every_pixel_exactly_once(labels, seed):
    masks = masks_from_labels(labels)
    assert sorted(masks) == sorted(np.unique(labels).tolist())
    coverage = np.sum([m.astype(int) for m in masks.values()], axis=0)
    np.testing.assert_array_equal(coverage, 1)  # disjoint and covering
    rng = np.random.default_rng(seed)
    parts = {lab: rng.random(labels.shape) for lab in masks}
    out = recombine(parts, labels)
    expected = np.choose(np.searchsorted(sorted(parts), labels), [parts[k] for k in sorted(parts)])
    np.testing.assert_array_equal(out, expected)  # out[p] = parts[labels[p]][p]


@FAST
@given(
    shape=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    label=st.integers(-1, 9),
    seed=st.integers(0, 2**16),
)
def test_a_one_cluster_block_recombines_to_its_part(shape, label, seed):
    part = np.random.default_rng(seed).random(shape).astype(np.float32)
    out = recombine({label: part}, np.full(shape, label))
    assert out.dtype == part.dtype
    np.testing.assert_array_equal(out, part)


@FAST
@given(
    seed=st.integers(0, 2**16),
    levels=st.integers(2, 60),
    min_samples=st.integers(1, 30),
    eps=st.floats(0.01, 1.5),
)
def test_histogram_dbscan_keeps_the_dbscan_contract(seed, levels, min_samples, eps):
    """Against DBSCAN's definition on all pixels: the same core points, the same clusters
    of core points, the same noise, and every border pixel joins a cluster of a core
    pixel within eps (which one is DBSCAN's processing order, not part of the contract)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, levels, (14, 11)) ** 2  # uneven spacing, many repeats
    r = cluster_image(image, "dbscan", eps=eps, min_samples=min_samples, backend="cpu")
    x = r.scaling.apply(image.reshape(-1, 1))[:, 0]
    dist = np.abs(x[:, None] - x[None, :])
    core = (dist <= eps).sum(axis=1) >= min_samples
    labels = r.labels.ravel()
    reach = (dist <= eps) & core[None, :]
    np.testing.assert_array_equal(labels == -1, ~reach.any(axis=1))
    if core.any():
        plain = SklearnBackend().dbscan(x[:, None], eps, min_samples, None)[0]
        assert adjusted_rand_score(plain[core], labels[core]) == 1.0
    for p in np.flatnonzero(~core & (labels >= 0)):
        assert labels[p] in set(labels[reach[p]])


@FAST
@given(seed=st.integers(0, 2**16), k=st.integers(1, 4))
def test_histogram_kmeans_equals_lloyd_on_every_pixel(seed, k):
    """Powers of 3 hold no value midway between two others, so the first assignment
    (from k-means++ centres, which are data values) has no exact ties: those are the one
    place where rounding may legitimately send a pixel either way."""
    rng = np.random.default_rng(seed)
    image = (3 ** rng.integers(0, 8, (20, 17))).astype(np.uint16)
    r = cluster_image(image, "kmeans", k=k, n_init=1, seed=seed, backend="cpu")
    hist = intensity_histogram(image)  # the k-means++ draw cluster_image makes, redone
    init = kmeans_inits(r.scaling.apply(hist.values[:, None]), hist.counts, r.params["k"], 1, seed)
    pixels = r.scaling.apply(image.reshape(-1, 1))
    plain = KMeans(r.params["k"], init=init[0], n_init=1, tol=0.0).fit(pixels)
    assert adjusted_rand_score(plain.labels_, r.labels.ravel()) == 1.0


@FAST
@given(
    values=st.lists(st.integers(0, 300), min_size=1, max_size=40, unique=True),
    seed=st.integers(0, 2**16),
    min_samples=st.integers(1, 50),
)
def test_weighted_kdistance_is_the_smallest_core_radius(values, seed, min_samples):
    v = np.sort(np.array(values, dtype=float))
    w = np.random.default_rng(seed).integers(1, 8, len(v)).astype(float)
    kd = kdistance_sorted_1d(v, w, min_samples)
    d = np.abs(v[:, None] - v[None, :])
    within = (w[None, :] * (d <= kd[:, None])).sum(axis=1)
    finite = np.isfinite(kd)
    assert np.all(within[finite] >= min_samples)
    below = (w[None, :] * (d < kd[:, None])).sum(axis=1)  # any smaller radius is too small
    assert np.all(below[finite] < min_samples)
    assert finite.all() == (w.sum() >= min_samples)


@FAST
@given(seed=st.integers(0, 2**16), n_clusters=st.integers(2, 5), dim=st.integers(1, 3))
@example(seed=2339, n_clusters=4, dim=1)  # two centroids 0.001 apart: Davies-Bouldin 2790
def test_quality_matches_sklearn(seed, n_clusters, dim):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, dim)) + rng.integers(0, 3, (60, 1)) * 4
    labels = np.arange(60) % n_clusters
    rng.shuffle(labels)
    q = cluster_quality(x, labels)
    assert np.isclose(q.silhouette, silhouette_score(x, labels), rtol=1e-12)
    # scikit-learn's centroid distances expand |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, whose
    # relative error grows as (|a| / |a - b|)^2 for nearly coincident centroids (2.6e-10
    # at the example above): the ratio is compared at the precision that allows
    assert np.isclose(q.davies_bouldin, davies_bouldin_score(x, labels), rtol=1e-7)
    centroids = np.stack([x[labels == c].mean(0) for c in range(n_clusters)])
    assert np.isclose(q.wss, ((x - centroids[labels]) ** 2).sum(), rtol=1e-10)

"""Benchmark of clustering segmentation: speed per block size, exact vs plain, real data.

Run ``OMP_NUM_THREADS=1 python benchmarks/clustering_speed.py [--quick]`` from the
repository root (the script also limits the BLAS/OpenMP pools to one thread with
threadpoolctl). It prints the
tables and writes them to ``benchmarks/results/clustering_speed.md``.

- Speed: :func:`~fluoden_batch.clustering.cluster_image` with default parameters on
  512^2, 1024^2 and 2048^2 uint16 blocks (the top-left corner of one synthetic
  2048^2 plane from ``fluoden_batch.demo.clean_plane`` under Poisson-Gaussian noise,
  a = 32, b = 400, clipped to 0..4095), one thread; median and best of repeats; the
  quality scores (intensity space) of the result.
- Exact shortcut: the histogram K-means / DBSCAN against scikit-learn on every pixel
  (same initial centres, same eps / min_samples): time and identical-label fraction.
- Float data: a float32 block with ~all values distinct is quantised to 4096 bins
  (approximate); the label disagreement with the plain algorithm is measured.
- Wide 16-bit data (~60 000 levels), local features, HDBSCAN sample size.
- Real data: the FMD raw frames (``<data>/fmd_dev/raw``, uint8 512^2), every algorithm
  with default parameters; skipped with a message when absent. ``data`` is
  ``$FLUODEN_DATA`` or ``../shared/data`` next to the checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from machine import describe
from sklearn.cluster import DBSCAN, KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from fluoden_batch.clustering import (
    ClusterResult,
    FeatureSpec,
    SklearnBackend,
    cluster_image,
    cluster_quality,
    intensity_histogram,
)
from fluoden_batch.clustering.fitting import kmeans_fit, kmeans_inits
from fluoden_batch.demo import DEMO_GAIN, DEMO_READ_VAR, SENSOR_MAX, clean_plane
from fluoden_batch.noise import simulate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "clustering_speed.md"
DATA = Path(os.environ.get("FLUODEN_DATA", ROOT.parent / "shared" / "data"))
METHODS = ("kmeans", "dbscan", "hdbscan")
SEED_STUDY = {"kmeans": (0.590, 0.540), "dbscan": (0.972, 0.381), "hdbscan": (0.975, 0.408)}


def timed(fn, repeats: int):
    """Median and best wall time of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


def fmt(x: float, digits: int = 3) -> str:
    return "NaN" if x != x else f"{x:.{digits}f}"


def synthetic_plane(size: int = 2048, seed: int = 0) -> np.ndarray:
    clean = clean_plane(size, np.random.default_rng(seed))
    noisy = simulate(clean, DEMO_GAIN, DEMO_READ_VAR, clip=(0, SENSOR_MAX), rng=seed + 1)
    return np.round(noisy).astype(np.uint16)


def noise_as_cluster(labels: np.ndarray) -> np.ndarray:
    """Labels with noise (-1) made one more cluster (a convention some studies use)."""
    return np.where(labels < 0, labels.max() + 1, labels)


def scored_clustering(
    image: np.ndarray, method: str, features: FeatureSpec | None = None
) -> tuple[ClusterResult, tuple[float, ...]]:
    """Cluster ``image`` on the CPU (seed 0) and score it: the result and (silhouette,
    silhouette with the noise points as one more cluster, Davies-Bouldin, WSS, seconds,
    clusters, noise %)."""
    r = cluster_image(image, method, features=features, backend="cpu", seed=0)
    q = cluster_quality(image, r.labels)
    q_all = cluster_quality(image, noise_as_cluster(r.labels)) if r.n_noise else q
    noise = 100 * r.n_noise / image.size
    row = (q.silhouette, q_all.silhouette, q.davies_bouldin, q.wss, r.seconds, r.n_clusters)
    return r, (*row, noise)


def speed(plane: np.ndarray, sizes: list[int], repeats: int) -> list[str]:
    lines = [
        "| block | method | median s | best s | clusters | noise % | silhouette | "
        "Davies-Bouldin | WSS (grey levels^2) | quality s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        block = plane[:size, :size]
        for method in METHODS:
            med, best, r = timed(
                lambda b=block, m=method: cluster_image(b, m, backend="cpu"), repeats
            )
            t0 = time.perf_counter()
            q = cluster_quality(block, r.labels)
            tq = time.perf_counter() - t0
            lines.append(
                f"| {size}^2 | {method} | {med:.3f} | {best:.3f} | {r.n_clusters} | "
                f"{100 * r.n_noise / block.size:.1f} | {fmt(q.silhouette)} | "
                f"{fmt(q.davies_bouldin)} | {q.wss:.4g} | {tq:.2f} |"
            )
            print(lines[-1], flush=True)
    return lines


def plain_kmeans_check(block: np.ndarray) -> str:
    """Histogram K-means vs scikit-learn K-means on every pixel from the same inits."""
    hist = intensity_histogram(block)
    scaling = hist.scaling()
    points = scaling.apply(hist.values[:, None])
    inits = kmeans_inits(points, hist.counts, 3, 4, 0)
    t0 = time.perf_counter()
    lab_h, _ = kmeans_fit(points, hist.counts, inits, SklearnBackend())
    t_hist = time.perf_counter() - t0
    pixels = scaling.apply(block.reshape(-1, 1))
    t0 = time.perf_counter()
    runs = [KMeans(3, init=c, n_init=1, tol=0.0).fit(pixels) for c in inits]
    t_plain = time.perf_counter() - t0
    best = min(runs, key=lambda km: km.inertia_)
    same = np.mean(lab_h[hist.index] == best.labels_)
    return (
        f"| K-means, {block.shape[0]}^2, {len(points)} distinct values | {t_hist:.3f} | "
        f"{t_plain:.2f} | {100 * same:.4f} % |"
    )


def plain_dbscan_check(block: np.ndarray) -> str:
    r = cluster_image(block, "dbscan", backend="cpu")
    pixels = r.scaling.apply(block.reshape(-1, 1))
    t0 = time.perf_counter()
    plain = DBSCAN(eps=r.params["eps"], min_samples=r.params["min_samples"]).fit(pixels)
    t_plain = time.perf_counter() - t0
    ari = adjusted_rand_score(plain.labels_, r.labels.ravel())
    same_noise = np.mean((plain.labels_ == -1) == (r.labels.ravel() == -1))
    return (
        f"| DBSCAN, {block.shape[0]}^2 (eps {r.params['eps']:.4f}, min_samples "
        f"{r.params['min_samples']}) | {r.seconds:.3f} | {t_plain:.2f} | ARI {ari:.4f}, "
        f"noise mask {100 * same_noise:.2f} % equal |"
    )


def float_check(block: np.ndarray) -> list[str]:
    """float32 block with continuous noise: quantised (approximate) vs plain."""
    rng = np.random.default_rng(7)
    data = (block + rng.uniform(-0.5, 0.5, block.shape)).astype(np.float32)
    hist = intensity_histogram(data)
    scaling = hist.scaling()
    points = scaling.apply(hist.values[:, None])
    inits = kmeans_inits(points, hist.counts, 3, 4, 0)
    t0 = time.perf_counter()
    r = cluster_image(data, "kmeans", backend="cpu")
    t_hist = time.perf_counter() - t0
    pixels = scaling.apply(data.reshape(-1, 1).astype(np.float64))
    t0 = time.perf_counter()
    best = min(
        (KMeans(3, init=c, n_init=1, tol=0.0).fit(pixels) for c in inits), key=lambda k: k.inertia_
    )
    t_plain = time.perf_counter() - t0
    rank = np.argsort(np.argsort(best.cluster_centers_[:, 0]))
    differ = np.mean(rank[best.labels_] != r.labels.ravel())
    small = data[:128, :128]
    rd = cluster_image(small, "dbscan", backend="cpu")
    plain = DBSCAN(eps=rd.params["eps"], min_samples=rd.params["min_samples"]).fit(
        rd.scaling.apply(small.reshape(-1, 1).astype(np.float64))
    )
    return [
        f"| K-means, float32 {data.shape[0]}^2, {len(np.unique(data))} distinct values -> "
        f"{len(points)} bins (exact={hist.exact}) | {t_hist:.3f} | {t_plain:.2f} | "
        f"{100 * differ:.4f} % of pixels labelled differently |",
        f"| DBSCAN, float32 128^2 (exact={rd.params['exact']}) | {rd.seconds:.3f} | - | "
        f"ARI {adjusted_rand_score(plain.labels_, rd.labels.ravel()):.4f} vs plain |",
    ]


def wide_and_features(plane: np.ndarray, repeats: int) -> list[str]:
    wide = np.round(
        plane.astype(np.float64) * 14.6 + np.random.default_rng(3).uniform(0, 14, plane.shape)
    )
    wide = np.clip(wide, 0, 65535).astype(np.uint16)
    levels = len(intensity_histogram(wide).values)
    lines = [
        "| case | method | median s | clusters | noise % | notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for method in ("kmeans", "dbscan"):
        med, _, r = timed(lambda m=method: cluster_image(wide, m, backend="cpu"), repeats)
        lines.append(
            f"| uint16 2048^2, {levels} distinct levels (exact) | {method} | {med:.3f} | "
            f"{r.n_clusters} | {100 * r.n_noise / wide.size:.1f} | |"
        )
        print(lines[-1], flush=True)
    spec = FeatureSpec(("intensity", "local_mean", "local_std"), window=7)
    for method in METHODS:
        med, _, r = timed(lambda m=method: cluster_image(plane, m, features=spec, backend="cpu"), 1)
        lines.append(
            f"| 2048^2, intensity + local mean + local std (7x7) | {method} | {med:.3f} | "
            f"{r.n_clusters} | {100 * r.n_noise / plane.size:.1f} | fit on {r.params['n_fit']} "
            f"points, then every pixel assigned |"
        )
        print(lines[-1], flush=True)
    ref = cluster_image(plane, "hdbscan", backend="cpu", max_samples=10_000)
    for n in (2000, 5000, 10_000):
        med, _, r = timed(
            lambda n=n: cluster_image(plane, "hdbscan", backend="cpu", max_samples=n), 1
        )
        lines.append(
            f"| 2048^2 intensity, HDBSCAN max_samples={n} | hdbscan | {med:.3f} | {r.n_clusters} | "
            f"{100 * r.n_noise / plane.size:.1f} | ARI vs max_samples=10000: "
            f"{adjusted_rand_score(ref.labels.ravel(), r.labels.ravel()):.3f} |"
        )
        print(lines[-1], flush=True)
    return lines


def real_data(quick: bool) -> list[str]:
    raw = DATA / "fmd_dev" / "raw"
    if not raw.is_dir():
        msg = f"Real data skipped: {raw} not found (set FLUODEN_DATA)."
        print(msg)
        return [msg]
    from skimage import io

    files = sorted(raw.glob("*.png"))[: 6 if quick else None]
    rows: dict[str, list[tuple]] = {m: [] for m in METHODS}
    detail = [
        "| image | method | clusters | noise % | silhouette | sil. (noise = a cluster) | "
        "Davies-Bouldin | WSS | cluster s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in files:
        image = io.imread(f)
        for method in METHODS:
            r, row = scored_clustering(image, method)
            sil, sil_all, db, wss, seconds, _, noise = row
            rows[method].append(row)
            detail.append(
                f"| {f.stem} | {method} | {r.n_clusters} | {noise:.1f} | {fmt(sil)} | "
                f"{fmt(sil_all)} | {fmt(db)} | {wss:.4g} | {seconds:.3f} |"
            )
    summary = [
        f"{len(files)} FMD raw frames (uint8, 512^2), default parameters. Means over the images "
        "(NaN-scores left out of the mean; 'defined' says on how many images the score exists).",
        "",
        "| method | silhouette (defined) | sil. with noise as a cluster | Davies-Bouldin "
        "(defined) | WSS (grey levels^2) | clusters | noise % | seconds | seed study sil. / DB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, vals in rows.items():
        a = np.array(vals, dtype=float)
        sil, sil_all, db = a[:, 0], a[:, 1], a[:, 2]

        def mean_def(v):
            ok = ~np.isnan(v)
            return f"{np.mean(v[ok]):.3f} ({ok.sum()}/{len(v)})" if ok.any() else "NaN"

        s_sil, s_db = SEED_STUDY[method]
        summary.append(
            f"| {method} | {mean_def(sil)} | {mean_def(sil_all)} | {mean_def(db)} | "
            f"{np.mean(a[:, 3]):.4g} | {np.mean(a[:, 5]):.1f} | {np.mean(a[:, 6]):.1f} | "
            f"{np.mean(a[:, 4]):.3f} | {s_sil:.3f} / {s_db:.3f} |"
        )
        print(summary[-1], flush=True)
    return [*summary, "", "<details><summary>Per image</summary>", "", *detail, "", "</details>"]


def machine() -> str:
    import sklearn

    return describe({"scikit-learn": sklearn.__version__}, "threadpoolctl limit 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and images")
    args = parser.parse_args()
    t_start = time.perf_counter()
    repeats = 1 if args.quick else 3
    with threadpool_limits(1):
        plane = synthetic_plane()
        speed_lines = speed(plane, [512, 1024, 2048], repeats)
        checks = [
            plain_kmeans_check(plane[:512, :512]),
            plain_kmeans_check(plane),
            plain_dbscan_check(plane[:128, :128]),
            *float_check(plane[:1024, :1024]),
        ]
        print("\n".join(checks), flush=True)
        other = wide_and_features(plane, repeats)
        real = real_data(args.quick)
    out = [
        "# Clustering benchmark",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/clustering_speed.py"
        f"{' --quick' if args.quick else ''}`  ",
        f"Machine: {machine()}  ",
        "",
        "## Speed per block (synthetic uint16, default parameters, one thread)",
        "",
        "Defaults: K-means k = 3, 4 k-means++ inits, exact histogram path; DBSCAN "
        "min_samples = 0.1 % of the pixels, eps = k-distance knee, exact histogram path; "
        "HDBSCAN fitted on 5000 sampled pixels, min_cluster_size = 2 % of them, then every "
        "pixel assigned. Quality in intensity space (grey levels); silhouette on 5000 "
        "sampled clustered pixels; noise excluded from every score.",
        "",
        *speed_lines,
        "",
        "## Exactness of the histogram shortcut, and what it saves",
        "",
        "| case | histogram s | plain scikit-learn on every pixel s | agreement |",
        "|---|---:|---:|---|",
        *checks,
        "",
        "## Wide 16-bit data, local features, HDBSCAN sample size (2048^2)",
        "",
        *other,
        "",
        "## Real data (FMD)",
        "",
        *real,
        "",
        "How features and parameters were chosen: intensity only (what the seed study "
        "clustered, and the exact fast path), library defaults, no per-image tuning. K-means: "
        "k = 3, best of 4 k-means++ inits. DBSCAN: min_samples = 0.1 % of the pixels (263 "
        "here), eps at the knee of the pixel-weighted k-distance curve; on these 8-bit frames "
        "the knee is one grey level, so DBSCAN returns the dense bulk of the histogram as one "
        "cluster and the sparse bright tail as noise: silhouette and Davies-Bouldin need two "
        "clusters and are NaN on most frames (scores are never computed on noise). Counting "
        "the noise as one more cluster gives the 'noise as a cluster' column. HDBSCAN: 5000 "
        "sampled pixels (dequantised within their grey level), min_cluster_size = "
        "min_samples = 100, then every pixel labelled from its nearest sample. The seed "
        "study's parameters, features and noise convention are not recorded, so its figures "
        "are shown for reference, not as a like-for-like comparison.",
    ]
    out.insert(4, f"Total run time: {time.perf_counter() - t_start:.0f} s  ")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(out) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Does PURE choose the detail restoration better than SURE on real low-photon frames?
W2S frames no held-out pair uses (FOV 001-021, channels 1, 2); truth proxy: the 400-frame
mean fitted to the frame (affine). Default model, the run's ranges and noise."""
import itertools, sys, tempfile
from pathlib import Path
import numpy as np, torch, tifffile, zarr
import fluoden_batch as fb
from fluoden_batch.io.store import read_provenance
from fluoden_batch.models.weights import resolve_weights, file_digest
from fluoden_batch.pipeline.worker import worker_model
from fluoden_batch.restore.inference import inference_network
from fluoden_batch.restore.protocols import PlaneParams, whole
from fluoden_batch.restore.detail import sure_plane, SIGMAS, WEIGHTS, BLENDS, _low
from fluoden_batch.restore.classical import vst_nlm
torch.set_num_threads(2)
W = Path("/work/shared/data/w2s_train")
path = resolve_weights("dncnn-fmd")
net = inference_network(worker_model(str(path), file_digest(path), "cpu").module, False, False)
tot = np.zeros(4)
for fov, ch in itertools.product(["001", "005", "009", "013", "017", "021"], [1, 2]):
    z = tifffile.imread(W / "avg1" / f"input_avg1_{fov}_{ch}.tif").astype(np.float64)
    gt = tifffile.imread(W / "avg400" / f"target_avg400_{fov}_{ch}.tif").astype(np.float64)
    A = np.vstack([gt.ravel(), np.ones(gt.size)]).T
    y = (A @ np.linalg.lstsq(A, z.ravel(), rcond=None)[0]).reshape(z.shape)
    with tempfile.TemporaryDirectory() as tmp:
        arr = zarr.create_array(f"{tmp}/in.zarr", shape=z.shape, dtype="float32", chunks=z.shape)
        arr[...] = z.astype(np.float32)
        fb.denoise(f"{tmp}/in.zarr", f"{tmp}/out.zarr", dtype="float32", workers=0)
        prm = read_provenance(f"{tmp}/out.zarr")["parameters"]
    (lo, hi), (a, b) = prm["channel_ranges"][0], prm["channel_noise"][0]
    params = PlaneParams(lo, hi, a, b)
    f = lambda p: np.asarray(whole(net, p, params, 256, "fp32"), np.float64)
    sp = sure_plane(z, f, a, b)
    d, n = f(z), vst_nlm(z, a, b)
    rng = np.random.default_rng(0)
    h = max(a, 1e-3 * np.sqrt(max((a * z + b).mean(), 1e-12)))
    masks = []
    for _ in range(4):
        q = (rng.random(z.shape) < 0.05).astype(np.float64)
        masks.append((q, (q - 0.05) / (0.05 * 0.95), d - f(z - h * q), n - vst_nlm(z - h * q, a, b)))
    v = a * z + b
    rows = []
    for beta, s, w in itertools.product(BLENDS, SIGMAS, WEIGHTS):
        db = (1 - beta) * d + beta * n
        out = z + w * ((db + _low(z - db, s) if s else db) - z)
        cross = 0
        for q, u, dd, dn in masks:
            dbd = (1 - beta) * dd + beta * dn
            dout = (1 - w) * h * q + w * (dbd + _low(h * q - dbd, s) if s else dbd)
            cross = cross + dout * u / 4
        pure = (((out - z) ** 2).sum() - v.sum() + 2 * (v / h * cross).sum()) / z.size
        rows.append(((s, w, beta), ((out - y) ** 2).mean(), sp.risks[(s, w, beta)] / z.size, pure))
    best = min(rows, key=lambda r: r[1]); bs = min(rows, key=lambda r: r[2]); bp = min(rows, key=lambda r: r[3])
    model = [r for r in rows if r[0] == (0.0, 1.0, 0.0)][0]
    tot += [model[1], best[1], bs[1], bp[1]]
    print(f"{fov}_{ch} a {a:.2f} b {b:.1f} | true: model {model[1]:.2f} best {best[1]:.2f} {best[0]} | SURE's {bs[1]:.2f} {bs[0]} | PURE's {bp[1]:.2f} {bp[0]}", flush=True)
print("mean true risk: model %.3f, best %.3f, SURE's choice %.3f, PURE's choice %.3f" % tuple(tot / 12))

"""``fluoden denoise --adapt single`` on another lab's microscope: the W2S pairs no model
trained on.

W2S FOV 037-040, channels 1 and 2 (8 pairs: one widefield frame -> the 400-frame mean,
8-bit; ``eval_w2s.py``'s held-out pairs). Each noisy frame is written as its own ``(y, x)``
Zarr array and run as a user would, with every default (``dncnn-fmd``, ``--detail auto``):
once plainly and once with ``adapt="single"`` (the fit sees only that frame; gt only
scores). Scores against the 400-frame mean: scale-invariant PSNR (CARE's figure; the
prediction fitted to the reference by least squares), PSNR and SSIM (peak 255), and a
Gaussian blur of sigma 1 px as the linear baseline.

Usage (repository root)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_w2s_adapt.py --threads 2

writes ``benchmarks/results/eval_w2s_adapt.md``; with ``--plain-only`` only the default
run (no fit), to ``benchmarks/results/eval_w2s_default.md``: the held-out W2S figure of a
change to the default run. With ``--work DIR`` the runs are kept there (each pair's input
and outputs, the fitted weights in them): a second call with the same ``DIR`` reuses the
fits (a run never refits); ``--rechoose`` then also forgets what each run chose after its
fit (the restoration tuned for the fitted model) and its finished blocks (what a run
killed between writing the weights and recording that leaves) and runs the default run
afresh, so a change to what happens after the fit is measured in minutes
(``runs/adapt-choice.patch`` was measured so).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from eval_w2s import DATA, RESULTS, pairs, scores
from scipy.ndimage import gaussian_filter

import fluoden_batch as fb
from fluoden_batch.io.store import (
    MARKER_DIR,
    PYRAMID_MARKER_DIR,
    read_provenance,
    update_provenance,
)


def forget_choice(out: Path) -> None:
    """Leave ``out`` as a run killed right after writing its fitted weights leaves it: the
    weights and the fit's record, nothing chosen after the fit, no finished block."""
    record = read_provenance(out)["adapted"]  # "detail": the restoration tuned after the fit
    update_provenance(out, adapted={k: v for k, v in record.items() if k != "detail"})
    for markers in (MARKER_DIR, PYRAMID_MARKER_DIR):
        for marker in (out / markers).glob("*.json"):
            marker.unlink()


def run(frame: np.ndarray, work: Path, **options) -> tuple[np.ndarray, dict, float]:
    """``fluoden_batch.denoise`` of ``frame`` stored as a Zarr array; the output (float64),
    the run's provenance and its wall time (s)."""
    raw = work / "in.zarr"
    if not raw.exists():
        array = zarr.create_array(str(raw), shape=frame.shape, dtype="float32", chunks=frame.shape)
        array[...] = frame.astype(np.float32)
    out = work / f"out-{options.get('adapt', 'none')}.zarr"
    started = time.perf_counter()
    fb.denoise(raw, out, dtype="float32", workers=0, **options)
    seconds = time.perf_counter() - started
    image = np.clip(np.asarray(zarr.open_array(str(out), path="0")[:], np.float64), 0, 255)
    return image, read_provenance(out), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--plain-only", action="store_true", help="the default run only")
    parser.add_argument("--work", type=Path, help="keep the runs here (default: temporary)")
    parser.add_argument(
        "--rechoose", action="store_true", help="with --work: keep the fits, redo what follows them"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w2s = DATA / "w2s_train"
    if not (w2s / "avg1").is_dir():
        raise SystemExit(f"W2S data not found under {w2s} (set FLUODEN_DATA)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, noisy, clean in pairs(w2s):
            work = (args.work or Path(tmp)) / name
            work.mkdir(parents=True, exist_ok=True)
            if args.rechoose:  # the default run has nothing to keep: run it afresh
                shutil.rmtree(work / "out-none.zarr", ignore_errors=True)
            plain, prov, _ = run(noisy, work)
            rows.append({
                "name": name,
                "noisy": scores(noisy, clean),
                "blur": scores(gaussian_filter(noisy, 1.0), clean),
                "default": scores(plain, clean),
                "fit": str(prov["parameters"].get("channel_detail")),
            })  # fmt: skip
            if not args.plain_only:
                if args.rechoose and (work / "out-single.zarr").is_dir():
                    forget_choice(work / "out-single.zarr")
                fitted, prov, seconds = run(noisy, work, adapt="single")
                record = prov["adapted"]
                rows[-1]["single"] = scores(fitted, clean)
                rows[-1]["fit"] = (
                    f"{record['seconds']:.0f} s, {record['steps']} steps, kept step "
                    f"{record['kept_step']}"
                    + (", not fitted" if record["skipped"] else "")
                    + f"; run {seconds:.0f} s"
                )
            si = {k: round(v[2], 2) for k, v in rows[-1].items() if k not in ("name", "fit")}
            print(name, si, rows[-1]["fit"], flush=True)
    keys = [("noisy", "noisy"), ("blur", "Gaussian blur, 1 px"), ("default", "default run"),
            ("single", "`--adapt single`")][: 3 if args.plain_only else 4]  # fmt: skip
    what = "The default run" if args.plain_only else "`--adapt single`"
    lines = [
        f"# {what} on the W2S pairs no model trained on (FOV 037-040, channels 1, 2)",
        "",
        f"Command (repository root): `PYTHONPATH=.:benchmarks python benchmarks/eval_w2s_adapt.py "
        f"--threads {args.threads}{' --plain-only' if args.plain_only else ''}"
        f"{f' --work {args.work}' if args.work else ''}{' --rechoose' if args.rechoose else ''}`"
        + (
            " (the fits reused from an earlier call: their seconds are of that call)"
            if args.rechoose
            else ""
        ),
        "",
        "Every default (`dncnn-fmd`, `--detail auto`), each frame its own run; the fit sees "
        "only that frame. Scale-invariant PSNR (dB) against the 400-frame mean; the last "
        "rows: means of PSNR / SSIM / SI-PSNR.",
        "",
        "| pair | "
        + " | ".join(label for _, label in keys)
        + (" | restoration |" if args.plain_only else " | fit |"),
        "|---|" + "---:|" * len(keys) + "---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r[k][2]:.2f}" for k, _ in keys)
                     + f" | {r['fit']} |")  # fmt: skip
    for i, metric in enumerate(["PSNR", "SSIM", "SI-PSNR"]):
        means = [float(np.mean([r[k][i] for r in rows])) for k, _ in keys]
        digits = 3 if metric == "SSIM" else 2
        lines.append(f"| **mean {metric}** | " + " | ".join(f"{m:.{digits}f}" for m in means)
                     + " | |")  # fmt: skip
    path = RESULTS / ("eval_w2s_default.md" if args.plain_only else "eval_w2s_adapt.md")
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()

"""Leave-types-out FMD with ``fluoden denoise --adapt``: the fit inside the batch run.

For each held-out type of each leave-types-out fold model of ``train_fmd.py`` (never
trained on that type), the run a user would make:

- ``n2n``: the type's distinct raw captures as one ``(t, y, x)`` Zarr array (fmd_dev's
  WideField_BPAE_B_2 is a copy of _1 and is left out: ``--adapt`` refuses copies),
  ``fluoden_batch.denoise(raw, out, adapt="n2n")``;
- ``single``: one raw frame (``<Type>_1``) alone as a ``(y, x)`` array,
  ``adapt="single"``.

The adapted weights (``OUT/.fluoden/adapted.safetensors``) then denoise every level of
the type, each image as its own run (``fluoden_batch.denoise(image, model=weights)``,
clipped to 0..255; FMD scoring: four 256x256 crops, peak 255): the model alone
(``detail="off"``) and with every default (the detail restoration with its NLM blend,
tuned on that image, as a run on it does); the fold models are scored both ways too, and
weights a fit left unchanged are not scored twice. gt only scores. VST+NLM (``--protocol
vst-nlm``, noise estimated per image, not fitted against gt) is scored on the raw frames
beside them.

Usage (repository root)::

    PYTHONPATH=.:benchmarks python benchmarks/eval_adapt.py \\
        runs/dncnn-fmdn-A.safetensors runs/dncnn-fmdn-B.safetensors --threads 2

writes ``benchmarks/results/eval_adapt_leave_types_out.md`` (``--modes single``: only that
fit, ``..._single.md``; ``--name``: a suffix for other fold models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import zarr
from eval_fmd import DATA, LEVELS, RESULTS, fmd_images
from finetune_n2n import distinct_captures
from safetensors.torch import load_file
from skimage import io
from train_fmd import held_out_types

import fluoden_batch as fb
from fluoden_batch.io.store import read_provenance
from fluoden_batch.metrics import fmd_scores
from fluoden_batch.models import read_metadata
from fluoden_batch.pipeline.adapt import adapted_path


def fit(weights: Path, frames: np.ndarray, mode: str, steps: int, work: Path) -> tuple[Path, dict]:
    """Run ``denoise --adapt mode`` on ``frames`` ((t, y, x) or (y, x) uint8); return the
    adapted weights and the run's ``adapted`` provenance record."""
    axes = "tyx" if frames.ndim == 3 else "yx"
    raw = work / f"raw-{mode}.zarr"
    array = zarr.create_array(str(raw), shape=frames.shape, dtype=frames.dtype,
                              chunks=frames.shape, overwrite=True)  # fmt: skip
    array[...] = frames
    out = work / f"out-{mode}.zarr"
    fb.denoise(raw, out, model=str(weights), axes=axes, adapt=mode, adapt_steps=steps,
               overwrite=True, workers=0)  # fmt: skip
    return adapted_path(out), read_provenance(out)["adapted"]


def vst_nlm(fmd: Path, kind: str) -> list[tuple[float, float]]:
    """FMD scores of ``--protocol vst-nlm`` on the raw frames of ``kind``."""
    rows = []
    for path in sorted((fmd / "raw").glob(f"{kind}_*.png")):
        noisy = io.imread(path)
        gt = io.imread(fmd / "gt" / path.name).astype(np.float64)
        out = np.asarray(fb.denoise(noisy, protocol="vst-nlm", dtype="float32"), np.float64)
        rows.append(fmd_scores(np.clip(out, 0, 255), gt, 255.0))
    return rows


def weights_key(weights: Path) -> str:
    """SHA-256 of what a run does with ``weights``: the tensors and the metadata that
    shape inference (not the name, description or training record)."""
    meta = read_metadata(weights)
    h = hashlib.sha256()
    for part in (meta.architecture, meta.normalisation):
        h.update(part.model_dump_json().encode())
    h.update(json.dumps([meta.protocol, meta.noise_model], sort_keys=True).encode())
    for name, tensor in sorted(load_file(weights).items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def score(weights: Path, fmd: Path, kind: str) -> dict[str, list[tuple[float, float]]]:
    """FMD scores of ``weights`` on every image of ``kind``, each image as its own run:
    the model alone (``{level: ...}``) and with every default (``{"detail/<level>": ...}``:
    the detail restoration, its NLM blend and Wiener step, tuned on that image), and of the
    noisy input (``{"noisy/<level>": ...}``); lists of (PSNR dB, SSIM) per image."""
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for level, _, z, gt in fmd_images(fmd, [kind]):
        alone = fb.denoise(z, model=str(weights), dtype="float32", detail="off")
        run = fb.denoise(z, model=str(weights), dtype="float32")
        scores[f"noisy/{level}"].append(fmd_scores(z, gt, 255.0))
        scores[level].append(fmd_scores(np.clip(np.asarray(alone, np.float64), 0, 255), gt, 255.0))
        scores[f"detail/{level}"].append(
            fmd_scores(np.clip(np.asarray(run, np.float64), 0, 255), gt, 255.0)
        )
    return dict(scores)


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    """Markdown: per type, raw and every level, fold model -> n2n / single, each alone and
    with ``--detail``; VST+NLM."""

    def m(values: list[tuple[float, float]]) -> float:
        return float(np.mean([v[0] for v in values]))

    modes = args.modes
    # (label, row key, level prefix): the weights alone, and with the detail restoration
    cols = [
        (f"{name}{' + detail' if detail else ''}", key, "detail/" if detail else "")
        for key, name in [("fold", "fold model"), *((mode, mode) for mode in modes)]
        for detail in (False, True)
    ]
    lines = [
        "# Leave-types-out FMD with `fluoden denoise --adapt`",
        "",
        f"Command (repository root): `{command}`",
        "",
        f"Fold models: `{args.fold_a}` (never saw {', '.join(held_out_types('A'))}) and "
        f"`{args.fold_b}` (never saw {', '.join(held_out_types('B'))}). Per held-out type: "
        + " ".join(
            {
                "n2n": f"`--adapt n2n` on its distinct {args.fit_level} captures as a t axis;",
                "single": f"`--adapt single` on `<Type>_1` of {args.fit_level} alone;",
            }[mode]
            for mode in modes
        )
        + f" {args.steps} steps at most (the default), batch 16, seed 0, "
        f"{args.threads} CPU thread(s). FMD scoring (four 256x256 crops, peak 255), 4 images "
        "per type and level; every image is its own run of `fluoden_batch.denoise(image, "
        "model=weights)`, scored with the model alone (`--detail off`) and with every default "
        "(`+ detail`: the detail restoration with its NLM blend, tuned on that image, which "
        "is what `fluoden denoise` gives). gt only scores.",
        "",
        "## raw (single frame): PSNR (dB)",
        "",
        "| type | noisy | VST+NLM | "
        + " | ".join(label for label, _, _ in cols)
        + " | "
        + " | ".join(f"{mode} fit" for mode in modes)
        + " |",
        "|---|" + "---:|" * (2 + len(cols) + len(modes)),
    ]
    for r in rows:
        fits = [r["fit"][mode] for mode in modes]
        lines.append(
            f"| {r['type']} | {m(r['fold']['noisy/raw']):.2f} | {m(r['vst_nlm']):.2f} | "
            + " | ".join(f"{m(r[key][pre + 'raw']):.2f}" for _, key, pre in cols)
            + " | "
            + " | ".join(
                f"{f['seconds']:.0f} s, {f['steps']} steps, {f['train_mpx']:.1f} Mpx, kept "
                f"step {f['kept_step']}"
                for f in fits
            )
            + " |"
        )
    means = [np.mean([m(r[key][pre + "raw"]) for r in rows]) for _, key, pre in cols]
    lines += [
        f"| **mean** | {np.mean([m(r['fold']['noisy/raw']) for r in rows]):.2f} | "
        f"{np.mean([m(r['vst_nlm']) for r in rows]):.2f} | "
        + " | ".join(f"**{v:.2f}**" for v in means)
        + " |"
        + " |" * len(modes),
        "",
        "## Every level: mean PSNR over the six types (dB)",
        "",
        "| level | noisy | " + " | ".join(label for label, _, _ in cols) + " |",
        "|---|" + "---:|" * (1 + len(cols)),
    ]
    for lv in LEVELS:
        vals = [np.mean([m(r["fold"][f"noisy/{lv}"]) for r in rows])]
        vals += [np.mean([m(r[key][pre + lv]) for r in rows]) for _, key, pre in cols]
        lines.append(f"| {lv} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    lines += [
        "",
        "## Per type and level: noisy / " + " / ".join(label for label, _, _ in cols) + " (dB)",
        "",
        "| type | " + " | ".join(LEVELS) + " |",
        "|---|" + "---:|" * len(LEVELS),
    ]
    below = []
    for r in rows:
        cells = []
        for lv in LEVELS:
            n = m(r["fold"][f"noisy/{lv}"])
            vals = [m(r[key][pre + lv]) for _, key, pre in cols]
            cells.append(f"{n:.2f} / " + " / ".join(f"{v:.2f}" for v in vals))
            below += [f"{r['type']} {lv} {label}" for (label, _, _), v in zip(cols, vals,
                      strict=True) if v < n]  # fmt: skip
        lines.append(f"| {r['type']} | " + " | ".join(cells) + " |")
    lines += ["", "Below the input: " + (", ".join(below) if below else "none") + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fold_a", type=Path, help="weights trained with train_fmd.py --fold A")
    parser.add_argument("fold_b", type=Path, help="weights trained with train_fmd.py --fold B")
    parser.add_argument("--steps", type=int, default=400, help="--adapt-steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=DATA / "fmd_dev", help="fmd_dev folder")
    parser.add_argument(
        "--fit-level", default="raw", choices=LEVELS, help="the level whose captures are fitted"
    )
    parser.add_argument(
        "--modes", nargs="+", default=["n2n", "single"], choices=["n2n", "single"],
        help="the fits to run",
    )  # fmt: skip
    parser.add_argument("--name", default="", help="suffix of the report's name")
    args = parser.parse_args()
    if not (args.data / "gt").is_dir():
        raise SystemExit(f"FMD data not found at {args.data} (set FLUODEN_DATA or --data)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    rows = []
    scored: dict[tuple[str, str], dict] = {}  # (weights_key, type): scores

    def score_once(weights: Path, kind: str) -> dict:
        key = (weights_key(weights), kind)
        if key not in scored:
            scored[key] = score(weights, args.data, kind)
        return scored[key]

    with tempfile.TemporaryDirectory() as tmp:
        for fold, weights in (("A", args.fold_a), ("B", args.fold_b)):
            for kind in held_out_types(fold):
                t0 = time.perf_counter()
                captures, _ = distinct_captures(args.data / args.fit_level, kind)
                frames = np.stack([io.imread(p) for p in captures])
                row: dict = {"type": kind, "fold": score_once(weights, kind), "fit": {}}
                for mode in args.modes:
                    data = frames if mode == "n2n" else frames[0]
                    work = Path(tmp) / f"{kind}-{mode}"
                    work.mkdir()
                    adapted, record = fit(weights, data, mode, args.steps, work)
                    row[mode], row["fit"][mode] = score_once(adapted, kind), record
                row["vst_nlm"] = vst_nlm(args.data, kind)
                logging.info("%s raw: %s (%.0f s)", kind, ", ".join(
                    f"{k} {np.mean([v[0] for v in row[k]['raw']]):.2f}"
                    for k in ("fold", *args.modes)), time.perf_counter() - t0)  # fmt: skip
                rows.append(row)
    command = (
        f"PYTHONPATH=.:benchmarks python benchmarks/eval_adapt.py {args.fold_a} {args.fold_b} "
        f"--steps {args.steps} --threads {args.threads}"
        + (f" --fit-level {args.fit_level}" if args.fit_level != "raw" else "")
        + (f" --modes {' '.join(args.modes)}" if args.modes != ["n2n", "single"] else "")
        + (f" --name {args.name}" if args.name else "")
    )
    suffix = "" if args.fit_level == "raw" else f"_fit-{args.fit_level}"
    suffix += "" if args.modes == ["n2n", "single"] else "_" + "_".join(args.modes)
    suffix += f"_{args.name}" if args.name else ""
    path = RESULTS / f"eval_adapt_leave_types_out{suffix}.md"
    path.write_text(report(rows, args, command))
    print(path.read_text())


if __name__ == "__main__":
    main()

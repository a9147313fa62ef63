"""Average the weights of two runs of one network (WiSE-FT, Wortsman et al., CVPR 2022).

``(1 - alpha) * START + alpha * END``, tensor by tensor, for two weights files of the same
architecture and normalisation, typically a model and its own continued training (they are
then linearly connected, and the average keeps much of the continuation's gain where it fits
and much of the start's robustness where it does not). The result is one network of the same
cost, written with END's metadata, its description and training record naming both files.

Usage::

    PYTHONPATH=. python benchmarks/average_weights.py runs/dncnn-mbd-A.safetensors \\
        runs/dncnn-mlc-A.safetensors runs/dncnn-mwa-A.safetensors --alpha 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fluoden_batch.models.weights import file_digest, load_trainable, save_weights


def average(start: Path, end: Path, out: Path, alpha: float) -> str:
    """Write ``(1 - alpha) * start + alpha * end`` to ``out``; return its digest.

    Raises
    ------
    SystemExit
        The two files differ in architecture, normalisation or protocol.
    """
    model_a, meta_a = load_trainable(start)
    model_b, meta_b = load_trainable(end)
    for field in ("architecture", "normalisation", "protocol"):
        if getattr(meta_a, field) != getattr(meta_b, field):
            raise SystemExit(f"error: {start} and {end} differ in {field}; cannot average")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    model_b.load_state_dict({k: (1 - alpha) * sa[k] + alpha * sb[k] for k in sb})
    meta = meta_b.model_copy(
        update={
            "description": f"{meta_b.description} Weight average: {1 - alpha:g} x {start.name} "
            f"+ {alpha:g} x {end.name}.",
            "training": {
                **meta_b.training,
                "weight_average": {
                    "alpha": alpha,
                    "start": f"{start.name} ({file_digest(start)})",
                    "end": f"{end.name} ({file_digest(end)})",
                },
            },
        }
    )
    return save_weights(model_b, out, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", type=Path, help="weights at alpha = 0")
    parser.add_argument("end", type=Path, help="weights at alpha = 1 (its metadata is kept)")
    parser.add_argument("out", type=Path, help="output weights file (.safetensors)")
    parser.add_argument("--alpha", type=float, default=0.5, help="share of END (0..1)")
    args = parser.parse_args()
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    print(f"wrote {args.out} ({average(args.start, args.end, args.out, args.alpha)})")


if __name__ == "__main__":
    main()

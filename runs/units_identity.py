"""Is the default run's output unchanged by the floor and the relative SURE variance floor?

``python runs/units_identity.py OUT.npz`` runs ``fb.denoise`` with every default
(``dtype="float32"``) on capture 1 of every fmd_dev type at every level and on every
eighth W2S channel-0 frame, and saves the outputs. Run it once with the code before the
change on ``PYTHONPATH`` (a ``git worktree`` of 3f5f4ee) and once after, then
``python runs/units_identity.py --compare OLD.npz NEW.npz``.
"""

import pathlib
import sys

import numpy as np

DATA = pathlib.Path("/work/shared/data")


def outputs(path: str) -> None:
    import imageio.v3 as iio
    import tifffile

    import fluoden_batch as fb

    print(fb.__file__, file=sys.stderr)
    out = {}
    for level in ["raw", "avg2", "avg4", "avg8", "avg16"]:
        for f in sorted((DATA / "fmd_dev" / level).glob("*_1.png")):
            out[f"{level}/{f.stem}"] = fb.denoise(iio.imread(f), dtype="float32")
    for f in sorted((DATA / "w2s_train" / "avg1").glob("*_0.tif"))[::8]:
        out[f"w2s/{f.stem}"] = fb.denoise(tifffile.imread(f), dtype="float32")
    np.savez_compressed(path, **out)


def compare(old: str, new: str) -> None:
    a, b = np.load(old), np.load(new)
    diffs = {k: float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a.files}
    print(f"{len(diffs)} images, largest absolute difference {max(diffs.values())}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        outputs(sys.argv[1])

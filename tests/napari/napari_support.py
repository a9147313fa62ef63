"""Helpers of the napari plugin tests: a real small fluoden output and an X display.

Not a conftest.py: the tests import ``conftest`` (tests/conftest.py) by name, and a second
conftest module would replace it in ``sys.modules``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import fluoden_batch as fb
from conftest import blobs, make_tiny_weights, write_image
from fluoden_batch.io.ngff import ImageMeta

WINDOW = {"start": 0, "end": 250, "min": 0, "max": 65535}
CHANNELS = [
    {"label": "DAPI", "color": "0000FF", "window": WINDOW},
    {"label": "GFP", "color": "00FF00", "window": WINDOW},
]


def noisy_planes(channels: int, size: int, seed: int = 0) -> np.ndarray:
    """``channels`` planes of Gaussian blobs with Gaussian noise (sigma 12), uint16."""
    rng = np.random.default_rng(seed)
    clean = np.stack([blobs(rng, size, count=10) for _ in range(channels)])
    return np.clip(np.rint(clean + rng.normal(0, 12, clean.shape)), 0, 65535).astype(np.uint16)


def make_output(folder: Path) -> Path:
    """A fluoden output of a 2-channel 96 x 96 image (pixel size 0.5 um, channel names
    and colours): 2 pyramid levels, cluster labels, metrics; a tiny random DnCNN."""
    meta = ImageMeta(
        axes="cyx",
        scale=[1.0, 0.5, 0.5],
        units={"y": "micrometer", "x": "micrometer"},
        omero={"channels": CHANNELS},
    )
    inp = write_image(folder / "in.ome.zarr", noisy_planes(2, 96), "cyx", (1, 48, 48), meta=meta)
    weights = make_tiny_weights(folder / "tiny.safetensors")
    out = folder / "out.ome.zarr"
    fb.denoise(inp, out, model=str(weights), save_labels=True, levels=2, block_min=32)
    return out


def x_display() -> bool:
    """Make an X display available to Qt before it starts: the one in ``DISPLAY``, else
    an Xvfb started here (and stopped at exit). False when there is neither.

    napari draws on an OpenGL canvas; Qt 6's ``offscreen`` platform has no OpenGL without
    an X server ("QOpenGLWidget is not supported on this platform"), so headless runs need
    Xvfb (napari's own CI does the same).
    """
    if os.environ.get("DISPLAY"):
        return _qt_starts()
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return False
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.terminate()
        return False
    atexit.register(proc.terminate)
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return _qt_starts()


def _qt_starts() -> bool:
    """Whether a QApplication starts on this display, tried in a subprocess: Qt aborts
    the process that fails to (e.g. Xvfb without the xcb libraries Qt's plugin needs)."""
    code = "from qtpy.QtWidgets import QApplication; QApplication([])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    return done.returncode == 0

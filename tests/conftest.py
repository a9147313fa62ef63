"""Shared fixtures: a tiny real DnCNN weights file, a real 2-worker LocalCluster, data paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hypothesis import settings

from fluoden_batch.io.ngff import ImageMeta, NGFFVersion, write_attrs
from fluoden_batch.models import Architecture, DnCNN, ModelMetadata, Normalisation, save_weights

# Hypothesis' 200 ms per-example deadline is a timing assertion: on a loaded 2-core CI
# machine it fails correct code (seen: 253 ms in test_tiles). Correctness only, no deadline.
settings.register_profile("fluoden", deadline=None)
settings.load_profile("fluoden")

# Help texts are checked phrase by phrase: render them wide, so that no phrase wraps
os.environ.setdefault("COLUMNS", "250")
os.environ.setdefault("TERMINAL_WIDTH", "250")

DATA = Path(os.environ.get("FLUODEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def blobs(
    rng: np.random.Generator,
    size: int,
    count: int = 5,
    radius: tuple[float, float] = (3.0, 7.0),
    background: float = 20.0,
) -> np.ndarray:
    """A clean test scene: ``count`` Gaussian blobs (peaks 60..160 grey levels, radii in
    ``radius`` pixels) on ``background``, float64 of shape (size, size), not clipped."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    image = np.full((size, size), background)
    for _ in range(count):
        (cy, cx), r = rng.uniform(0, size, 2), rng.uniform(*radius)
        image += rng.uniform(60, 160) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return image


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Non-trivial convolution weights (normal, ``std``; biases std 0.05), in eval mode: the
    last layer of an FFDNet starts at zero, and a reach test wants strong signals."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                torch.nn.init.normal_(m.bias, std=0.05)
    return model.eval()


def make_tiny_weights(
    path: Path,
    depth: int = 4,
    width: int = 8,
    seed: int = 0,
    normalisation: str = "percentile",
    bias: bool = True,
    dilations: tuple[int, ...] | None = None,
) -> Path:
    """A small DnCNN with random weights and non-trivial batch-norm statistics (``bias``
    False: a bias-free DnCNN, no batch norm; ``dilations``: one per layer)."""
    torch.manual_seed(seed)
    model = DnCNN(depth, width, batch_norm=bias, bias=bias, dilations=dilations)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    meta = ModelMetadata(
        name="tiny-test",
        architecture=Architecture(
            depth=depth, width=width, batch_norm=bias, bias=bias, dilations=dilations
        ),
        normalisation=Normalisation(method=normalisation),
    )
    save_weights(model, path, meta)
    return path


def make_tiny_unet_weights(path: Path, levels: int = 2, width: int = 4, seed: int = 0) -> Path:
    """A small U-Net with random weights (std 0.15: far from the identity, outputs of
    moderate size)."""
    from fluoden_batch.models.unet import UNet

    torch.manual_seed(seed)
    model = UNet(levels, width)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.15)
    save_weights(model, path, ModelMetadata(name="tiny-unet", architecture=Architecture.of(model)))
    return path


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (training tests: deterministic and fair to others)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def client():
    """A real LocalCluster with 2 single-threaded worker processes on 127.0.0.1."""
    from fluoden_batch.compute import dask_client

    with dask_client(workers=2, dashboard_address="127.0.0.1:0", memory_limit="4GiB") as c:
        yield c


def write_image(
    path: Path,
    data: np.ndarray,
    axes: str,
    chunks: tuple[int, ...],
    version: NGFFVersion = "0.5",
    meta: ImageMeta | None = None,
) -> Path:
    """Write ``data`` as a single-level OME-Zarr image."""
    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    array = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[:] = data
    meta = meta or ImageMeta(axes=axes, scale=[1.0] * len(axes))
    group.attrs.update(write_attrs(meta, version, "0"))
    return path


@pytest.fixture
def fmd_dir() -> Path:
    folder = DATA / "fmd_dev"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (set FLUODEN_DATA)")
    return folder


def start_cli_denoise(
    inp: Path, out: Path, weights: Path, workers: int, wait_markers: int, **popen: object
) -> subprocess.Popen:
    """Start ``fluoden denoise`` as a real subprocess; return once ``wait_markers`` blocks
    have their completion marker (or after 120 s)."""
    from fluoden_batch.io.store import MARKER_DIR

    cmd = [sys.executable, "-m", "fluoden_batch.cli", "denoise", str(inp), str(out),
           "--model", str(weights), "--block-min", "32", "--workers", str(workers),
           "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.Popen(cmd, **popen)
    markers = out / MARKER_DIR
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(markers.glob("*.json"))) < wait_markers:
        time.sleep(0.01)
    return proc


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def chunk_bytes(store: Path) -> dict[str, bytes]:
    """Every file of the level-0 array of the image ``store``, by relative path."""
    return file_bytes(store / "0")


_DIE_BEFORE_RENAME = """
import os, pathlib, sys
import numpy as np
import zarr
pathlib.Path.replace = lambda self, target: os._exit(9)  # killed between write and rename
array = zarr.open_array(sys.argv[1], mode="r+")
array[tuple(slice(0, n) for n in array.chunks)] = np.ones(array.chunks, array.dtype)
"""


def die_mid_chunk_write(array: Path) -> None:
    """Write the first chunk of the zarr array at ``array`` in a child process that dies
    after zarr has written the chunk's temporary file and before it renames it into place:
    what a worker killed mid-write (SIGKILL, ``scancel``) leaves in a store."""
    proc = subprocess.run([sys.executable, "-c", _DIE_BEFORE_RENAME, str(array)], check=False)
    assert proc.returncode == 9, "the child process did not reach zarr's rename"

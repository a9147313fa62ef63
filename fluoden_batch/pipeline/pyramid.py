"""The pyramid phase of a run: levels 1, 2, ... of every image in OUT, from level 0.

Once every level-0 block of a run is written, each pyramid level of the image and of its
label images is made from the level before it, one task per block of the level (whole
chunks of it, like the level-0 blocks), on the run's Dask client or in this process.
Each task writes its chunks, then a completion marker in
``OUT/.fluoden/pyramid/ARRAY/``; a rerun skips the marked blocks, so a run killed while
building the pyramid resumes and ends byte-identical to one that was not.

Level ``l`` is the mean of each 2x2 window of level ``l - 1`` in Y/X (cast back to the
image's dtype as level 0 is: integers rounded and clipped), or for labels the most
frequent value of the window (the first of equally frequent ones in C order). An odd
edge repeats its last row/column. ome-zarr-py's writers (``write_image``, ``Scaler``)
build a pyramid in one Dask graph from an array in memory or Dask: they cannot resume a
killed run block by block, hence these tasks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from distributed import Client

from fluoden_batch.io.ngff import multiscales_block
from fluoden_batch.io.store import PYRAMID_MARKER_DIR, OutputSpec
from fluoden_batch.pipeline.progress import ProgressHook, Reporter
from fluoden_batch.restore.block import cast_output
from fluoden_batch.restore.tiles import Block, BlockGrid, block_shape, plan_blocks

__all__ = ["PyramidJob", "downsample", "pyramid_block", "pyramid_levels", "pyramid_pending"]


@dataclass(frozen=True)
class PyramidJob:
    """One pyramid level of one image (picklable): read ``source`` (the level before),
    write ``target`` (its markers in its own folder); ``labels``: most frequent value
    instead of the mean."""

    source: OutputSpec
    target: OutputSpec
    labels: bool


def downsample(data: np.ndarray, labels: bool) -> np.ndarray:
    """Halve the last two axes of ``data`` (rounded up): the mean of each 2x2 window as
    float64, or for ``labels`` its most frequent value (ties: the first in C order)."""
    pad = [(0, 0)] * (data.ndim - 2) + [(0, data.shape[-2] % 2), (0, data.shape[-1] % 2)]
    data = np.pad(data, pad, mode="edge")
    windows = [data[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
    if not labels:
        return np.mean(windows, axis=0, dtype=np.float64)
    stacked = np.stack(windows)
    counts = (stacked[:, None] == stacked[None, :]).sum(axis=1)
    return np.take_along_axis(stacked, counts.argmax(axis=0)[None], axis=0)[0]


def pyramid_block(block: Block, job: PyramidJob) -> dict[str, Any]:
    """Make one block of a pyramid level from the level before it, write exactly its
    chunks, then its marker."""
    source = job.source.open()
    region = tuple(
        slice(2 * s.start, min(2 * s.stop, n)) if axis >= len(block.slices) - 2 else s
        for axis, (s, n) in enumerate(zip(block.slices, source.shape, strict=True))
    )
    small = downsample(np.asarray(source[region]), job.labels)
    target_dtype = np.dtype(job.target.open().dtype)
    job.target.write(block.slices, small if job.labels else cast_output(small, target_dtype))
    row = {"block": block.id, "array": job.target.array_path}
    job.target.write_marker(block.id, row)
    return row


@dataclass(frozen=True)
class Level:
    """One pyramid level to build: its job and its blocks."""

    job: PyramidJob
    blocks: BlockGrid


def _images(out: Path) -> list[tuple[str, list[str], bool]]:
    """The images of OUT and their label images: (group path, dataset paths, is labels)."""
    root = zarr.open_group(str(out), mode="r")
    found = multiscales_block(root.attrs.asdict())
    if found is None:
        return []
    images = [("", [d["path"] for d in found[0]["datasets"]], False)]
    if "labels" in root:
        attrs = root["labels"].attrs.asdict()
        for name in attrs.get("ome", attrs).get("labels", []):
            label = multiscales_block(root[f"labels/{name}"].attrs.asdict())
            if label is not None:
                paths = [d["path"] for d in label[0]["datasets"]]
                images.append((f"labels/{name}", paths, True))
    return images


def pyramid_levels(out: Path, owner: str, block_min: int) -> list[Level]:
    """Every pyramid level (level 1 up) of every image of OUT, in the order they are
    built, with its blocks: aligned to the level's chunks, widened to at least
    ``block_min`` pixels in Y/X (as the level-0 blocks are)."""
    levels = []
    for group, paths, labels in _images(out):
        for before, path in itertools.pairwise(paths):
            array_path = f"{group}/{path}" if group else path
            source = OutputSpec(str(out), f"{group}/{before}" if group else before, owner)
            markers = f"{PYRAMID_MARKER_DIR}/{array_path}"
            target = OutputSpec(str(out), array_path, owner, markers)
            array = zarr.open_array(str(out), path=array_path, mode="r")
            grid = array.shards or array.chunks  # a task writes whole shards
            blocks = plan_blocks(array.shape, block_shape(array.shape, grid, block_min))
            levels.append(Level(PyramidJob(source, target, labels), blocks))
    return levels


def _done(level: Level) -> set[str]:
    marker_dir = level.job.target.marker_dir
    return level.job.target.done_ids() if marker_dir.is_dir() else set()


def _shifted(on_block: ProgressHook, start: int, total: int) -> ProgressHook:
    """A level's ``on_block(done, level total)`` as the phase's ``(start + done, total)``."""
    return lambda done, _: on_block(start + done, total)


def pyramid_pending(out: Path, block_min: int) -> int:
    """The pixels of OUT's pyramid blocks that have no marker yet."""
    levels = pyramid_levels(out, "", block_min)
    return sum(lv.blocks.without(_done(lv)).pixels() for lv in levels)


def build_pyramid(
    client: Client | None,
    out: Path,
    owner: str,
    *,
    block_min: int,
    prefix: str,
    memory_limit: str,
    reporter: Reporter | None = None,
) -> dict[str, str]:
    """Build every pyramid level of OUT whose blocks are not all marked, level after
    level (each from the one before), on ``client`` or here when None; return
    ``{"ID of pyramid level ARRAY": reason}`` of the failed blocks (a failed level stops the
    levels above it in that image, as they would read it).

    ``reporter`` is told of the phase (``start("pyramid", ...)``, when OUT has pyramid
    levels) and of each block done, counted over all levels (blocks done before this run
    included).

    Raises
    ------
    OutputError
        The run lost OUT's lock.
    """
    from fluoden_batch.pipeline.run import run_blocks

    failed: dict[str, str] = {}
    broken: set[str] = set()  # images with a failed level
    levels = pyramid_levels(out, owner, block_min)
    total = sum(len(level.blocks) for level in levels)
    before = 0  # blocks of the levels already passed
    if reporter is not None and levels:
        done = sum(len(_done(level)) for level in levels)
        reporter.start("pyramid", total, done, 0.0)
    for level in levels:
        image = level.job.target.array_path.rpartition("/")[0]
        start, before = before, before + len(level.blocks)
        if image in broken:
            continue
        level.job.target.marker_dir.mkdir(parents=True, exist_ok=True)
        level.job.target.clean_temporaries()
        pending = level.blocks.without(_done(level))
        errors = run_blocks(
            client,
            pyramid_block,
            pending,
            level.job,
            prefix=f"{prefix}-pyramid-{level.job.target.array_path.replace('/', '-')}",
            total=len(level.blocks),
            memory_limit=memory_limit,
            on_block=None if reporter is None else _shifted(reporter.block, start, total),
        )
        if errors:
            broken.add(image)
            path = level.job.target.array_path
            failed |= {f"{i} of pyramid level {path}": why for i, why in errors.items()}
    return failed

"""Inputs of which almost every chunk is missing: refused (or a warning) before a run.

Zarr reads a chunk that is not stored as the fill value, without a word; a copy that
stopped early, or a store declared far larger than its data, would otherwise be "denoised"
in full. Used by the planning of ``denoise`` and ``segment``.
"""

from __future__ import annotations

import contextlib
import math

import zarr
from zarr.core.sync import sync

from fluoden_batch.errors import InputError
from fluoden_batch.io.source import ImageSource

__all__ = ["SPARSE_MIN_CHUNKS", "SPARSE_MISSING", "check_stored"]

# An input of which at least this fraction of its chunks (or shards) is not stored, and
# which has at least SPARSE_MIN_CHUNKS of them, is refused without --allow-sparse
SPARSE_MISSING = 0.99
SPARSE_MIN_CHUNKS = 1000
_METADATA_KEYS = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})


def check_stored(source: ImageSource, allow_sparse: bool, notes: list[str]) -> None:
    """Refuse an input of which almost all chunks are missing, unless ``allow_sparse``.

    Zarr reads a chunk that is not stored as the fill value, without a word. When at
    least :data:`SPARSE_MISSING` of the chunks (shards) are missing, the input is most
    likely an incomplete copy or declares a shape far larger than its data, and the run
    would spend nearly all its time denoising the fill value (a 10^6 x 10^6 store with
    one chunk: 239,121 blocks). So with at least :data:`SPARSE_MIN_CHUNKS` chunks it is
    refused; a smaller one (cheap to run) gets a warning in ``notes``. Counting stops at
    the first stored key past the threshold: a dense store is not listed in full.

    Raises
    ------
    InputError
        Almost all chunks missing, at least :data:`SPARSE_MIN_CHUNKS` of them, and not
        ``allow_sparse``.
    """
    array = source.array
    if source.spec.kind != "zarr" or not array.store_path.store.supports_listing:
        return
    grid = getattr(array, "shards", None) or array.chunks
    total = math.prod(-(-s // g) for s, g in zip(array.shape, grid, strict=True))
    limit = math.floor(total * (1 - SPARSE_MISSING))
    stored = _count_stored(array, limit)
    if stored > limit:
        return
    text = (
        f"{source.spec.describe()}: only {stored:,} of its {total:,} chunks are stored (Zarr "
        f"reads the {total - stored:,} missing ones as the fill value {array.fill_value})"
    )
    if total < SPARSE_MIN_CHUNKS:
        notes.append(f"warning: {text}")
        return
    if not allow_sparse:
        raise InputError(
            f"{text}: an incomplete copy, or a shape far larger than the data? Almost all of "
            "the run would denoise the fill value. Pass --allow-sparse to run it anyway"
        )
    notes.append(f"warning: {text}; running it as --allow-sparse asks")


def _count_stored(array: zarr.Array, limit: int) -> int:
    """Stored chunk (shard) objects of ``array``, counted up to ``limit + 1``."""
    store, root = array.store_path.store, array.store_path.path

    async def count() -> int:
        n = 0
        async with contextlib.aclosing(store.list_prefix(f"{root}/" if root else "")) as keys:
            async for key in keys:
                if key.rsplit("/", 1)[-1] not in _METADATA_KEYS:
                    n += 1
                    if n > limit:
                        break
        return n

    return sync(count())

"""The output store: safe placement, creation, provenance, and per-block completion markers.

Layout of ``OUT``::

    OUT/                 OME-Zarr image group (NGFF 0.5 or 0.4) with "fluoden" provenance
    OUT/0                the denoised level-0 array (same axes/scales as the input)
    OUT/1, OUT/2, ...    the pyramid levels (Y/X halved each), made from level 0 at the end
    OUT/labels/NAME/     label images of OUT (NGFF "labels"), each with the same levels
    OUT/.fluoden/done/   one JSON marker per finished block (its metrics row), written
                         atomically after the block's data; made last when OUT is created,
                         so an OUT without it is an unfinished creation
    OUT/.fluoden/pyramid/ARRAY/  the markers of the pyramid level ARRAY's finished blocks
    OUT/.fluoden/lock    the lock of the run writing OUT (:mod:`fluoden_batch.io.lock`)
    OUT/metrics.parquet  the per-block metrics table, written at the end of a run

zarr writes each chunk to ``KEY.<uuid hex>.partial`` beside it, then renames it into
place; a worker killed between the two (``scancel``, a node lost) leaves that file behind
(the chunk itself is rewritten by the block's retry). :func:`remove_partial_writes` clears
them at the end of every run (one walk of OUT).

:func:`open_output` is the one way in for a run: it locks OUT, then resumes it, or clears
and creates it; a creation that fails (disk full, read-only) leaves nothing behind, or an
empty directory where OUT existed before, and a rerun accepts either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.core.sync

from fluoden_batch.errors import OutputError
from fluoden_batch.io.lock import LOCK_DIR, LOCK_FILE, OutputLock, check_owner
from fluoden_batch.io.ngff import (
    ImageMeta,
    NGFFVersion,
    chunk_key_encoding,
    level_shapes,
    pyramid_attrs,
)
from fluoden_batch.io.source import IMAGE_SUFFIXES

PROVENANCE_KEY = "fluoden"
ZARR_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr LocalStore's temporary files
MARKER_DIR = ".fluoden/done"
PYRAMID_MARKER_DIR = ".fluoden/pyramid"
LEVEL0 = "0"


@dataclass(frozen=True)
class OutputSpec:
    """How tasks reopen the output array and where they leave markers (picklable).

    ``owner`` is the token of the run's lock on OUT: :meth:`write` and
    :meth:`write_marker` check it first (empty: no check). ``markers`` is the marker
    folder inside OUT (the level-0 blocks' by default; pyramid levels have their own).
    """

    path: str
    array_path: str = LEVEL0
    owner: str = ""
    markers: str = MARKER_DIR

    @property
    def marker_dir(self) -> Path:
        return Path(self.path) / self.markers

    def open(self) -> zarr.Array:
        """Open the output array (cached per process)."""
        return _open_out(self)

    def check_owner(self) -> None:
        """Raise :class:`OutputError` if the run no longer holds OUT's lock."""
        if self.owner:
            check_owner(self.path, self.owner)

    def write(self, region: tuple[slice, ...], data: Any) -> None:
        """Write ``data`` (whole chunks) into ``region`` of the array, if the run still
        holds OUT's lock."""
        self.check_owner()
        self.open()[region] = data

    def write_marker(self, block_id: str, row: dict[str, Any]) -> None:
        """Record a finished block atomically (temporary file, then rename), if the run
        still holds OUT's lock."""
        final = self.marker_dir / f"{block_id}.json"
        tmp = final.with_name(f".{block_id}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(row, sort_keys=True))
        try:
            self.check_owner()
        except OutputError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)

    def done_ids(self) -> set[str]:
        """Ids of the finished blocks (the marker names; nothing is read)."""
        with os.scandir(self.marker_dir) as entries:
            return {e.name[:-5] for e in entries if e.name.endswith(".json")}

    def done_rows(self) -> dict[str, dict[str, Any]]:
        """Metrics rows of every finished block, by block id."""
        rows = {}
        for f in sorted(self.marker_dir.glob("*.json")):
            rows[f.stem] = json.loads(f.read_text())
        return rows

    def clean_temporaries(self) -> int:
        """Remove marker temp files left by killed tasks; returns how many."""
        stray = list(self.marker_dir.glob(".*.tmp"))
        for f in stray:
            f.unlink(missing_ok=True)
        return len(stray)


def remove_partial_writes(out: Path) -> int:
    """Remove the temporary files that zarr's local store leaves in OUT when a writer dies
    between writing a chunk (or metadata document) and renaming it into place; returns
    how many.

    Only names of zarr's own form (``KEY.<32 hex digits>.partial``) are removed; one walk
    of OUT's directory tree.
    """
    removed = 0
    for folder, _, names in os.walk(out):
        for name in names:
            if ZARR_PARTIAL.search(name):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


@functools.lru_cache(maxsize=16)
def _open_out(spec: OutputSpec) -> zarr.Array:
    return zarr.open_array(spec.path, path=spec.array_path, mode="r+")


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_path(out: Path, inputs: list[Path], zarr_output: bool = True) -> Path:
    """Refuse an output that is, contains, or lies inside an input (symlinks resolved),
    and (``zarr_output``: an OME-Zarr folder is written) a new output named as an image
    file (``out.tif``, ``out.png``): a folder of that name is not what a user asking for
    one expects, and the tools that open such files cannot read it.

    Returns the resolved output path.
    """
    if zarr_output and not out.exists() and out.suffix.lower() in _FILE_SUFFIXES:
        raise OutputError(
            f"{out}: fluoden writes OME-Zarr images (folders), not {out.suffix} files: name "
            f"it {out.name[: -len(out.suffix)].removesuffix('.ome')}.ome.zarr, and `fluoden "
            "export` it to an OME-TIFF for tools that read TIFF"
        )
    out_r = out.expanduser().resolve()
    for inp in inputs:
        inp_r = inp.expanduser().resolve()
        if _within(out_r, inp_r):
            raise OutputError(f"output {out} is or lies inside the input {inp}; choose another OUT")
        if _within(inp_r, out_r):
            raise OutputError(f"input {inp} lies inside the output {out}; choose another OUT")
    return out_r


# names of image files: an output named so would be a folder posing as one
_FILE_SUFFIXES = (*IMAGE_SUFFIXES, ".czi", ".nd2")


def read_provenance(out: Path) -> dict[str, Any] | None:
    """The provenance of an existing fluoden output, or None if ``out`` is not one."""
    try:
        group = zarr.open_group(str(out), mode="r")
    except Exception:
        return None
    prov = group.attrs.get(PROVENANCE_KEY)
    return dict(prov) if isinstance(prov, dict) else None


def stored_parameter(out: Path, parameters: dict[str, Any], key: str, overwrite: bool) -> Any:
    """The provenance parameter ``key`` of an existing OUT written with the same
    ``parameters`` (every item equal), so that a rerun reuses what it fitted (centres,
    noise); None when there is no such OUT, it lacks ``key``, or ``overwrite`` asks for
    a fresh run."""
    if overwrite or not out.exists():
        return None
    old = (read_provenance(out) or {}).get("parameters") or {}
    if _changed(old, parameters, keys=parameters):
        return None
    return old.get(key)


def _changed(
    old: dict[str, Any], new: dict[str, Any], keys: Iterable[str] | None = None
) -> list[str]:
    """The parameters (of ``keys``, default all) that differ between ``old`` and ``new``.

    A model is its weights: with equal ``model_digest`` values the ``model`` string (a name
    or a path) may differ, so an output written with a default that was since renamed
    (``dncnn-fmd`` -> ``dncnn-fmd-v2``) resumes with ``--model`` naming the same file.
    """
    keys = set(old) | set(new) if keys is None else set(keys)
    same_weights = "model_digest" in new and old.get("model_digest") == new["model_digest"]
    return sorted(
        k for k in keys if old.get(k) != new.get(k) and not (k == "model" and same_weights)
    )


def create_levels(
    group: zarr.Group,
    meta: ImageMeta,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    version: NGFFVersion,
    levels: int,
    shards: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Create the empty arrays ``0``..``levels-1`` of an NGFF image in ``group`` (Y/X
    halved per level, the same chunks and ``shards`` (Zarr v3 only), cut to the level's
    shape) with the chunk key encoding ``version`` prescribes; return the image's group
    attributes (not yet set).

    ``write_empty_chunks`` is on so that every finished chunk exists on disk.
    """
    zarr_format = 3 if version == "0.5" else 2
    for level, level_shape in enumerate(level_shapes(shape, levels)):
        cut = tuple(min(c, s) for c, s in zip(chunks, level_shape, strict=True))
        group.create_array(
            str(level),
            shape=level_shape,
            chunks=cut,
            shards=None if shards is None else level_shards(shards, chunks, level_shape),
            dtype=dtype,
            fill_value=0,
            chunk_key_encoding=chunk_key_encoding(version),
            dimension_names=list(meta.axes) if zarr_format == 3 else None,
            config={"write_empty_chunks": True},
        )
    return pyramid_attrs(meta, version, levels)


def level_shards(
    shards: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The shards of a level of ``shape`` whose chunks are ``chunks`` cut to it: as given
    (a shard may be larger than the array), but one cut chunk along an axis where the
    level is smaller than a chunk (a shard must hold whole chunks)."""
    return tuple(h if c <= s else s for h, c, s in zip(shards, chunks, shape, strict=True))


def output_shards(
    shards: tuple[int, ...] | None,
    version: NGFFVersion,
    chunks: tuple[int, ...] | None,
    notes: list[str],
) -> tuple[int, ...] | None:
    """The input's ``shards`` where the output keeps them (NGFF 0.5 and the input's chunks:
    ``chunks`` None), else None, with a note saying why a sharded input's output is not
    sharded."""
    if shards is None:
        return None
    if version == "0.4" or chunks is not None:
        why = "NGFF 0.4 (Zarr v2) has none" if version == "0.4" else "--chunks was given"
        notes.append(f"the input's shards {shards} are not kept ({why})")
        return None
    return shards


def create_output(
    out: Path,
    meta: ImageMeta,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    version: NGFFVersion,
    provenance: dict[str, Any],
    owner: str = "",
    levels: int = 1,
    shards: tuple[int, ...] | None = None,
) -> OutputSpec:
    """Create the output image group and its empty arrays (level 0 and ``levels - 1``
    pyramid levels; ``shards``: Zarr v3 shards of whole chunks, each written by one task)
    in the directory ``out`` (which may exist, holding at most OUT's lock); the spec (of
    level 0) carries ``owner``.

    The arrays are created before any task runs, so tasks only write whole chunks into an
    existing array (never ``da.to_zarr`` with unaligned chunks). The marker folder, which
    marks the creation finished, is made by :func:`open_output`.
    """
    zarr_format = 3 if version == "0.5" else 2
    group = zarr.create_group(str(out), zarr_format=zarr_format)  # refuses an existing one
    attrs = create_levels(group, meta, shape, chunks, dtype, version, levels, shards)
    attrs[PROVENANCE_KEY] = provenance
    group.attrs.update(attrs)
    return OutputSpec(str(out), owner=owner)


@contextlib.contextmanager
def writing_summary(out: Path) -> Iterator[None]:
    """Turn a failed write of a run's metrics or summary into ``out`` (disk full, say) into
    one clear :class:`OutputError`: the finished blocks are kept, a rerun writes it."""
    try:
        yield
    except OSError as exc:
        raise OutputError(
            f"cannot write the metrics and summary into {out}: {exc.strerror or exc}; the "
            "finished blocks are kept: run the same command again once that is fixed"
        ) from exc


def update_provenance(out: Path, **fields: Any) -> None:
    """Merge ``fields`` into the output's provenance attributes."""
    group = zarr.open_group(str(out), mode="r+")
    prov = dict(group.attrs.get(PROVENANCE_KEY, {}))
    prov.update(fields)
    group.attrs[PROVENANCE_KEY] = prov


def refuse_foreign(out: Path) -> None:
    """Raise :class:`OutputError` if ``out`` exists and is neither a fluoden output (not
    even an unfinished one) nor an empty directory: it is never written into or deleted."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory; choose another OUT")
    ours = read_provenance(out) is not None or (out / LOCK_DIR).is_dir()
    if not ours and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a fluoden output; choose another OUT")


def resume_or_clear(out: Path, params: dict[str, Any], overwrite: bool) -> bool:
    """Decide what to do with ``out``, locked by this run, before a run with ``params``.

    Returns True when ``out`` holds a run with the same parameters (resume it). Returns
    False when there is nothing there yet, or only an unfinished creation (cleared), or
    when ``overwrite`` cleared a previous fluoden output (start afresh).

    Raises
    ------
    OutputError
        ``out`` is not a fluoden output (never deleted), or it holds a run with other
        parameters and ``overwrite`` is off (the changed parameters are named).
    """
    refuse_foreign(out)
    prov = read_provenance(out)
    if prov is None or not (out / MARKER_DIR).is_dir():  # empty, or creation unfinished
        clear_output(out)
        return False
    old = prov.get("parameters") or {}
    changed = _changed(old, params)
    if not changed and not overwrite:
        return True
    if not overwrite:
        raise OutputError(
            f"{out} holds a run with other parameters ({', '.join(changed)}); "
            "pass --overwrite to replace it or choose another OUT"
        )
    clear_output(out)
    return False


def clear_output(out: Path) -> None:
    """Delete everything in ``out`` but its lock (a previous or unfinished fluoden output,
    for ``--overwrite`` or a fresh creation; never called on a foreign directory)."""
    for entry in out.iterdir():
        if entry.name == LOCK_DIR and entry.is_dir():
            for inner in entry.iterdir():
                if inner.name != LOCK_FILE:
                    _remove(inner)
        else:
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def open_output(
    out: Path,
    params: dict[str, Any],
    overwrite: bool,
    create: Callable[[str], OutputSpec],
) -> tuple[OutputSpec, bool, OutputLock]:
    """Lock ``out``, then resume it or create it afresh with ``create(token)``.

    Returns the output's spec (carrying the lock's token), whether it was resumed, and
    the lock, which the caller releases when the run ends.

    Raises
    ------
    OutputError
        ``out`` is foreign, in use by another run, holds other parameters (without
        ``overwrite``), or cannot be written (no space, read-only, permissions). A failed
        creation leaves nothing where ``out`` did not exist, else an empty directory.
    """
    refuse_foreign(out)
    existed = out.exists()
    try:
        lock = OutputLock.acquire(out)
    except OutputError:
        if not existed:  # a failed first write: remove the folders made for the lock
            with contextlib.suppress(OSError):
                (out / LOCK_DIR).rmdir()
                out.rmdir()
        raise
    creating = False
    try:
        if resume_or_clear(out, params, overwrite):
            return OutputSpec(str(out), owner=lock.token), True, lock
        creating = True
        try:
            spec = create(lock.token)
            spec.marker_dir.mkdir(parents=True)
        except OSError as exc:
            kept = "nothing was kept" if not existed else f"{out} was left empty"
            raise OutputError(
                f"cannot create {out}: {exc.strerror or exc}; {kept}: run the same command "
                "again once that is fixed"
            ) from exc
        return spec, False, lock
    except BaseException:
        if creating:
            _undo_creation(out, existed)
        lock.release()
        raise


def _undo_creation(out: Path, existed: bool) -> None:
    """Remove what an unfinished creation left, the lock included, and ``out`` itself if
    it did not exist before (best effort: a rerun clears whatever is left)."""
    _settle_zarr_writes()
    with contextlib.suppress(OSError):
        clear_output(out)
        (out / LOCK_DIR / LOCK_FILE).unlink()
        (out / LOCK_DIR).rmdir()
        if not existed:
            out.rmdir()


def _settle_zarr_writes(timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) for the writes zarr still has in flight.

    zarr writes a node's metadata and its parents' concurrently; when one write fails (no
    space left), zarr raises at once while the others go on, and one landing after the
    cleanup would bring back a file the cleanup had removed.
    """

    async def others() -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    zarr.core.sync.sync(others())

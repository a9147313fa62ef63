"""The output store: safe placement, creation, provenance, and per-block completion markers.

Layout of ``OUT``::

    OUT/                 OME-Zarr image group (NGFF 0.5 or 0.4) with "fluoden" provenance
    OUT/0                the denoised level-0 array (same axes/scales as the input)
    OUT/.fluoden/done/   one JSON marker per finished block (its metrics row), written
                         atomically after the block's data
    OUT/metrics.parquet  the per-block metrics table, written at the end of a run
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fluoden_batch.errors import OutputError
from fluoden_batch.io.ngff import ImageMeta, NGFFVersion, write_attrs

PROVENANCE_KEY = "fluoden"
MARKER_DIR = ".fluoden/done"
LEVEL0 = "0"


@dataclass(frozen=True)
class OutputSpec:
    """How tasks reopen the output array and where they leave markers (picklable)."""

    path: str
    array_path: str = LEVEL0

    @property
    def marker_dir(self) -> Path:
        return Path(self.path) / MARKER_DIR

    def open(self) -> zarr.Array:
        """Open the output array for writing (cached per process)."""
        return _open_out(self)

    def write_marker(self, block_id: str, row: dict[str, Any]) -> None:
        """Record a finished block atomically (temporary file, then rename)."""
        final = self.marker_dir / f"{block_id}.json"
        tmp = final.with_name(f".{block_id}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(row, sort_keys=True))
        os.replace(tmp, final)

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


@functools.lru_cache(maxsize=16)
def _open_out(spec: OutputSpec) -> zarr.Array:
    return zarr.open_array(spec.path, path=spec.array_path, mode="r+")


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_path(out: Path, inputs: list[Path]) -> Path:
    """Refuse an output that is, contains, or lies inside an input (symlinks resolved).

    Returns the resolved output path.
    """
    out_r = out.expanduser().resolve()
    for inp in inputs:
        inp_r = inp.expanduser().resolve()
        if _within(out_r, inp_r):
            raise OutputError(f"output {out} is or lies inside the input {inp}; choose another OUT")
        if _within(inp_r, out_r):
            raise OutputError(f"input {inp} lies inside the output {out}; choose another OUT")
    return out_r


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
    if any(old.get(k) != v for k, v in parameters.items()):
        return None
    return old.get(key)


def create_output(
    out: Path,
    meta: ImageMeta,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype,
    version: NGFFVersion,
    provenance: dict[str, Any],
) -> OutputSpec:
    """Create the output image group and its empty level-0 array.

    The array is created before any task runs, so tasks only write whole chunks into an
    existing array (never ``da.to_zarr`` with unaligned chunks). ``write_empty_chunks`` is
    on so that every finished chunk exists on disk.
    """
    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(str(out), mode="w-", zarr_format=zarr_format)
    group.create_array(
        LEVEL0,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        dimension_names=list(meta.axes) if zarr_format == 3 else None,
        config={"write_empty_chunks": True},
    )
    attrs = write_attrs(meta, version, LEVEL0)
    attrs[PROVENANCE_KEY] = provenance
    group.attrs.update(attrs)
    spec = OutputSpec(str(out))
    spec.marker_dir.mkdir(parents=True, exist_ok=True)
    return spec


def update_provenance(out: Path, **fields: Any) -> None:
    """Merge ``fields`` into the output's provenance attributes."""
    group = zarr.open_group(str(out), mode="r+")
    prov = dict(group.attrs.get(PROVENANCE_KEY, {}))
    prov.update(fields)
    group.attrs[PROVENANCE_KEY] = prov


def resume_or_clear(out: Path, params: dict[str, Any], overwrite: bool) -> bool:
    """Decide what to do with an existing ``out`` before a run with ``params``.

    Returns True when ``out`` holds a run with the same parameters (resume it). Returns
    False when there is nothing there, or when ``overwrite`` removed a previous fluoden
    output (start afresh).

    Raises
    ------
    OutputError
        ``out`` exists but is not a fluoden output (never deleted), or it holds a run with
        other parameters and ``overwrite`` is off (the changed parameters are named).
    """
    if not out.exists():
        return False
    prov = read_provenance(out)
    if prov is None:
        raise OutputError(f"{out} exists and is not a fluoden output; choose another OUT")
    if prov.get("parameters") == params and not overwrite:
        return True
    if not overwrite:
        old = prov.get("parameters", {})
        changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        raise OutputError(
            f"{out} holds a run with other parameters ({', '.join(changed)}); "
            "pass --overwrite to replace it or choose another OUT"
        )
    remove_output(out)
    return False


def remove_output(out: Path) -> None:
    """Delete a previous fluoden output (only ever called on one, for ``--overwrite``)."""
    if read_provenance(out) is None:
        raise OutputError(f"{out} exists and was not written by fluoden; refusing to delete it")
    shutil.rmtree(out)

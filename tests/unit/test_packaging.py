"""Weights files readable by a group, and the wheel shipping configs and deploy profiles."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import make_tiny_weights
from fluoden_batch.models import load_model


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_weights_get_the_mode_the_umask_allows(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")  # replaced whole, not rewritten in place
    old = os.umask(umask)
    try:
        make_tiny_weights(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_model(path).metadata.name == "tiny-test"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left

"""Weights files readable by a group, and the wheel shipping configs and deploy profiles."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_tiny_weights
from fluoden_batch.cli import app
from fluoden_batch.compute import ProfileError, SlurmProfile, load_profile
from fluoden_batch.models import load_model
from fluoden_batch.resources import describe, shipped_configs, shipped_profiles


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


def test_shipped_profiles_load_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no deploy/ here: the names resolve to the shipped files
    assert isinstance(load_profile("slurm/cpu"), SlurmProfile)
    assert load_profile("deploy/local.yaml") == load_profile("local") == load_profile("local.yaml")
    (tmp_path / "local").write_text(
        "cluster: slurm\nqueue: q\ncores: 2\nmemory: 4GiB\ninterface: eth0\n"
    )
    assert isinstance(load_profile("local"), SlurmProfile)  # an existing file wins
    with pytest.raises(ProfileError, match=r"nope: No such file .*shipped profiles: .*slurm/cpu"):
        load_profile("nope")


def test_profiles_command_lists_and_prints_the_shipped_files() -> None:
    listing = CliRunner().invoke(app, ["profiles"])
    assert listing.exit_code == 0, listing.output
    for name, path in [*shipped_profiles().items(), *shipped_configs().items()]:
        assert re.search(
            rf"^  {re.escape(name)} +{re.escape(describe(path))}$", listing.output, re.M
        )
    assert {"local", "slurm/cpu", "slurm/gpu", "gpu/local-cuda"} <= set(shipped_profiles())
    assert {"noise2noise_fmd", "supervised_w2s"} <= set(shipped_configs())
    # each a whole sentence (a first line cut mid-sentence read "... one frame (avg1) -> the")
    described = [describe(p) for p in [*shipped_profiles().values(), *shipped_configs().values()]]
    assert all(text.endswith(".") for text in described), described
    shown = CliRunner().invoke(app, ["profiles", "slurm/gpu"])
    assert shown.output == shipped_profiles()["slurm/gpu"].read_text()
    unknown = CliRunner().invoke(app, ["profiles", "nope"])
    assert unknown.exit_code == 2 and "no shipped profile or config named 'nope'" in unknown.output


def test_wheel_ships_weights_configs_and_profiles(tmp_path: Path) -> None:
    """Build the wheel from a copy of the checkout's files (setuptools builds in the
    source tree; no build isolation: no download), unpack it, and ask the unpacked
    package, away from the checkout, where its profiles and configs are."""
    root = Path(__file__).resolve().parents[2]
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    source = tmp_path / "source"
    for name in filter(None, listed.split("\0")):
        if (root / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("fluoden_batch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for repo_file in [*root.glob("configs/*"), *root.glob("deploy/**/*")]:
        if repo_file.is_file():
            rel = repo_file.relative_to(root).as_posix()
            assert f"fluoden_batch/_shipped/{rel}" in names
    assert "fluoden_batch/models/weights/dncnn-fmd.safetensors" in names
    code = (
        "import json, fluoden_batch.resources as r; "
        "print(json.dumps([r.__file__, str(r.shipped_profiles()['slurm/cpu']), "
        "str(r.shipped_configs()['noise2noise_fmd'])]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    module, profile, config = (Path(p) for p in json.loads(done.stdout))
    site = tmp_path / "site" / "fluoden_batch"
    assert module.parent == site  # the unpacked wheel, not the checkout
    assert profile == site / "_shipped" / "deploy" / "slurm" / "cpu.yaml"
    assert config == site / "_shipped" / "configs" / "noise2noise_fmd.yaml"


def test_training_checkpoints_get_the_mode_the_umask_allows(tmp_path: Path) -> None:
    from fluoden_batch.models import DnCNN
    from fluoden_batch.train.checkpoint import save_checkpoint

    model = DnCNN(depth=3, width=4)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(
            tmp_path,
            step=1,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            rng=np.random.default_rng(0),
            state={},
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

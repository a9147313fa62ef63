"""The quick benchmark suite (``make bench-quick``) runs without the real data: real-data
parts are skipped with a message, every experiment writes its report and plots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_suite(out: Path, only: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLUODEN_DATA": str(out / "no-data-here"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "benchmarks/run_suite.py", "--quick", "--only", only]
    return subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _check(out: Path, result: subprocess.CompletedProcess, names: list[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    index = (out / "suite.md").read_text()
    for name in names:
        report = (out / f"{name}.md").read_text()
        assert "Machine:" in report and "Command:" in report, name
        assert f"| {name} |" in index and "FAILED" not in index
        assert list(out.glob(f"{name}*.png")), f"{name}: no plot"
    return index


def test_quick_suite_without_data_skips_real_data_with_a_message(tmp_path: Path) -> None:
    names = ["exp1_clustering", "exp2_clusters_k", "exp4_robustness", "exp5_protocols"]
    result = _run_suite(tmp_path, "1,2,4,5")
    index = _check(tmp_path, result, names)
    assert "skipped parts" in index and "no-data-here" in result.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_quick_training_and_scaling_experiments_run(tmp_path: Path) -> None:
    result = _run_suite(tmp_path, "3,6")
    _check(tmp_path, result, ["exp3_whole_vs_masked", "exp6_scaling"])

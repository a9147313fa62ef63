"""`fluoden train CONFIG`: trains from a TOML/YAML file with flags overriding it, resumes,
writes loadable weights, and names the field of a bad config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import typer
from typer.testing import CliRunner

from fluoden_batch.cli.train import train_command
from fluoden_batch.models import load_model, load_trainable
from fluoden_batch.train import TrainConfigError, load_train_config

SIZE = 40
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The main app's shape: a group with other commands, `train` mounted as a command."""
    main = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @main.command()
    def info() -> None:
        """A sibling command."""

    main.command(name="train")(train_command)
    return main


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with clean/cell_<k>.tif (uint8 blobs) and a synthetic-mode run.toml that
    names them by paths relative to itself."""
    root = tmp_path_factory.mktemp("cli")
    (root / "clean").mkdir()
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for k in range(3):
        image = np.full((SIZE, SIZE), 15.0)
        for _ in range(4):
            (cy, cx), r = rng.uniform(0, SIZE, 2), rng.uniform(3, 7)
            image += rng.uniform(60, 170) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        tifffile.imwrite(root / "clean" / f"cell_{k}.tif", np.clip(image, 0, 255).astype(np.uint8))
    (root / "run.toml").write_text(
        """
name = "tiny-cli"
mode = "synthetic"
output = "out/tiny.safetensors"
clean_dir = "clean"
clean_glob = "cell_*.tif"
val_keys = ["2"]
a_range = [1.0, 4.0]
b_range = [0.0, 20.0]
depth = 3
width = 8
steps = 50
batch_size = 4
patch_size = 24
device = "cpu"
val_every = 2
checkpoint_dir = "ckpt"
checkpoint_every = 2
"""
    )
    return root


def test_cli_trains_resumes_and_writes_loadable_weights(
    app: typer.Typer, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths in the file follow the file, not the cwd
    runner = CliRunner()
    args = ["train", str(project / "run.toml"), "--steps", "4", "--no-progress"]
    stopped = runner.invoke(app, [*args, "--stop-at", "2"])
    assert stopped.exit_code == 0, stopped.output
    assert "stopped at step 2 of 4" in stopped.output
    assert not (project / "out" / "tiny.safetensors").exists()
    assert any((project / "ckpt").glob("ckpt_*.safetensors"))

    done = runner.invoke(app, [*args, "--seed", "0"])
    assert done.exit_code == 0, done.output
    weights = project / "out" / "tiny.safetensors"
    _, meta = load_trainable(weights)
    assert meta.name == "tiny-cli" and meta.training["steps"] == 4
    assert meta.architecture.depth == 3 and meta.architecture.width == 8
    assert len(load_model(weights).module.body) > 0
    assert "tiny-cli" in done.output and "validation PSNR" in done.output

    again = runner.invoke(app, [*args, "--no-resume", "--lr", "0.01", "--check"])
    assert again.exit_code == 0, again.output
    shown = json.loads(again.output)
    assert shown["lr"] == 0.01 and shown["resume"] is False and shown["steps"] == 4
    assert shown["clean_dir"] == str(project / "clean")


def test_yaml_config_and_structured_flags(app: typer.Typer, project: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"mode: self_supervised\noutput: n2v.safetensors\nnoisy_dir: {project / 'clean'}\n"
        "noisy_glob: 'cell_*.tif'\nmask_fraction: 0.01\n"
    )
    flags = ["--depth", "5", "--noisy-glob", "*.png", "--a-range", "[0.5, 2]"]
    result = CliRunner().invoke(app, ["train", str(config), "--check", *flags])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["mode"] == "self_supervised" and shown["depth"] == 5
    assert shown["noisy_glob"] == "*.png"  # a text field: never read as YAML (an alias)
    assert shown["a_range"] == [0.5, 2.0]
    assert shown["output"] == str(tmp_path / "n2v.safetensors")


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        ("epochs = 3", [], "field 'epochs': unknown option"),
        ("step = 3", [], "did you mean 'steps'?"),
        ("mask_fraction = 0.5", [], "field 'mask_fraction'"),
        ("", ["--a-range", "[1, 2, 3]"], "field 'a_range'"),
        ("", ["--steps", "0"], "field 'steps'"),
        ("", ["--device", "gpu"], "field 'device': device must be auto, cpu"),
        ("", ["--architecture", "ffdnet", "--mode", "masked"], "architecture 'ffdnet'"),
        ('mode = "supervised"', [], "mode 'supervised' needs noisy_dir"),
    ],
)
def test_bad_config_names_the_field(
    app: typer.Typer, tmp_path: Path, text: str, flags: list[str], expected: str
) -> None:
    fields = {
        "output": '"m.safetensors"',
        "clean_dir": '"."',
        "mode": '"synthetic"',
        "a_range": "[1.0, 2.0]",
        "b_range": "[0.0, 1.0]",
    }
    if text:
        key, value = (part.strip() for part in text.split("="))
        fields[key] = value
    config = tmp_path / "bad.toml"
    config.write_text("".join(f"{k} = {v}\n" for k, v in fields.items()))
    result = CliRunner().invoke(app, ["train", str(config), "--check", *flags])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and expected in result.output, result.output
    assert "Traceback" not in result.output


def test_a_shipped_config_named_without_its_file_says_how_to_copy_it(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no file of that name here
    result = CliRunner().invoke(app, ["train", "supervised_w2s", "--check"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "'supervised_w2s' is a shipped config: `fluoden profiles supervised_w2s >" in text
    assert "supervised_w2s.toml` copies it" in text


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"missing\.toml"):
        load_train_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = = 3")
    with pytest.raises(TrainConfigError, match=r"broken\.toml"):
        load_train_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- steps\n")
    with pytest.raises(TrainConfigError, match="expected a table"):
        load_train_config(listed)
    with pytest.raises(TrainConfigError, match=r"\.toml, \.yaml or \.yml"):
        load_train_config(tmp_path / "run.json")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.*ml")))
def test_example_configs_are_valid(name: str) -> None:
    config = load_train_config(CONFIGS / name)
    data = config.noisy_dir or config.clean_dir
    assert config.output.is_absolute() and data is not None
    shared = (CONFIGS.parent.parent / "shared" / "data").resolve()
    assert data.resolve().is_relative_to(shared)  # relative to the file, not the cwd

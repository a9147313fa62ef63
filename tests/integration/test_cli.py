"""The CLI through typer's CliRunner (in-process) and as a real subprocess."""

from __future__ import annotations

import re

import numpy as np
import pytest
import typer
import zarr
from typer.testing import CliRunner

from conftest import write_image
from fluoden_batch.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ([], "Denoise large fluorescence"),
        (["denoise", "--help"], "resumes"),
        (["denoise", "--help"], "(default: 384)"),  # not swallowed as rich markup
        (["demo", "--help"], "synthetic"),
        (["ingest", "--help"], "OME-Zarr"),
        (["models", "--help"], "shipped"),
    ],
)
def test_help_texts(args, phrase):
    result = runner.invoke(app, [*args, "--help"] if args else ["--help"])
    assert result.exit_code == 0
    assert phrase in " ".join(result.output.split())


def _commands(command, name="fluoden"):
    yield name, command
    for sub_name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{name} {sub_name}")


def test_help_paragraphs_are_left_to_the_terminal_to_wrap():
    """A docstring's line breaks would reach --help as they are (typer 0.29), breaking
    every line twice on a terminal narrower than the source: each command's help has its
    paragraphs on one line each."""
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"fluoden denoise", "fluoden segment", "fluoden models export"} <= commands.keys()
    for name, command in commands.items():
        paragraphs = (command.help or "").split("\n\n")
        assert all("\n" not in p or p.startswith("\b\nExamples:") for p in paragraphs), name
    narrow = runner.invoke(app, ["denoise", "--help"], terminal_width=80).output
    assert "Work is split into blocks aligned to the output chunks; each task reads its" in narrow


@pytest.mark.parametrize(
    "command", ["denoise", "segment", "ingest", "export", "train", "estimate-noise"]
)
def test_help_examples_are_printed_line_by_line(command):
    """Each run command's help ends its description with examples, one command per line
    (click's verbatim paragraph), each within an 80-column terminal."""
    text = runner.invoke(app, [command, "--help"], terminal_width=80).output
    block = text.split("  Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(block) >= 2 and all(line.startswith("    ") for line in block)
    assert all(line.split()[0] in ("fluoden", "napari") for line in block)
    assert max(len(line) for line in block) <= 80


def test_denoise_help_leads_with_the_model_and_groups_the_rest():
    """The options come in sections, the command's own first (--model leading), then one
    per option group (the group's help_panel), in the order the config inherits them."""
    text = runner.invoke(app, ["denoise", "--help"], terminal_width=200).output
    sections = [line[:-1] for line in text.splitlines() if line.endswith(":") and line[0] != " "]
    assert sections == [
        "Arguments",
        "Options",
        "Fit to the data (--adapt)",
        "Output pyramid",
        "Input",
        "Where it runs (Dask)",
    ]
    options = text.split("\nOptions:\n", 1)[1].splitlines()  # past the command's description
    flags = [m[2] for line in options if (m := re.match(r"  (-\w, )?(--[\w-]+)", line))]
    assert flags[:2] == ["--model", "--protocol"]
    assert flags.index("--adapt-seed") < flags.index("--levels") < flags.index("--allow-sparse")
    assert flags.index("--allow-sparse") < flags.index("--workers")


def test_help_descriptions_have_room_on_an_80_column_terminal():
    """Each option's description starts within the first 36 columns at 80 (typer's rich
    table gave it 16 of them: ``denoise --help`` ran to 401 lines), and no line is wider
    than the terminal."""
    text = runner.invoke(app, ["denoise", "--help"], terminal_width=80).output
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    protocol = next(i for i, line in enumerate(lines) if line.startswith("  --protocol"))
    description = lines[protocol + 1]  # the choices push it to the next line
    assert description.startswith(" " * 20) and len(description) - len(description.lstrip()) <= 36
    assert len(description) >= 68  # filled to the terminal's edge, not a narrow column
    assert len(lines) < 250


@pytest.mark.parametrize(
    ("description", "shown"),
    [
        ("local worker processes", "Local worker processes."),
        ("threads (and torch threads) per worker", "Threads (and torch threads) per worker."),
        ("sure: after the model", "sure: after the model."),  # a value's name as written
        ("dncnn only: batch norm", "dncnn only: batch norm."),
        ("auto | cpu | cuda", "auto | cpu | cuda."),
        ("fp32, or bf16", "fp32, or bf16."),
        ("self_supervised: share", "self_supervised: share."),
        ("auto (cuML when it imports)", "auto (cuML when it imports)."),  # one of the choices
    ],
)
def test_help_capitalises_prose_not_names(description, shown):
    from typing import Literal

    from pydantic.fields import FieldInfo

    from fluoden_batch.cli.options import _help

    field = FieldInfo(annotation=Literal["auto", "cpu"], description=description)
    assert _help(field) == shown


def test_models_list_marks_the_defaults_with_cost_and_halo():
    from fluoden_batch.config import DEFAULT_MODEL
    from fluoden_batch.models.weights import load_model

    result = runner.invoke(app, ["models", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    default = load_model(DEFAULT_MODEL).module
    row = [cell.strip() for cell in rows[f"{DEFAULT_MODEL} (default)"].split("│")]
    assert row[3:5] == [f"{default.flops_per_pixel() / 1e6:.3f}", str(default.receptive_radius)]
    assert "dncnn-small-masked (masked default)" in rows
    assert "description" not in result.output
    long = runner.invoke(app, ["models", "list", "--long"], terminal_width=400)
    assert "description" in long.output and "trained on FMD pairs" in long.output


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["denoise", str(tmp_path / "nope.zarr"), str(tmp_path / "o.zarr")])
    assert result.exit_code == 2
    assert "nope.zarr: no such file or directory" in " ".join(result.output.split())
    assert not (tmp_path / "o.zarr").exists()


def test_a_file_of_another_format_is_named_as_such(tmp_path):
    """A PNG (FMD's own format) was opened as a Zarr store: "No group found in store"."""
    import skimage.io

    png = tmp_path / "cells.png"
    skimage.io.imsave(png, np.zeros((32, 32), np.uint8), check_contrast=False)
    for command in (["denoise", str(png), str(tmp_path / "o.zarr")], ["info", str(png)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        text = " ".join(result.output.split())
        assert f"{png}: a .png file is not an image fluoden reads" in text
        assert "convert it with `fluoden ingest FILE... OUT.ome.zarr`" in text
    assert not (tmp_path / "o.zarr").exists()


def test_a_vendor_file_and_a_corrupt_png_are_one_line(tmp_path):
    """A microscope vendor's file (CZI, ND2, LIF) is not sent to `ingest`, which cannot
    read it either, but to a converter; a file no codec decodes was refused with every
    codec's reason, 22 lines: now the first."""
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE")
    (tmp_path / "bad.png").write_bytes(b"xx")
    for command in ("denoise", "ingest"):
        result = runner.invoke(app, [command, str(tmp_path / "scan.czi"), str(tmp_path / "o")])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert "convert it to OME-TIFF or OME-Zarr first" in result.output
        assert "fluoden ingest FILE" not in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "bad.png"), str(tmp_path / "o")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    said = "bad.png: not a readable image (ValueError: PNG_DECODE: not a PNG image)"
    assert said in result.output
    assert not (tmp_path / "o").exists()


@pytest.fixture
def small_input(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    return write_image(tmp_path / "in.zarr", data, "yx", (32, 32))


@pytest.mark.parametrize("where", ["same", "inside", "symlink"])
def test_output_may_not_be_or_lie_inside_the_input(small_input, tiny_weights, where):
    if where == "same":
        out = small_input
    elif where == "inside":
        out = small_input / "denoised"
    else:
        out = small_input.parent / "link.zarr"
        out.symlink_to(small_input)
    before = sorted(p.name for p in small_input.rglob("*"))
    result = runner.invoke(
        app, ["denoise", str(small_input), str(out), "--model", str(tiny_weights)]
    )
    assert result.exit_code == 2
    assert "inside the input" in " ".join(result.output.split())
    assert sorted(p.name for p in small_input.rglob("*")) == before


@pytest.mark.distributed
def test_rerun_resumes_and_changed_parameters_are_refused(small_input, tiny_weights, tmp_path):
    out = tmp_path / "out.zarr"
    base = [
        "denoise",
        str(small_input),
        str(out),
        "--model",
        str(tiny_weights),
        "--block-min",
        "32",
        "--workers",
        "1",
        "--dashboard-address",
        "127.0.0.1:0",
    ]
    first = runner.invoke(app, base)
    assert first.exit_code == 0, first.output
    assert "blocks finished" in first.output
    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "4 already done" in " ".join(again.output.split())
    changed = runner.invoke(app, [*base, "--dtype", "float32"])
    assert changed.exit_code == 2 and "--overwrite" in changed.output
    replaced = runner.invoke(app, [*base, "--dtype", "float32", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert zarr.open_array(str(out), path="0").dtype == np.float32


def test_existing_foreign_output_is_never_deleted(small_input, tiny_weights, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    result = runner.invoke(
        app, ["denoise", str(small_input), str(out), "--model", str(tiny_weights), "--overwrite"]
    )
    assert result.exit_code == 2 and "not a fluoden output" in result.output
    assert (out / "thesis.txt").read_text() == "do not delete"


def test_bad_config_values_are_named(small_input, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("tile = -3\nunknown_key = 1\n")
    result = runner.invoke(
        app, ["denoise", str(small_input), str(tmp_path / "o.zarr"), "--config", str(cfg)]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "tile" in text and "unknown_key" in text


@pytest.mark.distributed
def test_info_describes_denoised_and_label_outputs(small_input, tiny_weights, tmp_path):
    out = tmp_path / "den.zarr"
    args = ["--workers", "1", "--dashboard-address", "127.0.0.1:0"]
    assert runner.invoke(app, ["denoise", str(small_input), str(out), "--model",
                               str(tiny_weights), *args]).exit_code == 0  # fmt: skip
    labels = tmp_path / "labels.zarr"
    assert runner.invoke(app, ["segment", str(small_input), str(labels), *args]).exit_code == 0
    for path, phrase in ((out, "tiny-test"), (labels, "uint8")):  # segment: a copy, labels
        result = runner.invoke(app, ["info", str(path)])
        assert result.exit_code == 0, result.output
        assert phrase in result.output and "written by" in result.output


def test_phase_split_without_a_model_is_one_clear_line(small_input, tmp_path):
    out = tmp_path / "o.zarr"
    args = ["denoise", str(small_input), str(out), "--phase-split", "--protocol", "bm3d"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--protocol bm3d has no model" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["denoise", "a", "b", "--tile", "abc"], "Invalid value for '--tile': "),
        (["denoise", "a", "b", "--mask-sigma=x"], "Invalid value for '--mask-sigma': "),
        (["segment", "a", "b", "--method", "kmean"], "'kmean' is not one of 'kmeans', "),
    ],
)
def test_a_bad_flag_value_is_named_in_one_line(args, line):
    """typer 0.29's messages leave the value out ("unable to parse string as an
    integer") or lead with pydantic's "Value error, ": the line names the value given."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert line in last and "Value error" not in last
    assert repr(args[-1].partition("=")[2] or args[-1]) in last

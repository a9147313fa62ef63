"""Bad input: each case gets a clear error naming the problem, or a documented handling."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from click.testing import Result
from typer.testing import CliRunner

import fluoden_batch as fb
from conftest import blobs, start_cli_denoise, write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import BlockError, InputError
from fluoden_batch.io.ngff import ImageMeta, write_attrs
from fluoden_batch.io.source import open_image
from fluoden_batch.models import DnCNN, load_trainable, save_weights
from fluoden_batch.pipeline import execute, plan


def run(client, weights, inp: Path, out: Path, **kw):
    return execute(plan(DenoiseConfig(input=inp, output=out, model=str(weights), **kw)), client)


@pytest.mark.parametrize("dtype", ["float16", "int64", "bool", "complex64"])
def test_unsupported_dtypes_are_refused_by_name(tmp_path, dtype):
    inp = write_image(tmp_path / "in.zarr", np.zeros((8, 8), dtype=dtype), "yx", (8, 8))
    with pytest.raises(InputError, match=f"dtype {np.dtype(dtype)} is not supported"):
        open_image(inp)


def test_colours_last_are_refused_not_denoised_as_thin_planes(tiny_weights, tmp_path):
    """What imageio gives for an RGB file, (Y, X, 3), would read as 512 planes 3 px wide
    (a run that says nothing and returns noise): refused in one line, in memory and
    stored; given axes, it is taken as said."""
    rgb = np.zeros((64, 48, 3), np.uint8)
    said = r"shape \(64, 48, 3\) looks like a colour image with its colours last"
    with pytest.raises(InputError, match=said):
        fb.denoise(rgb, model=str(tiny_weights))
    zarr.save_array(str(tmp_path / "rgb.zarr"), rgb)
    result = CliRunner().invoke(app, ["denoise", str(tmp_path / "rgb.zarr"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "moveaxis" in result.output
    assert not (tmp_path / "o").exists()
    planes = fb.denoise(np.moveaxis(rgb, -1, 0), axes="cyx", model=str(tiny_weights))
    assert planes.shape == (3, 64, 48)
    assert fb.denoise(rgb, axes="zyx", model=str(tiny_weights)).shape == rgb.shape


def test_empty_array_is_refused(tmp_path):
    zarr.create_array(str(tmp_path / "e.zarr"), shape=(0, 10), chunks=(1, 10), dtype="uint8")
    with pytest.raises(InputError, match="empty array"):
        open_image(tmp_path / "e.zarr")


def test_a_group_of_images_names_what_to_pass(tmp_path):
    """A bioformats2raw conversion (one image per series under a plain root group) or a
    group of arrays: the error names what it holds and a path to pass."""
    data = np.ones((2, 16, 16), np.uint16)
    for series in ("0", "1", "10", "2"):
        write_image(tmp_path / "b2r.zarr" / series, data, "cyx", (1, 16, 16), version="0.4")
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="a", zarr_format=2)  # as 0.4
    root.attrs["bioformats2raw.layout"] = 3
    with pytest.raises(InputError) as info:
        open_image(tmp_path / "b2r.zarr")
    assert str(info.value).endswith(
        "a Zarr group without NGFF 'multiscales' metadata; it holds the images 0, 1, 2, 10: "
        f"pass one, e.g. {tmp_path / 'b2r.zarr' / '0'}"
    )
    pairs = zarr.open_group(str(tmp_path / "pairs.zarr"), mode="w")
    for name in ("raw", "gt"):
        pairs.create_array(name, shape=(16, 16), dtype="uint16")
    with pytest.raises(InputError, match="it holds the arrays gt, raw: pass one"):
        open_image(tmp_path / "pairs.zarr")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match=r"metadata; it holds no array$"):
        open_image(tmp_path / "empty.zarr")


def test_wrong_ngff_axes_and_escaping_paths_are_refused(tmp_path):
    inp = write_image(tmp_path / "in.zarr", np.zeros((2, 8, 8), np.uint8), "zyx", (1, 8, 8))
    group = zarr.open_group(str(inp), mode="r+")
    attrs = group.attrs.asdict()
    attrs["ome"]["multiscales"][0]["axes"] = [{"name": n} for n in ("x", "z", "y")]
    group.attrs.update(attrs)
    with pytest.raises(InputError, match="axes 'xzy'"):
        open_image(inp)
    attrs["ome"]["multiscales"][0]["axes"] = [{"name": n} for n in "zyx"]
    attrs["ome"]["multiscales"][0]["datasets"][0]["path"] = "../../etc"
    group.attrs.update(attrs)
    with pytest.raises(InputError, match="relative path inside"):
        open_image(inp)


def test_huge_chunks_are_refused_before_reading(tmp_path):
    zarr.create_array(
        str(tmp_path / "bomb.zarr"), shape=(40000, 40000), chunks=(40000, 40000), dtype="uint16"
    )
    with pytest.raises(InputError, match="decompresses to 3052 MiB"):
        open_image(tmp_path / "bomb.zarr")


@pytest.mark.distributed
def test_nan_pixels_fail_their_block_by_name(client, tiny_weights, tmp_path):
    data = np.ones((64, 64), np.float32)
    data[40, 50] = np.nan
    data[41, 50] = np.inf
    inp = write_image(tmp_path / "nan.zarr", data, "yx", (32, 32))
    with pytest.raises(BlockError) as info:
        run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    message = str(info.value)
    assert "1 of 4 blocks failed" in message and "block 1.1" in message
    assert "2 NaN/Inf pixels" in message


@pytest.mark.distributed
def test_constant_zero_tiny_and_saturated_planes(client, tiny_weights, tmp_path):
    data = np.zeros((4, 5, 6), np.uint16)
    data[1] = 1234
    data[2] = 65535
    data[3, :, :3] = 65535
    inp = write_image(tmp_path / "flat.zarr", data, "zyx", (1, 5, 6))
    result = run(client, tiny_weights, inp, tmp_path / "out.zarr")
    table = result.metrics.set_index("block")
    assert table.loc["2.0.0", "saturated_fraction"] == 1.0
    assert table.loc["3.0.0", "saturated_fraction"] == 0.5
    assert table.loc["0.0.0", "saturated_fraction"] == 0.0
    assert result.summary["saturated_fraction"] == pytest.approx(0.375)
    out = zarr.open_array(str(result.output), path="0")[:]
    assert out.shape == data.shape and out.dtype == np.uint16


@pytest.mark.distributed
def test_missing_chunks_are_counted(client, tiny_weights, tmp_path):
    data = np.random.default_rng(0).integers(1, 200, (64, 64), dtype=np.uint8)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (32, 32))
    (inp / "0" / "c" / "1" / "0").unlink()
    result = run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    assert result.summary["missing_chunks"] == 1
    assert result.metrics.set_index("block").loc["1.0", "missing_chunks"] == 1


@pytest.mark.distributed
def test_corrupt_chunk_fails_its_block_by_name(client, tiny_weights, tmp_path):
    data = np.random.default_rng(0).integers(0, 60000, (64, 64), dtype=np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (32, 32))
    chunk = inp / "0" / "c" / "0" / "1"
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(BlockError) as info:
        run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    message = str(info.value)
    assert "cannot read its chunks" in message and "Zstd" in message
    prov = zarr.open_group(str(tmp_path / "out.zarr")).attrs["fluoden"]
    # the block of the corrupt chunk fails, so do those whose halo reads it
    assert "0.1" in prov["last_run"]["failed"] and not prov["complete"]
    assert (zarr.open_array(str(inp), path="0")[32:, :] == data[32:, :]).all()  # input untouched


# --- Through the CLI: one line naming the problem, exit 2, nothing left that blocks a rerun
#
# Each case builds its bad input under tmp_path and returns the failing command, phrases the
# one error line must hold, and the corrected command (which must then succeed, also when
# it writes to the same OUT as the failed one).

runner = CliRunner()


@dataclass
class Case:
    args: list[str]
    phrases: list[str]
    rerun: list[str]
    out: Path | None = None  # OUT of the failing command: it must not be left behind


def refused_in_one_line(result: Result, phrases: list[str]) -> str:
    """Assert a refusal: exit 2, exactly one line on stderr (``error: ...``) holding each
    phrase, nothing on stdout, no traceback; return the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not result.stdout.strip() and "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def small_image(path: Path) -> Path:
    """A noisy 128 x 128 uint16 scene (enough for a noise estimate) in 64 x 64 chunks."""
    rng = np.random.default_rng(1)
    data = rng.poisson(blobs(rng, 128, count=12) * 4).astype(np.uint16)
    return write_image(path, data, "yx", (64, 64))


def denoise_args(inp: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["denoise", str(inp), str(out), "--model", str(weights), "--workers", "0", *extra]


def altered_weights(path: Path, source: Path, change: str) -> Path:
    """A copy of the weights ``source`` with one thing wrong: a NaN weight, a normalisation
    window with low > high (written past the validation, as a hand-edited file would be),
    or two image channels."""
    model, meta = load_trainable(source)
    if change == "nan":
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
    elif change == "window":
        window = meta.normalisation.model_copy(update={"low": 90.0, "high": 10.0})
        meta = meta.model_copy(update={"normalisation": window})
    else:
        arch = meta.architecture.model_copy(update={"in_channels": 2})
        meta = meta.model_copy(update={"architecture": arch})
        model = DnCNN(arch.depth, arch.width, in_channels=2)
    save_weights(model, path, meta)
    return path


def model_case(change: str, phrase: str) -> Callable[[Path, Path], Case]:
    def build(tmp: Path, weights: Path) -> Case:
        inp, out = small_image(tmp / "in.zarr"), tmp / "out.zarr"
        bad = altered_weights(tmp / f"{change}.safetensors", weights, change)
        return Case(
            denoise_args(inp, out, bad), [str(bad), phrase], denoise_args(inp, out, weights), out
        )

    return build


def option_case(option: list[str], fixed: list[str], phrases: list[str]) -> Callable:
    def build(tmp: Path, weights: Path) -> Case:
        inp, out = small_image(tmp / "in.zarr"), tmp / "out.zarr"
        rerun = denoise_args(inp, out, weights, *fixed)
        return Case(denoise_args(inp, out, weights, *option), phrases, rerun, out)

    return build


def trunc_tiff(tmp: Path, planes: int) -> tuple[Path, Path]:
    """An intact TIFF stack and a copy cut in half: with several planes tifffile finds the
    page list cut short; with one, its data runs past the end of the file."""
    data = np.random.default_rng(0).integers(0, 60000, (planes, 64, 64), dtype=np.uint16)
    good = tmp / "good.tif"
    tifffile.imwrite(good, data if planes > 1 else data[0], photometric="minisblack")
    cut = tmp / "cut.tif"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return good, cut


def truncated_tiff_case(command: str, planes: int) -> Callable[[Path, Path], Case]:
    def build(tmp: Path, weights: Path) -> Case:
        good, cut = trunc_tiff(tmp, planes)
        out = tmp / "out.zarr"
        phrases = [str(cut), "truncated or corrupt TIFF (" if planes > 1 else "plane 0 needs"]
        if command == "ingest":
            return Case(["ingest", str(cut), str(out)], phrases,
                        ["ingest", str(good), str(out)], out)  # fmt: skip
        return Case(denoise_args(cut, out, weights), phrases,
                    denoise_args(good, out, weights), out)  # fmt: skip

    return build


def corrupt_plane_ingest(tmp: Path, weights: Path) -> Case:
    """A complete TIFF whose third plane does not decompress: found while copying."""
    data = np.random.default_rng(0).poisson(300, (4, 64, 64)).astype(np.uint16)
    good, bad, out = tmp / "good.tif", tmp / "bad.tif", tmp / "out.zarr"
    tifffile.imwrite(good, data, compression="zlib", photometric="minisblack")
    raw = bytearray(good.read_bytes())
    with tifffile.TiffFile(good) as tf:
        offset, count = tf.pages[2].dataoffsets[0], tf.pages[2].databytecounts[0]
    raw[offset : offset + count] = bytes(count)
    bad.write_bytes(bytes(raw))
    return Case(["ingest", str(bad), str(out)], [str(bad), "cannot read plane (2,)"],
                ["ingest", str(good), str(out)], out)  # fmt: skip


def ingest_into_existing(tmp: Path, weights: Path) -> Case:
    good, _ = trunc_tiff(tmp, 3)
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    return Case(["ingest", str(good), str(existing)], [str(existing), "already exists"],
                ["ingest", str(good), str(tmp / "new.zarr")])  # fmt: skip


def ome_tiff_size_case(size: str, phrase: str) -> Callable[[Path, Path], Case]:
    """An OME-TIFF whose PhysicalSizeX is ``size``: ingest would write it into the scales."""

    def build(tmp: Path, weights: Path) -> Case:
        data = np.random.default_rng(0).poisson(300, (2, 64, 64)).astype(np.uint16)
        good, bad, out = tmp / "good.ome.tif", tmp / "bad.ome.tif", tmp / "out.zarr"
        sizes = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tifffile.imwrite(good, data, ome=True, metadata={"axes": "ZYX", **sizes})
        bad.write_bytes(good.read_bytes().replace(b'X="0.5"', f'X="{size}"'.encode()))
        return Case(["ingest", str(bad), str(out)], [str(bad), phrase],
                    ["ingest", str(good), str(out)], out)  # fmt: skip

    return build


def corrupt_every_chunk(inp: Path) -> None:
    for chunk in (inp / "0" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(chunk.read_bytes()[:10])


def unreadable_noise_input(tmp: Path, weights: Path) -> Case:
    good, bad = small_image(tmp / "good.zarr"), small_image(tmp / "bad.zarr")
    corrupt_every_chunk(bad)
    return Case(["estimate-noise", str(bad)], [str(bad / "0"), "no estimate for any of its"],
                ["estimate-noise", str(good)])  # fmt: skip


def unreadable_denoise_input(tmp: Path, weights: Path) -> Case:
    good, bad = small_image(tmp / "good.zarr"), small_image(tmp / "bad.zarr")
    corrupt_every_chunk(bad)
    out = tmp / "out.zarr"
    return Case(denoise_args(bad, out, weights), [f"{bad / '0'}: no sampled block could be read"],
                denoise_args(good, out, weights), out)  # fmt: skip


def unreadable_reference(tmp: Path, weights: Path) -> Case:
    inp, good, bad = (small_image(tmp / f"{n}.zarr") for n in ("in", "good", "bad"))
    corrupt_every_chunk(bad)
    out = tmp / "out.zarr"
    return Case(denoise_args(inp, out, weights, "--reference", str(bad)),
                [f"reference {bad}: no sampled block could be read"],
                denoise_args(inp, out, weights, "--reference", str(good)), out)  # fmt: skip


CASES = {
    "nan-weights": model_case("nan", "NaN/Inf weights in 1 tensor(s): body.0.weight"),
    "window-low-above-high": model_case("window", "needs low < high, got low=90.0 high=10.0"),
    "two-channel-model": model_case("channels", "in_channels = 1"),
    "device-cuda-without-cuda": option_case(
        ["--device", "cuda"], ["--device", "cpu"], ["--device cuda", "no CUDA"]
    ),
    "device-cuda-index-out-of-range": option_case(
        ["--device", "cuda:99"], ["--device", "cpu"], ["--device cuda:99: this machine has"]
    ),
    "reduced-precision-on-cpu": option_case(["--precision", "bf16"], [], ["--precision bf16"]),
    "memory-limit-lots": option_case(
        ["--memory-limit", "lots"], ["--memory-limit", "2GiB"], ["--memory-limit", "'lots'"]
    ),
    "ingest-truncated-tiff": truncated_tiff_case("ingest", 4),
    "ingest-truncated-single-plane": truncated_tiff_case("ingest", 1),
    "ingest-corrupt-plane": corrupt_plane_ingest,
    "ingest-into-existing-directory": ingest_into_existing,
    "ingest-ome-tiff-infinite-size": ome_tiff_size_case("INF", "scale [1.0, 0.5, inf] must be"),
    "ingest-ome-tiff-size-not-a-number": ome_tiff_size_case("abc", "'abc' is not a number"),
    "denoise-truncated-tiff": truncated_tiff_case("denoise", 4),
    "estimate-noise-no-readable-plane": unreadable_noise_input,
    "denoise-no-readable-block": unreadable_denoise_input,
    "denoise-unreadable-reference": unreadable_reference,
}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NEEDS_NO_CUDA = {"device-cuda-without-cuda", "reduced-precision-on-cpu"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=NO_CUDA) if n in NEEDS_NO_CUDA else n for n in CASES]
)
def test_bad_input_is_one_line_and_exit_2_and_the_rerun_works(name, tiny_weights, tmp_path):
    case = CASES[name](tmp_path, tiny_weights)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    line = refused_in_one_line(runner.invoke(app, case.args), case.phrases)
    assert "<Array" not in line  # inputs are named by their path
    if case.out is not None:
        assert not case.out.exists()
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written or deleted
    again = runner.invoke(app, case.rerun)
    assert again.exit_code == 0, again.output


MALFORMED_MULTISCALES = {
    "garbage": ('"garbage"', "NGFF 'multiscales' must be a non-empty list of objects"),
    "empty": ("[]", "NGFF 'multiscales' must be a non-empty list of objects, got []"),
    "null": ("[null]", "NGFF 'multiscales' must be a non-empty list of objects, got [None]"),
    "datasets-null": (
        '[{"axes": ["y", "x"], "datasets": [null]}]',
        "'datasets' must be a non-empty list of objects with a string 'path', got [None]",
    ),
    "scale-not-numbers": (
        '[{"axes": ["y", "x"], "datasets": [{"path": "0", "coordinateTransformations": '
        '[{"type": "scale", "scale": ["a", 1]}]}]}]',
        "NGFF scale must be a list of 2 numbers, got ['a', 1]",
    ),
    "scale-1e400": (
        '[{"axes": ["y", "x"], "datasets": [{"path": "0", "coordinateTransformations": '
        '[{"type": "scale", "scale": [1e400, 1]}]}]}]',
        "NGFF scale [inf, 1.0] must be finite",
    ),
}


@pytest.mark.parametrize("command", ["denoise", "segment", "info", "estimate-noise"])
@pytest.mark.parametrize("variant", list(MALFORMED_MULTISCALES))
def test_malformed_multiscales_are_named_by_every_command(variant, command, tiny_weights, tmp_path):
    inp = small_image(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    meta_file = inp / "zarr.json"
    original = meta_file.read_text()
    doc = json.loads(original)
    doc["attributes"]["ome"]["multiscales"] = "@"
    text, phrase = MALFORMED_MULTISCALES[variant]
    meta_file.write_text(json.dumps(doc).replace('"@"', text))
    args = {
        "denoise": denoise_args(inp, out, tiny_weights),
        "segment": ["segment", str(inp), str(out), "--workers", "0"],
        "info": ["info", str(inp)],
        "estimate-noise": ["estimate-noise", str(inp)],
    }[command]
    refused_in_one_line(runner.invoke(app, args), [str(inp), phrase])
    assert not out.exists()
    meta_file.write_text(original)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    if command in ("denoise", "segment"):  # standard JSON only (no NaN, no Infinity)
        json.loads((out / "zarr.json").read_text(), parse_constant=pytest.fail)


def _can_mount_read_only() -> bool:
    """Whether ``unshare`` can give a process its own user and mount namespace here."""
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare (user + mount namespace)")
@pytest.mark.parametrize("command", ["denoise", "segment", "ingest"])
def test_read_only_output_file_system_is_one_line(command, tiny_weights, tmp_path):
    """OUT on a read-only file system: a tmpfs mounted read-only over a folder, in a mount
    namespace of the command alone (so the same folder is writable for the rerun)."""
    inp = small_image(tmp_path / "in.zarr")
    tiff, _ = trunc_tiff(tmp_path, 3)
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "out.zarr"
    args = {
        "denoise": denoise_args(inp, out, tiny_weights),
        "segment": ["segment", str(inp), str(out), "--workers", "0"],
        "ingest": ["ingest", str(tiff), str(out)],
    }[command]
    mount_and_run = 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount_and_run,
           str(folder), sys.executable, "-m", "fluoden_batch.cli", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot write to {out}" in lines[0] and "Read-only file system" in lines[0]
    assert not proc.stdout.strip() and not out.exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output


@pytest.mark.distributed
def test_workers_do_not_log_the_block_errors_the_run_reports(client, tiny_weights, tmp_path):
    """A block failing on bad input is named by the run; the worker does not add Dask's
    "Compute Failed ... Traceback" for it (compute.quiet.QuietTaskErrors)."""
    data = np.ones((64, 64), np.float32)
    data[40, 50] = np.nan
    inp = write_image(tmp_path / "nan.zarr", data, "yx", (32, 32))
    with pytest.raises(BlockError, match="1 of 4 blocks failed"):
        run(client, tiny_weights, inp, tmp_path / "out.zarr", block_min=32)
    logged = [m for logs in client.get_worker_logs().values() for _, m in logs if str(inp) in m]
    assert not [m for m in logged if "Compute Failed" in m], logged


def test_sparse_input_gives_no_numpy_warnings(tmp_path):
    """A store with one chunk written of 16: flat planes have no wavelet detail; their
    noise estimate is NaN (an empty metrics cell), without numpy's "Mean of empty slice".
    The default model normalises by the noise level, so planning meets them too."""
    group = zarr.open_group(str(tmp_path / "sparse.zarr"), mode="w")
    array = group.create_array("0", shape=(256, 256), chunks=(64, 64), dtype="uint16")
    rng = np.random.default_rng(0)
    array[64:128, 64:128] = rng.poisson(blobs(rng, 64) * 4).astype(np.uint16)
    group.attrs.update(write_attrs(ImageMeta(axes="yx", scale=[1.0, 1.0]), "0.5", "0"))
    args = ["denoise", str(tmp_path / "sparse.zarr"), str(tmp_path / "out.zarr"),
            "--block-min", "64", "--workers", "0"]  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]


@pytest.mark.slow
@pytest.mark.distributed
def test_ctrl_c_to_the_process_group_is_quiet_and_the_rerun_finishes(tiny_weights, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, the local cluster's worker
    processes too: they ignore it (compute.quiet.dask_setup) and the run says, in one
    line, what it kept; the same command then finishes the rest."""
    data = np.random.default_rng(0).poisson(300, (8, 128, 128)).astype(np.uint16)
    inp = write_image(tmp_path / "in.zarr", data, "zyx", (1, 32, 32))
    out = tmp_path / "out.zarr"
    proc = start_cli_denoise(inp, out, tiny_weights, 2, 3, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "run the same command again" in " ".join(err.split())
    again = runner.invoke(app, denoise_args(inp, out, tiny_weights, "--block-min", "32"))
    assert again.exit_code == 0, again.output
    assert zarr.open_group(str(out)).attrs["fluoden"]["complete"]

"""``fluoden denoise --adapt`` end to end: it beats no adaptation against the truth, a run
killed during or after the fit ends byte-identical to an uninterrupted one, bad input is
one line and exit 2 with nothing written, and the fit runs on a Dask worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import fluoden_batch as fb
from conftest import blobs, make_tiny_weights, write_image
from fluoden_batch.cli import app
from fluoden_batch.config import DenoiseConfig
from fluoden_batch.errors import InputError, OutputError
from fluoden_batch.io.source import open_image
from fluoden_batch.io.store import MARKER_DIR, PROVENANCE_KEY, read_provenance
from fluoden_batch.models.weights import file_digest, read_metadata
from fluoden_batch.pipeline.adapt import adapted_path
from fluoden_batch.pipeline.params import ChannelValues, noise_from_rows, tuned_detail
from fluoden_batch.pipeline.progress import Reporter
from fluoden_batch.restore.detail import Detail


def repeats(path: Path, frames: int = 4, size: int = 192, sigma: float = 15.0) -> tuple:
    """A still sample captured ``frames`` times (uint16, t axis) and its clean truth."""
    rng = np.random.default_rng(0)
    clean = blobs(rng, size, count=30)
    noisy = np.stack([clean + rng.normal(0, sigma, clean.shape) for _ in range(frames)])
    data = np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
    truth = np.repeat(np.rint(clean)[None], frames, 0).astype(np.uint16)
    inp = write_image(path / "in.zarr", data, "tyx", (1, 96, 96))
    ref = write_image(path / "gt.zarr", truth, "tyx", (1, 96, 96))
    return inp, ref


def level0(store: Path) -> dict[str, bytes]:
    root = store / "0"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_n2n_beats_no_adaptation_against_the_truth(tmp_path, one_torch_thread):
    inp, ref = repeats(tmp_path)
    common = {"reference": ref, "block_min": 96, "workers": 0}
    plain = fb.denoise(inp, tmp_path / "plain.zarr", **common)
    adapted = fb.denoise(inp, tmp_path / "n2n.zarr", adapt="n2n", adapt_steps=60, **common)
    gain = adapted.summary["psnr_out"] - plain.summary["psnr_out"]
    assert gain > 0.3, f"n2n: {plain.summary['psnr_out']:.2f} -> {adapted.summary['psnr_out']:.2f}"
    record = read_provenance(tmp_path / "n2n.zarr")["adapted"]
    path = adapted_path(tmp_path / "n2n.zarr")
    assert record["digest"] == file_digest(path) and record["mode"] == "n2n"
    assert record["steps"] == 60 and record["train_mpx"] > 0
    meta = read_metadata(path)
    assert meta.training["base_model"]["name"] == "dncnn-fmd"
    assert meta.name == "dncnn-fmd-adapted"
    # `fluoden models show OUT` shows the adapted weights
    shown = CliRunner().invoke(app, ["models", "show", str(tmp_path / "n2n.zarr")])
    assert shown.exit_code == 0, shown.output
    assert "dncnn-fmd-adapted" in shown.output and "adapt-n2n" in shown.output


def test_single_keeps_the_weights_of_lowest_sure_and_never_loses_to_its_start(
    tmp_path, one_torch_thread
):
    # 24 steps of Neighbor2Neighbor raise the held-out patches' error against the truth by
    # 14 % (0.55 dB), which Neighbor2Neighbor's own held-out loss does not see (it falls
    # from 8.97e-4 to 8.89e-4); SURE does (measured once with the step-by-step scores), so
    # the fit keeps its start and stops after PATIENCE checks (every 3 steps) above it
    rng = np.random.default_rng(3)
    clean = blobs(rng, 512, count=200) + 20
    noisy = rng.poisson(clean / 2.0) * 2.0 + rng.normal(0, 3, clean.shape)  # a = 2, b = 9
    inp = write_image(tmp_path / "in.zarr", noisy.astype(np.float32), "yx", (128, 128))
    ref = write_image(tmp_path / "gt.zarr", clean.astype(np.float32), "yx", (128, 128))
    # the model alone (--detail off): the fit's choice is of the model, not the restoration
    common = {"reference": ref, "block_min": 128, "workers": 0, "detail": "off"}
    plain = fb.denoise(inp, tmp_path / "plain.zarr", **common)
    fitted = fb.denoise(inp, tmp_path / "single.zarr", adapt="single", adapt_steps=24, **common)
    record = read_provenance(tmp_path / "single.zarr")["adapted"]
    assert record["held_out_criterion"] == "SURE"
    start, kept = record["held_out_loss"]
    assert kept <= start
    # every check above the start's SURE: the fit stops after PATIENCE of them (of 8)
    scores = read_metadata(adapted_path(tmp_path / "single.zarr")).training["held_out"]["loss"]
    assert record["kept_step"] == 0 and [k for k, _ in scores] == [0, 3, 6, 9]
    assert all(v >= scores[0][1] for _, v in scores) and record["steps"] == 9
    assert "stopped at step 9 of 24" in record["stopped_early"]
    # SURE is the error against the truth up to its precision: what it keeps is not worse
    assert fitted.summary["psnr_out"] >= plain.summary["psnr_out"] - 0.05
    # a model without a noise normalisation, no restoration to estimate (a, b) for: the
    # run estimates them for the choice
    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=4, width=8)
    tiny = tmp_path / "tiny.zarr"
    fb.denoise(inp, tiny, model=str(weights), adapt="single", adapt_steps=2, workers=0,
               detail="off")  # fmt: skip
    ((a, _),) = read_provenance(tiny)["parameters"]["channel_noise"]
    assert 1.0 < a < 3.0 and read_provenance(tiny)["adapted"]["held_out_criterion"] == "SURE"


def test_detail_is_tuned_for_the_fitted_model_and_kept_with_it(tmp_path, one_torch_thread):
    inp, _ = repeats(tmp_path, frames=3, size=96)
    weights = make_tiny_weights(tmp_path / "w.safetensors")
    out = tmp_path / "out.zarr"
    lines: list[str] = []

    class Lines(Reporter):
        def planned(self, line: str, notes: list[str]) -> None:
            lines.extend([line, *notes])

    common = {"model": str(weights), "adapt": "n2n", "adapt_steps": 8, "workers": 0}
    fb.denoise(inp, out, progress=Lines(), **common)  # --detail auto: on
    prov = read_provenance(out)
    assert prov["parameters"]["detail"] == "sure" and "channel_detail" not in prov["parameters"]
    kept = prov["adapted"]["detail"]
    assert len(kept) == 1 and any("tuned for the fitted model" in line for line in lines)
    # the choice is SURE's for the fitted weights (tuned again here), not for the start's
    cfg = DenoiseConfig(input=inp, output=out, **common)
    source = open_image(inp)
    values = ChannelValues(
        tuple(tuple(r) for r in prov["parameters"]["channel_ranges"]),
        noise_from_rows(prov["parameters"]["channel_noise"]),
        None,
        None,
    )
    notes: dict[Path, list[str]] = {adapted_path(out): [], weights: []}
    choice = {}
    for path in notes:
        digest = file_digest(path)
        choice[path] = tuned_detail(cfg, source.array, "tyx", "in", str(path), digest, values,
                                    notes[path])  # fmt: skip
    assert Detail.stored(choice[adapted_path(out)]) == kept
    # (its note names SURE's risks, which differ between the two models)
    assert set(notes[adapted_path(out)]) <= set(lines)
    assert not set(notes[weights]) & set(lines)
    # a resume reuses the restoration with the weights: the same output
    first = level0(out)
    next((out / MARKER_DIR).glob("*.json")).unlink()
    lines.clear()
    assert fb.denoise(inp, out, progress=Lines(), **common).blocks_run == 1
    assert any("reused from the fitted run" in line for line in lines)
    assert level0(out) == first
    # --detail off is another run
    with pytest.raises(OutputError, match=r"other parameters \(channel_noise, detail\)"):
        fb.denoise(inp, out, detail="off", **common)


def _cli(inp: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fluoden_batch.cli", "denoise", str(inp), str(out),
            "--model", str(weights), "--block-min", "32", "--workers", "0",
            "--adapt", "n2n", "--adapt-steps", "150", *extra]  # fmt: skip


def _kill_when(cmd: list[str], ready) -> None:
    """Start ``cmd`` (one torch thread), SIGKILL its process group once ``ready(line)``
    holds for a line of its stderr (the batch-log progress)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if ready(line):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The input, the weights and the output of one uninterrupted ``--adapt n2n`` CLI run,
    shared by the killed runs (none of them writes to these)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    inp, _ = repeats(tmp, frames=3, size=128)
    weights = make_tiny_weights(tmp / "w.safetensors", depth=4, width=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = tmp / "clean.zarr"
    subprocess.run(_cli(inp, clean, weights), check=True, env=env, capture_output=True)
    return inp, weights, clean


@pytest.mark.parametrize("when", ["during the fit", "after the fit"])
def test_killed_run_resumes_without_refitting_byte_identical(tmp_path, uninterrupted, when):
    inp, weights, clean = uninterrupted
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed.zarr"
    if when == "during the fit":
        _kill_when(_cli(inp, out, weights), lambda line: line.startswith("adapting: 30/150"))
        assert not adapted_path(out).exists()
    else:
        _kill_when(_cli(inp, out, weights), lambda line: line.startswith("denoising: 0/"))
        assert adapted_path(out).exists()
    done = subprocess.run(_cli(inp, out, weights), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reused = "adapt: reusing the weights fitted by an earlier run" in done.stderr
    assert reused == (when == "after the fit")
    assert adapted_path(out).read_bytes() == adapted_path(clean).read_bytes()
    assert level0(out) == level0(clean)
    assert read_provenance(out)["adapted"]["digest"] == read_provenance(clean)["adapted"]["digest"]
    assert not list((out / MARKER_DIR).glob("*.tmp"))


@pytest.mark.parametrize(
    ("data", "axes", "mode", "message"),
    [
        (np.zeros((3, 96, 96), np.uint16) + np.arange(96, dtype=np.uint16), "zyx", "n2n",
         "--adapt n2n needs repeated captures along a t axis of 2 or more frames; "),
        (np.arange(30 * 90, dtype=np.uint16).reshape(30, 90), "yx", "single",
         "planes of 30 x 90 pixels are smaller than the 64 x 64 patches --adapt single"),
        (np.full((2, 96, 96), 7, np.uint16), "tyx", "auto",
         "t frames 0 and 1 are identical copies"),
        (np.full((96, 96), 7, np.uint16), "yx", "auto",
         "the image is constant (every sampled pixel is 7): there is nothing to fit"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, data, axes, mode, message):
    inp = write_image(tmp_path / "in.zarr", data, axes, data.shape)
    out = tmp_path / "out.zarr"
    result = CliRunner().invoke(app, ["denoise", str(inp), str(out), "--adapt", mode])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_adapt_refuses_other_protocols_and_arrays(tmp_path):
    inp, _ = repeats(tmp_path, frames=2, size=96)
    result = CliRunner().invoke(
        app, ["denoise", str(inp), str(tmp_path / "o.zarr"), "--adapt", "n2n", "--protocol", "vst"]
    )
    assert result.exit_code == 2 and "--protocol vst is not supported with it" in result.output
    with pytest.raises(InputError, match="adapt= needs a stored input and an output path"):
        fb.denoise(np.zeros((64, 64), np.float32), adapt="single")


@pytest.mark.distributed
def test_fit_runs_on_a_dask_worker(client, tmp_path):
    inp, _ = repeats(tmp_path, frames=3, size=128)
    weights = make_tiny_weights(tmp_path / "w.safetensors", depth=4, width=8)
    seen: list[tuple[int, int]] = []

    class Steps(Reporter):
        def block(self, done: int, total: int) -> None:
            if total == 20:  # the fit's steps (the blocks come after)
                seen.append((done, total))

    result = fb.denoise(inp, tmp_path / "out.zarr", model=str(weights), adapt="auto",
                        adapt_steps=20, block_min=64, client=client, progress=Steps())  # fmt: skip
    assert result.blocks_run == result.blocks_total
    record = read_provenance(tmp_path / "out.zarr")["adapted"]
    assert record["mode"] == "n2n" and record["steps"] == 20
    assert record["digest"] == file_digest(adapted_path(tmp_path / "out.zarr"))
    assert record["ran_on"] in client.scheduler_info()["workers"]  # a worker's address
    # the worker's steps reached the client's reporter (events may trail the result)
    assert seen and all(0 < done <= 20 for done, _ in seen)


def test_overwrite_refits_and_a_lost_record_is_rewritten(tmp_path, one_torch_thread):
    inp, _ = repeats(tmp_path, frames=3, size=96)
    weights = make_tiny_weights(tmp_path / "w.safetensors")
    out = tmp_path / "out.zarr"
    common = {"model": str(weights), "adapt": "n2n", "adapt_steps": 8, "workers": 0}
    fb.denoise(inp, out, **common)
    first = adapted_path(out).read_bytes()
    # killed between writing the weights and recording them: the resume records them
    group = zarr.open_group(str(out), mode="r+")
    provenance = dict(group.attrs[PROVENANCE_KEY])
    del provenance["adapted"]
    group.attrs[PROVENANCE_KEY] = provenance
    marker = next((out / MARKER_DIR).glob("*.json"))
    marker.unlink()
    result = fb.denoise(inp, out, **common)
    assert result.blocks_run == 1  # resumed, reusing the weights (same bytes)
    assert adapted_path(out).read_bytes() == first
    assert read_provenance(out)["adapted"]["digest"] == file_digest(adapted_path(out))
    # --overwrite clears OUT, the fitted weights included, and fits again
    fb.denoise(inp, out, **{**common, "adapt_seed": 1}, overwrite=True)
    assert adapted_path(out).read_bytes() != first
    assert read_metadata(adapted_path(out)).training["seed"] == 1


def test_adapt_refuses_phase_split(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    inp = write_image(tmp_path / "in.zarr", data, "yx", (64, 64))
    args = ["denoise", str(inp), str(tmp_path / "o.zarr"), "--adapt", "single", "--phase-split"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--adapt is not supported with --phase-split" in " ".join(result.output.split())
    assert not (tmp_path / "o.zarr").exists()

"""Progress in a batch log (no terminal: SLURM, Kubernetes, nohup): periodic lines."""

from __future__ import annotations

import io
import re

from rich.console import Console

from fluoden_batch.pipeline.progress import ConsoleReporter


def _batch_log(interval: float = 3600.0) -> tuple[ConsoleReporter, io.StringIO]:
    text = io.StringIO()
    console = Console(file=text, force_terminal=False, width=200)
    return ConsoleReporter(console, interval=interval), text


def test_a_batch_log_gets_a_line_every_tenth_of_the_blocks_with_rate_and_time_left() -> None:
    reporter, text = _batch_log()
    reporter.start("denoising", total=100, done=20, pixels_per_block=1e6)
    for done in range(21, 101):
        reporter.block(done, 100)
    reporter.stop()
    lines = text.getvalue().splitlines()
    assert lines[0] == "denoising: 20/100 blocks done before this run"
    progress = lines[1:]
    assert [int(re.match(r"denoising: (\d+)/100", line)[1]) for line in progress] == list(
        range(30, 101, 10)
    )
    assert all("Mpx/s" in line and "left" in line for line in progress)
    assert progress[-1].startswith("denoising: 100/100 blocks (100 %)")


def test_a_slow_run_gets_a_line_every_interval_seconds() -> None:
    reporter, text = _batch_log(interval=0.0)  # every block is "interval seconds later"
    reporter.start("segmenting", total=1000, done=0, pixels_per_block=4e6)
    for done in (1, 2, 3):
        reporter.block(done, 1000)
    lines = text.getvalue().splitlines()[1:]
    assert [line.split(" blocks")[0] for line in lines] == [
        "segmenting: 1/1000",
        "segmenting: 2/1000",
        "segmenting: 3/1000",
    ]


def test_each_phase_is_reported_on_its_own() -> None:
    """The pyramid phase after the blocks: its own count and time left, without a rate in
    Mpx/s (its blocks are not the run's denoised pixels), never a count going back."""
    reporter, text = _batch_log()
    reporter.start("denoising", total=10, done=0, pixels_per_block=1e6)
    for done in range(1, 11):
        reporter.block(done, 10)
    reporter.start("pyramid", total=4, done=1, pixels_per_block=0.0)
    for done in (2, 3, 4):
        reporter.block(done, 4)
    reporter.stop()
    lines = text.getvalue().splitlines()
    assert lines[-5].startswith("denoising: 10/10 blocks (100 %)")
    assert lines[-4] == "pyramid: 1/4 blocks done before this run"
    assert [line.split(" (")[0] for line in lines[-3:]] == [
        "pyramid: 2/4 blocks",
        "pyramid: 3/4 blocks",
        "pyramid: 4/4 blocks",
    ]
    assert not any("Mpx/s" in line for line in lines[-3:])


def test_plan_notes_are_one_line_each_in_a_batch_log() -> None:
    """A note longer than the console is not hard-wrapped (a log line stays grep-able),
    and a bracketed value in it is printed as it is, not read as markup."""
    text = io.StringIO()
    reporter = ConsoleReporter(Console(file=text, force_terminal=False, width=80))
    note = "warning: " + "the noise of this plane [bold] reads " * 5 + "(5.93)"
    reporter.planned("writing out.zarr: 3 blocks", [note, "noise (a, b) per channel: [1, 2]"])
    assert text.getvalue().splitlines() == [
        "writing out.zarr: 3 blocks",
        note,
        "noise (a, b) per channel: [1, 2]",
    ]

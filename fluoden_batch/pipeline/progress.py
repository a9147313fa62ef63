"""What a run tells the person waiting for it: the plan, the dashboard, blocks done.

A run reports to a :class:`Reporter`. :class:`Reporter` itself says nothing (the Python
API's default); :class:`ConsoleReporter` prints to stderr: a rich progress bar on a
terminal, and in a batch log (no terminal: SLURM, Kubernetes, nohup) one line every few
percent or every ``interval`` seconds with blocks done, Mpx/s and the time left, for each
phase of the run (``--adapt``'s fit, the blocks, the pyramid) in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["ConsoleReporter", "ProgressHook", "Reporter"]

#: ``on_block(done, total)``: called after each block of a phase finished or failed
ProgressHook = Callable[[int, int], None]


class Reporter:
    """The silent reporter; subclasses print. Every method may be called any number of
    times; a run reports its phases one after the other (``start``, then ``block`` for
    each block of that phase)."""

    def planned(self, line: str, notes: list[str]) -> None:
        """The plan in one line, and its notes (warnings start with ``warning:``)."""

    def dashboard(self, link: str) -> None:
        """The Dask dashboard of the run's cluster."""

    def start(
        self, label: str, total: int, done: int, pixels_per_block: float, unit: str = "blocks"
    ) -> None:
        """Blocks (or other ``unit``s, e.g. the ``steps`` of ``--adapt``'s fit) are about
        to run (``label``: e.g. ``denoising``); ``pixels_per_block`` 0: no Mpx/s."""

    def block(self, done: int, total: int) -> None:
        """One more block of the phase finished or failed: ``done`` of ``total`` (blocks
        finished before this run included)."""

    def stop(self) -> None:
        """The run ended (normally or not)."""


class ConsoleReporter(Reporter):
    """Print to stderr (``console``): a live bar on a terminal, else periodic log lines.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to print (default: stderr).
    interval : float
        Batch logs: seconds between lines at most (also a line every 10 % of the blocks).
    """

    def __init__(self, console: Console | None = None, interval: float = 30.0) -> None:
        self.console = console or Console(stderr=True)
        self.interval = interval
        self._bar: Progress | None = None
        self._task: Any = None
        self._label, self._first, self._px = "", 0, 0.0
        self._unit = "blocks"
        self._t0 = self._last_time = 0.0
        self._last_done = 0

    def planned(self, line: str, notes: list[str]) -> None:
        # one line each, never hard-wrapped: a batch log keeps every note grep-able
        self.console.print(escape(line), highlight=False, soft_wrap=True)
        for note in notes:
            text = escape(note).replace("warning:", "[yellow]warning:[/]", 1)
            self.console.print(text, highlight=False, soft_wrap=True)

    def dashboard(self, link: str) -> None:
        self.console.print(f"Dask dashboard: {link}", highlight=False)

    def start(
        self, label: str, total: int, done: int, pixels_per_block: float, unit: str = "blocks"
    ) -> None:
        self.stop()
        self._label, self._first, self._px = label, done, pixels_per_block
        self._unit = unit
        self._t0 = self._last_time = time.monotonic()
        self._last_done = done
        if self.console.is_terminal:
            columns = (
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeRemainingColumn(),
            )
            self._bar = Progress(*columns, console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=done)
        else:
            self.console.print(f"{label}: {done}/{total} {unit} done before this run")

    def block(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        step = max(1, total // 10)
        if done == self._last_done:  # nothing new
            return
        if done < total and done - self._last_done < step and now - self._last_time < self.interval:
            return
        self._last_done, self._last_time = done, now
        self.console.print(self._line(done, total, now - self._t0), highlight=False)

    def _line(self, done: int, total: int, elapsed: float) -> str:
        ran = done - self._first
        text = f"{self._label}: {done}/{total} {self._unit} ({100 * done / max(total, 1):.0f} %)"
        if ran > 0 and elapsed > 0:
            rate = ran / elapsed
            left = (total - done) / rate
            if self._px:
                text += f", {ran * self._px / elapsed / 1e6:.3g} Mpx/s"
            text += f", {_duration(left)} left"
        return text

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"

"""Helpers shared by the ``fluoden`` commands: consoles, error and signal handling."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fluoden_batch.errors import FluodenError

console = Console(stderr=True)
out = Console()

# Options shared by several commands (same name, meaning and help everywhere).
AxesOption = Annotated[
    str | None, typer.Option(help="Axis names for inputs without metadata, e.g. 'cyx'.")
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Local worker processes (default: one per core).")
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(help="Address of a running Dask scheduler to use instead of a local cluster."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def errors() -> Any:
    """Turn the project's errors into one readable line and a non-zero exit."""
    try:
        yield
    except FluodenError as exc:
        raise fail(str(exc)) from None


def sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def interrupted(output: Path) -> typer.Exit:
    console.print(
        f"[yellow]interrupted.[/] Finished blocks are kept in {output}; run the same command "
        "again to finish the rest."
    )
    return typer.Exit(130)


def parse_chunks(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise FluodenError(f"--chunks {text!r}: expected two integers 'Y,X'") from None
    return y, x

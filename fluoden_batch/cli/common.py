"""Helpers shared by the ``fluoden`` commands: consoles, error and signal handling."""

from __future__ import annotations

import contextlib
import inspect
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from fluoden_batch.errors import FluodenError, validator_message

console = Console(stderr=True)
out = Console()

ConfigFileOption = Annotated[
    Path | None,
    typer.Option(help="TOML or YAML file with any of these options (flags override it)."),
]


class SectionedCommand(TyperCommand):
    """A command whose ``--help`` is click's plain text, its options in one section per
    ``rich_help_panel`` (the option groups of :mod:`fluoden_batch.cli.options`), in the
    order they first appear. Typer's rich panels are a table of five columns (flag,
    short flag, ``--no-`` flag, type, help) that left the description 16 of 80 columns
    (``denoise --help``: 401 lines at 80 columns); click's two columns wrap to the
    terminal (up to 80 columns)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        """Name the rejected value in a bad flag's error (typer 0.29 says "Input should be a
        valid integer, unable to parse string as an integer" for ``--tile abc``, and leads
        a bad choice with pydantic's "Value error, ")."""
        try:
            return super().parse_args(ctx, list(args))
        except typer.BadParameter as exc:  # typer 0.29 vendors click: not click's class
            exc.message = validator_message(exc.message)
            given = _given(exc.param, args)
            if given is not None and repr(given) not in exc.message:
                exc.message = f"{exc.message.rstrip('.')} (got {given!r})"
            raise

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:  # HelpFormatter
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = "Arguments"
            else:
                name = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(name, []).append(record)
        for name, records in sections.items():
            with formatter.section(name):
                formatter.write_dl(records)


def _given(param: Any, args: list[str]) -> str | None:
    """The value given to option ``param`` (a click ``Parameter`` or None) on the command
    line ``args`` (its last one)."""
    opts = [] if param is None else [*param.opts, *param.secondary_opts]
    value = None
    for i, token in enumerate(args):
        name, eq, attached = token.partition("=")
        if name in opts:
            value = attached if eq else (args[i + 1] if i + 1 < len(args) else None)
    return value


def paragraphs_help(app: typer.Typer) -> None:
    """Give each command of ``app`` its docstring as help with every paragraph on one line,
    so the terminal wraps it (typer keeps a docstring's line breaks, 0.29 does, and on a
    terminal narrower than the source every line of ``--help`` broke twice), its first
    paragraph as the short help a command list shows, and sectioned option help
    (:class:`SectionedCommand`)."""
    for info in app.registered_commands:
        info.cls = SectionedCommand
        if info.help is None and info.callback is not None:
            info.help = unwrapped(info.callback)
        if info.short_help is None and info.help:  # click would cut it at 45 characters
            info.short_help = info.help.split("\n\n", 1)[0]


def unwrapped(fn: Callable[..., Any]) -> str:
    """``fn``'s docstring, its paragraphs (blank-line separated) each on one line, but for
    paragraphs led by an ``Examples:`` line, which click prints as they are (``\\b``)."""
    text = inspect.cleandoc(fn.__doc__ or "")
    return "\n\n".join(
        f"\b\n{p}" if p.startswith("Examples:") else " ".join(p.split()) for p in text.split("\n\n")
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr, as it is (no markup) and never hard-wrapped, so
    that a log holds one line per error line; the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def errors() -> Any:
    """Turn the project's errors into one readable line and a non-zero exit."""
    try:
        yield
    except FluodenError as exc:
        raise fail(str(exc)) from None


def sigterm_as_interrupt() -> None:
    """Handle SIGTERM (a batch system's stop) like Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def interrupted(output: Path) -> typer.Exit:
    """Say what an interrupted run kept; the exit (130) to raise."""
    console.print(
        f"[yellow]interrupted.[/] Finished blocks are kept in {escape(str(output))}; run the "
        "same command again to finish the rest.",
        soft_wrap=True,
    )
    return typer.Exit(130)


@contextlib.contextmanager
def running(output: Path) -> Iterator[None]:
    """A run command's body: one clear line and exit 2 for the project's errors; exit 130
    saying what was kept for an interrupt (Ctrl-C, or SIGTERM from a batch system)."""
    sigterm_as_interrupt()
    try:
        yield
    except FluodenError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise interrupted(output) from None

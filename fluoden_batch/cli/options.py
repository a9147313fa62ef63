"""Command-line flags built from the pydantic configs, so each option is declared once.

:func:`config_options` turns the fields of a config model into typer parameters: the
name (``--mask-sigma`` for ``mask_sigma``), the type (``Literal`` fields become choices,
``bool`` fields ``--flag/--no-flag``, lists and pairs YAML text such as ``[1, 2]`` or
``512,512``), the help (the field's description and its default) and, for the fields
named in ``arguments``, positional arguments. Every generated option defaults to None,
meaning "not given": the config's default (or a ``--config`` file's value) applies.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["config_options"]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _structured(annotation: Any) -> bool:
    """Whether a field holds a list, tuple, mapping or model: given as YAML text."""
    return _base_type(annotation) is str and annotation not in (str, str | None)


def _base_type(annotation: Any) -> Any:
    """The CLI type of a field annotation: Optional stripped, structured values as text."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return str  # e.g. chunks 'Y,X', parsed by the config's validator
    if origin is Literal or annotation in (bool, int, float, str, Path):
        return annotation
    return str


# a description led by a name as written (a value, mode or architecture: "sure: ...",
# "dncnn only: ...", "auto | cpu", "fp32, or ...", "self_supervised: ..."): not capitalised
_NAME_FIRST = re.compile(r"[a-z-]*[0-9_]|[a-z][a-z-]*(?: only)?(?:[:/,]| \|)")


def _help(field: FieldInfo) -> str:
    text = (field.description or "").rstrip(".")
    kind = _base_type(field.annotation)
    choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else ()
    if not (_NAME_FIRST.match(text) or text.split(" ", 1)[0] in choices):  # "auto (cuML ..."
        text = text[:1].upper() + text[1:]
    if field.is_required():
        return f"{text}."
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return f"{text} (default: {'on' if default else 'off'})."
    if default not in (None, "") and "(default" not in text:
        return f"{text} (default: {default})."
    return f"{text}."


def _declared_by(model: type[BaseModel], name: str) -> tuple[int, str | None]:
    """Where ``--help`` shows field ``name``: the ``help_panel`` of the option group (a
    base of ``model`` declaring one) that holds it, with the group's place among the bases
    (the command's own and ungrouped fields: ``(0, None)``, the "Options" section)."""
    for rank, cls in enumerate(model.__mro__):
        if "help_panel" in vars(cls) and name in cls.model_fields:
            return rank, vars(cls)["help_panel"]
    return 0, None


def _parameter(
    name: str, field: FieldInfo, argument: bool, short: str | None, panel: str | None
) -> Any:
    kind = _base_type(field.annotation)
    if argument:
        info = typer.Argument(help=_help(field), show_default=False)
        return inspect.Parameter(name, _KEYWORD, annotation=Annotated[kind, info])
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag] + ([short] if short else [])
    info = typer.Option(*decls, help=_help(field), show_default=False, rich_help_panel=panel)
    return inspect.Parameter(name, _KEYWORD, annotation=Annotated[kind | None, info], default=None)


def _yaml(text: str) -> Any:
    """A structured flag value (``[1, 2]``, ``{a: 1}``): YAML, else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def config_options(
    model: type[BaseModel],
    *,
    arguments: Sequence[str] = (),
    exclude: Sequence[str] = (),
    short: dict[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(given, **own)`` so that typer sees ``model``'s fields.

    Parameters
    ----------
    model : pydantic model class
        The command's config; its field names, types, defaults and descriptions become
        the flags.
    arguments : sequence of str
        Fields taken as positional arguments, in this order (required).
    exclude : sequence of str
        Fields without a flag (set by the command itself).
    short : dict, optional
        Short option names, e.g. ``{"clusters": "-k"}``.

    Returns
    -------
    decorator
        The wrapped command is called as ``fn(given, **own)``: ``given`` holds the
        model's options that were given (not None), ``own`` the command's own parameters
        (those declared in ``fn``'s signature after ``given``).
    """
    short = short or {}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fields = model.model_fields
        generated = [_parameter(n, fields[n], True, None, None) for n in arguments]
        options = [n for n in fields if n not in arguments and n not in exclude]
        groups = {n: _declared_by(model, n) for n in options}
        options.sort(key=lambda n: groups[n][0])  # ungrouped first, then by base
        generated += [_parameter(n, fields[n], False, short.get(n), groups[n][1]) for n in options]
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        own = [p.replace(kind=_KEYWORD) for p in own]
        names = {p.name for p in generated}
        yaml_fields = {n for n in names if _structured(fields[n].annotation)}

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            given = {k: v for k, v in values.items() if k in names and v is not None}
            for k in yaml_fields & set(given):
                given[k] = _yaml(given[k])
            return fn(given, **{k: v for k, v in values.items() if k not in names})

        command.__signature__ = inspect.Signature([*generated, *own])  # type: ignore[attr-defined]
        command.__annotations__ = {}
        del command.__wrapped__  # typer must read the generated signature, not fn's
        return command

    return decorate

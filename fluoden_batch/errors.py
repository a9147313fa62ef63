"""The project's own exception types.

Every error a user can trigger with bad input or a bad command line is a
:class:`FluodenError` (or a subclass) whose message names the file, array, block
or value at fault, so the CLI can print it without a traceback.
"""

from __future__ import annotations


class FluodenError(Exception):
    """Base class of every error fluoden-batch raises on purpose."""


class InputError(FluodenError):
    """The input data or its metadata cannot be used (shape, dtype, axes, values)."""


class OutputError(FluodenError):
    """The output location is unsafe or incompatible with the requested run."""


class ModelError(FluodenError):
    """A weights file is missing, unsafe (pickle) or does not match its metadata."""


class NoiseEstimationError(FluodenError):
    """Noise parameters cannot be estimated from the given data (too small, flat, NaN)."""


class BlockError(FluodenError):
    """One or more blocks failed during a run; the message names them and the cause."""


def validator_message(message: str) -> str:
    """``message`` of a pydantic validator without the ``"Value error, "`` pydantic puts
    before every ``ValueError`` a validator raises (in a validation error's ``msg``, and in
    typer's ``BadParameter`` for a flag typed by a pydantic model)."""
    return message.removeprefix("Value error, ")

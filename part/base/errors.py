"""Errors the command line tells apart by exit code, kept free of torch so that ``part plan`` and ``part
tables`` start without loading it (``tests/test_imports.py``)."""

from typing import Any


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DeviceError(ValueError):
    """A device that does not parse, or that this machine does not have (a job's GPUs included); the message
    names the flag, key or rule, what torch sees and what to do. A refusal: exit code 2, from a command or a job."""


ECHO_LIMIT = 200
"""Characters of a value an error message echoes: a 50 MB value pasted by mistake must not come back in full."""


def echo(value: Any) -> str:
    """``repr(value)`` for an error message, :func:`shorten`-ed."""
    return shorten(repr(value))


def shorten(text: str) -> str:
    """``text`` cut at :data:`ECHO_LIMIT` characters, its full length said after the cut."""
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}… ({len(text)} characters)"

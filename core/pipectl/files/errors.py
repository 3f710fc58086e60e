"""What a pipeline file's problems are made of: :class:`PipelineFileError` (one printable line,
``path:line: field: message``) and the pieces of its messages: a value's kind, a "did you mean"
hint, text made printable."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from typing import Any

from pipectl.errors import PipectlError

__all__ = ["MAX_NAME", "PipelineFileError", "hint", "kind", "printable"]

MAX_NAME = 200  # characters of a step's or a pipeline's name


class PipelineFileError(PipectlError, ValueError):
    """A pipeline file (or a ``-p`` value) is wrong: ``path:line: field: message`` (or
    ``path:line:column: message``), one line: control characters from the file are escaped and
    a very long text is cut in the middle.

    An error about a param says how a Python caller gives one (``params={'day': ...}``);
    ``cli`` (a field and a message) is how the command line says it (``-p day=VALUE``), which
    ``cli_text`` holds (the error's text otherwise)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        line: int | None,
        field: str | None,
        message: str,
        column: int | None = None,
        *,
        cli: tuple[str | None, str] | None = None,
    ):
        field = printable(field, 100) if field else field
        message = printable(message, 1000)
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{self.path}:{line}" if line else self.path
        where += f":{column}" if line and column else ""
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.cli_text = str(self)
        if cli is not None:
            cli_field, cli_message = (
                printable(cli[0], 100) if cli[0] else None,
                printable(cli[1], 1000),
            )
            self.cli_text = (
                f"{where}: {cli_field}: {cli_message}" if cli_field else f"{where}: {cli_message}"
            )


def printable(text: str, width: int) -> str:
    """``text`` for a one-line message: the middle of a very long text cut, and what is not
    printable (control, bidi and zero-width characters, ...) escaped."""
    if len(text) > width:
        text = f"{text[: width * 2 // 3]} ... {text[-width // 3 :]}"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def kind(value: Any) -> str:
    """What ``value`` is, for a message: ``a list``, ``a mapping``, ``empty``, ``int 3``."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "empty"
    return f"{type(value).__name__} {value!r}"


def hint(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` when a name of ``known`` is close to ``name``, else empty."""
    if len(name) > MAX_NAME:  # not a typo; and difflib's cost grows with the length
        return ""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""

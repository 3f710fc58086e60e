"""Named fault points, for the crash tests of pipectl's exactly-once promise.

A test sets ``PIPECTL_FAULT=NAME`` (or ``NAME:N``) in a subprocess's environment; the N-th time
(default the first) that process reaches the point ``NAME`` it kills itself with SIGKILL, as a
power cut or the OOM killer would: no ``finally``, no flush, no atexit. Without the variable a
point costs one global lookup, and points sit where a commit happens, never per record.

The points:

``data.mid-write``
    After an output has written a batch (``:N``: the N-th batch written by any output).
``output.mid-commit``
    Inside a built-in output's ``commit``, after its records and its load marker are in the
    transaction (or the temporary file is complete and synced), before the one step that makes
    them visible (``COMMIT``, the rename). ``output.mid-commit:2`` is the second output.
``data.between-commits``
    After one output of a data step committed, before the next one commits.
``data.after-commits``
    After the last output committed, before the step's result goes back to the engine (so
    before the tracker hears of it).
``tracker.after-row``
    In the tracker's writer, right after it committed a row saying a step succeeded.
``cache.mid-store``
    While a cached step's output is stored in the step cache: its temporary file written,
    before the rename that makes it the entry.
``cache.after-store``
    Right after a cached step's output became its cache entry, before the step's end is
    recorded.
"""

from __future__ import annotations

import os

__all__ = ["POINTS", "reach"]

POINTS = (
    "data.mid-write",
    "output.mid-commit",
    "data.between-commits",
    "data.after-commits",
    "tracker.after-row",
    "cache.mid-store",
    "cache.after-store",
)

_armed: list[str | int] | None = None  # [name, countdown] once read from the environment


def _arm() -> list[str | int]:
    global _armed
    text = os.environ.get("PIPECTL_FAULT", "")
    name, _, count = text.partition(":")
    _armed = [name, int(count) if count.isdigit() else 1]
    return _armed


def reach(name: str) -> None:
    """Die here (SIGKILL) if ``PIPECTL_FAULT`` names this point and its count is reached."""
    armed = _armed if _armed is not None else _arm()
    if armed[0] != name:
        return
    left = armed[1] = int(armed[1]) - 1
    if left <= 0:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

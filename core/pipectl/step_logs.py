"""Step logs: what each attempt of a step logs and prints, captured for the tracker.

A run captures step logs when one of its listeners (or a plugin) asks for them with a true
``wants_step_logs`` attribute: the tracker's :class:`~pipectl.tracking.TrackingListener` does,
so a run without a tracker captures nothing and pays nothing. While such a run runs
(:func:`install`, reference-counted, so nested and concurrent runs in one process share it):

- ``sys.stdout`` and ``sys.stderr`` are :class:`Tee` proxies: a write from a step's context
  goes to the attempt's buffer *and* on to the stream that was there (the user still sees it);
- the root logger has a :class:`LogHandler` taking the ``logging`` records emitted from a
  step's context (at the levels the logging configuration lets through), which also stands in
  for :data:`logging.lastResort` (that handler prints warnings only when no logger has a
  handler, which this one would otherwise silence);
- pipectl's structlog events logged from a step's context (a plugin's, ``ctx.logger``'s) are
  captured by :func:`pipectl.log.configure_logging`'s chain, also those below the level shown
  on the console (they are then captured and not shown).

Attribution is a context variable, :data:`CURRENT`: the attempt runner sets it to the attempt's
:class:`AttemptLog` when the attempt begins (:class:`StepCapture`). Async steps run in a task of
their own (a context of their own); sync steps run on the local executor's threads in a copy of
the context of the task that submitted them (lane jobs in a copy of the run's context, in which
the runner sets it too), so concurrent steps never mix their lines. Threads a step starts itself
do not inherit the context (``threading.Thread``): what they print is shown, not captured.

Each attempt keeps at most :data:`MAX_LINES` lines and :data:`MAX_BYTES` bytes of messages;
after the first line that does not fit, nothing more is kept, and a final line says how many
lines and bytes were left out. Secret values are masked when the step ends
(:meth:`StepCapture.finish`). A line is ``(logged_at, stream, level, message)``: a POSIX
timestamp, ``event`` (pipectl's log events), ``stdout``, ``stderr`` or ``logging``, the level
(None for stdout and stderr) and the text.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CURRENT",
    "ENGINE_EVENTS",
    "MAX_BYTES",
    "MAX_LINES",
    "AttemptLog",
    "LogHandler",
    "LogLine",
    "StepCapture",
    "StepLogs",
    "Tee",
    "install",
    "installed",
    "uninstall",
    "wants_step_logs",
]

MAX_LINES = 1000
"""Lines kept per attempt (then a final line says how much was left out)."""

MAX_BYTES = 64 * 1024
"""Bytes of messages (UTF-8) kept per attempt."""

LogLine = tuple[float, str, "str | None", str]
"""One captured line: (logged_at as a POSIX timestamp, stream, level or None, message)."""

StepLogs = tuple[tuple[int, tuple[LogLine, ...]], ...]
"""A step's logs: ``(attempt, lines)`` for each attempt, in order."""

CURRENT: contextvars.ContextVar[AttemptLog | None] = contextvars.ContextVar(
    "pipectl_step_log", default=None
)
"""The buffer of the attempt running in this context, or None."""

ENGINE_EVENTS = frozenset({"step_started", "step_retry"})
"""The engine's own per-attempt events: the attempt runner writes them into the buffer itself
(also when the console does not show info events), so the structlog capture skips them."""


class AttemptLog:
    """The bounded buffer of one attempt's lines (thread-safe: a step may hand its context to
    threads, such as ``asyncio.to_thread``)."""

    __slots__ = (
        "_lock",
        "_partial",
        "_size",
        "attempt",
        "started",
        "closed",
        "left_bytes",
        "left_lines",
        "lines",
    )

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.started = time.time()
        self.lines: list[LogLine] = []
        self.left_lines = 0
        self.left_bytes = 0
        self.closed = False
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()
        self._size = 0

    def add(self, stream: str, level: str | None, message: str) -> None:
        """Keep one whole line (an event, a logging record)."""
        with self._lock:
            if not self.closed:
                self._add(stream, level, message)

    def extend(self, lines: Iterable[LogLine], left_lines: int = 0, left_bytes: int = 0) -> None:
        """Lines of this attempt captured elsewhere (on a worker of an executor that runs steps
        in other processes), each kept with its own timestamp, within the attempt's bounds as
        :meth:`add` keeps them; ``left_lines`` and ``left_bytes``: what was left out there."""
        with self._lock:
            if self.closed:
                return
            for logged_at, stream, level, message in lines:
                self._add(stream, level, message, logged_at)
            if left_lines or left_bytes:
                self.left_lines += left_lines
                self.left_bytes += left_bytes

    def _add(
        self, stream: str, level: str | None, message: str, logged_at: float | None = None
    ) -> None:
        size = len(message) if message.isascii() else len(message.encode("utf-8", "replace"))
        if self.left_lines or len(self.lines) >= MAX_LINES or self._size + size > MAX_BYTES:
            self.left_lines += 1
            self.left_bytes += size
            return
        self._size += size
        self.lines.append((time.time() if logged_at is None else logged_at, stream, level, message))

    def write(self, stream: str, text: str) -> None:
        """What the step wrote to ``stream`` (``stdout``, ``stderr``): whole lines are kept,
        the rest waits for its end of line (or the attempt's end)."""
        with self._lock:
            if self.closed:
                return
            partial = self._partial.get(stream)
            if partial:
                text = partial + text
            if "\n" not in text:
                if len(text) > MAX_BYTES:  # a line that can never fit: only counted
                    self.left_bytes += len(text) - MAX_BYTES - 1
                    text = text[: MAX_BYTES + 1]
                self._partial[stream] = text
                return
            *whole, rest = text.split("\n")
            for line in whole:
                self._add(stream, None, line[:-1] if line.endswith("\r") else line)
            self._partial[stream] = rest

    def close(self, secrets: Sequence[str] = ()) -> tuple[LogLine, ...]:
        """The attempt's lines (partial lines ended, the cut said, ``secrets`` masked); nothing
        written afterwards is kept. An attempt that logged anything, or a retry, begins with
        the engine's ``step_started`` event; a first attempt that logged nothing has no lines
        (so quiet steps cost the tracker nothing: their start is in the step's row)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                for stream, rest in self._partial.items():
                    if rest:
                        self._add(stream, None, rest)
                self._partial.clear()
                if self.lines or self.left_lines or self.attempt > 1:
                    self.lines.insert(
                        0,
                        (self.started, "event", "info", f"step_started attempt={self.attempt}"),
                    )
                if self.left_lines:
                    self.lines.append(
                        (
                            time.time(),
                            "event",
                            "warning",
                            f"step_log_cut lines_left_out={self.left_lines} "
                            f"bytes_left_out={self.left_bytes} (an attempt keeps "
                            f"{MAX_LINES} lines and {MAX_BYTES // 1024} KiB)",
                        )
                    )
                if secrets:
                    from pipectl.log import redact

                    self.lines = [
                        (t, s, lv, redact(m, secrets) if any(v in m for v in secrets) else m)
                        for t, s, lv, m in self.lines
                    ]
            return tuple(self.lines)


class StepCapture:
    """The logs of one step's attempts (the attempt runner makes one per step): :meth:`begin`
    sets :data:`CURRENT` to a new attempt's buffer, :meth:`finish` returns them all."""

    __slots__ = ("attempts",)

    def __init__(self) -> None:
        self.attempts: list[AttemptLog] = []

    def begin(self, attempt: int) -> AttemptLog:
        log = AttemptLog(attempt)
        self.attempts.append(log)
        CURRENT.set(log)
        return log

    def event(self, level: str, message: str) -> None:
        """One of the engine's events of the current attempt (``step_started``...)."""
        if self.attempts:
            self.attempts[-1].add("event", level, message)

    def finish(self, secrets: Sequence[str] = ()) -> StepLogs:
        return tuple((log.attempt, log.close(secrets)) for log in self.attempts)


# -- what a run installs while it captures ---------------------------------------------------


class Tee:
    """``sys.stdout`` or ``sys.stderr`` while runs capture: a write from a step's context is
    kept in the step's attempt log, and every write goes on to the stream it replaced."""

    def __init__(self, real: Any, stream: str) -> None:
        self._pipectl_real = real
        self._pipectl_stream = stream

    def write(self, text: str) -> int:
        log = CURRENT.get()
        if log is not None and type(text) is str:
            log.write(self._pipectl_stream, text)
        written: int = self._pipectl_real.write(text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self._pipectl_real, name)


def real_stream(stream: Any) -> Any:
    """The stream under a :class:`Tee` (pipectl's own output is not a step's)."""
    while isinstance(stream, Tee):
        stream = stream._pipectl_real
    return stream


class LogHandler(logging.Handler):
    """On the root logger while runs capture: a record emitted from a step's context goes to
    the attempt's log. It also does what :data:`logging.lastResort` would have done had it not
    been there (print warnings when no other handler exists)."""

    def emit(self, record: logging.LogRecord) -> None:
        log = CURRENT.get()
        if log is not None:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format: the raw message
                message = str(record.msg)
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.name != "root":
                message = f"{record.name}: {message}"
            log.add("logging", record.levelname, message)
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and self._alone(record):
            token = CURRENT.set(None)  # shown, not captured twice (as stderr)
            try:
                last.handle(record)
            finally:
                CURRENT.reset(token)

    def _alone(self, record: logging.LogRecord) -> bool:
        """No handler but this one on the record's way up (logging would use lastResort)."""
        logger: Any = logging.Logger.manager.loggerDict.get(record.name)
        if not isinstance(logger, logging.Logger):
            logger = logging.getLogger()
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


_lock = threading.Lock()
_count = 0
_installed: tuple[Tee | None, Tee | None, LogHandler] | None = None


def install() -> None:
    """Start capturing (a run that captures begins); nested and concurrent runs count."""
    global _count, _installed
    with _lock:
        _count += 1
        if _count > 1:
            return
        out = Tee(sys.stdout, "stdout") if sys.stdout is not None else None
        err = Tee(sys.stderr, "stderr") if sys.stderr is not None else None
        if out is not None:
            sys.stdout = out
        if err is not None:
            sys.stderr = err
        handler = LogHandler()
        logging.getLogger().addHandler(handler)
        _installed = (out, err, handler)


def uninstall() -> None:
    """Stop capturing (a run that captured ended); the last one puts the streams back (unless
    something replaced them meanwhile) and removes the handler."""
    global _count, _installed
    with _lock:
        if _count == 0:
            return
        _count -= 1
        if _count or _installed is None:
            return
        out, err, handler = _installed
        _installed = None
        if out is not None and sys.stdout is out:
            sys.stdout = out._pipectl_real
        if err is not None and sys.stderr is err:
            sys.stderr = err._pipectl_real
        logging.getLogger().removeHandler(handler)


def installed() -> bool:
    """Whether a run captures now (tests)."""
    return _count > 0


def wants_step_logs(listeners: Sequence[Any], pm: Any = None) -> bool:
    """Whether a run with these listeners (and the plugins of ``pm``) captures step logs:
    one of them has a true ``wants_step_logs``."""
    for listener in listeners:
        if getattr(listener, "wants_step_logs", False):
            return True
    get_plugins = getattr(pm, "get_plugins", None)
    if get_plugins is not None:
        return any(getattr(p, "wants_step_logs", False) is True for p in get_plugins())
    return False

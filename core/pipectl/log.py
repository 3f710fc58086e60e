"""Logging with structlog, imported only when something is logged.

If the application configured structlog itself, pipectl logs through that configuration.
Otherwise pipectl uses its own logger, which drops events below WARNING until
:func:`configure_logging` (the CLI calls it) says otherwise, so a library user's script is quiet
and the engine's per-step events cost next to nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:  # pragma: no cover
    import weakref

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

_logger: Any = None
_configured = False
SECRETS: Any = None  # a ContextVar of the running pipeline's secret values, made on first use


def secrets_var() -> Any:
    global SECRETS
    if SECRETS is None:
        import contextvars

        SECRETS = contextvars.ContextVar("pipectl_secrets", default=())
    return SECRETS


# PipelineRun -> its secret values, made on first use
_RUN_SECRETS: weakref.WeakKeyDictionary[Any, tuple[str, ...]] | None = None


def remember_secrets(run: Any, values: tuple[str, ...]) -> None:
    """Keep the secret values of ``run`` (a PipelineRun) for as long as the run object lives,
    beside it (never on it: it is not pickled, printed or recorded with the run), so that what
    is shown of the run after it ended (:mod:`pipectl.preview`) can mask them."""
    global _RUN_SECRETS
    if _RUN_SECRETS is None:
        import weakref

        _RUN_SECRETS = weakref.WeakKeyDictionary()
    _RUN_SECRETS[run] = tuple(values)


def secrets_of(run: Any) -> tuple[str, ...]:
    """The secret values :func:`remember_secrets` kept for ``run``; empty if none."""
    if _RUN_SECRETS is None:
        return ()
    try:
        return _RUN_SECRETS.get(run, ())
    except TypeError:  # not weak-referenceable: not a run of this process
        return ()


def redact(text: str, secrets: Any = None) -> str:
    """``text`` with every secret value of the running pipeline replaced by ``***``."""
    for value in secrets if secrets is not None else secrets_var().get():
        if value in text:
            text = text.replace(value, "***")
    return text


def _redact_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    secrets = secrets_var().get()
    if secrets:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value, secrets)
            elif value is not None and not isinstance(value, (int, float, bool)):
                text = str(value)
                if any(s in text for s in secrets):
                    event[key] = redact(text, secrets)
    return event


def configure_logging(
    level: str | int = "info", fmt: str = "console", stream: IO[str] | None = None
) -> None:
    """Send pipectl's events to ``stream`` (stderr by default) from ``level`` up.

    :param fmt: ``console`` (key=value lines, for people and CI logs) or ``json`` (one JSON
        object per line).
    """
    import structlog

    global _logger, _configured
    if isinstance(level, str):
        level = _LEVELS[level.lower()]
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer()
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    else:
        raise ValueError(f"unknown log format {fmt!r}: use console or json")
    processors = [
        structlog.contextvars.merge_contextvars,
        # a traceback as plain text, before redaction: never rich's frames with their locals,
        # which hold whatever a function had (a secret param's value, a password)
        structlog.processors.format_exc_info,
        _redact_event,
        structlog.processors.add_log_level,
        _capture_event,  # a step's events into its attempt's log (pipectl.step_logs)
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    _logger = structlog.wrap_logger(
        # PrintLogger only writes and flushes: any text stream will do
        structlog.PrintLogger(cast(TextIO, stream)) if stream is not None else _StderrLogger(),
        processors=processors,
        wrapper_class=_capturing(structlog.make_filtering_bound_logger(level), level),
    ).bind()  # a concrete logger, not a lazy proxy that rebuilds itself on every call
    _configured = True


_CAPTURE_ONLY = "_pipectl_capture_only"
_step_logs: Any = None  # pipectl.step_logs, imported by configure_logging


def _capture_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A processor: an event logged from a step's context is kept in the step's attempt log
    (:mod:`pipectl.step_logs`); one below the console's level (:func:`_capturing`) is then
    dropped."""
    only = event.pop(_CAPTURE_ONLY, False)
    log = _step_logs.CURRENT.get() if _step_logs is not None else None
    if log is not None:
        name = event.get("event")
        if name not in _step_logs.ENGINE_EVENTS:
            parts = [str(name)]
            for key, value in event.items():
                if key not in ("event", "level", "run_id", "step", "timestamp", "exception"):
                    text = str(value)
                    parts.append(f"{key}={text!r}" if " " in text else f"{key}={text}")
            if event.get("exception"):
                parts.append("\n" + str(event["exception"]))
            log.add("event", str(event.get("level", method)), " ".join(parts))
    if only:
        import structlog

        raise structlog.DropEvent
    return event


def _capturing(base: type, level: int) -> type:
    """``base`` (a filtering bound logger class), whose methods for the levels from INFO up to
    ``level`` log an event only inside a step that captures its logs (captured, not shown)."""
    global _step_logs
    from pipectl import step_logs

    _step_logs = step_logs
    names = [
        name
        for name, value in (
            ("info", logging.INFO),
            ("warning", logging.WARNING),
            ("warn", logging.WARNING),
            ("error", logging.ERROR),
            ("err", logging.ERROR),
        )
        if value < level
    ]
    if not names:
        return base

    def method(name: str) -> Any:
        current = step_logs.CURRENT

        def log(self: Any, event: str, *args: Any, **kw: Any) -> Any:
            if current.get() is None:
                return None
            if args:
                event = event % (args[0] if len(args) == 1 and isinstance(args[0], dict) else args)
            kw[_CAPTURE_ONLY] = True
            return self._proxy_to_logger(name, event, **kw)

        log.__name__ = name
        return log

    return type(base.__name__, (base,), {name: method(name) for name in names})


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment (pytest's capture, an
    application's redirection), not the stream that was current when logging was set up
    (under a step-log :class:`~pipectl.step_logs.Tee`: the stream under it, so that pipectl's
    own lines are not captured as a step's stderr too)."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        if _step_logs is not None:
            stream = _step_logs.real_stream(stream)
        if stream is None or getattr(stream, "closed", False):
            return
        try:
            stream.write(message + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not break a run
            pass

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def get_logger() -> Any:
    """pipectl's logger: the application's structlog setup if it has one, else pipectl's own."""
    import structlog

    global _logger
    if not _configured and structlog.is_configured():
        return structlog.get_logger("pipectl")
    if _logger is None:
        configure_logging("warning")
        globals()["_configured"] = False  # a default, not a choice: an app's config still wins
    return _logger


def plugin_failed(record: Any) -> None:
    """One warning per broken plugin, naming it, its distribution and version, and the error."""
    get_logger().warning(
        "plugin_failed",
        plugin=record.name,
        dist=record.distribution,
        version=record.version,
        error=record.error,
        hint=f"`pipectl plugins` lists it; PIPECTL_DISABLE_PLUGINS={record.name} turns it off",
    )


class _ToPipectl(logging.Handler):
    """Python ``logging`` records as pipectl events (so ``--log-format json`` stays one JSON
    object a line), secrets masked like every event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = getattr(get_logger(), record.levelname.lower(), None) or get_logger().info
            method(record.getMessage(), logger=record.name)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def capture_library_logs(level: int = logging.DEBUG) -> None:
    """Route the root Python logger (libraries such as httpx, psycopg or distributed) into
    pipectl's events from ``level`` up (``pipectl run -vv``)."""
    root = logging.getLogger()
    if not any(isinstance(h, _ToPipectl) for h in root.handlers):
        root.addHandler(_ToPipectl())
    root.setLevel(level)


def reset_logging() -> None:
    """Forget :func:`configure_logging` (tests)."""
    global _logger, _configured
    _logger = None
    _configured = False

"""What ``pipectl run`` shows on a terminal: a live display of the running steps, then a table.

Two modes, picked by :func:`progress_enabled`:

* **terminal** (stdout and stderr are terminals, or ``--progress``): :class:`LiveProgress`, a
  lifecycle listener registered on the run's plugin manager, keeps a few counters and the
  running steps; one refresher thread redraws a `rich <https://rich.readthedocs.io>`_ live
  display on **stderr** about 8 times a second (a header with counts and elapsed time, one line
  per running step with its attempt and elapsed time) and prints a line above it for each step
  that ends. At the end :func:`print_rich_summary` prints a coloured table on **stdout**.
* **plain** (a pipe, a CI log, ``TERM=dumb``, ``--log-format json``, ``-q``): one log event per
  line on stderr and a plain table on stdout, written by the ``run`` command itself with the
  helpers below (:func:`failure_details`, :func:`final_line`).

rich is imported only when the terminal mode is used, so ``pipectl --help`` never loads it.
Nothing in this module touches the terminal from a lifecycle hook: hooks may run on a pipectl
worker thread while the engine holds the run's lock, so they only update counters under the
display's own lock (O(1) per event) and the refresher thread does all the rendering.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Self

from pipectl.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, RenderableType

    from pipectl.model import PipelineRun, StepResult, StepSpec

__all__ = [
    "LiveProgress",
    "failure_detail",
    "failure_details",
    "final_line",
    "format_duration",
    "format_seconds",
    "print_rich_summary",
    "progress_enabled",
    "user_location",
]

PLUGIN_NAME = "pipectl-progress"
REFRESH_PER_SECOND = 8
MAX_RUNNING_LINES = 20
"""Running steps shown at most (fewer on a short terminal); the rest is one "and N more" line."""
MAX_FINISHED_LINES = 20
"""Lines printed above the live display per refresh for steps that ended; failures first."""
MAX_TABLE_ROWS = 100
"""Rows of the final table at most: failed steps first, then the others in pipeline order."""
MAX_ERROR = 500
"""Characters of a failed step's error (its first line) under the table at most."""
MAX_STEP_NAME = 40
"""Characters of a step name in the final table at most (longer ones end in an ellipsis)."""
MAX_FAILURE_DETAILS = 10
"""Failed steps explained under the table (attempt, error, where it was raised) at most."""

_DUMB_TERMS = ("dumb", "unknown")
_STATUS_STYLES = {
    "success": "green",
    "cached": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "magenta",
    "rolled_back": "cyan",
    "running": "blue",
    "pending": "dim",
}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


# ---------------------------------------------------------------------------------------------
# Which mode
# ---------------------------------------------------------------------------------------------


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # a closed or odd stream is no terminal
        return False


def progress_enabled(
    option: bool | None,
    *,
    log_format: str,
    quiet: bool,
    environ: Mapping[str, str] | None = None,
    streams: Iterable[IO[str] | None] | None = None,
) -> bool:
    """Whether ``pipectl run`` uses the terminal mode (live display and coloured table).

    Never with ``--log-format json`` (machines read stderr) or ``-q`` (errors and the final
    line only), nor on a dumb terminal (``TERM=dumb``: no cursor movement). Otherwise
    ``--progress``/``--no-progress`` (``option`` True/False) decides, and by default (None) it is
    on when stdout and stderr are both terminals. ``NO_COLOR`` only turns the colours off.
    """
    environ = os.environ if environ is None else environ
    if log_format == "json" or quiet:
        return False
    if environ.get("TERM", "").lower() in _DUMB_TERMS:
        return False
    if option is not None:
        return option
    return all(_isatty(s) for s in (streams if streams is not None else (sys.stdout, sys.stderr)))


# ---------------------------------------------------------------------------------------------
# Text shared by both modes
# ---------------------------------------------------------------------------------------------


def format_duration(ms: float | None) -> str:
    """A duration as pipectl shows it everywhere (summaries, ``runs``, stories, the live
    display): ``4.2 ms``, ``120 ms``, ``1.24 s``, ``3m 05s``, ``2h 01m``; ``—`` if unknown."""
    if ms is None:
        return "—"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def format_seconds(seconds: float) -> str:
    """:func:`format_duration` of a number of seconds."""
    return format_duration(seconds * 1000)


class Location(NamedTuple):
    """Where an exception was raised: a file (relative to the working directory when it is
    under it), a line and a function."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}, in {self.function}"


_FRAME = re.compile(
    r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$', re.MULTILINE
)
_library_dirs: tuple[str, ...] | None = None


def _library_prefixes() -> tuple[str, ...]:
    """The standard library's and the installed packages' folders (not the user's code)."""
    global _library_dirs
    if _library_dirs is None:
        import sysconfig

        paths = sysconfig.get_paths()
        dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        _library_dirs = tuple(os.path.join(d, "") for d in dirs if d)
    return _library_dirs


def user_location(result: StepResult) -> Location | None:
    """Where the step's exception was raised in the user's code, or None when unknown.

    The engine keeps the traceback of a failed step without pipectl's own frames
    (``result.traceback``); of the frames left, the deepest one outside the standard library
    and the installed packages is the user's line (the deepest frame of all when every frame is
    a library's). None when there is no traceback or no frame (a timeout raised by the engine).
    """
    frames = [
        (m["file"], int(m["line"]), m["func"].strip())
        for m in _FRAME.finditer(result.traceback or "")
    ]
    if not frames:
        return None
    libraries = _library_prefixes()
    ours = [f for f in frames if not f[0].startswith(libraries) and not f[0].startswith("<")]
    file, line, function = (ours or frames)[-1]
    cwd = os.path.join(os.getcwd(), "")
    file = file.removeprefix(cwd)
    return Location(file, line, function)


class FailureDetail(NamedTuple):
    """A failed step, for the lines under the table."""

    step: str
    attempts: int
    max_attempts: int
    error: str
    location: Location | None
    allowed: bool = False  # the step may fail (allow_failure): the run goes on

    def headline(self) -> str:
        """``load failed on attempt 2 of 3: ValueError: bad row``; ``... failed (allowed) on
        ...`` for a step allowed to fail."""
        allowed = " (allowed)" if self.allowed else ""
        return (
            f"{self.step} failed{allowed} on attempt {self.attempts} of "
            f"{self.max_attempts}: {self.error}"
        )


def status_text(result: StepResult, spec: StepSpec | None) -> str:
    """A step's status for people: ``failed (allowed)`` for a step allowed to fail."""
    status = result.status.value
    if status == "failed" and spec is not None and spec.allow_failure:
        return "failed (allowed)"
    if result.cached_from is not None:  # a cache hit: success, without running
        return "cached"
    return status


DETAIL_HEADER = "output / error"
"""The heading of the tables' last column: what a step produced, or why it failed or did not
run."""
MIN_DETAIL = 20
"""Characters of the last column kept at least when a table is cut to a width."""


def table_width(
    stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> int | None:
    """How wide a table printed on ``stream`` (stdout by default) may be: ``COLUMNS`` when it is
    set (a positive number), else the terminal's width on a terminal, else None: no limit, so
    that in a pipe or a file every row is printed whole (an error, a skip reason, an output)."""
    environ = os.environ if environ is None else environ
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = sys.stdout if stream is None else stream
    if not _isatty(stream):
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def step_detail(result: StepResult, secrets: Iterable[str] = ()) -> str:
    """The last cell of a step's row: the first line of its error, or why it did not run, or
    else what it produced (a data step's ``read 121, sqlite 114, jsonl 114, rejected 6``,
    another step's :func:`pipectl.preview.preview`), secrets masked; a resumed step's output
    says where it came from. Cut to fit by :func:`table_lines`."""
    from pipectl.preview import MAX_PREVIEW, preview

    if result.error:
        lines = result.error.strip().splitlines()
        return lines[0] if lines else ""
    output = result.output
    shown = "" if output is None else preview(output, MAX_PREVIEW, secrets)
    if result.cached_from is not None:
        where = f"from the cache, run {result.cached_from[:12]}"
        return f"{shown} ({where})" if shown else where
    if result.reason:
        return f"{shown} ({result.reason})" if shown else result.reason.strip().split("\n")[0]
    return shown


def table_lines(
    rows: Sequence[tuple[str, ...]], width: int | None, secrets: Iterable[str] = ()
) -> list[str]:
    """A plain table: ``rows[0]`` the headings; every column but the last padded to its
    widest cell, two spaces apart; the last one as it is, cut (ending in ``…``) so that the line
    fits in ``width`` (it keeps :data:`MIN_DETAIL` characters at least), whole when ``width``
    is None (a pipe)."""
    from pipectl.preview import fit

    columns = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(columns)]
    prefix = sum(widths) + 2 * columns
    room = None if width is None else max(width - prefix, MIN_DETAIL)
    lines = []
    for row in rows:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:columns]))
        last = row[columns]
        if last:
            line += "  " + (last if room is None else fit(last, room, secrets))
        lines.append(line.rstrip())
    return lines


def failure_detail(result: StepResult, max_attempts: int, allowed: bool = False) -> FailureDetail:
    """The :class:`FailureDetail` of a failed step whose spec allows ``max_attempts``."""
    error = (result.error or "failed").splitlines()[0]
    if len(error) > MAX_ERROR:
        error = error[: MAX_ERROR - 3] + "..."
    return FailureDetail(
        result.step_name,
        result.attempts,
        max(max_attempts, result.attempts),
        error,
        user_location(result),
        allowed,
    )


def failure_details(run: PipelineRun, steps: Mapping[str, StepSpec]) -> list[FailureDetail]:
    """One :class:`FailureDetail` for each failed step of ``run``, in pipeline order; for a
    mapped step, one for each of its failed items (the first five: the step's error counts
    them all)."""
    out: list[FailureDetail] = []
    for name, result in run.steps.items():
        if result.status.value == "failed":
            spec = steps.get(name)
            max_attempts = spec.max_attempts if spec is not None else 0
            allowed = spec is not None and spec.allow_failure
            failed_items = [r for r in result.items or () if r.status.value == "failed"]
            if failed_items:  # a mapped step: its failed items, each with its own attempts
                out.extend(failure_detail(r, max_attempts, allowed) for r in failed_items[:5])
            else:
                out.append(failure_detail(result, max_attempts, allowed))
    return out


def _records(run: PipelineRun) -> int | None:
    """The records the run's steps reported, or None when no step reports records."""
    counts = [r.records for r in run.steps.values() if r.records is not None]
    return sum(counts) if counts else None


MAX_DATA_LINES = 20


def data_lines(run: PipelineRun) -> list[str]:
    """Where each data step's records went: one line per output that committed in this run
    (``load_orders -> sqlite out/orders.sqlite table orders: 118 records``) or that a resume
    found committed already (``...: already committed by run 1f2e... (118 records)``), and the
    bad records set aside. A failed data step says what each output became: the ones that
    committed (``... : 118 records``) and the others (``... : failed, nothing committed``).
    Steps without a data output give none. The run's secrets (a secret param or connection
    field in a path, say) are masked."""
    lines: list[str] = []
    for name, result in run.steps.items():
        output = result.output
        if output is None:  # a failed data step carries its report on its error
            output = getattr(result.exception, "result", None)
        reports = getattr(output, "outputs", None)
        failed = result.status.value == "failed"
        if not isinstance(reports, Mapping) or result.status.value != "success" and not failed:
            continue
        for report in reports.values():
            status = getattr(report, "status", None)
            target = getattr(report, "target", None) or getattr(report, "name", "?")
            if status == "committed":
                lines.append(f"{name} -> {target}: {report.written:,} records")
            elif status == "skipped" and getattr(report, "note", None):
                # a resume found the load in the destination: it was not written again
                lines.append(f"{name} -> {target}: {report.note} ({report.written:,} records)")
            elif failed:
                lines.append(f"{name} -> {target}: {status}, nothing committed")
        bad = getattr(output, "bad_records", 0)
        if bad:
            where = getattr(output, "dead_letter_path", None)
            lines.append(
                f"{name}: {bad:,} bad records set aside"
                + (f" in {where}" if where else " (skipped)")
            )
    if len(lines) > MAX_DATA_LINES:
        lines = [*lines[:MAX_DATA_LINES], f"... and {len(lines) - MAX_DATA_LINES} more"]
    from pipectl.preview import mask_text, run_secrets

    secrets = run_secrets(run)
    if secrets:
        lines = [mask_text(line, secrets) for line in lines]
    return [shown_paths(line) for line in lines]


def shown_paths(text: str) -> str:
    """``text`` with the paths under the working directory shown relative to it: a pipeline
    file's paths are absolute once loaded (relative to the file), but a person reads
    ``examples/quickstart/output/orders.sqlite`` better from the folder they typed in."""
    import os

    cwd = os.getcwd()
    return text.replace(cwd + os.sep, "") if cwd != os.sep else text


MAX_LEFT_OUT_NAMES = 20
"""How many of the steps --skip left out the summary names (then ``... and N more``)."""


def left_out_line(names: Iterable[str]) -> str:
    """``left out by --skip: b, c``: the steps --skip left out of a run (``run.left_out``)."""
    names = list(names)
    shown = ", ".join(names[:MAX_LEFT_OUT_NAMES])
    more = len(names) - MAX_LEFT_OUT_NAMES
    return f"left out by --skip: {shown}" + (f" ... and {more} more" if more > 0 else "")


def final_line(run: PipelineRun) -> str:
    """``run 1f2e… of 'orders': failed in 2.31 s, 1,204 records`` (records when reported)."""
    records = _records(run)
    tail = f", {records:,} records" if records is not None else ""
    cached = sum(1 for r in run.steps.values() if r.cached_from is not None)
    if cached:
        tail += f", {cached:,} step{'s' if cached != 1 else ''} from the cache"
    return (
        f"run {run.run_id} of {run.pipeline_id!r}: {run.status.value} in "
        f"{format_duration(run.duration_ms or 0)}{tail}"
    )


# ---------------------------------------------------------------------------------------------
# The live display
# ---------------------------------------------------------------------------------------------


def make_console(stream: IO[str], width: int | None = None) -> Console:
    """A rich console on ``stream`` that renders as a terminal (``NO_COLOR`` still applies),
    ``width`` wide (by default: ``COLUMNS``, the terminal's width, else 80)."""
    from rich.console import Console

    return Console(file=stream, force_terminal=True, highlight=False, soft_wrap=False, width=width)


class _Running:
    """A running step: its current attempt, when it started, when its next attempt is due."""

    __slots__ = ("attempt", "max_attempts", "retry_at", "started")

    def __init__(self, attempt: int, max_attempts: int, started: float):
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.started = started
        self.retry_at: float | None = None


class _Snapshot(NamedTuple):
    """The state of the run as one refresh draws it."""

    counts: dict[str, int]
    records: int
    running_count: int
    running: list[tuple[str, int, int, float, float | None]]  # name, attempt, max, t0, retry_at


class LiveProgress:
    """A live view of one run on a terminal, and the lifecycle listener that feeds it.

    Use it as a context manager around the run, and give it to the run as a run listener (it
    goes by the name ``pipectl-progress``; it is not registered on the plugin manager, so
    another run in the process does not reach it): it starts the display and its refresher
    thread, and on exit prints what is left and clears the live area::

        with LiveProgress(pipe.name, total=len(pipe.steps)) as live:
            run = pipe.run_sync(listeners=[live])

    The hooks only update counters under ``self._lock``; the refresher thread is the only one
    that renders. Steps of a sub-pipeline run (another run than the first one that starts) are
    left out: their parent step shows as running meanwhile.
    """

    plugin_name = PLUGIN_NAME

    def __init__(
        self,
        pipeline: str,
        total: int,
        *,
        console: Console | None = None,
        refresh_per_second: float = REFRESH_PER_SECOND,
    ):
        self.pipeline = pipeline
        self.total = total
        self.console = console if console is not None else make_console(sys.stderr)
        self.interval = 1.0 / refresh_per_second
        self._lock = threading.Lock()
        self._run: Any = None
        self._t0 = time.monotonic()
        self._running: dict[str, _Running] = {}  # insertion order: start order
        self._ended: deque[tuple[StepResult, int]] = deque()  # not yet printed above the display
        self._counts = {"done": 0, "failed": 0, "skipped": 0, "cancelled": 0, "items": 0}
        self._records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        utf = (self.console.encoding or "").lower().startswith("utf")
        self._ok, self._ko, self._spinner = ("✓", "✗", _SPINNER) if utf else ("+", "x", "-\\|/")

    # -- lifecycle listener (any thread, under the run's lock: O(1), no terminal I/O) --------

    @hookimpl
    def pipectl_run_start(self, run: PipelineRun) -> None:
        """Remember the run (the first one: sub-pipeline runs are not shown)."""
        with self._lock:
            if self._run is None:
                self._run = run

    @hookimpl
    def pipectl_step_start(self, run: PipelineRun, step: StepSpec, attempt: int) -> None:
        """A step's attempt started: show it, or move its line to the new attempt."""
        if run is not self._run:
            return
        with self._lock:
            entry = self._running.get(step.name)
            if entry is None:
                self._running[step.name] = _Running(attempt, step.max_attempts, time.monotonic())
            else:
                entry.attempt, entry.retry_at = attempt, None

    @hookimpl
    def pipectl_step_retry(
        self, run: PipelineRun, step: StepSpec, attempt: int, error: BaseException, delay: float
    ) -> None:
        """An attempt failed and another follows after ``delay``: show the wait.

        The error is not shown here: the exception is not redacted of secret params (the
        step's final ``result.error`` is).
        """
        if run is not self._run:
            return
        with self._lock:
            entry = self._running.get(step.name)
            if entry is not None:
                entry.retry_at = time.monotonic() + delay

    @hookimpl
    def pipectl_step_finish(self, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        """A step ended: count it and queue its line (the refresher prints it)."""
        if run is not self._run:
            return
        status = result.status.value
        with self._lock:
            self._running.pop(step.name, None)
            counts = self._counts
            if getattr(step, "map_of", None) is not None:
                # an item of a mapped step: counted apart (not a step of the total), and only a
                # failed one gets a line (10,000 items must not print 10,000 lines)
                counts["items"] += 1
                if status == "failed":
                    self._ended.append((result, step.max_attempts))
                return
            counts["done"] += 1
            if status in counts:
                counts[status] += 1
            if result.records:
                self._records += result.records
            if result.attempts:  # it ran: skipped and never-started steps only count
                self._ended.append((result, step.max_attempts))

    # -- start and stop ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Show the display and start the refresher thread."""
        from rich.live import Live

        self._t0 = time.monotonic()
        self._live = Live(
            self.render(),
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start(refresh=True)
        self._thread = threading.Thread(
            target=self._refresh_loop, name="pipectl-progress", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Print the last ended steps and clear the live area."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._live is not None:
            try:
                self._tick()
            finally:
                self._live.stop()
                self._live = None

    # -- rendering (the refresher thread only) ------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - a display problem must never end the run
                return

    def _tick(self) -> None:
        """Print the steps that ended since the last tick above the display, then redraw it."""
        with self._lock:
            ended, self._ended = self._ended, deque()
        lines = self._ended_lines(ended)
        if lines:
            from rich.console import Group

            self._live.console.print(Group(*lines))
        self._live.update(self.render(), refresh=True)

    def render(self, limit: int | None = None) -> RenderableType:
        """The live area as it is now, with at most ``limit`` running steps (by default
        :data:`MAX_RUNNING_LINES`, fewer on a short terminal). Takes the lock for O(limit)."""
        if limit is None:
            limit = max(1, min(MAX_RUNNING_LINES, self.console.size.height - 4))
        with self._lock:
            running = [
                (name, e.attempt, e.max_attempts, e.started, e.retry_at)
                for name, e in islice(self._running.items(), limit)
            ]
            snapshot = _Snapshot(dict(self._counts), self._records, len(self._running), running)
        return self._render(snapshot)

    def _ended_lines(self, ended: deque[tuple[StepResult, int]]) -> list[Any]:
        """``✓ load 0.52s 1,204 records`` / ``✗ fetch failed on attempt 2 of 2: ... (at ...)``;
        at most :data:`MAX_FINISHED_LINES`, failures first, the rest as one count."""
        from rich.text import Text

        if not ended:
            return []
        failed = [e for e in ended if e[0].status.value == "failed"]
        shown = failed[:MAX_FINISHED_LINES]
        if len(shown) < MAX_FINISHED_LINES:
            shown += [e for e in ended if e[0].status.value != "failed"][
                : MAX_FINISHED_LINES - len(shown)
            ]
        lines = []
        for result, max_attempts in shown:
            status = result.status.value
            line = Text()
            if status == "success":
                line.append(f"{self._ok} ", style="green").append(result.step_name, style="bold")
                line.append(f"  {format_seconds(result.duration_ms / 1000)}", style="dim")
                if result.cached_from is not None:
                    line.append("  from the cache", style="green")
                if result.attempts > 1:
                    line.append(f"  {result.attempts} attempts", style="yellow")
                if result.records is not None:
                    line.append(f"  {result.records:,} records", style="dim")
            elif status == "failed":
                failure = failure_detail(result, max_attempts)
                line.append(f"{self._ko} ", style="red").append(result.step_name, style="bold red")
                line.append(
                    f" failed on attempt {failure.attempts} of {failure.max_attempts}: ",
                    style="red",
                )
                line.append(failure.error)
                if failure.location is not None:
                    line.append(f"  ({failure.location})", style="dim")
            else:
                line.append(f"- {result.step_name} {status}", style=_STATUS_STYLES.get(status))
            if status != "failed":  # a failure wraps: its error and location are the point
                line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        if len(ended) > len(shown):
            lines.append(
                Text(f"  ... and {len(ended) - len(shown):,} more steps ended", style="dim")
            )
        return lines

    def _render(self, snapshot: _Snapshot) -> RenderableType:
        """The live area: a header line, one line per running step, "and N more"."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        counts, records, n_running, running = snapshot
        more = n_running - len(running)
        header = Text()
        header.append(f"{self.pipeline}", style="bold")
        header.append(f"  {counts['done']}/{self.total} done")
        if counts["items"]:
            header.append(f"  {counts['items']:,} items done")
        if counts["failed"]:
            header.append(f"  {counts['failed']} failed", style="red")
        if counts["skipped"]:
            header.append(f"  {counts['skipped']} skipped", style="yellow")
        if counts["cancelled"]:
            header.append(f"  {counts['cancelled']} cancelled", style="magenta")
        header.append(f"  {n_running} running", style="blue")
        if records:
            header.append(f"  {records:,} records", style="dim")
        header.append(f"  {format_seconds(now - self._t0)}", style="dim")
        header.no_wrap, header.overflow = True, "ellipsis"
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", max_width=48)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, justify="right")
        frame = self._spinner[int(now * 10) % len(self._spinner)]
        for name, attempt, max_attempts, started, retry_at in running:
            if retry_at is not None:
                what = Text(
                    f"retry {attempt + 1}/{max_attempts} in "
                    f"{format_seconds(max(retry_at - now, 0.0))}",
                    style="yellow",
                )
            else:
                what = Text(
                    f"attempt {attempt}/{max_attempts}", style="yellow" if attempt > 1 else ""
                )
            grid.add_row(
                Text(frame, style="blue"),
                name,
                what,
                Text(format_seconds(now - started), style="dim"),
            )
        parts: list[Any] = [header]
        if running:
            parts.append(grid)
        if more > 0:
            parts.append(Text(f"  ... and {more:,} more running", style="dim"))
        return Group(*parts)


# ---------------------------------------------------------------------------------------------
# The final table (terminal mode)
# ---------------------------------------------------------------------------------------------


def _table_rows(run: PipelineRun) -> tuple[list[tuple[str, StepResult]], int]:
    """The rows of the table (at most :data:`MAX_TABLE_ROWS`: failed steps first, then the
    others, shown in pipeline order) and how many steps are left out."""
    items = list(run.steps.items())
    if len(items) <= MAX_TABLE_ROWS:
        return items, 0
    rank = {"failed": 0, "cancelled": 1, "rolled_back": 1, "skipped": 2}
    order = sorted(range(len(items)), key=lambda i: (rank.get(items[i][1].status.value, 3), i))
    keep = sorted(order[:MAX_TABLE_ROWS])
    return [items[i] for i in keep], len(items) - len(keep)


def print_rich_summary(
    run: PipelineRun, steps: Mapping[str, StepSpec], console: Console | None = None
) -> None:
    """The run's table on a terminal (stdout by default): step, coloured status, duration,
    attempts, records and the last column of :func:`step_detail` (the error, why the step did
    not run, or what it produced), cut to fit the terminal (whole in a pipe, ``--progress``
    off a terminal; ``COLUMNS`` wide when set); then where each failed step raised, the steps
    --skip left out (:func:`left_out_line`) and :func:`final_line`."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from pipectl.preview import fit, run_secrets

    limit = table_width() if console is None else console.width
    secrets = run_secrets(run)
    rows, left_out = _table_rows(run)
    cells: list[tuple[str, ...]] = []
    for name, r in rows:
        cells.append(
            (
                name,
                status_text(r, steps.get(name)),
                format_seconds(r.duration_ms / 1000) if r.attempts else "",
                str(r.attempts),
                "" if r.records is None else f"{r.records:,}",
                step_detail(r, secrets),
            )
        )
    headers = ["step", "status", "duration", "attempts", "records", DETAIL_HEADER]
    if not any(c[4] for c in cells):  # no step reports records: no column for them
        headers.remove("records")
        cells = [(*c[:4], c[5]) for c in cells]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers[:-1])]
    # 3 = padding and divider per column
    pads = 3 * (len(headers) - 1)
    if limit is not None:
        # step names are cut so that the last column keeps at least 30 characters, and the
        # last column takes the rest of the line
        widths[0] = min(widths[0], MAX_STEP_NAME, max(12, limit - sum(widths[1:]) - pads - 30))
        detail_width = max(12, limit - sum(widths) - pads)
        cells = [(*c[:-1], fit(c[-1], detail_width, secrets)) for c in cells]
    else:  # not a terminal: every row whole
        detail_width = max([len(headers[-1]), *(len(c[-1]) for c in cells)])
    if console is None:
        console = make_console(
            sys.stdout, None if limit is not None else max(80, sum(widths) + pads + detail_width)
        )
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold"
    )
    for header in headers:
        table.add_column(
            header,
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if header in ("duration", "attempts", "records") else "left",
            max_width={"step": widths[0], DETAIL_HEADER: detail_width}.get(header),
        )
    for name, status, duration, attempts, *records, detail in cells:
        table.add_row(
            name,
            Text(
                status,
                style="yellow" if status == "failed (allowed)" else _STATUS_STYLES.get(status, ""),
            ),
            duration,
            Text(attempts, style="yellow" if attempts not in ("0", "1") else ""),
            *records,
            Text(detail, style="red" if status == "failed" else "dim"),
        )
    if left_out:
        counts: dict[str, int] = {}
        shown = {name for name, _ in rows}
        for name, r in run.steps.items():
            if name not in shown:
                counts[r.status.value] = counts.get(r.status.value, 0) + 1
        table.caption = f"{left_out:,} more steps not listed: " + ", ".join(
            f"{n:,} {s}" for s, n in counts.items()
        )
    console.print(table)
    failed = [r for r in run.steps.values() if r.status.value == "failed"]
    if failed:
        console.print()
    mark = "✗ " if console.encoding.lower().startswith("utf") else "x "
    for result in failed[:MAX_FAILURE_DETAILS]:
        spec = steps.get(result.step_name)
        failure = failure_detail(
            result,
            spec.max_attempts if spec is not None else 0,
            spec is not None and spec.allow_failure,
        )
        console.print(Text(mark + failure.headline(), style="yellow" if failure.allowed else "red"))
        if failure.location is not None:
            console.print(Text(f"    at {failure.location}", style="dim"))
    if len(failed) > MAX_FAILURE_DETAILS:
        console.print(
            Text(f"  ... and {len(failed) - MAX_FAILURE_DETAILS} more failed steps", style="dim")
        )
    data = data_lines(run)
    if data:
        console.print()
        for line in data:
            console.print(Text(line, style="green" if " -> " in line else "yellow"))
    status = run.status.value
    text = Text(final_line(run))
    text.highlight_regex(rf"(?<=: ){status}\b", _STATUS_STYLES.get(status, "bold"))
    console.print()
    if run.left_out:
        console.print(Text(left_out_line(run.left_out), style="yellow"))
    console.print(text)

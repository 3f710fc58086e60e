"""The run story: a self-contained report of one pipeline run, as HTML or as Markdown.

A story is made from a run record, the plain JSON-able dict that ``pipectl runs show --json``
prints (``tracker.get_run(run_id)``), or from the :class:`~pipectl.model.PipelineRun` that
``pipe.run_sync()`` returned (:func:`run_record` makes its record, as a tracker would have). It
shows the run's outcome and facts, its parameters (secrets redacted), the DAG as a picture, a
timeline of the steps, a table of the steps with what each produced (a one-line preview of its
output; a data step's records read, written per output and rejected) and every error with its
traceback::

    from pipectl.story import write_story
    write_story(record, "out/story.html")   # or "out/story.md"
    write_story(pipe.run_sync(), "out/story.html", pipeline=pipe)  # pipeline: the DAG too

The HTML page fetches nothing: its CSS and its SVG pictures are inline and it has no script. The
Markdown draws the DAG as a Mermaid ``flowchart LR`` block, which GitHub renders.

Any field of the record may be missing or null (an older record, a run still running or
interrupted): the story then shows what it has. Every value is escaped.

The HTML is laid out by Jinja2 templates, ``pipectl/templates/story/`` (autoescape on):
``base.html`` (the layout), ``run.html`` (the page) and the partials ``_header.html``,
``_params.html``, ``_dag.html`` (``_dag_svg.html``), ``_timeline.html``
(``_timeline_svg.html``), ``_steps.html`` and ``_errors.html``. This module reads the record
and computes everything the templates show, the pictures' geometry too, as plain data
(:func:`html_context`); :func:`environment` is their environment, made (and Jinja2 imported)
only when a story is rendered, so a web UI can render the same pages and partials. The
Markdown story is made here, without templates.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import re
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import jinja2

__all__ = [
    "MAX_DRAWN",
    "environment",
    "html_context",
    "render_html",
    "render_markdown",
    "run_record",
    "write_story",
]

MAX_DRAWN = 200
"""The most steps drawn in the DAG and the timeline; the story says how many are left out."""

_MAX_VALUE = 160  # characters of a parameter value shown
_MAX_OUTPUT = 160  # characters of the preview of a step's output
_STATUSES = frozenset(
    {
        "success",
        "cached",
        "failed",
        "skipped",
        "cancelled",
        "running",
        "pending",
        "rolled_back",
        "interrupted",
        "rollback_failed",
    }
)
# fill, stroke and text colour of each status class (Mermaid's classDefs and the HTML's CSS)
_PALETTE = {
    "success": ("#dcfce7", "#22c55e", "#166534"),
    "cached": ("#ccfbf1", "#14b8a6", "#115e59"),
    "failed": ("#fee2e2", "#ef4444", "#991b1b"),
    "rollback_failed": ("#fee2e2", "#ef4444", "#991b1b"),
    "skipped": ("#f3f4f6", "#9ca3af", "#4b5563"),
    "cancelled": ("#fef3c7", "#f59e0b", "#92400e"),
    "interrupted": ("#fef3c7", "#f59e0b", "#92400e"),
    "running": ("#dbeafe", "#3b82f6", "#1e40af"),
    "rolled_back": ("#ede9fe", "#8b5cf6", "#5b21b6"),
    "pending": ("#f8fafc", "#94a3b8", "#475569"),
    "unknown": ("#f8fafc", "#94a3b8", "#475569"),
}


# ---------------------------------------------------------------------------------------------
# Reading the record
# ---------------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    """``value`` as a list if it is a list or tuple, else an empty list."""
    return list(value) if isinstance(value, (list, tuple)) else []


def _text(value: Any) -> str:
    """``value`` as text; ``None`` is the empty string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    """``value`` if it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _moment(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones are taken as UTC), else ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _status_class(status: str) -> str:
    """The CSS/Mermaid class of a status: the status itself when known, else ``unknown``."""
    status = status.lower()
    return status if status in _STATUSES else "unknown"


@dataclass(frozen=True)
class _Attempt:
    """One try of a step, from its ``attempt_history``."""

    number: int
    start: datetime | None
    end: datetime | None
    error: str


@dataclass(frozen=True)
class _Step:
    """One step of the run, read leniently from its record."""

    name: str
    key: str
    status: str
    cls: str
    raw: Mapping[str, Any]
    start: datetime | None
    end: datetime | None
    duration_ms: float | None
    attempts: int
    history: tuple[_Attempt, ...]
    items: Mapping[str, int] | None = None
    """A mapped step's items: how many ended in each status (None: not a mapped step)."""

    def get(self, field: str) -> Any:
        """A field of the step's record, ``None`` when missing."""
        return self.raw.get(field)

    @property
    def error(self) -> str:
        """The step's error message, or the empty string."""
        return _text(self.get("error_message"))


def _attempts_of(raw: Mapping[str, Any]) -> tuple[_Attempt, ...]:
    """The step's attempt history, skipping entries that are not mappings."""
    history = []
    for index, entry in enumerate(_items(raw.get("attempt_history"))):
        if isinstance(entry, Mapping):
            number = _number(entry.get("attempt"))
            history.append(
                _Attempt(
                    int(number) if number else index + 1,
                    _moment(entry.get("started_at")),
                    _moment(entry.get("finished_at")),
                    _text(entry.get("error")),
                )
            )
    return tuple(history)


def _step_of(raw: Mapping[str, Any], index: int) -> _Step:
    """A :class:`_Step` from one entry of the record's ``steps``."""
    name = _text(raw.get("step_name")) or _text(raw.get("step_id")) or f"step {index + 1}"
    status = _text(raw.get("status"))
    if status == "success" and raw.get("cached_from"):  # a cache hit: its own outcome
        status = "cached"
    start, end = _moment(raw.get("started_at")), _moment(raw.get("completed_at"))
    duration = _number(raw.get("execution_time_ms"))
    if start and end and not duration:
        duration = (end - start).total_seconds() * 1000
    elif start is None and not duration:
        duration = None  # never ran: its 0 ms is no duration
    history = _attempts_of(raw)
    attempts = int(_number(raw.get("attempts")) or len(history))
    items = raw.get("items")
    return _Step(
        name,
        _text(raw.get("step_id")) or name,
        status,
        _status_class(status),
        raw,
        start,
        end,
        duration,
        attempts,
        history,
        {_text(k): int(_number(v) or 0) for k, v in items.items()}
        if isinstance(items, Mapping)
        else None,
    )


_ITEM = re.compile(r"(.+)\[(\d+)\]")


def _fold_items(steps: tuple[_Step, ...]) -> tuple[_Step, ...]:
    """A tracker's record has a row per item of a mapped step (``fetch[3]``): the items are
    folded into their step, which counts them by status (the story shows the mapped step with
    its count, not 10,000 rows)."""
    keys = {s.key for s in steps}
    counts: dict[str, dict[str, int]] = {}
    for step in steps:
        match = _ITEM.fullmatch(step.key)
        if match and match.group(1) in keys:
            by_status = counts.setdefault(match.group(1), {})
            by_status[step.status] = by_status.get(step.status, 0) + 1
    if not counts:
        return steps
    from dataclasses import replace

    folded = []
    for step in steps:
        match = _ITEM.fullmatch(step.key)
        if match and match.group(1) in counts:
            continue
        if step.key in counts and step.items is None:
            step = replace(step, items=counts[step.key])
        folded.append(step)
    return tuple(folded)


def _items_text(items: Mapping[str, int]) -> str:
    """``20 items`` or ``20 items (18 success, 2 failed)``."""
    total = sum(items.values())
    text = f"{total} item" + ("" if total == 1 else "s")
    if len(items) > 1:
        text += " (" + ", ".join(f"{n} {status}" for status, n in items.items() if n) + ")"
    return text


@dataclass(frozen=True)
class _Run:
    """A run record read leniently: its steps and its DAG, with every node resolved."""

    record: Mapping[str, Any]
    steps: tuple[_Step, ...]
    nodes: dict[str, _Step]
    deps: dict[str, list[str]]
    start: datetime | None
    last: datetime | None

    def get(self, field: str) -> Any:
        """A field of the run record, ``None`` when missing."""
        return self.record.get(field)

    @property
    def status(self) -> str:
        """The run's status as recorded, or ``unknown``."""
        return _text(self.get("status")) or "unknown"

    @property
    def errors(self) -> list[str]:
        """The run's ``errors``; its single ``error`` only when there is no list (the
        tracker's ``error`` is the list joined)."""
        errors = [_text(e) for e in _items(self.get("errors")) if e]
        error = _text(self.get("error"))
        return errors if errors or not error else [error]

    @property
    def span_ms(self) -> float:
        """Milliseconds from the run's start to the last moment it recorded (at least 1)."""
        if self.start is None or self.last is None:
            return 1.0
        return max((self.last - self.start).total_seconds() * 1000, 1.0)

    @property
    def duration_ms(self) -> float | None:
        """The run's duration as recorded, else from its start to its finish if it finished."""
        recorded = _number(self.get("duration_ms"))
        if recorded is not None:
            return recorded
        return self.offset_ms(_moment(self.get("finished_at")))

    def offset_ms(self, moment: datetime | None) -> float | None:
        """Milliseconds from the run's start to ``moment``."""
        if moment is None or self.start is None:
            return None
        return (moment - self.start).total_seconds() * 1000

    def step_end(self, step: _Step) -> datetime | None:
        """When the step ended: recorded, else start + duration, else (open) the run's last moment."""
        if step.end is not None or step.start is None:
            return step.end
        if step.duration_ms:
            return step.start + timedelta(milliseconds=step.duration_ms)
        return max(step.start, self.last) if self.last else step.start


def _read(record: Mapping[str, Any]) -> _Run:
    """Read a run record into a :class:`_Run`."""
    record = _mapping(record)
    steps = _fold_items(
        tuple(
            _step_of(raw, i)
            for i, raw in enumerate(_items(record.get("steps")))
            if isinstance(raw, Mapping)
        )
    )
    nodes, deps = _dag_of(record.get("graph"), steps)
    start = _moment(record.get("started_at"))
    moments = [m for s in steps for m in (s.start, s.end) if m is not None]
    if start is None and moments:
        start = min(moments)
    last = _moment(record.get("finished_at"))
    ends = moments + [
        s.start + timedelta(milliseconds=s.duration_ms) for s in steps if s.start and s.duration_ms
    ]
    if ends and (last is None or max(ends) > last):
        last = max(ends)
    return _Run(record, steps, nodes, deps, start, last)


def _dag_of(graph: Any, steps: tuple[_Step, ...]) -> tuple[dict[str, _Step], dict[str, list[str]]]:
    """The nodes (by graph key) and dependencies of the DAG, from ``graph`` and the steps.

    Graph keys are matched to steps by step id, then by name; a dependency that is not a key
    becomes a root and a step that is in no key becomes a node without dependencies.
    """
    lookup: dict[str, _Step] = {}
    for step in steps:
        lookup.setdefault(step.key, step)
        lookup.setdefault(step.name, step)
    deps: dict[str, list[str]] = {}
    for key, parents in _mapping(graph).items():
        key = _text(key)
        deps[key] = list(dict.fromkeys(p for p in map(_text, _items(parents)) if p != key))
    for parents in list(deps.values()):
        for parent in parents:
            deps.setdefault(parent, [])
    placed = {id(lookup[k]) for k in deps if k in lookup}
    for step in steps:
        if id(step) not in placed:
            deps.setdefault(step.key, [])
            placed.add(id(step))
    nodes = {
        k: lookup.get(k) or _Step(k, k, "", "unknown", {}, None, None, None, 0, ()) for k in deps
    }
    return nodes, deps


def _layers(deps: Mapping[str, list[str]]) -> list[list[str]]:
    """The DAG's nodes by layer, a node's layer being its longest path from a root.

    Within a layer, nodes are ordered by the mean row of their dependencies (fewer crossings),
    then by plan order. Nodes on a cycle (a malformed graph) go into one last layer.
    """
    children: dict[str, list[str]] = {node: [] for node in deps}
    waiting = {}
    for node, parents in deps.items():
        known = [p for p in parents if p in deps]
        waiting[node] = len(known)
        for parent in known:
            children[parent].append(node)
    level = dict.fromkeys(deps, 0)
    queue = deque(node for node, count in waiting.items() if count == 0)
    while queue:
        node = queue.popleft()
        for child in children[node]:
            level[child] = max(level[child], level[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                queue.append(child)
    deepest = max(level.values(), default=0)
    for node, count in waiting.items():
        if count:
            level[node] = deepest + 1
    layers: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in deps:
        layers[level[node]].append(node)
    return _order_layers(layers, deps)


def _order_layers(layers: list[list[str]], deps: Mapping[str, list[str]]) -> list[list[str]]:
    """Sort each layer by the mean centred row of its nodes' dependencies (barycentre)."""
    rows = max((len(layer) for layer in layers), default=0)
    row: dict[str, float] = {}
    ordered = []
    for layer in layers:

        def key(item: tuple[int, str]) -> tuple[float, int]:
            placed = [row[p] for p in deps[item[1]] if p in row]
            return (sum(placed) / len(placed) if placed else -1.0, item[0])

        layer = [node for _, node in sorted(enumerate(layer), key=key)]
        offset = (rows - len(layer)) / 2
        row.update((node, offset + i) for i, node in enumerate(layer))
        ordered.append(layer)
    return ordered


# ---------------------------------------------------------------------------------------------
# Formatting values
# ---------------------------------------------------------------------------------------------


def _duration(ms: float | None) -> str:
    """A duration for people: ``12 ms``, ``1.24 s``, ``3m 05s``, ``2h 01m``; ``—`` if unknown
    (the CLI's format, :func:`pipectl.cli.progress.format_duration`)."""
    from pipectl.cli.progress import format_duration

    return format_duration(ms)


def _offset(ms: float | None) -> str:
    """An offset from the run's start: ``+1.24 s``; ``—`` if unknown."""
    return "—" if ms is None else f"+{_duration(max(ms, 0.0))}"


def _stamp(value: Any) -> str:
    """A timestamp for people (``2026-11-23 18:25:31 UTC``); unparsable text as it is."""
    moment = _moment(value)
    if moment is None:
        return _text(value) or "—"
    zone = "UTC" if moment.utcoffset() == timedelta(0) else moment.strftime("UTC%z")
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone}"


def _count(value: Any) -> str:
    """A count with thousands separators; ``—`` if not a number."""
    number = _number(value)
    if number is None:
        return "—" if value is None else _text(value)
    return f"{int(number):,}" if number.is_integer() else f"{number:,}"


def _param_value(value: Any) -> str:
    """A parameter value: strings as given, anything else as compact JSON, cut when long."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    )
    if len(text) > _MAX_VALUE:
        return f"{text[:_MAX_VALUE]}… ({len(text):,} chars)"
    return text


def _ellipsis(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _first_line(text: str, limit: int = 120) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    return _ellipsis(text.strip().splitlines()[0] if text.strip() else "", limit)


def _step_counts(steps: tuple[_Step, ...]) -> dict[str, int]:
    """How many steps have each status, in order of first appearance."""
    counts: dict[str, int] = {}
    for step in steps:
        label = step.status or "unknown"
        counts[label] = counts.get(label, 0) + 1
    return counts


def _has_trouble(step: _Step) -> bool:
    """Whether the step belongs in the errors section: failed, retried or rolled back."""
    return (
        step.cls in ("failed", "rolled_back")
        or bool(step.error)
        or bool(step.get("traceback"))
        or isinstance(step.get("rollback"), Mapping)
        or step.attempts > 1
        or any(a.error for a in step.history)
    )


def _notes(step: _Step) -> list[str]:
    """Plain-text notes on a step: why it was skipped, where it was reused from, bad records."""
    notes = []
    if step.items is not None:
        notes.append(f"mapped over {_items_text(step.items)}")
    reason = _text(step.get("reason"))
    if reason:
        notes.append(reason)
    if step.get("resumed_from"):
        notes.append(f"reused from run {_text(step.get('resumed_from'))}")
    if step.get("cached_from"):
        notes.append(f"from the cache: stored by run {_text(step.get('cached_from'))}")
    bad = _number(step.get("bad_records"))
    if bad:
        where = _text(step.get("dead_letter_path"))
        notes.append(f"{_count(bad)} bad records" + (f" → {where}" if where else ""))
    return notes


def _outputs(step: _Step) -> list[tuple[str, Mapping[str, Any]]]:
    """The step's outputs (data steps) as (name, fields) pairs."""
    return [
        (_text(name), _mapping(fields)) for name, fields in _mapping(step.get("outputs")).items()
    ]


def _produced(step: _Step) -> str:
    """What the step produced, in one line: a data step's records read, written per output
    and rejected; another step's output summary as a preview (:mod:`pipectl.preview`; the
    tracker masked the secrets in it); empty when there is none."""
    from pipectl.preview import preview_summary, record_data_counts

    try:
        counts = record_data_counts(step.raw)
        if counts:
            return counts
        summary = step.get("output_summary")
        if step.cls not in ("success", "cached") or summary is None:
            return ""
        return preview_summary(summary, _MAX_OUTPUT)
    except Exception:  # noqa: BLE001 - a record of another shape: the story shows the rest
        return ""


def _tick_step(span_ms: float, target: int = 6) -> float:
    """A round tick interval (1, 2 or 5 times a power of ten ms) giving about ``target`` ticks."""
    raw = span_ms / target
    magnitude: float = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if raw <= m * magnitude)


def _tick_label(ms: float, step: float) -> str:
    """A tick's label in the unit that suits the tick interval."""
    if ms == 0:
        return "0"
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if step >= size or (unit == "s" and step >= 100):
            return f"{ms / size:g} {unit}"
    return f"{ms:g} ms"


# ---------------------------------------------------------------------------------------------
# HTML: Jinja2 templates (pipectl/templates/story/) fed plain data computed here
# ---------------------------------------------------------------------------------------------

_TEMPLATES = "templates"  # the package folder the story's templates are loaded from


def _finalize(value: Any) -> Any:
    """How the environment prints a value: markup (a macro's output, a :class:`markupsafe.Markup`)
    as it is, anything else escaped with :func:`html.escape` (quotes too: safe in attributes).
    Autoescaping stays on; this only keeps the story's escaping as it always was (``&#x27;``
    where markupsafe writes ``&#39;``), and prints ``None`` as nothing."""
    if hasattr(value, "__html__"):
        return value
    from markupsafe import Markup

    return Markup(html.escape(_text(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    """The :class:`jinja2.Environment` of the story's templates (``pipectl/templates``), made on
    first use (``pipectl --help`` never imports Jinja2), with autoescape on for ``.html``.

    A web UI can render the same pages and partials with it: ``story/run.html`` (the whole
    page, from :func:`html_context`), ``story/base.html`` (the layout, a ``content`` block) and
    the partials ``story/_header.html``, ``_params.html``, ``_dag.html``, ``_timeline.html``,
    ``_steps.html`` and ``_errors.html``, each reading its own key of that context.
    """
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipectl", _TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_html(record: Mapping[str, Any] | Any, *, pipeline: Any = None) -> str:
    """The run story of ``record`` (a run record or a PipelineRun, as :func:`write_story`
    takes) as a self-contained HTML page (inline CSS and SVG, no script)."""
    return (
        environment().get_template("story/run.html").render(html_context(record, pipeline=pipeline))
    )


def html_context(record: Mapping[str, Any] | Any, *, pipeline: Any = None) -> dict[str, Any]:
    """What the story's templates show of ``record``, as plain data (strings, numbers, lists and
    dicts; nothing escaped yet: the templates escape): ``title``, ``header``, ``params``,
    ``dag``, ``timeline``, ``steps`` and ``errors``. Every coordinate of the two pictures is
    computed here; the templates only lay them out."""
    run = _read(_as_record(record, pipeline))
    name = _text(run.get("pipeline")) or "pipeline"
    troubled = [s for s in run.steps if _has_trouble(s)]
    anchors = {id(s): i for i, s in enumerate(troubled)}
    return {
        "title": f"{name} · {run.status} · run {_text(run.get('run_id'))[:12]}",
        "header": _header(run),
        "params": _params(run),
        "dag": _dag(run),
        "timeline": _timeline(run),
        "steps": [_step_row(run, s, anchors.get(id(s))) for s in run.steps],
        "errors": {
            "run": run.errors,
            "steps": [_error_card(run, s, i) for i, s in enumerate(troubled)],
        },
    }


def _header(run: _Run) -> dict[str, Any]:
    """The header: pipeline, outcome, description, facts and step counts."""
    return {
        "pipeline": _text(run.get("pipeline") or "pipeline"),
        "status": run.status,
        "cls": _status_class(run.status),
        "description": _text(run.get("description")),
        "facts": _facts(run),
        "counts": [
            {"status": s, "cls": _status_class(s), "count": n}
            for s, n in _step_counts(run.steps).items()
        ],
    }


def _facts(run: _Run) -> list[dict[str, str]]:
    """The header's facts; ``kind`` is how to show ``text``: ``mono``, ``time`` (with its
    ``datetime``), ``missing`` (a muted dash) or plain ``text``. Optional ones only when
    recorded."""

    def time(field: str) -> dict[str, str]:
        value = run.get(field)
        if not value:
            return {"kind": "missing", "text": "—"}
        return {"kind": "time", "text": _stamp(value), "datetime": _text(value)}

    host = " · ".join(_text(run.get(f)) for f in ("host", "pid") if run.get(f) is not None)
    facts = [
        {"label": "Run id", "kind": "mono", "text": _text(run.get("run_id") or "—")},
        {"label": "Started", **time("started_at")},
        {"label": "Finished", **time("finished_at")},
        {"label": "Duration", "kind": "text", "text": _duration(run.duration_ms)},
        {"label": "Records", "kind": "text", "text": _count(run.get("records_processed"))},
        {"label": "Host · pid", "kind": "text", "text": host or "—"},
        {"label": "Executor", "kind": "text", "text": _text(run.get("executor") or "—")},
    ]
    for label, field in (
        ("Pipeline file", "pipeline_file"),
        ("Resumed from", "resumed_from"),
        ("Parent run", "parent_run_id"),
    ):
        if run.get(field):
            facts.append({"label": label, "kind": "mono", "text": _text(run.get(field))})
    return facts


def _params(run: _Run) -> list[dict[str, Any]]:
    """The parameters; ``redacted`` when the value is ``***`` (a secret)."""
    rows = []
    for name, value in _mapping(run.get("params")).items():
        shown = _param_value(value)
        rows.append({"name": _text(name), "value": shown, "redacted": shown == "***"})
    return rows


_NODE_H, _GAP_X, _GAP_Y, _PAD = 42, 60, 14, 16
_CHAR_W, _META_W = 7.3, 6.1  # widths of a character of a node's name and of its meta line


_NO_EDGES = "The record holds no dependencies between the steps: they are drawn without edges."


def _no_edges(run: _Run) -> bool:
    """Whether the record has no DAG (a sub-pipeline's run, a PipelineRun written without its
    pipeline) while it has several steps: they are drawn, unlinked, and the story says so."""
    return not _mapping(run.get("graph")) and len(run.steps) > 1


def _dag(run: _Run) -> dict[str, Any] | None:
    """The DAG section: the picture of the first :data:`MAX_DRAWN` nodes, notes and a legend;
    ``None`` when there is no step."""
    if not run.deps:
        return None
    left_out = len(run.deps) - MAX_DRAWN
    notes = (
        [f"{left_out:,} more steps are not drawn (the first {MAX_DRAWN} are)."]
        if left_out > 0
        else []
    )
    if _no_edges(run):
        notes.append(_NO_EDGES)
    counts = _step_counts(tuple(run.nodes.values()))
    return {
        "svg": _dag_svg(run),
        "notes": notes,
        "legend": [{"status": s, "cls": _status_class(s)} for s in counts],
    }


def _dag_svg(run: _Run) -> dict[str, Any]:
    """The layered DAG's geometry: the picture's size, each edge's path and each node's box."""
    keys = list(run.deps)[:MAX_DRAWN]
    drawn = set(keys)
    deps = {k: [p for p in run.deps[k] if p in drawn] for k in keys}
    layers = _layers(deps)
    longest = max(
        max(len(run.nodes[k].name) * _CHAR_W, len(_node_meta(run.nodes[k])) * _META_W) for k in keys
    )
    width = min(max(longest + 26, 130), 260)
    rows = max(len(layer) for layer in layers)
    place: dict[str, tuple[float, float]] = {}
    for column, layer in enumerate(layers):
        top = (rows - len(layer)) * (_NODE_H + _GAP_Y) / 2
        for row, key in enumerate(layer):
            place[key] = (_PAD + column * (width + _GAP_X), _PAD + top + row * (_NODE_H + _GAP_Y))
    svg_w = 2 * _PAD + len(layers) * width + (len(layers) - 1) * _GAP_X
    svg_h = 2 * _PAD + rows * _NODE_H + (rows - 1) * _GAP_Y
    return {
        "width": f"{svg_w:.0f}",
        "height": f"{svg_h:.0f}",
        "min_width": f"{svg_w * 0.75:.0f}",
        "edges": [_edge(place[p], place[k], width) for k in keys for p in deps[k]],
        "nodes": [_node(run.nodes[k], *place[k], width) for k in keys],
    }


def _edge(source: tuple[float, float], target: tuple[float, float], width: float) -> dict[str, str]:
    """A curve from the right of ``source`` to the left of ``target`` (its SVG path)."""
    x1, y1 = source[0] + width, source[1] + _NODE_H / 2
    x2, y2 = target[0] - 2, target[1] + _NODE_H / 2
    bend = max((x2 - x1) / 2, 20)
    return {
        "d": f"M{x1:.1f} {y1:.1f}C{x1 + bend:.1f} {y1:.1f} "
        f"{x2 - bend:.1f} {y2:.1f} {x2:.1f} {y2:.1f}"
    }


def _node_meta(step: _Step) -> str:
    """A node's second line: status, duration and attempts."""
    return " · ".join(
        filter(
            None,
            (
                step.status or "unknown",
                f"{sum(step.items.values())} items" if step.items is not None else "",
                _duration(step.duration_ms) if step.duration_ms else "",
                f"×{step.attempts}" if step.attempts > 1 else "",
            ),
        )
    )


def _node(step: _Step, x: float, y: float, width: float) -> dict[str, str]:
    """A node's box, its name and its line of status, duration and attempts, cut to fit."""
    return {
        "cls": step.cls,
        "tip": f"{step.name}\n{step.status or 'unknown'} · {_duration(step.duration_ms)}",
        "x": f"{x:.1f}",
        "y": f"{y:.1f}",
        "width": f"{width:.1f}",
        "height": f"{_NODE_H}",
        "text_x": f"{x + 11:.1f}",
        "label_y": f"{y + 17:.1f}",
        "meta_y": f"{y + 32:.1f}",
        "label": _ellipsis(step.name, int((width - 22) / _CHAR_W)),
        "meta": _ellipsis(_node_meta(step), int((width - 22) / _META_W)),
    }


def _timed(run: _Run) -> list[_Step]:
    """The steps with a start time, by start time (plan order among equals)."""
    return sorted(
        (s for s in run.steps if s.start is not None), key=lambda s: run.offset_ms(s.start) or 0.0
    )


def _timeline(run: _Run) -> dict[str, Any] | None:
    """The timeline section: the Gantt chart of the first :data:`MAX_DRAWN` timed steps and
    how many are left out; ``None`` when no step has a start time."""
    timed = _timed(run)
    if not timed:
        return None
    left_out = len(timed) - MAX_DRAWN
    return {
        "svg": _gantt_svg(run, timed[:MAX_DRAWN]),
        "left_out": f"{left_out:,}" if left_out > 0 else "",
    }


_G_W, _G_LABEL, _G_RIGHT, _G_ROW, _G_TOP, _G_BAR = 1100, 200, 110, 26, 30, 14


def _gantt_svg(run: _Run, rows: list[_Step]) -> dict[str, Any]:
    """A Gantt chart's geometry: a bar per step from its start offset, as wide as it lasted,
    and the time axis."""
    x0 = _G_LABEL + 12
    scale = (_G_W - x0 - _G_RIGHT) / run.span_ms
    height = _G_TOP + len(rows) * _G_ROW + 8
    return {
        "width": _G_W,
        "height": height,
        "row_height": _G_ROW,
        "bar_height": _G_BAR,
        "grid_top": _G_TOP - 8,
        "grid_bottom": f"{height - 4:.0f}",
        "tick_y": _G_TOP - 13,
        "ticks": _gantt_axis(run.span_ms, x0, scale),
        "rows": [
            _gantt_row(run, step, _G_TOP + index * _G_ROW, index, x0, scale)
            for index, step in enumerate(rows)
        ],
    }


def _gantt_axis(span_ms: float, x0: float, scale: float) -> list[dict[str, str]]:
    """The time axis: grid lines at round intervals, with their labels."""
    step = _tick_step(span_ms)
    return [
        {"x": f"{x0 + i * step * scale:.1f}", "label": _tick_label(i * step, step)}
        for i in range(int(span_ms // step) + 1)
    ]


def _gantt_row(
    run: _Run, step: _Step, y: float, index: int, x0: float, scale: float
) -> dict[str, Any]:
    """One step's row: its name, its bar with failed attempts and retry ticks, and a label."""
    open_ended = step.end is None and not step.duration_ms
    start = run.offset_ms(step.start) or 0.0
    length = max((run.offset_ms(run.step_end(step)) or start) - start, 0.0)
    x, width = x0 + start * scale, max(length * scale, 14.0 if open_ended else 3.0)
    bar_y = y + (_G_ROW - _G_BAR) / 2
    label = " ".join(
        filter(
            None,
            (
                "no end" if open_ended else _duration(length),
                f"×{step.attempts}" if step.attempts > 1 else "",
            ),
        )
    )
    return {
        "stripe": bool(index % 2),
        "y": f"{y:.1f}",
        "text_y": f"{y + 17:.1f}",
        "name": step.name,
        "label": _ellipsis(step.name, 26),
        "cls": step.cls,
        "tip": _bar_tip(step, start),
        "bar_class": "bar open" if open_ended else "bar",
        "bar_x": f"{x:.1f}",
        "bar_y": f"{bar_y:.1f}",
        "bar_width": f"{width:.1f}",
        "marks": _attempt_marks(run, step, bar_y, x0, scale),
        "label_x": f"{x + width + 6:.1f}",
        "bar_label": label,
    }


def _bar_tip(step: _Step, start: float) -> str:
    """The tooltip of a step's bar."""
    tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
    return (
        f"{step.name}: {step.status or 'unknown'}, starts {_offset(start)}, "
        f"lasts {_duration(step.duration_ms)}{tries}"
    )


def _attempt_marks(
    run: _Run, step: _Step, bar_y: float, x0: float, scale: float
) -> list[dict[str, str]]:
    """Failed attempts as light red segments of the bar (``fail``); a white ``tick`` where a
    retry starts."""
    marks = []
    for attempt in step.history:
        start, end = run.offset_ms(attempt.start), run.offset_ms(attempt.end)
        if start is None:
            continue
        x = x0 + start * scale
        if attempt.error and end is not None:
            marks.append(
                {
                    "kind": "fail",
                    "x": f"{x:.1f}",
                    "y": f"{bar_y + 3:.1f}",
                    "width": f"{max((end - start) * scale, 1.5):.1f}",
                    "height": f"{_G_BAR - 6}",
                }
            )
        if attempt.number > 1:
            marks.append(
                {
                    "kind": "tick",
                    "x": f"{x:.1f}",
                    "y": f"{bar_y:.1f}",
                    "y2": f"{bar_y + _G_BAR:.1f}",
                }
            )
    return marks


def _step_row(run: _Run, step: _Step, anchor: int | None) -> dict[str, Any]:
    """One row of the steps table: what it shows of the step, and the ``anchor`` of its card
    in the errors section (``None`` when it has none)."""
    return {
        "name": step.name,
        "description": _text(step.get("description")),
        "type": _text(step.get("step_type") or "—"),
        "status": step.status,
        "cls": step.cls,
        "start": _offset(run.offset_ms(step.start)),
        "duration": _duration(step.duration_ms),
        "attempts": str(step.attempts) if step.attempts else "—",
        "records": _count(step.get("records")),
        "produced": _produced(step),
        "outputs": [
            {
                "name": name,
                "target": _text(fields.get("target") or ""),
                "written": _count(fields.get("written")),
                "status": _text(fields.get("status")),
                "cls": _status_class(_text(fields.get("status"))),
                "error": _text(fields.get("error")),
            }
            for name, fields in _outputs(step)
        ],
        "notes": _notes(step),
        "error": _first_line(step.error) if step.error else "",
        "anchor": anchor,
    }


def _error_card(run: _Run, step: _Step, anchor: int) -> dict[str, Any]:
    """A failed, retried or rolled-back step: message, traceback, attempts and rollback."""
    return {
        "anchor": anchor,
        "name": step.name,
        "status": step.status,
        "cls": step.cls,
        "attempts": step.attempts,
        "error": step.error,
        "traceback": _text(step.get("traceback")),
        "history": [
            {
                "number": a.number,
                "start": _offset(run.offset_ms(a.start)),
                "duration": _duration(_span(a.start, a.end)),
                "error": a.error,
            }
            for a in step.history
        ],
        "rollback": _rollback(step),
    }


def _span(start: datetime | None, end: datetime | None) -> float | None:
    """Milliseconds from ``start`` to ``end``, ``None`` if either is unknown."""
    return None if start is None or end is None else (end - start).total_seconds() * 1000


def _rollback(step: _Step) -> dict[str, str] | None:
    """The outcome of the step's rollback, ``None`` if it had none."""
    rollback = step.get("rollback")
    if not isinstance(rollback, Mapping):
        return None
    status = _text(rollback.get("status")) or "unknown"
    took = _span(_moment(rollback.get("started_at")), _moment(rollback.get("finished_at")))
    return {
        "status": status,
        "cls": _status_class(status),
        "took": _duration(took) if took is not None else "",
        "error": _text(rollback.get("error")),
    }


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

# "_" inside a word marks nothing up in GFM: only one at a word's edge is escaped
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>#~&]|(?<![^\W_])_|_(?![^\W_]))")


def _md(value: Any) -> str:
    """``value`` as inline Markdown text: punctuation that could mark up is escaped."""
    text = " ".join(_text(value).split())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return "\\" + text if text[:1] in ("-", "+", "=") or re.match(r"\d+[.)]", text) else text


def _code(value: Any) -> str:
    """``value`` as an inline code span (long enough backtick fences, no newlines)."""
    text = " ".join(_text(value).split("\n"))
    if not text:
        return ""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(value: Any, info: str = "") -> str:
    """``value`` as a fenced code block whose fence no line of it can close."""
    text = _text(value).rstrip("\n")
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """A GFM table; pipes in cells are escaped (inside code spans too, as GFM wants)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") or " " for c in cells) + " |"

    sep = "|" + "|".join("---:" if h.endswith(":") else "---" for h in head) + "|"
    return "\n".join([line([h.rstrip(":") for h in head]), sep, *map(line, rows)])


def render_markdown(record: Mapping[str, Any] | Any, *, pipeline: Any = None) -> str:
    """The run story of ``record`` (a run record or a PipelineRun, as :func:`write_story`
    takes) as Markdown (GitHub flavour, the DAG as a Mermaid block)."""
    run = _read(_as_record(record, pipeline))
    sections = (
        _md_header(run),
        _md_params(run),
        _md_dag(run),
        _md_timeline(run),
        _md_steps(run),
        _md_errors(run),
    )
    return "\n\n".join(s for s in sections if s) + "\n"


def _md_header(run: _Run) -> str:
    """Title, outcome, description and the run's facts as a list."""
    lines = [f"# Run story: {_md(run.get('pipeline') or 'pipeline')} — **{_md(run.status)}**"]
    if run.get("description"):
        lines += ["", _md(run.get("description"))]
    facts = [
        ("Run id", _code(run.get("run_id")) or "—"),
        ("Started", _md(_stamp(run.get("started_at"))) if run.get("started_at") else "—"),
        ("Finished", _md(_stamp(run.get("finished_at"))) if run.get("finished_at") else "—"),
        ("Duration", _duration(run.duration_ms)),
        ("Records", _count(run.get("records_processed"))),
        ("Host", _code(run.get("host")) or "—"),
        ("Pid", _md(_count(run.get("pid")))),
        ("Executor", _code(run.get("executor")) or "—"),
    ]
    facts += [
        (label, _code(run.get(field)))
        for label, field in (
            ("Pipeline file", "pipeline_file"),
            ("Resumed from", "resumed_from"),
            ("Parent run", "parent_run_id"),
        )
        if run.get(field)
    ]
    counts = ", ".join(f"{n} {_md(s)}" for s, n in _step_counts(run.steps).items())
    if counts:
        facts.append(("Steps", counts))
    lines += [""] + [f"- **{label}:** {value}" for label, value in facts]
    return "\n".join(lines)


def _md_params(run: _Run) -> str:
    """The parameters as a table (values as given: secrets are already ``***``)."""
    params = _mapping(run.get("params"))
    if not params:
        return "## Parameters\n\nNo parameters."
    rows = [[_code(name), _code(_param_value(value))] for name, value in params.items()]
    return "## Parameters\n\n" + _table(["Name", "Value"], rows)


def _mermaid_label(text: str) -> str:
    """Text for a quoted Mermaid label: ``#``, quotes, angle brackets, ``&`` and backticks as
    Mermaid's decimal entity codes (``#60;`` is ``<``)."""
    text = " ".join(_ellipsis(text, 60).split())
    return "".join(f"#{ord(c)};" if c in '#"<>&`' else c for c in text)


def _md_dag(run: _Run) -> str:
    """The DAG as a Mermaid ``flowchart LR`` with a class per status."""
    if not run.deps:
        return ""
    keys = list(run.deps)[:MAX_DRAWN]
    ids = {key: f"n{i}" for i, key in enumerate(keys)}
    lines = ["flowchart LR"]
    lines += [
        f'  {ids[k]}["{_mermaid_label(run.nodes[k].name)}"]:::{run.nodes[k].cls}' for k in keys
    ]
    lines += [f"  {ids[p]} --> {ids[k]}" for k in keys for p in run.deps[k] if p in ids]
    used = dict.fromkeys(run.nodes[k].cls for k in keys)
    lines += [
        f"  classDef {cls} fill:{fill},stroke:{stroke},color:{ink}"
        for cls in used
        for fill, stroke, ink in [_PALETTE[cls]]
    ]
    left_out = len(run.deps) - MAX_DRAWN
    note = f"\n\n{left_out:,} more steps are not drawn." if left_out > 0 else ""
    if _no_edges(run):
        note += f"\n\n{_NO_EDGES}"
    return "## DAG\n\n" + _fenced("\n".join(lines), "mermaid") + note


def _md_bar(run: _Run, step: _Step, cells: int = 24) -> str:
    """A text bar of the step's place in the run: ``··████····``."""
    start = run.offset_ms(step.start) or 0.0
    end = run.offset_ms(run.step_end(step)) or start
    first = min(int(start / run.span_ms * cells), cells - 1)
    last = max(min(math.ceil(end / run.span_ms * cells), cells), first + 1)
    return _code("·" * first + "█" * (last - first) + "·" * (cells - last))


def _md_timeline(run: _Run) -> str:
    """The timeline as a table: start offset, duration, attempts and a text bar."""
    timed = _timed(run)
    if not timed:
        return "## Timeline\n\nNo step timings recorded."
    rows = [
        [
            _code(s.name),
            _md(s.status or "unknown"),
            _offset(run.offset_ms(s.start)),
            _duration(s.duration_ms) + (" (no end)" if s.end is None and not s.duration_ms else ""),
            str(s.attempts or "—"),
            _md_bar(run, s),
        ]
        for s in timed
    ]
    return "## Timeline\n\n" + _table(
        ["Step", "Status", "Start:", "Duration:", "Attempts:", "Timeline"], rows
    )


def _md_steps(run: _Run) -> str:
    """The steps table with each data step's outputs and the reason a step was skipped."""
    if not run.steps:
        return "## Steps\n\nNo steps recorded."
    rows = [
        [
            _code(s.name),
            _md(s.get("step_type") or "—"),
            _md(s.status or "unknown"),
            _offset(run.offset_ms(s.start)),
            _duration(s.duration_ms),
            str(s.attempts or "—"),
            _count(s.get("records")),
            _md_notes(s),
        ]
        for s in run.steps
    ]
    return "## Steps\n\n" + _table(
        [
            "Step",
            "Type",
            "Status",
            "Start:",
            "Duration:",
            "Attempts:",
            "Records:",
            "Output · notes",
        ],
        rows,
    )


def _md_notes(step: _Step) -> str:
    """What a step produced, its outputs, reason, bad records and short error, joined for one
    table cell."""
    produced = _produced(step)
    parts = [_code(produced)] if produced else []
    parts += [
        f"{_code(name)} → {_md(fields.get('target') or '')}: "
        f"{_count(fields.get('written'))} written"
        + (f" ({_md(fields.get('status'))})" if fields.get("status") else "")
        + (f" — {_md(fields.get('error'))}" if fields.get("error") else "")
        for name, fields in _outputs(step)
    ]
    parts += [_md(note) for note in _notes(step)]
    if step.error:
        parts.append(_md(_first_line(step.error)))
    return "<br>".join(parts) or "—"


def _md_errors(run: _Run) -> str:
    """The run's errors, then each failed, retried or rolled-back step with its traceback."""
    errors = run.errors
    troubled = [s for s in run.steps if _has_trouble(s)]
    if not errors and not troubled:
        return "## Errors\n\nNo errors recorded."
    parts = ["## Errors"]
    if errors:
        parts.append("### Run errors\n\n" + "\n".join(f"- {_code(e)}" for e in errors))
    parts += [_md_error(run, step) for step in troubled]
    return "\n\n".join(parts)


def _md_error(run: _Run, step: _Step) -> str:
    """One failed, retried or rolled-back step: message, traceback, attempts, rollback."""
    tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
    parts = [f"### {_code(step.name)} — {_md(step.status or 'unknown')}{tries}"]
    if step.error:
        parts.append(_fenced(step.error))
    if step.get("traceback"):
        parts.append("Traceback:\n\n" + _fenced(step.get("traceback"), "pytb"))
    if step.history:
        parts.append(
            _table(
                ["Attempt:", "Start:", "Duration:", "Error"],
                [
                    [
                        str(a.number),
                        _offset(run.offset_ms(a.start)),
                        _duration(_span(a.start, a.end)),
                        _code(a.error) or "ok",
                    ]
                    for a in step.history
                ],
            )
        )
    rollback = step.get("rollback")
    if isinstance(rollback, Mapping):
        line = f"Rollback: **{_md(rollback.get('status') or 'unknown')}**"
        parts.append(
            line + (f"\n\n{_fenced(rollback.get('error'))}" if rollback.get("error") else "")
        )
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The record of a PipelineRun
# ---------------------------------------------------------------------------------------------


def run_record(run: Any, pipeline: Any = None) -> dict[str, Any]:
    """The run record of ``run``, a :class:`~pipectl.model.PipelineRun` that ran in this
    process (``pipe.run_sync()``), as a tracker records one (the format of ``pipectl runs show
    --json``): the run's outcome, times, params and errors, and each step's status, times,
    attempts, error and traceback, reason, records, data step outputs and output summary.

    ``pipeline`` (the :class:`~pipectl.Pipeline`, or its spec) adds what the run does not hold:
    the DAG, each step's type and description, the pipeline's description, executor and file;
    without it the steps come in the order they ended, without edges. A secret param's value
    is ``***`` here as in a tracker's record: in the params, and in the outputs, errors and
    tracebacks. A step's attempt history is not kept by the run: only its count is.
    """
    from types import SimpleNamespace

    from pipectl.preview import run_secrets, secret_spellings
    from pipectl.tracking import cut_secrets as _cut_secrets
    from pipectl.tracking import step_row

    spec = getattr(pipeline, "spec", pipeline)
    specs = {s.name: s for s in getattr(spec, "steps", ())}
    secrets = secret_spellings(run_secrets(run))
    cut_off = _cut_secrets(secrets)

    def masked(text: Any) -> Any:
        if not isinstance(text, str) or not secrets:
            return text
        for value in secrets:
            text = text.replace(value, "***")
        return text

    names = [n for n in specs if n in run.steps] + [n for n in run.steps if n not in specs]
    steps = []
    for name in names:
        result = run.steps[name]
        step = specs.get(name) or SimpleNamespace(
            name=name, description="", step_type=None, allow_failure=False
        )
        row = step_row(run.run_id, step, result, None)
        meta = row["metadata_dict"]
        summary = row["output_data"]
        if summary is not None and secrets:  # the tracker's masking, on the same JSON
            summary = cut_off.sub("***", masked(summary))
        steps.append(
            {
                "step_id": name,
                "step_name": name,
                "step_type": row["step_type"],
                "description": meta.get("description", ""),
                "status": row["status"],
                "started_at": row["started_at"],
                "completed_at": row["completed_at"],
                "execution_time_ms": row["execution_time_ms"] if result.attempts else None,
                "attempts": 0 if meta.get("resumed") or meta.get("cached") else result.attempts,
                "retry_count": row["retry_count"],
                "error_message": masked(row["error_message"]),
                "traceback": masked(row["traceback"]),
                "reason": meta.get("reason"),
                "records": row["records"],
                "outputs": json.loads(masked(json.dumps(meta.get("outputs", {}), default=str))),
                "bad_records": meta.get("bad_records", 0),
                "dead_letter_path": meta.get("dead_letter_path"),
                "attempt_history": [],
                "rollback": dict(result.rollback) if result.rollback else None,
                "input_summary": None,
                "output_summary": None if summary is None else json.loads(summary),
                "resumed_from": meta.get("resumed"),
                "cached_from": meta.get("cached"),
                "metadata": {
                    k: v for k, v in meta.items() if k in ("output_none", "allow_failure")
                },
            }
        )
        if result.items is not None:  # a mapped step: its items counted by status
            by_status: dict[str, int] = {}
            for item in result.items:
                by_status[item.status.value] = by_status.get(item.status.value, 0) + 1
            steps[-1]["items"] = by_status
    errors = [masked(e) for e in run.errors]
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline_id,
        "description": getattr(spec, "description", "") or "",
        "status": run.status.value,
        "started_at": run.start_time.isoformat() if run.start_time else None,
        "finished_at": run.end_time.isoformat() if run.end_time else None,
        "duration_ms": run.duration_ms,
        "params": dict(run.parameters),  # a secret's value is *** already
        "records_processed": run.records_processed,
        "error": "; ".join(errors) or None,
        "errors": errors,
        "resumed_from": run.resumed_from,
        "parent_run_id": run.parent_run_id,
        "host": None,
        "pid": None,
        "executor": getattr(spec, "executor", None),
        "pipeline_file": getattr(pipeline, "source", None),
        "graph": {s.name: list(s.all_dependencies) for s in specs.values()},
        "steps": steps,
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

_FORMATS = {
    "html": render_html,
    "htm": render_html,
    "md": render_markdown,
    "markdown": render_markdown,
}


def _as_record(record: Any, pipeline: Any = None) -> Mapping[str, Any]:
    """A run record as it is, or the record of a :class:`~pipectl.model.PipelineRun`
    (:func:`run_record`); a :class:`TypeError` saying what to pass for anything else."""
    if isinstance(record, Mapping):
        return record
    from pipectl.model import PipelineRun

    if isinstance(record, PipelineRun):
        return run_record(record, pipeline)
    raise TypeError(
        f"a run story is made from a run record (tracker.get_run(run_id), or what "
        f"`pipectl runs show RUN_ID --json` prints) or a PipelineRun (what "
        f"pipe.run_sync() returns), not {type(record).__name__}"
    )


def write_story(
    record: Mapping[str, Any] | Any,
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    pipeline: Any = None,
) -> Path:
    """Write the run story of ``record`` to ``path``, atomically; return the path.

    ``record`` is a run record (``tracker.get_run(run_id)``) or the
    :class:`~pipectl.model.PipelineRun` a run returned (``pipe.run_sync()``), whose record
    :func:`run_record` makes; give the ``pipeline`` that ran it for its DAG, step types and
    descriptions. ``format`` is ``"html"`` or ``"md"`` (``"markdown"``); by default it comes
    from the file's suffix. The story goes to a temporary file beside ``path`` that then
    replaces it, so a reader never sees half a story. Raises :class:`ValueError` for an
    unknown format, :class:`TypeError` for something that is neither a record nor a run.
    """
    path = Path(path)
    name = (format or path.suffix.lstrip(".")).lower()
    if name not in _FORMATS:
        raise ValueError(f"unknown story format {name or path.name!r}: use html or md")
    text = _FORMATS[name](_as_record(record, pipeline))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a story is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

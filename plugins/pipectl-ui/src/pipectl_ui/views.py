"""The UI's pages, rendered on the server with Jinja2 (autoescape on), the look and the partials
of the run story shared.

The environment is the story's (:func:`pipectl.story.environment`: its autoescaping and its
way of printing values) with a :class:`jinja2.ChoiceLoader` that finds the UI's templates
(``pipectl_ui/templates/ui/``) first and then the story's (``story/base.html``, the partials
``story/_params.html``, ``_dag.html``, ``_timeline.html``, ``_steps.html``, ``_errors.html``).
A run page is the story's view of the run record (:func:`pipectl.story.html_context`) in the
UI's layout, with links and live regions. Every function here is called on the reads' thread
(:class:`pipectl_ui.reads.Reads`) and returns the page's HTML.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pipectl_ui.reads import FINISHED, STATUSES, Reads, RunFilters

__all__ = ["STATIC", "environment", "static_file"]

#: the files under /static/: name -> (package, path in it, media type)
STATIC = {
    "story.css": ("pipectl", "templates/story/story.css", "text/css; charset=utf-8"),
    "ui.css": ("pipectl_ui", "static/ui.css", "text/css; charset=utf-8"),
    "ui.js": ("pipectl_ui", "static/ui.js", "text/javascript; charset=utf-8"),
}

_MAX_FILE_BYTES = 256 * 1024  # of a pipeline file shown on its pipeline's page
_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".py")


@functools.cache
def static_file(name: str) -> tuple[bytes, str, str]:
    """A packaged static file: its bytes, media type and ETag; KeyError if unknown."""
    package, path, kind = STATIC[name]
    data = resources.files(package).joinpath(path).read_bytes()
    return data, kind, hashlib.sha256(data).hexdigest()[:16]


def static_url(name: str) -> str:
    return f"/static/{name}?v={static_file(name)[2]}"


def run_url(run_id: Any) -> str:
    return f"/runs/{quote(str(run_id), safe='')}"


def step_url(run_id: Any, step: Any, attempt: int | None = None) -> str:
    url = f"{run_url(run_id)}/steps/{quote(str(step), safe='')}"
    return url + (f"?attempt={attempt}" if attempt is not None else "")


def pipeline_url(name: Any) -> str:
    return f"/pipelines/{quote(str(name), safe='')}"


def _duration(ms: Any) -> str:
    from pipectl.cli.progress import format_duration

    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return "—"
    return format_duration(ms)


def _stamp(value: Any) -> str:
    """A timestamp for people, in UTC (``2026-11-23 18:25:31``)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _clock(value: Any) -> str:
    """The time of day of a timestamp, in UTC, to the millisecond (``18:25:31.042``)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def _first_line(text: Any, limit: int = 140) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _status_class(status: Any) -> str:
    known = {*STATUSES, "pending", "skipped", "interrupted"}
    text = str(status or "").lower()
    return text if text in known else "unknown"


@functools.cache
def environment() -> Any:
    """The story's Jinja2 environment, overlaid with a loader that finds the UI's templates
    first (see the module's doc), and the UI's helpers as globals."""
    import jinja2
    from pipectl.story import environment as story_environment

    story = story_environment()
    env = story.overlay(
        loader=jinja2.ChoiceLoader([jinja2.PackageLoader("pipectl_ui", "templates"), story.loader])
    )
    env.globals.update(
        static_url=static_url,
        run_url=run_url,
        step_url=step_url,
        pipeline_url=pipeline_url,
        duration=_duration,
        stamp=_stamp,
        first_line=_first_line,
        status_class=_status_class,
    )
    return env


def render(template: str, /, **context: Any) -> str:
    return str(environment().get_template(f"ui/{template}").render(context))


def _base(reads: Reads, title: str, nav: str) -> dict[str, Any]:
    return {
        "title": title,
        "nav": nav,
        "tracker": reads.display,
        "mode": reads.mode,
        "live_url": "",
    }


#: a function of a run's record to what its page offers (:meth:`pipectl_ui.actions.Actions.offer`
#: with the form's CSRF token), or None without ``--allow-actions``
Offer = Callable[[dict[str, Any]], dict[str, Any]] | None


def _actions(offer: Offer, record: dict[str, Any]) -> dict[str, Any] | None:
    """The action forms of a run's page (None: no actions)."""
    if offer is None:
        return None
    found = offer(record)
    base = f"/actions/runs/{quote(str(record['run_id']), safe='')}"
    for kind in ("rerun", "resume", "cancel"):
        if found.get(kind) is not None:
            found[kind] = {**found[kind], "url": f"{base}/{kind}"}
    return found


# -- pages -------------------------------------------------------------------------------------


def runs_page(reads: Reads, filters: RunFilters) -> str:
    page = reads.runs(filters)
    names = reads.pipeline_names()
    rows = [_run_row(r) for r in page["runs"]]
    running = [r["run_id"] for r in rows if r["status"] not in FINISHED][:4]
    context = _base(reads, "Runs · pipectl ui", "runs")
    context.update(
        filters=filters,
        statuses=STATUSES,
        pipelines=names,
        rows=rows,
        live_runs=running,
        next_url="/?" + urlencode(filters.query(cursor=page["next"])) if page["next"] else "",
        first_url="/?" + urlencode(filters.query(cursor=None)) if filters.cursor else "",
        clear_url="/" if filters.filtered else "",
    )
    return render("runs.html", **context)


def _run_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": str(row.get("execution_id")),
        "pipeline": str(row.get("pipeline_name") or ""),
        "status": str(row.get("status") or "unknown"),
        "cls": _status_class(row.get("status")),
        "started": _stamp(row.get("started_at")),
        "duration": _duration(row.get("execution_time_ms")),
        "records": row.get("records_processed")
        if row.get("records_processed") is not None
        else "—",
        "error": _first_line(row.get("error_message")),
        "resumed_from": row.get("resumed_from") or "",
    }


def run_page(reads: Reads, record: dict[str, Any], offer: Offer = None) -> str:
    from pipectl.story import html_context

    story = html_context({k: v for k, v in record.items() if k != "related"})
    run_id = record["run_id"]
    for row in story["steps"]:
        row["href"] = step_url(run_id, row["name"])
    related = record.get("related") or {}
    context = _base(reads, story["title"] + " · pipectl ui", "runs")
    context.update(story)
    context.update(
        inline_styles=False,
        run=record,
        run_id=run_id,
        related=_related(related),
        actions=_actions(offer, record),
        live_url="" if record.get("status") in FINISHED else f"/api/runs/{quote(run_id)}/events",
    )
    return render("run.html", **context)


def _related(related: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The related runs as links: label, run id, and status when known."""
    out = []

    def add(label: str, value: Any) -> None:
        if not value:
            return
        if isinstance(value, Mapping):
            run_id = value.get("execution_id") or value.get("run_id")
            if run_id:
                out.append(
                    {
                        "label": label,
                        "run_id": str(run_id),
                        "pipeline": str(value.get("pipeline_name") or value.get("pipeline") or ""),
                        "status": str(value.get("status") or ""),
                        "cls": _status_class(value.get("status")),
                    }
                )
        else:
            out.append(
                {"label": label, "run_id": str(value), "pipeline": "", "status": "", "cls": ""}
            )

    add("Resumed from", related.get("resumed_from"))
    for item in related.get("resumes") or ():
        add("Resumed by", item)
    add("Parent run", related.get("parent"))
    for item in related.get("children") or ():
        add("Sub-pipeline run", item)
    return out


def step_page(reads: Reads, record: dict[str, Any], step: str, attempt: int | None) -> str:
    found = reads.step(record, step)
    name = str(found.get("step_id") or found.get("step_name"))
    logs = reads.step_logs(record["run_id"], name, attempt=attempt)
    history = [h for h in found.get("attempt_history") or () if isinstance(h, Mapping)]
    numbers = sorted(
        {int(h["attempt"]) for h in history if isinstance(h.get("attempt"), int)}
        | {int(line["attempt"]) for line in logs["logs"] if isinstance(line.get("attempt"), int)}
    )
    if not numbers and found.get("attempts"):
        numbers = list(range(1, int(found["attempts"]) + 1))
    by_attempt: dict[int, list[dict[str, Any]]] = {n: [] for n in numbers}
    for line in logs["logs"]:
        number = line.get("attempt") if isinstance(line.get("attempt"), int) else 0
        by_attempt.setdefault(number, []).append(
            {
                "time": _clock(line.get("logged_at")),
                "stream": str(line.get("stream") or ""),
                "level": str(line.get("level") or ""),
                "message": str(line.get("message") or ""),
            }
        )
    shown = [n for n in sorted(by_attempt) if attempt is None or n == attempt]
    attempts = []
    for number in shown:
        entry = next((h for h in history if h.get("attempt") == number), {})
        attempts.append(
            {
                "number": number,
                "started": _stamp(entry.get("started_at")),
                "finished": _stamp(entry.get("finished_at")),
                "error": str(entry.get("error") or ""),
                "lines": by_attempt.get(number, []),
                "href": step_url(record["run_id"], name, number),
            }
        )
    context = _base(reads, f"{name} · run {record['run_id'][:12]} · pipectl ui", "runs")
    context.update(
        run=record,
        run_id=record["run_id"],
        step=found,
        name=name,
        status=str(found.get("status") or "unknown"),
        cls=_status_class(found.get("status")),
        attempt=attempt,
        attempts=attempts,
        all_attempts=[
            {"number": n, "href": step_url(record["run_id"], name, n)} for n in sorted(by_attempt)
        ],
        logs_available=logs["available"],
        all_url=step_url(record["run_id"], name),
        live_url=""
        if record.get("status") in FINISHED
        else f"/api/runs/{quote(record['run_id'])}/events",
    )
    return render("step.html", **context)


def pipelines_page(reads: Reads) -> str:
    data = reads.pipelines()
    rows = []
    for p in data["pipelines"]:
        last = p.get("last_run") or {}
        rows.append(
            {
                "name": p["name"],
                "runs": p["runs"],
                "rate": _rate(p.get("success_rate")),
                "median": _duration(p.get("median_ms")),
                "last_id": last.get("execution_id") or "",
                "last_status": str(last.get("status") or ""),
                "last_cls": _status_class(last.get("status")),
                "last_started": _stamp(last.get("started_at")),
            }
        )
    context = _base(reads, "Pipelines · pipectl ui", "pipelines")
    context.update(rows=rows)
    return render("pipelines.html", **context)


def _rate(rate: Any) -> str:
    return "—" if rate is None else f"{rate * 100:.0f}%"


def pipeline_page(reads: Reads, name: str, offer: Offer = None) -> str:
    from pipectl.story import html_context

    data, latest = reads.pipeline_and_latest(name)
    story = html_context(latest)
    context = _base(reads, f"{name} · pipeline · pipectl ui", "pipelines")
    context.update(
        inline_styles=False,
        pipeline=data,
        rate=_rate(data.get("success_rate")),
        median=_duration(data.get("median_ms")),
        chart=run_chart(data["runs"]),
        dag=story["dag"],
        file_path=str(data.get("pipeline_file") or ""),
        file_text=_pipeline_file(data.get("pipeline_file")),
        latest_url=run_url(data["latest_run_id"]),
        actions=_actions(offer, latest),
    )
    return render("pipeline.html", **context)


def _pipeline_file(path: Any) -> str | None:
    """The text of a pipeline file, when it is one (by its suffix), readable and not too
    large; None otherwise. Escaped by the template like everything else."""
    if not path:
        return None
    file = Path(str(path))
    try:
        if file.suffix.lower() not in _FILE_SUFFIXES or not file.is_file():
            return None
        if file.stat().st_size > _MAX_FILE_BYTES:
            return None
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# -- the chart of a pipeline's runs --------------------------------------------------------------

_C_W, _C_H, _C_LEFT, _C_RIGHT, _C_TOP, _C_BOTTOM = 1100, 220, 70, 16, 14, 30


def run_chart(runs: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """An SVG bar chart's geometry: a bar per run, oldest first, as tall as it lasted and
    coloured by its status; a duration axis. ``runs`` newest first, as the tracker gives
    them. None when there is no run."""
    if not runs:
        return None
    ordered = list(reversed(runs))
    durations = [
        float(r["execution_time_ms"])
        for r in ordered
        if isinstance(r.get("execution_time_ms"), (int, float))
    ]
    top = max(durations, default=1.0) or 1.0
    magnitude = 10 ** math.floor(math.log10(top))
    step = next(
        m * magnitude for m in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10) if top / (m * magnitude) <= 4
    )
    scale_top = math.ceil(top / step) * step
    inner_w = _C_W - _C_LEFT - _C_RIGHT
    inner_h = _C_H - _C_TOP - _C_BOTTOM
    slot = inner_w / max(len(ordered), 1)
    width = max(min(slot * 0.7, 28.0), 1.0)
    bars = []
    for index, run in enumerate(ordered):
        ms = run.get("execution_time_ms")
        known = isinstance(ms, (int, float))
        height = max(float(ms) / scale_top * inner_h, 2.0) if known else 4.0
        x = _C_LEFT + index * slot + (slot - width) / 2
        status = str(run.get("status") or "unknown")
        bars.append(
            {
                "href": run_url(run.get("execution_id")),
                "cls": _status_class(status),
                "x": f"{x:.1f}",
                "y": f"{_C_TOP + inner_h - height:.1f}",
                "width": f"{width:.1f}",
                "height": f"{height:.1f}",
                "tip": f"{_stamp(run.get('started_at'))} · {status} · "
                f"{_duration(ms) if known else 'no duration'} · run {run.get('execution_id')}",
            }
        )
    ticks = []
    value = 0.0
    while value <= scale_top + 1e-9:
        y = _C_TOP + inner_h - value / scale_top * inner_h
        ticks.append({"y": f"{y:.1f}", "label": _duration(value) if value else "0"})
        value += step
    return {
        "width": _C_W,
        "height": _C_H,
        "left": _C_LEFT,
        "right": _C_W - _C_RIGHT,
        "base": f"{_C_TOP + inner_h:.1f}",
        "label_y": f"{_C_H - 10:.1f}",
        "first": _stamp(ordered[0].get("started_at")),
        "last": _stamp(ordered[-1].get("started_at")),
        "bars": bars,
        "ticks": ticks,
    }


def error_page(reads: Reads | None, status: int, message: str) -> str:
    context = {
        "title": f"{status} · pipectl ui",
        "nav": "",
        "tracker": reads.display if reads else "",
        "mode": reads.mode if reads else "",
        "live_url": "",
        "status": status,
        "message": message,
    }
    return render("error.html", **context)

"""What the UI reads from the tracker, as plain JSON-able data: the JSON API returns it as it is
and the pages render it (:mod:`pipectl_ui.views`), so the two always agree.

:class:`Reads` wraps an open tracker. Every read runs on one thread of its own, one at a time
(a tracker's read connection is not shared by concurrent transactions), through
:meth:`Reads.call` from the server's event loop. The tracker's read methods used here are
``list_runs``, ``get_run`` and ``resolve`` (every tracker has them) and, when the tracker has
them, ``page_runs``, ``pipeline_names``, ``pipeline_runs``, ``related_runs``, ``step_logs`` and
``run_version``. Without one of the latter (an older tracker), the UI reads what it can from
``list_runs`` and ``get_run`` instead, or leaves that part out (step logs).

Nothing here unmasks anything: the tracker recorded secret params' values as ``***``, and
what it returns is passed on as it is.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pipectl.tracking.reads import LISTED_STATUSES

__all__ = [
    "FINISHED",
    "STATUSES",
    "BadRequest",
    "NotFound",
    "Reads",
    "RunFilters",
]

_T = TypeVar("_T")

STATUSES = LISTED_STATUSES  # the statuses a run can be listed by (pipectl's)
#: the statuses of a run that is not going on any more (live updates end)
FINISHED = frozenset(STATUSES) - {"running"}

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: rows of ``list_runs`` read at most when the tracker has no ``page_runs`` (filtered here)
_FALLBACK_SCAN = 5000
_LOG_LIMIT = 10_000


class NotFound(LookupError):
    """An unknown run, step or pipeline: 404."""


class BadRequest(ValueError):
    """A parameter that cannot be used: 400."""


def _parse_moment(name: str, text: str | None, now: datetime) -> str | None:
    """A time filter as the tracker compares it (ISO 8601 in UTC): a date (``2026-01-31``), a
    date and time (``2026-01-31T08:00``, UTC when it has no offset) or a duration before now
    (``24h``, ``7d``, ``1h30m``)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if re.fullmatch(r"[0-9.]+\s*[smhdw].*", text):
        from pipectl.tracking import parse_duration

        try:
            seconds = parse_duration(text)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"{name}: {exc}") from None
        return (now - timedelta(seconds=seconds)).isoformat()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}: expected a date (2026-01-31), a date and time (2026-01-31T08:00, UTC "
            f"unless it has an offset) or a duration before now (24h, 7d), got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


class RunFilters:
    """The filters of a list of runs, from a query string (the runs page and ``/api/runs``):
    ``pipeline``, ``status``, ``since``, ``until``, ``search``, ``cursor`` and ``limit``."""

    FIELDS = ("pipeline", "status", "since", "until", "search", "cursor", "limit")

    def __init__(self, query: Mapping[str, str], *, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.raw = {k: (query.get(k) or "").strip() for k in self.FIELDS}
        self.pipeline = self.raw["pipeline"] or None
        self.status = self.raw["status"] or None
        if self.status is not None and self.status not in STATUSES:
            raise BadRequest(f"status: one of {', '.join(STATUSES)}, got {self.status!r}")
        self.since = _parse_moment("since", self.raw["since"], now)
        self.until = _parse_moment("until", self.raw["until"], now)
        self.search = self.raw["search"] or None
        self.cursor = self.raw["cursor"] or None
        limit = self.raw["limit"] or str(DEFAULT_LIMIT)
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadRequest(f"limit: a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
        self.limit = int(limit)

    def query(self, **change: str | None) -> dict[str, str]:
        """The filters as query parameters (those given), with ``change`` applied."""
        values = {k: v for k, v in self.raw.items() if v}
        for key, value in change.items():
            if value:
                values[key] = value
            else:
                values.pop(key, None)
        if values.get("limit") == str(DEFAULT_LIMIT):
            values.pop("limit")
        return values

    @property
    def filtered(self) -> bool:
        return any(self.raw[k] for k in ("pipeline", "status", "since", "until", "search"))


def _first_line(text: Any, limit: int = 160) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _version_of(record: Mapping[str, Any]) -> str:
    """A fingerprint of what changes while a run goes on (for a tracker without
    ``run_version``)."""
    parts = [
        record.get("status"),
        record.get("finished_at"),
        [
            (
                s.get("step_id"),
                s.get("status"),
                s.get("attempts"),
                s.get("completed_at"),
                len(s.get("attempt_history") or ()),
            )
            for s in record.get("steps") or ()
        ],
    ]
    text = json.dumps(parts, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _matches(row: Mapping[str, Any], search: str) -> bool:
    needle = search.lower()
    return any(
        needle in str(row.get(field) or "").lower()
        for field in ("execution_id", "pipeline_name", "error_message")
    )


def pipeline_stats(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts, success rate and durations of a pipeline's runs (newest first)."""
    finished = [r for r in runs if r.get("status") in FINISHED]
    succeeded = sum(1 for r in finished if r.get("status") == "success")
    durations = sorted(
        float(r["execution_time_ms"])
        for r in finished
        if isinstance(r.get("execution_time_ms"), (int, float))
    )
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    return {
        "runs": len(runs),
        "finished": len(finished),
        "succeeded": succeeded,
        "success_rate": round(succeeded / len(finished), 4) if finished else None,
        "median_ms": durations[len(durations) // 2] if durations else None,
        "max_ms": durations[-1] if durations else None,
        "statuses": counts,
        "last_run": runs[0] if runs else None,
    }


class Reads:
    """The tracker's reads, one at a time on a thread of their own, with what the UI shows
    made from them. ``tracker`` is an open tracker (its ``close`` is the caller's)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.display = str(getattr(tracker, "display", "") or getattr(tracker, "url", ""))
        #: what the footer says the UI does: "read-only", or "actions on" (``--allow-actions``)
        self.mode = "read-only"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipectl-ui-read")

    def has(self, method: str) -> bool:
        """Whether the tracker has the read method ``method``."""
        return callable(getattr(self.tracker, method, None))

    async def call(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` on the reads' thread, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- runs ------------------------------------------------------------------------------------

    def runs(self, filters: RunFilters) -> dict[str, Any]:
        """A page of runs, newest first: ``{"runs": [...], "next": cursor or None}``."""
        if self.has("page_runs"):
            from pipectl.errors import PipectlError

            try:
                page = self.tracker.page_runs(
                    pipeline=filters.pipeline,
                    status=filters.status,
                    since=filters.since,
                    until=filters.until,
                    search=filters.search,
                    cursor=filters.cursor,
                    limit=filters.limit,
                )
            except (PipectlError, ValueError) as exc:  # a cursor it does not know, ...
                raise BadRequest(str(exc)) from None
            return {"runs": list(page.get("runs") or []), "next": page.get("next")}
        return self._runs_from_list(filters)

    def _runs_from_list(self, filters: RunFilters) -> dict[str, Any]:
        """``page_runs`` made of ``list_runs`` (a tracker without it): filtered here, the cursor
        an offset."""
        offset = 0
        if filters.cursor:
            if not filters.cursor.startswith("o") or not filters.cursor[1:].isdigit():
                raise BadRequest(f"cursor: not a cursor of this list: {filters.cursor!r}")
            offset = int(filters.cursor[1:])
        narrow = filters.since or filters.until or filters.search
        want = _FALLBACK_SCAN if narrow else offset + filters.limit + 1
        rows = self.tracker.list_runs(pipeline=filters.pipeline, status=filters.status, limit=want)
        if filters.since:
            rows = [r for r in rows if (r.get("started_at") or "") >= filters.since]
        if filters.until:
            rows = [r for r in rows if (r.get("started_at") or "") < filters.until]
        if filters.search:
            rows = [r for r in rows if _matches(r, filters.search)]
        page = rows[offset : offset + filters.limit]
        more = len(rows) > offset + filters.limit
        return {"runs": page, "next": f"o{offset + filters.limit}" if more else None}

    def resolve(self, run_id: str) -> str:
        """The full id of run ``run_id`` (a full id or a unique prefix); :class:`NotFound`."""
        from pipectl.errors import PipectlError

        if not run_id or run_id == "latest" or "%" in run_id:
            raise NotFound(f"no run {run_id!r}")
        try:
            full: str = self.tracker.resolve(run_id)
        except PipectlError as exc:
            raise NotFound(str(exc)) from None
        return full

    def run(self, run_id: str) -> dict[str, Any]:
        """The record of one run (``pipectl runs show --json``) with ``related``: the run it
        resumed, its resumes, its parent and its sub-pipeline runs."""
        from pipectl.errors import PipectlError

        full = self.resolve(run_id)
        try:
            record: dict[str, Any] = self.tracker.get_run(full)
        except PipectlError as exc:
            raise NotFound(str(exc)) from None
        record["related"] = self.related(record)
        return record

    def related(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``resumed_from``, ``resumes``, ``parent`` and ``children`` of a run, as rows
        (``execution_id``, ``pipeline_name``, ``status``, ``started_at``) or ids."""
        run_id = str(record.get("run_id"))
        if self.has("related_runs"):
            related = self.tracker.related_runs(run_id) or {}
            return {
                "resumed_from": related.get("resumed_from"),
                "resumes": list(related.get("resumes") or []),
                "parent": related.get("parent"),
                "children": list(related.get("children") or []),
            }
        # an older tracker: what the record says, and the resumes among its pipeline's runs
        resumes = []
        if record.get("pipeline"):
            rows = self.tracker.list_runs(pipeline=record["pipeline"], limit=500)
            resumes = [r for r in rows if r.get("resumed_from") == run_id]
        return {
            "resumed_from": record.get("resumed_from"),
            "resumes": resumes,
            "parent": record.get("parent_run_id"),
            "children": [],
        }

    def steps(self, run_id: str) -> dict[str, Any]:
        """The steps of a run as recorded: ``{"run_id", "status", "steps": [...]}``."""
        record = self.run(run_id)
        return {"run_id": record["run_id"], "status": record["status"], "steps": record["steps"]}

    def step(self, record: Mapping[str, Any], step: str) -> dict[str, Any]:
        """The step ``step`` (its id or its name) of a run's record; :class:`NotFound`."""
        for s in record.get("steps") or ():
            if step in (s.get("step_id"), s.get("step_name")):
                return dict(s)
        raise NotFound(f"run {record.get('run_id')} has no step {step!r}")

    def step_logs(
        self, run_id: str, step: str, attempt: int | None = None, limit: int = _LOG_LIMIT
    ) -> dict[str, Any]:
        """A step's log lines (each attempt's, or ``attempt``'s): ``{"run_id", "step",
        "attempt", "available", "logs": [...]}``; ``available`` is false when the tracker keeps
        no logs."""
        record = self.run(run_id)
        found = self.step(record, step)
        name = found.get("step_id") or found.get("step_name")
        logs: list[dict[str, Any]] = []
        available = self.has("step_logs")
        if available:
            logs = list(
                self.tracker.step_logs(record["run_id"], name, attempt=attempt, limit=limit)
            )
        return {
            "run_id": record["run_id"],
            "step": name,
            "attempt": attempt,
            "available": available,
            "logs": logs,
        }

    # -- live ------------------------------------------------------------------------------------

    def version(self, run_id: str) -> str | None:
        """What changes whenever the run's record does (``run_version``, else a fingerprint of
        the record); None for an unknown run."""
        if self.has("run_version"):
            version = self.tracker.run_version(run_id)
            return None if version is None else str(version)
        try:
            return _version_of(self.tracker.get_run(run_id))
        except LookupError:
            return None
        except Exception as exc:
            from pipectl.errors import PipectlError

            if isinstance(exc, PipectlError):
                return None
            raise

    def live(self, run_id: str) -> dict[str, Any]:
        """What a live page updates: the run's status and each step's (the events of
        ``/api/runs/{id}/events``)."""
        from pipectl.errors import PipectlError

        try:
            record = self.tracker.get_run(run_id)
        except PipectlError as exc:
            raise NotFound(str(exc)) from None
        return {
            "run_id": record["run_id"],
            "pipeline": record.get("pipeline"),
            "status": record.get("status"),
            "finished": record.get("status") in FINISHED,
            "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at"),
            "duration_ms": record.get("duration_ms"),
            "steps": [
                {
                    "name": s.get("step_name") or s.get("step_id"),
                    "step_id": s.get("step_id"),
                    "status": s.get("status"),
                    "attempts": s.get("attempts"),
                    "started_at": s.get("started_at"),
                    "completed_at": s.get("completed_at"),
                    "duration_ms": s.get("execution_time_ms"),
                    "error": _first_line(s.get("error_message")),
                }
                for s in record.get("steps") or ()
            ],
        }

    # -- pipelines -------------------------------------------------------------------------------

    def pipeline_names(self) -> list[str]:
        if self.has("pipeline_names"):
            return [str(n) for n in self.tracker.pipeline_names()]
        rows = self.tracker.list_runs(limit=_FALLBACK_SCAN)
        return sorted({str(r["pipeline_name"]) for r in rows if r.get("pipeline_name")})

    def pipeline_runs(self, name: str, limit: int = 200) -> list[dict[str, Any]]:
        """The latest runs of a pipeline, newest first (``execution_id``, ``status``,
        ``started_at``, ``execution_time_ms``, ``records_processed``)."""
        if self.has("pipeline_runs"):
            return [dict(r) for r in self.tracker.pipeline_runs(name, limit=limit)]
        keep = ("execution_id", "status", "started_at", "execution_time_ms", "records_processed")
        rows = self.tracker.list_runs(pipeline=name, limit=limit)
        return [{k: r.get(k) for k in keep} for r in rows]

    def pipelines(self) -> dict[str, Any]:
        """Every pipeline the tracker has runs of, with the figures of its latest runs."""
        out = []
        for name in self.pipeline_names():
            stats = pipeline_stats(self.pipeline_runs(name))
            out.append({"name": name, **stats})
        return {"pipelines": out}

    def pipeline(self, name: str, limit: int = 200) -> dict[str, Any]:
        """One pipeline: its latest runs (newest first) and their figures, and its definition
        as its latest run recorded it (``graph``, ``pipeline_file``); :class:`NotFound`."""
        return self.pipeline_and_latest(name, limit)[0]

    def pipeline_and_latest(
        self, name: str, limit: int = 200
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """:meth:`pipeline`, and the record of the pipeline's latest run."""
        runs = self.pipeline_runs(name, limit=limit)
        if not runs:
            raise NotFound(f"no runs of a pipeline {name!r} in the tracker")
        latest: dict[str, Any] = self.tracker.get_run(runs[0]["execution_id"])
        data = {
            "name": name,
            **pipeline_stats(runs),
            "runs": runs,
            "latest_run_id": latest.get("run_id"),
            "description": latest.get("description") or "",
            "pipeline_file": latest.get("pipeline_file"),
            "graph": latest.get("graph") or {},
        }
        return data, latest

"""The reads of the SQL trackers: the queries behind ``pipectl runs list``, ``runs show`` and
``runs logs``, stories, resume and a web UI (:func:`page_runs`, :func:`related_runs`,
:func:`run_version`...) (each function given the tracker's ``query``, which runs a statement with
``?`` placeholders and returns its rows as dicts), and the record of a run they read
(:func:`run_record`). Reads always come from the database, never from memory."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from typing import Any

from pipectl.loads import pid_alive
from pipectl.tracking.errors import RunInProgress, TrackerError

__all__ = [
    "LISTED_STATUSES",
    "Query",
    "extractor_states",
    "fetch_all",
    "fetch_one",
    "get_run",
    "iso_bound",
    "latest_finished",
    "list_runs",
    "live_status",
    "load_run",
    "loads_json",
    "page_runs",
    "pipeline_names",
    "pipeline_of",
    "pipeline_runs",
    "related_runs",
    "resolve",
    "run_record",
    "run_version",
    "step_logs",
    "step_states",
]

#: the statuses a run can be listed by (``interrupted``: its process died while it ran)
LISTED_STATUSES = (
    "running",
    "success",
    "failed",
    "cancelled",
    "interrupted",
    "rolled_back",
    "rollback_failed",
)

Query = Callable[[str, tuple[Any, ...]], list[dict[str, Any]]]
"""How the reads run a statement: ``query(sql, params)``, the rows as dicts."""


def list_runs(
    query: Query, pipeline: str | None = None, status: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The latest runs, newest first (``status`` ``interrupted`` finds runs whose process
    died)."""
    where, params = [], []
    if pipeline:
        where.append("pipeline_name = ?")
        params.append(pipeline)
    if status and status != "interrupted":
        where.append("status = ?")
        params.append(status)
    elif status == "interrupted":
        where.append("status = 'running'")
    sql = (
        "SELECT execution_id, pipeline_name, status, started_at, completed_at, "
        "execution_time_ms, records_processed, error_message, resumed_from, host, pid "
        "FROM pipeline_executions"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY started_at DESC LIMIT ?"
    )
    rows = query(sql, (*params, limit if status != "interrupted" else limit * 10))
    for row in rows:
        row["status"] = live_status(row)
    if status == "interrupted":
        rows = [r for r in rows if r["status"] == "interrupted"][:limit]
    return rows


def resolve(
    query: Query, display: str, run_id: str, pipeline: str | None = None, *, finished: bool = False
) -> str:
    """A run id from ``run_id`` (``latest``, a full id or a unique prefix).

    ``finished`` (what a resume asks): ``latest`` is the latest run that ended
    (:func:`latest_finished`), and a run still running raises :class:`RunInProgress`."""
    if finished:
        return _resolve_finished(query, display, run_id, pipeline)
    if run_id == "latest":
        sql = "SELECT execution_id FROM pipeline_executions"
        params: tuple[Any, ...] = ()
        if pipeline:
            sql += " WHERE pipeline_name = ?"
            params = (pipeline,)
        rows = query(sql + " ORDER BY started_at DESC LIMIT 1", params)
        if not rows:
            where = f" of pipeline {pipeline!r}" if pipeline else ""
            raise TrackerError(f"no run{where} in the tracker {display}")
        latest: str = rows[0]["execution_id"]
        return latest
    if query("SELECT execution_id FROM pipeline_executions WHERE execution_id = ?", (run_id,)):
        return run_id  # a full id: found by the primary key (a LIKE scans every row)
    rows = query(
        "SELECT execution_id FROM pipeline_executions WHERE execution_id "
        "LIKE ? ORDER BY started_at DESC LIMIT 2",
        (run_id.replace("%", "").replace("_", "\\_") + "%",),
    )
    exact = [r for r in rows if r["execution_id"] == run_id]
    if exact:
        return run_id
    if len(rows) == 1:
        found: str = rows[0]["execution_id"]
        return found
    if not rows:
        raise TrackerError(
            f"no run {run_id!r} in the tracker {display} (`pipectl runs list` shows the runs)"
        )
    raise TrackerError(f"run id {run_id!r} is ambiguous: give more of it")


def latest_finished(query: Query, pipeline: str | None = None) -> dict[str, Any] | None:
    """The latest run (of ``pipeline``) that is not running: it ended, or its process died
    (``interrupted``, as :func:`list_runs` shows it); None if there is none. A row with
    ``execution_id``, ``status``, ``started_at``, ``host`` and ``pid``."""
    where, params = ("pipeline_name = ? AND ", (pipeline,)) if pipeline else ("", ())
    columns = "SELECT execution_id, status, started_at, host, pid FROM pipeline_executions"
    ended = query(
        f"{columns} WHERE {where}status <> 'running' ORDER BY started_at DESC LIMIT 1", params
    )
    since = ("", ()) if not ended else (" AND started_at > ?", (ended[0]["started_at"],))
    # the runs recorded as running since then: the newest whose process died wins
    for row in query(
        f"{columns} WHERE {where}status = 'running'{since[0]} ORDER BY started_at DESC",
        (*params, *since[1]),
    ):
        if live_status(row) == "interrupted":
            row["status"] = "interrupted"
            return row
    return ended[0] if ended else None


def _resolve_finished(query: Query, display: str, run_id: str, pipeline: str | None) -> str:
    """:func:`resolve` for a resume: a run that is not running."""
    if run_id == "latest":
        row = latest_finished(query, pipeline)
        if row is not None:
            ended: str = row["execution_id"]
            return ended
        where = f" of pipeline {pipeline!r}" if pipeline else ""
        running = list_runs(query, pipeline=pipeline, limit=1)
        if not running:
            raise TrackerError(f"no run{where} in the tracker {display}")
        r = running[0]
        raise RunInProgress(
            r["execution_id"],
            r["host"],
            r["pid"],
            f"no run{where} has ended yet in the tracker {display}, "
            f"nothing to resume: run {r['execution_id']} is still running "
            f"(pid {r['pid']} on host {r['host']}); wait for it to end",
        )
    run_id = resolve(query, display, run_id)
    rows = query(
        "SELECT execution_id, status, host, pid FROM pipeline_executions WHERE execution_id = ?",
        (run_id,),
    )
    if rows and live_status(rows[0]) == "running":
        r = rows[0]
        elsewhere = (
            ""
            if r["host"] == socket.gethostname()
            else "; it runs on another host, where `pipectl runs list` tells whether "
            "its process is alive"
        )
        raise RunInProgress(
            run_id,
            r["host"],
            r["pid"],
            f"run {run_id} is still running (pid {r['pid']} on host "
            f"{r['host']}); wait for it to end or stop it, then resume "
            f"it{elsewhere}",
        )
    return run_id


def pipeline_of(query: Query, run_id: str) -> str | None:
    """The pipeline a run (a full id) belongs to, None if there is no such run."""
    rows = query("SELECT pipeline_name FROM pipeline_executions WHERE execution_id = ?", (run_id,))
    return rows[0]["pipeline_name"] if rows else None


def get_run(query: Query, display: str, run_id: str, pipeline: str | None = None) -> dict[str, Any]:
    """The whole record of one run: the run and every step (the format of
    ``pipectl runs show --json``)."""
    run_id = resolve(query, display, run_id, pipeline)
    (row,) = query("SELECT * FROM pipeline_executions WHERE execution_id = ?", (run_id,))
    steps = query(
        "SELECT * FROM step_executions WHERE execution_id = ? "
        "ORDER BY step_order, started_at, step_id",
        (run_id,),
    )
    return run_record(row, steps)


def step_states(query: Query, run_id: str) -> dict[str, dict[str, Any]]:
    """Each step of a run: ``status``, ``fingerprint``, ``output_stored``, ``output_none``,
    and ``committed`` (the outputs a data step committed)."""
    out = {}
    for row in query(
        "SELECT step_id, status, metadata FROM step_executions WHERE execution_id = ?", (run_id,)
    ):
        meta = loads_json(row["metadata"], {})
        committed = [
            name
            for name, report in (meta.get("outputs") or {}).items()
            if report.get("status") in ("committed", "skipped")
        ]
        out[row["step_id"]] = {
            "status": row["status"],
            "fingerprint": meta.get("fingerprint"),
            "output_stored": bool(meta.get("output_stored")),
            "output_none": bool(meta.get("output_none")),
            "committed": committed,
        }
    return out


def load_run(query: Query, run_id: str) -> str:
    """The run that ``run_id``'s loads belong to: the first run of its chain of resumes."""
    seen = {run_id}
    while True:
        rows = query(
            "SELECT resumed_from FROM pipeline_executions WHERE execution_id = ?", (run_id,)
        )
        earlier = rows[0]["resumed_from"] if rows else None
        if not earlier or earlier in seen:
            return run_id
        seen.add(earlier)
        run_id = earlier


def extractor_states(query: Query, pipeline: str) -> dict[str, Any]:
    """The latest incremental state of each data step of ``pipeline``."""
    return {
        r["step_id"]: json.loads(r["state"])
        for r in query(
            "SELECT step_id, state FROM extractor_state WHERE pipeline_name = ?", (pipeline,)
        )
    }


# -- what a web UI reads (BrowsableTracker) ---------------------------------------------------

_RUN_ROW = (
    "SELECT execution_id, pipeline_name, status, started_at, completed_at, "
    "execution_time_ms, records_processed, error_message, resumed_from, parent_execution_id, "
    "host, pid FROM pipeline_executions"
)
_LIVE = ("running", "interrupted")  # told apart by live_status, not by the column


def page_runs(
    query: Query,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    search: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """One page of runs, newest first, and the cursor of the next (``{"runs", "next"}``):
    keyset paging on (``started_at``, ``execution_id``), which the index
    ``ix_pipeline_executions_page`` (or ``_status``, ``_pipeline``) serves, so a page costs
    the same at any depth."""
    limit = max(int(limit), 1)
    where: list[str] = []
    params: list[Any] = []
    if pipeline:
        where.append("pipeline_name = ?")
        params.append(pipeline)
    live = status in _LIVE
    if status:
        where.append("status = ?")
        params.append("running" if live else status)
    if since:
        where.append("started_at >= ?")
        params.append(iso_bound(since, "since"))
    if until:
        where.append("started_at < ?")
        params.append(iso_bound(until, "until"))
    text = (search or "").strip().lower()
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(
            "(execution_id LIKE ? ESCAPE '\\' OR LOWER(pipeline_name) LIKE ? ESCAPE '\\' "
            "OR LOWER(error_message) LIKE ? ESCAPE '\\')"
        )
        params += [escaped + "%", f"%{escaped}%", f"%{escaped}%"]
    position = _read_cursor(cursor) if cursor else None
    want = limit + 1
    rows: list[dict[str, Any]] = []
    while True:
        clauses, values = list(where), list(params)
        if position is not None:  # after the position: (started_at, execution_id) below it
            clauses.append("started_at <= ? AND (started_at < ? OR execution_id < ?)")
            values += [position[0], position[0], position[1]]
        batch = query(
            _RUN_ROW
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY started_at DESC, execution_id DESC LIMIT ?",
            (*values, want),
        )
        for row in batch:
            row["status"] = live_status(row)
        if not live:
            rows = batch
            break
        rows += [r for r in batch if r["status"] == status]  # running or interrupted
        if len(rows) > limit or len(batch) < want:
            break
        position = (batch[-1]["started_at"], batch[-1]["execution_id"])
        want = min(want * 2, 5000)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"runs": rows, "next": _make_cursor(rows[-1]) if more and rows else None}


def iso_bound(text: str, name: str = "time") -> str:
    """An ISO 8601 time as the tracker stores them (UTC, ``isoformat``); a time without a
    zone is UTC, a date is its midnight. ValueError-free: a bad one is a TrackerError."""
    from datetime import UTC, datetime

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TrackerError(
            f"{name} {text!r} is not an ISO 8601 time (such as 2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _make_cursor(row: Mapping[str, Any]) -> str:
    import base64

    raw = json.dumps([row["started_at"], row["execution_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[str, str]:
    import base64

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, run_id = json.loads(raw)
        if isinstance(started, str) and isinstance(run_id, str):
            return started, run_id
    except (ValueError, TypeError):
        pass
    raise TrackerError(f"cursor {cursor[:40]!r} is not one a page of runs gave")


def pipeline_names(query: Query) -> list[str]:
    """The pipelines that have runs, sorted: one index probe per name (a skip scan of the
    index on ``(pipeline_name, started_at)``), not a scan of every run."""
    return [
        r["name"]
        for r in query(
            "WITH RECURSIVE names(name) AS ("
            "SELECT MIN(pipeline_name) FROM pipeline_executions "
            "UNION ALL SELECT (SELECT MIN(pipeline_name) FROM pipeline_executions "
            "WHERE pipeline_name > names.name) FROM names WHERE names.name IS NOT NULL) "
            "SELECT name FROM names WHERE name IS NOT NULL",
            (),
        )
    ]


def pipeline_runs(query: Query, pipeline: str, limit: int = 200) -> list[dict[str, Any]]:
    """A pipeline's latest runs, newest first: id, status, start, duration, records."""
    rows = query(
        "SELECT execution_id, status, started_at, execution_time_ms, records_processed, host, "
        "pid FROM pipeline_executions WHERE pipeline_name = ? "
        "ORDER BY started_at DESC, execution_id DESC LIMIT ?",
        (pipeline, max(int(limit), 1)),
    )
    for row in rows:
        row["status"] = live_status(row)
        del row["host"], row["pid"]
    return rows


def related_runs(query: Query, display: str, run_id: str) -> dict[str, Any]:
    """The run it resumed and the runs that resumed it, its parent run and its sub-pipeline
    runs (rows as :func:`page_runs` gives them)."""
    run_id = resolve(query, display, run_id)

    def rows(where: str, value: Any) -> list[dict[str, Any]]:
        if value is None:
            return []
        found = query(f"{_RUN_ROW} WHERE {where} = ? ORDER BY started_at, execution_id", (value,))
        for row in found:
            row["status"] = live_status(row)
        return found

    (row,) = rows("execution_id", run_id)
    earlier = rows("execution_id", row["resumed_from"])
    parent = rows("execution_id", row["parent_execution_id"])
    return {
        "resumed_from": earlier[0] if earlier else None,
        "resumes": rows("resumed_from", run_id),
        "parent": parent[0] if parent else None,
        "children": rows("parent_execution_id", run_id),
    }


def step_logs(
    query: Query,
    display: str,
    run_id: str,
    step: str,
    attempt: int | None = None,
    limit: int = 10000,
) -> list[dict[str, Any]]:
    """A step's log lines (of one attempt, or all), in order."""
    run_id = resolve(query, display, run_id)
    sql = (
        "SELECT attempt, seq, logged_at, stream, level, message FROM step_logs "
        "WHERE execution_id = ? AND step_id = ?"
    )
    params: tuple[Any, ...] = (run_id, step)
    if attempt is not None:
        sql += " AND attempt = ?"
        params += (attempt,)
    return query(sql + " ORDER BY attempt, seq LIMIT ?", (*params, max(int(limit), 1)))


def run_version(query: Query, run_id: str) -> str | None:
    """A token that changes with the run's row (status, end) and its steps' (each status,
    start, end, retries); None for no such run."""
    import hashlib

    run = query(
        "SELECT status, completed_at, records_processed, host, pid FROM pipeline_executions "
        "WHERE execution_id = ?",
        (run_id,),
    )
    if not run:
        return None
    steps = query(
        "SELECT status, COUNT(*) AS n, SUM(retry_count) AS retries, MAX(started_at) AS started, "
        "MAX(completed_at) AS ended FROM step_executions WHERE execution_id = ? "
        "GROUP BY status ORDER BY status",
        (run_id,),
    )
    row = run[0]
    state = [live_status(row), row["completed_at"], row["records_processed"]] + [
        [s["status"], s["n"], s["retries"], s["started"], s["ended"]] for s in steps
    ]
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:16]


# -- rows as dicts, a run's record ------------------------------------------------------------


def fetch_one(cur: Any, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    """The first row of a query on a cursor, as a dict (None if none)."""
    cur.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def live_status(row: Mapping[str, Any]) -> str:
    """``interrupted`` for a run recorded as running whose process (on this host) is gone."""
    status: str = row["status"]
    if status == "running" and row.get("host") == socket.gethostname() and row.get("pid"):
        if not pid_alive(int(row["pid"])):
            return "interrupted"
    return status


def loads_json(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def run_record(row: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = loads_json(row.get("metadata"), {})
    record: dict[str, Any] = {
        "run_id": row["execution_id"],
        "pipeline": row["pipeline_name"],
        "description": metadata.get("description", ""),
        "status": live_status(row),
        "started_at": row["started_at"],
        "finished_at": row["completed_at"],
        "duration_ms": row["execution_time_ms"],
        "params": loads_json(row["parameters"], {}),
        "records_processed": row["records_processed"],
        "error": row["error_message"],
        "errors": metadata.get("errors", []),
        "resumed_from": row["resumed_from"],
        "parent_run_id": row["parent_execution_id"],
        "host": row["host"],
        "pid": row["pid"],
        "executor": row["executor"],
        "pipeline_file": row["pipeline_file"],
        "graph": loads_json(row["graph"], {}),
        "steps": [],
    }
    order = {name: i for i, name in enumerate(record["graph"])}  # the plan's order
    steps = sorted(
        steps,
        key=lambda s: (
            order.get(s["step_id"], len(order)),
            s["step_order"] if s["step_order"] is not None else 0,
        ),
    )
    for s in steps:
        meta = loads_json(s["metadata"], {})
        status = s["status"]
        if status == "running" and record["status"] == "interrupted":
            status = "interrupted"
        record["steps"].append(
            {
                "step_id": s["step_id"],
                "step_name": s["step_name"],
                "step_type": s["step_type"],
                "description": meta.get("description", ""),
                "status": status,
                "started_at": s["started_at"],
                "completed_at": s["completed_at"],
                "execution_time_ms": s["execution_time_ms"],
                "attempts": (s["retry_count"] or 0) + 1
                if s["started_at"] and not meta.get("resumed") and not meta.get("cached")
                else 0,
                "retry_count": s["retry_count"] or 0,
                "error_message": s["error_message"],
                "traceback": s["traceback"],
                "reason": meta.get("reason"),
                "records": s["records"],
                "outputs": meta.get("outputs", {}),
                "bad_records": meta.get("bad_records", 0),
                "dead_letter_path": meta.get("dead_letter_path"),
                "attempt_history": meta.get("attempt_history", []),
                "rollback": meta.get("rollback"),
                "input_summary": loads_json(s["input_data"]),
                "output_summary": loads_json(s["output_data"]),
                "resumed_from": meta.get("resumed"),
                "cached_from": meta.get("cached"),
                "metadata": {
                    k: v
                    for k, v in meta.items()
                    if k in ("fingerprint", "output_stored", "output_none", "allow_failure")
                },
            }
        )
    return record


def fetch_all(cur: Any, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Every row of a query on a cursor, as dicts."""
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]

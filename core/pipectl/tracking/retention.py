"""Retention: which runs go when old runs are deleted (:func:`choose_runs`), the deleting
transaction of the SQL trackers (:func:`delete_runs`), what :meth:`SQLTracker.prune` returns
(:class:`PrunedRuns`), and durations such as ``30d`` (:func:`parse_duration`)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pipectl.loads import pid_alive
from pipectl.tracking.dialect import SQLDialect, dialect_sql
from pipectl.tracking.reads import fetch_all, live_status

__all__ = [
    "PrunedRuns",
    "choose_runs",
    "cutoff_of",
    "delete_runs",
    "parse_duration",
    "remove_outputs",
]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"\s*(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*[smhdw]\s*)+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhdw])")


def parse_duration(text: str | float) -> float:
    """A duration in seconds, from text such as ``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``,
    ``"45s"``, ``"1.5h"``, or a sum of them (``"1d12h"``, ``"1h 30m"``). Units, in lower case:
    ``s`` seconds, ``m`` minutes, ``h`` hours, ``d`` days, ``w`` weeks (no months or years:
    ``M`` is not a unit). A number (not a bool) is taken as seconds already.

    Raises ValueError for text that is not a duration or a negative number (the message
    gives examples, and does not name where the value came from: the caller adds that), and
    TypeError for anything but text or a number."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise TypeError(
            f'a duration is text such as "30d" or "12h", got {type(text).__name__} {text!r}'
        )
    if not isinstance(text, str):
        if not 0 <= text < float("inf"):
            raise ValueError(f"a duration in seconds is a number, 0 or more, got {text!r}")
        return float(text)
    if _DURATION.fullmatch(text) is None:
        hint = (
            " (a unit is missing)"
            if re.fullmatch(r"\s*[0-9.]+\s*", text)
            else " (units are lower case; there are no months: use d or w)"
            if re.search(r"[0-9]\s*[A-Z]", text)
            else ""
        )
        raise ValueError(
            f"{text[:60]!r} is not a duration{hint}: a number and a unit, s "
            "(seconds), m (minutes), h (hours), d (days) or w (weeks), such as "
            "30d, 12h, 90m or 1h30m"
        )
    return float(
        sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))
    )


class PrunedRuns(list[str]):
    """What :meth:`SQLTracker.prune` returns: the ids of the runs it deleted (or would),
    oldest first. ``runs`` maps each id to its row: ``pipeline_name``, ``status`` (as
    :meth:`SQLTracker.list_runs` shows it: ``interrupted`` for a run whose process died),
    ``started_at``, ``resumed_from``, ``parent_execution_id``."""

    runs: dict[str, dict[str, Any]]

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__(ids)
        self.runs = {}


def _started(text: Any) -> datetime | None:
    """A run's ``started_at`` as an aware datetime (UTC when it says no zone); None when it
    cannot be read."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text))
        except ValueError:
            return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def choose_runs(
    runs: list[dict[str, Any]],
    claims: list[dict[str, Any]],
    keep: int | None,
    cutoff: datetime | None,
    pipeline: str | None,
) -> list[dict[str, Any]]:
    """The runs :meth:`SQLTracker.prune` deletes, oldest first (see there for the rules)."""
    by_id = {r["execution_id"]: r for r in runs}

    def top_of(run_id: str) -> str:  # up the sub-pipeline links, while the parent is there
        seen = {run_id}
        while True:
            parent = by_id[run_id]["parent_execution_id"]
            if not parent or parent not in by_id or parent in seen:
                return run_id
            seen.add(parent)
            run_id = parent

    top = {run_id: top_of(run_id) for run_id in by_id}
    group = {t: t for t in top.values()}  # union-find over the top runs

    def find(run_id: str) -> str:
        root = top[run_id]
        while group[root] != root:
            group[root] = group[group[root]]
            root = group[root]
        return root

    def join(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            group[ra] = rb

    for run_id, row in by_id.items():
        if row["resumed_from"] in by_id:
            join(run_id, row["resumed_from"])
    for claim in claims:
        if claim["execution_id"] in by_id and claim["claimed_by"] in by_id:
            join(claim["execution_id"], claim["claimed_by"])
    started = {run_id: _started(row["started_at"]) for run_id, row in by_id.items()}
    stays: set[str] = set()  # the groups that stay whatever the rules say
    for run_id, row in by_id.items():
        row["status"] = live_status(row)
        if row["status"] == "running" or started[run_id] is None:
            stays.add(find(run_id))
    here = socket.gethostname()
    for claim in claims:  # a resume about to start: its claim is there, its run not yet
        if claim["execution_id"] in by_id and claim["claimed_by"] not in by_id:
            gone = claim["host"] == here and claim["pid"] and not pid_alive(int(claim["pid"]))
            if not gone:
                stays.add(find(claim["execution_id"]))
    if keep is not None:  # the N latest top runs of each pipeline keep their groups
        latest: dict[str, list[str]] = {}
        for run_id in set(top.values()):
            latest.setdefault(by_id[run_id]["pipeline_name"], []).append(run_id)
        for ids in latest.values():
            ids.sort(
                key=lambda r: (started[r] is None, started[r] or datetime.min, r), reverse=True
            )
            stays.update(find(r) for r in ids[:keep])
    members: dict[str, list[str]] = {}
    for run_id in by_id:
        members.setdefault(find(run_id), []).append(run_id)
    chosen: list[str] = []
    for root, ids in members.items():
        if root in stays:
            continue
        tops = [r for r in ids if top[r] == r]
        if pipeline is not None and not any(by_id[r]["pipeline_name"] == pipeline for r in tops):
            continue
        if cutoff is not None and any(
            s is None or s >= cutoff  # None: stays already
            for s in (started[r] for r in tops)
        ):
            continue
        chosen.extend(ids)
    chosen.sort(key=lambda r: (started[r], r))
    return [
        {
            k: by_id[r][k]
            for k in (
                "execution_id",
                "pipeline_name",
                "status",
                "started_at",
                "resumed_from",
                "parent_execution_id",
            )
        }
        for r in chosen
    ]


def cutoff_of(keep: int | None, older_than: float | None) -> datetime | None:
    """The arguments of :meth:`SQLTracker.prune` checked (ValueError when they are not a
    choice of runs); the time before which runs started that ``older_than`` removes, or None."""
    if keep is None and older_than is None:
        raise ValueError(
            "prune needs keep (the latest runs of each pipeline to keep), "
            "older_than (seconds) or both"
        )
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise ValueError(f"keep is a whole number of runs, 0 or more, got {keep!r}")
    if older_than is not None and (
        isinstance(older_than, bool)
        or not isinstance(older_than, (int, float))
        or not older_than >= 0
    ):
        raise ValueError(f"older_than is a number of seconds, 0 or more, got {older_than!r}")
    if older_than is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=older_than)
    except OverflowError:  # longer ago than datetime goes: no run is that old
        return datetime.min.replace(tzinfo=UTC)


def delete_runs(
    conn: Any,
    dialect: SQLDialect,
    keep: int | None,
    cutoff: datetime | None,
    pipeline: str | None,
    dry_run: bool,
) -> list[dict[str, Any]]:
    """One prune transaction on ``conn``: read the runs and claims, choose
    (:func:`choose_runs`), delete (unless ``dry_run``), commit; the rows of the runs chosen,
    oldest first."""
    if not dry_run:
        dialect.begin_write(conn)
    cur = conn.cursor()
    try:
        runs = fetch_all(
            cur,
            dialect_sql(
                dialect,
                "SELECT execution_id, pipeline_name, status, started_at, resumed_from, "
                "parent_execution_id, host, pid FROM pipeline_executions",
            ),
            (),
        )
        claims = fetch_all(
            cur,
            dialect_sql(dialect, "SELECT execution_id, claimed_by, host, pid FROM resume_claims"),
            (),
        )
        chosen = choose_runs(runs, claims, keep, cutoff, pipeline)
        ids = [r["execution_id"] for r in chosen]
        for start in range(0, 0 if dry_run else len(ids), 500):
            part = tuple(ids[start : start + 500])
            marks = ", ".join("?" * len(part))
            for table in ("step_logs", "step_executions"):
                cur.execute(
                    dialect_sql(dialect, f"DELETE FROM {table} WHERE execution_id IN ({marks})"),
                    part,
                )
            cur.execute(
                dialect_sql(
                    dialect,
                    f"DELETE FROM resume_claims WHERE execution_id IN "
                    f"({marks}) OR claimed_by IN ({marks})",
                ),
                part + part,
            )
            cur.execute(
                dialect_sql(
                    dialect, f"DELETE FROM pipeline_executions WHERE execution_id IN ({marks})"
                ),
                part,
            )
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return chosen


def remove_outputs(results: Any, run_ids: list[str]) -> str | None:
    """Remove the stored outputs of the runs ``run_ids`` from the result store ``results``
    (its ``delete_run``, when it has one); what could not be removed, in one line, or None."""
    delete = getattr(results, "delete_run", None)
    if delete is None:
        return None
    failed: list[str] = []
    reason = ""
    for run_id in run_ids:
        try:
            delete(run_id)
        except OSError as exc:
            failed.append(run_id)
            reason = f"{type(exc).__name__}: {exc}"
    if not failed:
        return None
    shown = ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else "")
    return (
        f"tracker result store {getattr(results, 'root', '')}: the stored outputs "
        f"of {len(failed)} deleted run(s) ({shown}) could not be removed ({reason}); "
        "their rows are deleted: remove their folders by hand"
    )

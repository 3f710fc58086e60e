"""The rows of the SQL trackers' tables: built from a run's events (:class:`RowBuilder`,
:func:`step_row`), kept until the database took them (:class:`Unwritten`, also the format of
the spool files), and written, one batch in one transaction of upserts (:func:`write_rows`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipectl.tracking.contract import (
    OutputStore,
    RunEvent,
    RunFinished,
    StepFinished,
    StepRetrying,
    StepRolledBack,
    StepStarted,
)
from pipectl.tracking.dialect import SQLDialect, dialect_sql
from pipectl.tracking.schema import LOG_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, TABLES
from pipectl.tracking.serialize import (
    SUMMARY_CHARS,
    TEXT_CHARS,
    Bounded,
    clip,
    clip_texts,
    iso_time,
    mask_secrets,
    now_iso,
    params_json,
    summarize,
    to_json,
)

__all__ = ["Row", "RowBuilder", "Unwritten", "step_row", "write_rows"]

Row = tuple[Any, ...]
"""A row of a table, its values in the order of the table's columns (:data:`TABLES`)."""

Rows = tuple[list[Row], list[Row], list[Row], list[Row]]
"""Run rows, step rows, extractor states and step log lines."""


def step_row(run_id: str, step: Any, result: Any, fingerprint: str | None) -> dict[str, Any]:
    """The ``step_executions`` row of a finished step (``metadata_dict`` still a dict)."""
    meta: dict[str, Any] = {}
    if result.reason:
        meta["reason"] = clip(result.reason, SUMMARY_CHARS)
    if step.description:
        meta["description"] = clip(step.description, SUMMARY_CHARS)
    if step.allow_failure:
        meta["allow_failure"] = True
    output = result.output
    data = output if output is not None else getattr(result.exception, "result", None)
    reports = getattr(data, "outputs", None)  # a data step's, also when it failed
    if isinstance(reports, Mapping):
        meta["outputs"] = {name: Bounded(SUMMARY_CHARS)(r.as_dict()) for name, r in reports.items()}
        meta["bad_records"] = getattr(data, "bad_records", 0)
        meta["dead_letter_path"] = getattr(data, "dead_letter_path", None)
    if getattr(result, "resumed_from", None):
        meta["resumed"] = result.resumed_from
    if getattr(result, "cached_from", None):
        meta["cached"] = result.cached_from
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    if output is None and result.status.value == "success":
        meta["output_none"] = True
    return {
        "execution_id": run_id,
        "step_id": step.name,
        "step_name": step.name,
        "step_type": step.step_type,
        "status": result.status.value,
        "started_at": iso_time(result.started_at),
        "completed_at": iso_time(result.finished_at),
        "execution_time_ms": result.duration_ms,
        "retry_count": max(result.attempts - 1, 0),
        "error_message": clip(result.error, TEXT_CHARS),
        "traceback": clip(result.traceback, TEXT_CHARS),
        "output_data": None if output is None else to_json(summarize(output)),
        "records": result.records,
        "metadata_dict": meta,
    }


class RowBuilder:
    """Turns a tracker's events into rows, keeping what a step's row needs of earlier events of
    its run (the attempts, the order steps started in, the metadata a rollback adds to) until
    the run ends. Step rows are built in the tracker's writer thread, run rows when recorded.

    ``problems`` is the tracker's: what went wrong, one line per kind (outputs not stored)."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        self.unstored: list[str] = []  # steps whose output the result store could not take
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}  # until the run ends
        self._order: dict[str, int] = {}
        self._graph: tuple[Any, str] | None = None  # the last graph and its JSON

    def run_row(self, event: RunEvent) -> dict[str, Any]:
        """The ``pipeline_executions`` row of a run event, as a dict."""
        finished = event if isinstance(event, RunFinished) else None
        graph = self._graph
        if graph is None or graph[0] is not event.graph:  # the DAG as JSON, once per run
            graph = self._graph = (
                event.graph,
                to_json({name: list(deps) for name, deps in event.graph.items()}),
            )
        errors = list(finished.errors) if finished is not None else []
        return {
            "execution_id": event.run_id,
            "pipeline_name": event.pipeline,
            "status": finished.status.value if finished is not None else "running",
            "started_at": iso_time(event.started_at) or now_iso(),
            "completed_at": iso_time(finished.finished_at) if finished is not None else None,
            "execution_time_ms": finished.duration_ms if finished is not None else None,
            "parameters": params_json(event.params),
            "records_processed": finished.records_processed if finished is not None else 0,
            "error_message": "; ".join(clip_texts(errors, SUMMARY_CHARS, SUMMARY_CHARS))[
                :SUMMARY_CHARS
            ]
            or None,
            "resumed_from": event.resumed_from,
            "parent_execution_id": event.parent_run_id,
            "host": event.host,
            "pid": event.pid,
            "executor": event.executor,
            "pipeline_file": event.pipeline_file,
            "graph": graph[1],
            "metadata": to_json(
                {
                    "errors": clip_texts(errors, SUMMARY_CHARS, TEXT_CHARS),
                    "description": clip(event.description or "", SUMMARY_CHARS),
                }
            ),
        }

    def rows(self, ops: Sequence[tuple[str, Any]], results: OutputStore | None) -> Rows:
        """The run rows, step rows (one per step and batch), extractor states and step log
        lines of a batch of queued writes (``("run", run row)``, ``("step", step event)``,
        ``("state", row)``), in the database's column order. ``results``: where outputs go for
        resume, or None."""
        runs: list[dict[str, Any]] = []
        states: list[Row] = []
        logs: list[Row] = []
        steps: dict[tuple[str, str], dict[str, Any]] = {}
        ended: list[str] = []
        for kind, item in ops:
            if kind == "run":
                runs.append(item)
                if item["completed_at"] is not None:
                    ended.append(item["execution_id"])
                continue
            if kind == "state":
                states.append(item)
                continue
            event = type(item)  # a step event
            if event is StepStarted:
                row = self._started_row(item)
            elif event is StepFinished:
                row = self._finished_row(item, results)
                if item.logs:
                    logs.extend(log_rows(item))
            elif event is StepRolledBack:
                row = self._rollback_row(item)
            else:  # StepRetrying
                self._retried(item)
                continue
            key = (row["execution_id"], row["step_id"])
            earlier = steps.get(key)
            if earlier is None:
                steps[key] = row
            else:  # the step started and ended within the batch: one row, the latest values
                earlier.update({k: v for k, v in row.items() if v is not None})
        for run_id in ended:
            self._run_ended(run_id)
        return (
            [tuple(map(r.get, RUN_COLUMNS)) for r in last_per_key(runs, "execution_id")],
            [tuple(map(r.get, STEP_COLUMNS)) for r in steps.values()],
            states,
            logs,
        )

    def _started_row(self, event: StepStarted) -> dict[str, Any]:
        run_id, step, attempt = event.run_id, event.step_name, event.attempt
        history = self._history.setdefault((run_id, step), [])
        started = iso_time(event.started_at)
        history.append({"attempt": attempt, "started_at": started})
        order = self._order.get(run_id, 0)
        self._order[run_id] = order + 1 if attempt == 1 else order
        return {
            "execution_id": run_id,
            "step_id": step,
            "step_name": step,
            "step_type": event.step_type,
            "status": "running",
            "started_at": started if attempt == 1 else None,
            "retry_count": attempt - 1,
            "step_order": order if attempt == 1 else None,
        }

    def _retried(self, event: StepRetrying) -> None:
        for entry in reversed(self._history.get((event.run_id, event.step_name), [])):
            if entry["attempt"] == event.attempt:
                entry.update(
                    error=clip(event.error, SUMMARY_CHARS), retry_delay_s=round(event.delay, 3)
                )
                if event.failed_at is not None:  # the failed attempt's end
                    entry["finished_at"] = iso_time(event.failed_at)
                break

    def _finished_row(self, event: StepFinished, results: OutputStore | None) -> dict[str, Any]:
        run_id, step, blob, inputs = event.run_id, event.step, event.pickled_output, event.inputs
        row = step_row(run_id, step, event.result, event.fingerprint)
        if inputs and any(v is not None for v in inputs.values()):
            row["input_data"] = to_json(summarize(inputs))
        metadata = row.pop("metadata_dict")
        history = self._history.pop((run_id, step.name), [])
        if history:
            last = history[-1]
            last.setdefault("error", row.get("error_message"))
            last["finished_at"] = row.get("completed_at")
        metadata["attempt_history"] = history
        if event.output_in_store:  # the executor put it in the result store itself
            metadata["output_stored"] = True
        elif blob is not None and results is not None:
            try:
                results.put(run_id, step.name, blob)  # before the row that points at it
                metadata["output_stored"] = True
            except OSError as exc:  # a full disk: a resume runs the step again
                metadata["output_stored"] = False
                self.unstored.append(step.name)
                names = ", ".join(self.unstored[:5]) + (", ..." if len(self.unstored) > 5 else "")
                self.problems["results"] = (
                    f"tracker result store {getattr(results, 'root', '')}: the output of "
                    f"{len(self.unstored)} step(s) ({names}) not stored "
                    f"({type(exc).__name__}: {exc}); a resume runs them again"
                )
        self._meta[(run_id, step.name)] = metadata
        row["metadata"] = to_json(metadata)
        if event.secrets:  # what the step returned, was given or raised may hold a secret
            mask_secrets(row, event.secrets)
        return row

    def _rollback_row(self, event: StepRolledBack) -> dict[str, Any]:
        run_id, step = event.run_id, event.step_name
        metadata = self._meta.get((run_id, step), {})
        metadata["rollback"] = Bounded(SUMMARY_CHARS)(event.outcome)
        return {
            "execution_id": run_id,
            "step_id": step,
            "step_name": step,
            "status": event.status.value,
            "metadata": to_json(metadata),
        }

    def _run_ended(self, run_id: str) -> None:
        for key in [k for k in self._meta if k[0] == run_id]:
            del self._meta[key]
        self._order.pop(run_id, None)


def log_rows(event: StepFinished) -> list[Row]:
    """The ``step_logs`` rows of a finished step's logs (:attr:`StepFinished.logs`): one per
    line, numbered from 0 in each attempt; secret values masked (again: the engine masked them,
    another engine may not have)."""
    from datetime import UTC, datetime

    run_id, step, secrets = event.run_id, event.step.name, event.secrets
    rows: list[Row] = []
    fromtimestamp = datetime.fromtimestamp
    for attempt, lines in event.logs:
        for seq, (at, stream, level, message) in enumerate(lines):
            if secrets and any(v in message for v in secrets):
                from pipectl.log import redact

                message = redact(message, secrets)
            rows.append(
                (
                    run_id,
                    step,
                    attempt,
                    seq,
                    fromtimestamp(at, UTC).isoformat(),
                    stream,
                    level,
                    message,
                )
            )
    return rows


def last_per_key(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key (the last written wins): an upsert may not touch a row twice."""
    return list({r[key]: r for r in rows}.values())


class Unwritten:
    """Rows not committed yet, one per key, merged as the upserts would merge them (a step
    row's None leaves the earlier value; a run keeps its first ``started_at``): what the
    writer tries again and what :meth:`SQLTracker.close` spools, as JSON lines."""

    _STARTED = RUN_COLUMNS.index("started_at")

    def __init__(self) -> None:
        self.tables: dict[str, dict[Row, Row]] = {name: {} for name in TABLES}

    def __bool__(self) -> bool:
        return any(self.tables.values())

    def add(
        self, runs: list[Row], steps: list[Row], states: list[Row], logs: list[Row] | None = None
    ) -> Unwritten:
        kept = self.tables["pipeline_executions"]
        for row in runs:
            old = kept.get(row[:1])
            if old is not None:
                i = self._STARTED
                row = (*row[:i], old[i], *row[i + 1 :])
            kept[row[:1]] = row
        kept = self.tables["step_executions"]
        for row in steps:
            old = kept.get(row[:2])
            kept[row[:2]] = (
                row if old is None else tuple(o if n is None else n for o, n in zip(old, row))
            )
        kept = self.tables["extractor_state"]
        for row in states:
            kept[row[:2]] = row
        if logs:
            kept = self.tables["step_logs"]
            for row in logs:
                kept[row[:4]] = row
        return self

    def merge(self, other: Unwritten) -> Unwritten:
        return self.add(*other.rows())

    def rows(self) -> Rows:
        runs, steps, states, logs = (list(self.tables[name].values()) for name in TABLES)
        return runs, steps, states, logs

    def clear(self) -> None:
        for kept in self.tables.values():
            kept.clear()

    def dump(self) -> bytes:
        return "".join(
            to_json({"table": name, "row": dict(zip(TABLES[name], row))}) + "\n"
            for name, kept in self.tables.items()
            for row in kept.values()
        ).encode()

    @classmethod
    def load(cls, path: Path) -> Unwritten:
        rows: dict[str, list[Row]] = {name: [] for name in TABLES}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                rows[item["table"]].append(tuple(map(item["row"].get, TABLES[item["table"]])))
        runs, steps, states, logs = rows.values()
        return cls().add(runs, steps, states, logs)


def write_rows(
    conn: Any,
    dialect: SQLDialect,
    runs: list[Row],
    steps: list[Row],
    states: list[Row],
    replay: bool = False,
    logs: list[Row] | None = None,
) -> None:
    """Write one batch of rows on ``conn`` in one transaction and commit it (retried as a
    whole by the caller). Every write is an upsert (a step log line already written is left
    as it is), so writing a batch again changes nothing; ``replay`` (rows from the spool)
    keeps an extractor state a later run wrote meanwhile."""
    dialect.begin_write(conn)
    cur = conn.cursor()
    try:
        if runs:
            cols = ", ".join(RUN_COLUMNS)
            updates = ", ".join(
                f"{c} = excluded.{c}" for c in RUN_COLUMNS[2:] if c not in ("started_at",)
            )
            cur.executemany(
                dialect_sql(
                    dialect,
                    f"INSERT INTO pipeline_executions ({cols}) VALUES "
                    f"({', '.join('?' * len(RUN_COLUMNS))}) "
                    f"ON CONFLICT (execution_id) DO UPDATE SET {updates}",
                ),
                runs,
            )
        if steps:
            cols = ", ".join(STEP_COLUMNS)
            updates = ", ".join(
                f"{c} = COALESCE(excluded.{c}, step_executions.{c})" for c in STEP_COLUMNS[2:]
            )
            cur.executemany(
                dialect_sql(
                    dialect,
                    f"INSERT INTO step_executions ({cols}) VALUES "
                    f"({', '.join('?' * len(STEP_COLUMNS))}) "
                    f"ON CONFLICT (execution_id, step_id) DO UPDATE SET {updates}",
                ),
                steps,
            )
        if states:
            cur.executemany(
                dialect_sql(
                    dialect,
                    "INSERT INTO extractor_state (pipeline_name, step_id, state, execution_id, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (pipeline_name, step_id) DO "
                    "UPDATE SET state = excluded.state, execution_id = excluded.execution_id, "
                    "updated_at = excluded.updated_at"
                    + (
                        " WHERE extractor_state.updated_at <= excluded.updated_at" if replay else ""
                    ),
                ),
                states,
            )
        if logs:
            cur.executemany(
                dialect_sql(
                    dialect,
                    f"INSERT INTO step_logs ({', '.join(LOG_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(LOG_COLUMNS))}) "
                    "ON CONFLICT (execution_id, step_id, attempt, seq) DO NOTHING",
                ),
                logs,
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise

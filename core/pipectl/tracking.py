"""Run tracking: what ran, when, with what, and what failed, in SQL tables.

The contract every tracker keeps is :mod:`pipectl.tracking_contract` (re-exported here): the
:class:`Tracker` protocol (with :class:`ResumableTracker` and :class:`PrunableTracker`) and the
typed events a run is recorded as (:class:`RunStarted`, :class:`StepStarted`, ...). This module
holds pipectl's own implementation of it on SQL, and what every tracker shares: the listener
that turns a run's hooks into events, resume, the result store.

The tables keep the names of the seed design ia_modules (``pipeline_executions``,
``step_executions``) so that its users' queries keep working, plus ``extractor_state`` (the
incremental cursors of data steps between runs) and ``pipectl_schema`` (the schema version,
moved on by :data:`MIGRATIONS`). The SQL is written once for SQLite and PostgreSQL: what
differs (the placeholder, connecting, starting a write, which errors are worth retrying, the
migration lock) is a :class:`SQLDialect`, so the PostgreSQL tracker plugin reuses this module
with a dialect of its own.

How a run is tracked: :class:`TrackingListener` is a lifecycle listener registered for one run
(and the sub-pipeline runs it starts). Each hook call builds one event and hands it to
:meth:`SQLTracker.record`, which only appends to a queue; a writer thread of the tracker takes
everything queued, writes it in one transaction and commits, so writes never stall the engine
and each step's row is durable a few milliseconds after the step ends. Step outputs go to a
:class:`ResultStore` (files under the tracker's folder by default) before the row that says
the step succeeded is committed, so a resumed run finds the output of every step recorded as
succeeded.

A tracker's fault never changes a run's outcome: rows the database does not take are kept and
tried again in the background; what is still not written when the tracker closes is spooled to
a file that the next command opening the tracker writes (:meth:`SQLTracker.close`,
:meth:`SQLTracker.migrate`); an output the result store cannot take is recorded as not stored.

Reads (``pipectl runs``, resume, stories) always come from the database, never from memory.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import itertools
import json
import os
import pickle
import queue
import re
import shutil
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipectl import faults
from pipectl.errors import PipectlError
from pipectl.hookspecs import hookimpl
from pipectl.loads import pid_alive as _pid_alive

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.tracking_contract import (
        ExtractorStateSaved,
        PrunableTracker,
        ResumableTracker,
        RunEvent,
        StepFinished,
        StepRetrying,
        StepRolledBack,
        StepStarted,
        Tracker,
        TrackerEvent,
    )

#: The names of :mod:`pipectl.tracking_contract` this module gives too, imported on first use
#: (a process that only unpickles a ResultStore, a dask worker's, never imports attrs for them).
_CONTRACT = frozenset({
    "ExtractorStateSaved", "OutputStore", "PrunableTracker", "ResumableTracker", "RunEvent",
    "RunFinished", "RunStarted", "StepFinished", "StepRetrying", "StepRolledBack",
    "StepStarted", "Tracker", "TrackerEvent",
})
_contract_module: Any = None


def _contract() -> Any:
    """:mod:`pipectl.tracking_contract`, imported on first use."""
    global _contract_module
    if _contract_module is None:
        from pipectl import tracking_contract

        _contract_module = tracking_contract
    return _contract_module


def __getattr__(name: str) -> Any:
    if name in _CONTRACT:
        value = getattr(_contract(), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MIGRATIONS",
    "ExtractorStateSaved",
    "OutputStore",
    "PrunableTracker",
    "PrunedRuns",
    "ResultStore",
    "ResumableTracker",
    "ResumeClaimed",
    "RunEvent",
    "RunFinished",
    "RunInProgress",
    "RunStarted",
    "SQLDialect",
    "SQLTracker",
    "SqliteDialect",
    "SqliteTracker",
    "StepFinished",
    "StepRetrying",
    "StepRolledBack",
    "StepStarted",
    "Tracker",
    "TrackerError",
    "TrackerEvent",
    "TrackingListener",
    "default_tracker_url",
    "fingerprint",
    "open_tracker",
    "parse_duration",
    "require_prune",
    "require_resume",
    "resume_outputs",
]

SUMMARY_CHARS = 2000
"""Input and output summaries are cut to at most this many characters of JSON."""

PARAMS_CHARS = 65_536
"""A run's params are recorded in at most this many characters of JSON; a param that does not
fit is recorded as a cut summary (``{"type", "truncated": true, "length", "preview"}``), which a
resume does not reuse (the pipeline file or ``-p`` gives it again)."""

TEXT_CHARS = 65_536
"""A step's error message and traceback are cut to this many characters (beginning and end)."""

MAX_NODES, MAX_DEPTH = 10_000, 100
"""What the tracker looks at of one value it records (a param, an output) at most: that many
values (containers and items), nested that deep; a container inside itself is not entered. So
recording a value costs milliseconds whatever it is (shared references expanding to 10^9
items, a 100 MB string, a list nested 100,000 deep, a cycle, an object whose repr raises)."""

GIVE_UP_SECONDS = 5.0
"""How long the end of a run waits for a tracker whose database fails (or does not answer)
before its rows are left to the spool (:meth:`SQLTracker.close`)."""

STOP_SECONDS = 2.0
"""How long :meth:`SQLTracker.close` waits for the writer's attempt in progress to end."""

RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 2.0
"""The writer's backoff between attempts while the database fails: doubling, from/to."""


class TrackerError(PipectlError):
    """The tracker cannot be opened, or a run asked of it does not exist."""


class ResumeRefused(TrackerError):
    """Steps changed since the run being resumed; ``changed`` names them."""

    def __init__(self, run_id: str, changed: list[str]):
        self.run_id, self.changed = run_id, changed
        names = ", ".join(repr(c) for c in changed)
        super().__init__(f"cannot resume run {run_id}: step(s) {names} changed since it ran "
                         "(their code, options, dependencies, inputs or condition); their "
                         "outputs from that run may not be what they produce now. Run them "
                         "again by leaving out --resume, or take the old outputs anyway with "
                         "--force")


class RunInProgress(TrackerError):
    """The run to resume is still running (its process is alive, or runs on another host), or
    ``latest`` found no run of the pipeline that ended; ``run_id`` names the running one."""

    def __init__(self, run_id: str, host: str | None, pid: int | None, message: str):
        self.run_id, self.host, self.pid = run_id, host, pid
        super().__init__(message)


class ResumeClaimed(TrackerError):
    """Another run holds the resume of run ``run_id``: ``claimed_by`` (pid ``pid`` on ``host``)
    is resuming it (``state`` ``active``), resumed it successfully (``succeeded``), or ended
    without success (``finished``: only when taking such a claim over was not wanted).
    ``through`` lists the runs between them when ``claimed_by`` resumes a resume of it."""

    def __init__(self, run_id: str, claimed_by: str, host: str | None, pid: int | None,
                 state: str, through: list[str] | None = None, status: str | None = None):
        self.run_id, self.claimed_by, self.host, self.pid = run_id, claimed_by, host, pid
        self.state, self.through = state, list(through or [])
        via = f" (through run {', run '.join(self.through)})" if self.through else ""
        if state == "active":
            message = (f"run {run_id} is being resumed already, by run {claimed_by}{via} "
                       f"(pid {pid} on host {host}): wait for that run to end; if it fails, "
                       "--resume latest resumes it")
        elif state == "succeeded":
            message = (f"run {run_id} was resumed already, by run {claimed_by}{via}, which "
                       "succeeded: nothing of it is left to run (run the pipeline without "
                       "--resume to run it all again)")
        else:
            message = (f"run {run_id} was resumed already, by run {claimed_by}{via}, which "
                       f"ended ({status or 'failed'}): resume that run instead "
                       "(--resume latest)")
        super().__init__(message)


#: How many times a resume of ``latest`` looks for the latest run again when the one it found
#: was resumed meanwhile (by a run that has ended since, and so is the latest now).
_LATEST_ATTEMPTS = 10


_TRACKER_MEMBERS = ("results", "migrate", "record", "flush", "close", "list_runs", "get_run",
                    "resolve", "pipeline_of", "extractor_states")
_RESUME_MEMBERS = ("latest_finished", "step_states", "load_run", "claim_resume",
                   "release_resume")


def tracker_name(tracker: Any) -> str:
    """How messages name a tracker: its ``display`` (the SQL trackers': the file, or the URL
    without password), else its ``url``, else its class."""
    return str(getattr(tracker, "display", None) or getattr(tracker, "url", None)
               or type(tracker).__name__)


def require_resume(tracker: Tracker) -> ResumableTracker:
    """``tracker`` when it can resume runs (:class:`ResumableTracker`); else a
    :class:`TrackerError` naming what it lacks."""
    if isinstance(tracker, _contract().ResumableTracker):
        return cast("ResumableTracker", tracker)
    missing = [m for m in (*_TRACKER_MEMBERS, *_RESUME_MEMBERS) if not hasattr(tracker, m)]
    raise TrackerError(f"tracker {tracker_name(tracker)} cannot resume runs (it has no "
                       f"{', '.join(missing)}): run without --resume, or record the runs with "
                       "a tracker that resumes them (sqlite, postgresql)")


def require_prune(tracker: Tracker) -> PrunableTracker:
    """``tracker`` when it can delete old runs (:class:`PrunableTracker`); else a
    :class:`TrackerError` saying it cannot."""
    if isinstance(tracker, _contract().PrunableTracker):
        return cast("PrunableTracker", tracker)
    missing = [m for m in (*_TRACKER_MEMBERS, "prune") if not hasattr(tracker, m)]
    raise TrackerError(f"tracker {tracker_name(tracker)} cannot delete runs (it has no "
                       f"{', '.join(missing)})")


def _resolve_and_claim(tracker: ResumableTracker, pipeline: str, run_id: str,
                       claim_for: str | None) -> str:
    """The run to resume (``run_id``: ``latest`` or an id), checked to belong to ``pipeline``
    and to have ended; claimed for the run ``claim_for`` when given (see
    :meth:`SQLTracker.claim_resume`)."""
    latest = run_id == "latest"
    refused: ResumeClaimed | None = None
    for _ in range(_LATEST_ATTEMPTS if latest else 1):
        old = tracker.resolve(run_id, pipeline=pipeline, finished=True)
        owner = tracker.pipeline_of(old)
        if owner != pipeline:
            raise TrackerError(f"run {old} is a run of pipeline {owner!r}, not of {pipeline!r}")
        if claim_for is None:
            return old
        again = refused is not None and refused.run_id == old  # the same run found again
        try:
            # resuming "latest", a claim whose run ended (recorded) is not taken over: that run
            # is newer than the one found, so it is the latest now (found on the next turn)
            tracker.claim_resume(old, claim_for, take_over_finished=not latest or again)
        except ResumeClaimed as exc:
            if not latest or exc.state == "active" or again:
                raise
            refused = exc
            continue
        if not latest or tracker.resolve("latest", pipeline=pipeline, finished=True) == old:
            return old
        tracker.release_resume(old, claim_for)  # another run ended meanwhile: that one
        refused = None
    if refused is not None:
        raise refused
    raise TrackerError(f"the latest run of pipeline {pipeline!r} kept changing while it was "
                       "being claimed for a resume: try again")


def resume_outputs(tracker: Tracker, spec: Any, run_id: str, *,
                   force: bool = False, claim_for: str | None = None
                   ) -> tuple[str, dict[str, Any], dict[Any, Any]]:
    """(the resolved run id, the outputs of the steps a resume of it does not run again, and
    the run state to start from).

    ``run_id`` is a run id (or the start of one), or ``latest``: the latest run of the
    pipeline that ended, including one whose process died (``interrupted``), not one still
    running. A run given by id that is still running raises :class:`RunInProgress`.

    With ``claim_for`` (the id of the run about to resume it), the old run is claimed for it
    first (:meth:`SQLTracker.claim_resume`): while another run resumes it, or after one resumed
    it successfully, :class:`ResumeClaimed` is raised. The claim is released when this raises;
    otherwise the caller releases it if the resuming run never starts.

    A step is taken from the old run when it succeeded there, its output was stored (or was
    None), and every step it depends on is taken too; a step whose definition changed since
    (:func:`fingerprint`) raises :class:`ResumeRefused` unless ``force``. A data step that
    failed with some of its outputs committed runs again writing only to the others (the run
    state carries which committed), as a retry within a run does.

    A tracker that cannot resume runs (not a :class:`ResumableTracker`) raises
    :class:`TrackerError`."""
    tracker = require_resume(tracker)
    old = _resolve_and_claim(tracker, spec.name, run_id, claim_for)
    try:
        return _resume_outputs(tracker, spec, old, force)
    except BaseException:
        if claim_for is not None:
            tracker.release_resume(old, claim_for)
        raise


def _resume_outputs(tracker: ResumableTracker, spec: Any, old: str, force: bool
                    ) -> tuple[str, dict[str, Any], dict[Any, Any]]:
    from pipectl.graph import Graph

    states = tracker.step_states(old)
    graph = Graph(spec.name, spec.steps)
    taken: dict[str, Any] = {}
    changed: list[str] = []
    run_state: dict[Any, Any] = {}
    for name in graph.topological_order():
        state = states.get(name)
        step = graph.steps[name]
        if state is not None and state["status"] == "failed" and state["committed"]:
            if state["fingerprint"] != fingerprint(step):
                changed.append(name)  # its committed outputs may not be what it writes now
                if not force:
                    continue
            run_state[("data-committed", name)] = set(state["committed"])
        if state is None or state["status"] != "success":  # rolled back: undone, so redone
            continue
        if any(dep not in taken for dep in graph.dependencies[name]):
            continue  # something it depends on runs again: so does it
        if state["fingerprint"] != fingerprint(step):
            changed.append(name)
            if not force:
                continue
        if state["output_stored"] and tracker.results is not None:
            found, value = tracker.results.get(old, name)
            if not found:
                continue
        elif state["output_none"]:
            value = None
        else:
            continue  # not stored (not picklable): run it again
        taken[name] = value
    if changed and not force:
        raise ResumeRefused(old, changed)
    # loads (pipectl.loads) are named by the run that started them: a resume goes on with its
    run_state["load_run"] = tracker.load_run(old)
    return old, taken, run_state


# -- the schema -------------------------------------------------------------------------------

#: Each migration moves the schema from version ``n - 1`` to ``n`` (its index + 1). Column types
#: read the same in SQLite and PostgreSQL. Never edit a released migration: append one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE pipeline_executions (
            execution_id TEXT PRIMARY KEY,
            pipeline_name TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            completed_at TEXT,
            execution_time_ms DOUBLE PRECISION,
            parameters TEXT,
            records_processed BIGINT NOT NULL DEFAULT 0,
            error_message TEXT,
            resumed_from TEXT,
            parent_execution_id TEXT,
            host TEXT,
            pid BIGINT,
            executor TEXT,
            pipeline_file TEXT,
            graph TEXT,
            metadata TEXT
        )""",
        "CREATE INDEX ix_pipeline_executions_started ON pipeline_executions (started_at)",
        """CREATE INDEX ix_pipeline_executions_pipeline
            ON pipeline_executions (pipeline_name, started_at)""",
        """CREATE TABLE step_executions (
            execution_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            step_name TEXT NOT NULL,
            step_type TEXT,
            status TEXT NOT NULL,
            started_at TEXT,
            completed_at TEXT,
            execution_time_ms DOUBLE PRECISION,
            retry_count BIGINT DEFAULT 0,
            error_message TEXT,
            traceback TEXT,
            input_data TEXT,
            output_data TEXT,
            records BIGINT,
            step_order BIGINT,
            metadata TEXT,
            PRIMARY KEY (execution_id, step_id)
        )""",
        """CREATE TABLE extractor_state (
            pipeline_name TEXT NOT NULL,
            step_id TEXT NOT NULL,
            state TEXT NOT NULL,
            execution_id TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (pipeline_name, step_id)
        )""",
    ],
    [  # 2: who resumes a run (SQLTracker.claim_resume): one resumer per run
        """CREATE TABLE resume_claims (
            execution_id TEXT PRIMARY KEY,
            claimed_by TEXT NOT NULL,
            host TEXT,
            pid BIGINT,
            claimed_at TEXT NOT NULL
        )""",
    ],
]

RUN_COLUMNS = ("execution_id", "pipeline_name", "status", "started_at", "completed_at",
               "execution_time_ms", "parameters", "records_processed", "error_message",
               "resumed_from", "parent_execution_id", "host", "pid", "executor",
               "pipeline_file", "graph", "metadata")
STEP_COLUMNS = ("execution_id", "step_id", "step_name", "step_type", "status", "started_at",
                "completed_at", "execution_time_ms", "retry_count", "error_message",
                "traceback", "input_data", "output_data", "records", "step_order", "metadata")
STATE_COLUMNS = ("pipeline_name", "step_id", "state", "execution_id", "updated_at")
_STATUS = STEP_COLUMNS.index("status")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat()


def _now() -> str:
    return datetime.now(UTC).isoformat()


_encoder: json.JSONEncoder | None = None


def _json(value: Any) -> str:
    global _encoder
    if _encoder is None:  # one encoder: json.dumps with options builds one per call
        _encoder = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))
    return _encoder.encode(value)


def _default(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def summarize(value: Any, limit: int = SUMMARY_CHARS, _depth: int = 0) -> Any:
    """A JSON-able summary of a step's input or output, at most ``limit`` characters of JSON,
    made with bounded work (:class:`_Bounded`): small values as they are, long lists and
    mappings as their type, length and first items, anything else too big as its type, length
    and the beginning of its JSON (:func:`_cut`)."""
    kind = type(value)
    if value is None or kind is bool or kind is float or (
            kind is int and -_BIG_INT < value < _BIG_INT):
        return value
    if kind is str:
        fits = len(value) <= limit - 2 and len(_json(value)) <= limit
        return value if fits else _cut(value, value, limit)
    if (kind is dict or kind is list) and len(value) <= 50 and _flat(value, limit):
        text = _json(value)  # the common small output, by the C encoder: no walk needed
        if len(text) <= limit:
            return value
    if _depth < 2:  # the shape of a list or a mapping, not deeper
        value = _as_dict(value)
        try:
            shape = _shape(value, limit, _depth)
        except Exception:  # noqa: BLE001 - a container that does not behave: walked as it is
            shape = None
        if shape is not None and len(_json(shape)) <= limit:
            return shape
    walk = _Bounded(limit)
    plain = walk(value)
    text = _json(plain)
    return plain if not walk.cut and len(text) <= limit else _cut(value, text, limit)


def _flat(value: dict | list, limit: int) -> bool:
    """A list or dict of scalars only (short strings, numbers, None), with string keys: what
    the C encoder turns into JSON in bounded time."""
    values = value.values() if type(value) is dict else value
    if type(value) is dict and any(type(k) is not str or len(k) > limit for k in value):
        return False
    for item in values:
        kind = type(item)
        if item is None or kind is bool or kind is float:
            continue
        if kind is int and -_BIG_INT < item < _BIG_INT:
            continue
        if kind is str and len(item) <= limit:
            continue
        return False
    return True


def _shape(value: Any, limit: int, depth: int) -> dict[str, Any] | None:
    """The summary of a long list or a big mapping (its first items), or of a mapping holding
    containers (each value summarized in its share of the room); None for anything else."""
    mapping = type(value) is dict or isinstance(value, Mapping)
    if not mapping and isinstance(value, (list, tuple)) and len(value) > 20:
        return {"type": type(value).__name__, "length": len(value), "truncated": True,
                "first": summarize(list(value[:5]), limit // 2, depth + 1)}
    if mapping and len(value) > 50:  # never serialize it all
        keys = list(itertools.islice(value, 20))
        return {"type": type(value).__name__, "length": len(value), "truncated": True,
                "first": summarize({k: value[k] for k in keys}, limit // 2, depth + 1)}
    if mapping and depth == 0 and any(
            isinstance(v, (list, tuple, Mapping)) for v in value.values()):
        share = max(limit // max(len(value), 1), 200)  # each value its share of the room
        return {_key(k): summarize(v, share, depth + 1) for k, v in value.items()}
    return None


def _cut(value: Any, text: str, limit: int) -> dict[str, Any]:
    """What is recorded of a value too big to record whole, in at most ``limit`` characters of
    JSON: its type, its length, and the beginning of ``text`` (its bounded JSON, or the string
    itself)."""
    summary: dict[str, Any] = {"type": type(value).__name__[:100], "truncated": True}
    try:
        summary["length"] = len(value)
    except Exception:  # noqa: BLE001 - no length
        pass
    summary["preview"] = _fit(text, limit - len(_json(summary)) - len(',"preview":'))
    return summary


def _fit(text: str, room: int) -> str:
    """The beginning of ``text`` whose JSON string takes at most ``room`` characters."""
    cut = text[:max(room - 2, 0)]
    while cut and len(_json(cut)) > room:  # a character takes 1 to 6 in JSON
        cut = cut[:len(cut) - (len(_json(cut)) - room)]
    return cut


class _Bounded:
    """Makes a JSON-able copy of a value with bounded work, whatever the value: at most
    ``nodes`` values visited (containers and items), :data:`MAX_DEPTH` deep, about ``room``
    characters of text in all. A string that does not fit is cut (``…[N chars]``); a
    container met again inside itself (``<cycle>``), one past the limits (``…``) and the rest
    of a long one (``… N more``) are left out, and ``cut`` says so. An object that JSON has no
    type for is its ``as_dict()`` if it has one, else its ``repr`` (cut; ``<T: repr
    failed>`` if it raises); bytes are the repr of their beginning."""

    def __init__(self, room: int, nodes: int = MAX_NODES):
        self.room, self.nodes, self.cut = room, nodes, False
        self._inside: set[int] = set()

    def __call__(self, value: Any, depth: int = 0) -> Any:
        self.nodes -= 1
        if self.nodes < 0 or self.room <= 0 or depth > MAX_DEPTH:
            self.cut = True
            return "…"
        kind = type(value)  # the common cases first: this runs for every value
        if kind is str and len(value) < self.room:
            self.room -= len(value) + 2
            return value
        if value is None or kind is float or kind is bool or (
                kind is int and -_BIG_INT < value < _BIG_INT):
            self.room -= 8
            return value
        if kind is dict or kind is list or kind is tuple:
            return self._container(value, depth)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, float):
            self.room -= 8
            return float(value)
        if isinstance(value, int):
            if value.bit_length() > 256:  # its digits cost (and past 4,300 raise)
                return self.text(f"<int of {value.bit_length()} bits>", cut=True)
            self.room -= 20
            return int(value)
        if isinstance(value, datetime):
            return self.text(value.isoformat())
        if isinstance(value, (bytes, bytearray)):
            return self.text(repr(bytes(value[:self.room])), cut=len(value) > self.room)
        value = _as_dict(value)
        if isinstance(value, (Mapping, Sequence, Set)):  # a deque or a range too, not its repr
            return self._container(value, depth)
        return self.text(_repr(value))

    def _container(self, value: Any, depth: int) -> Any:
        if id(value) in self._inside:
            return self.text("<cycle>", cut=True)
        self._inside.add(id(value))
        self.room -= 2
        try:
            if type(value) is dict or isinstance(value, Mapping):
                out: Any = {}
                for key, item in value.items():
                    self.room -= len(key) + 3 if type(key) is str else 1
                    if self.nodes <= 0 or self.room <= 0:
                        return self._rest(out, len(value) - len(out))
                    if type(key) is not str:
                        key = self(key, depth + 1)
                        key = key if isinstance(key, str) else _json(key)
                    out[key] = self(item, depth + 1)
            else:
                out = []
                for item in value:
                    self.room -= 1
                    if self.nodes <= 0 or self.room <= 0:
                        return self._rest(out, len(value) - len(out))
                    out.append(self(item, depth + 1))
            return out
        except Exception as exc:  # noqa: BLE001 - a container that cannot be read
            return self.text(f"<{type(value).__name__}: not readable: {type(exc).__name__}>",
                             cut=True)
        finally:
            self._inside.discard(id(value))

    def _rest(self, out: Any, left: int) -> Any:
        """``out``, saying how many items of its container were left out."""
        self.cut = True
        if isinstance(out, dict):
            out["…"] = f"{left:,} more"
        else:
            out.append(f"… {left:,} more")
        return out

    def text(self, text: str, cut: bool = False) -> str:
        if len(text) > self.room:
            cut, text = True, f"{text[:max(self.room, 0)]}…[{len(text):,} chars]"
        self.cut = self.cut or cut
        self.room -= len(text) + 2
        return text


_BIG_INT = 2 ** 256


def _as_dict(value: Any) -> Any:
    """``value.as_dict()`` when its class has one (and it works), else ``value``."""
    if callable(getattr(type(value), "as_dict", None)):
        try:
            return value.as_dict()
        except Exception:  # noqa: BLE001 - its repr, then
            pass
    return value


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - an object whose repr fails is recorded anyway
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _key(key: Any) -> str:
    """A mapping's key as a (short) JSON object key."""
    if isinstance(key, str) and len(key) <= 200:
        return key
    plain = _Bounded(200)(key)
    return plain if isinstance(plain, str) else _json(plain)


def _params_json(params: Mapping[str, Any]) -> str:
    """A run's params as JSON in at most :data:`PARAMS_CHARS` characters, made with bounded
    work: each param as it is, or, when it does not fit in its share of what is left, its cut
    summary (:func:`_cut`); with more than 1,000 params, or when they do not fit even so, one
    cut summary of them all, under the key ``…``."""
    out: dict[str, Any] = {}
    nodes, room = MAX_NODES, PARAMS_CHARS - 2
    if len(params) <= 1000:
        for i, (name, value) in enumerate(params.items()):
            left = len(params) - i
            walk = _Bounded(room // left, nodes // left)
            plain = walk(value)
            text = _json(plain)
            if walk.cut or len(text) > room // left:
                plain = _cut(value, value if isinstance(value, str) else text, 300)
                text = _json(plain)
            key = _key(name)
            out[key] = plain
            nodes -= nodes // left - max(walk.nodes, 0)
            room -= len(text) + len(_json(key)) + 2
        text = _json(out)
        if len(text) <= PARAMS_CHARS:
            return text
    return _json({"…": _cut(params, _json(_Bounded(PARAMS_CHARS)(params)), PARAMS_CHARS - 10)})


def _clip(text: str | None, limit: int) -> str | None:
    """``text`` in at most ``limit`` characters: its beginning and end, saying what was cut."""
    if text is None or len(text) <= limit:
        return text
    half = max(limit // 2 - 30, 0)
    return f"{text[:half]}\n…[{len(text) - 2 * half:,} chars cut]…\n{text[len(text) - half:]}"


def _texts(texts: list[str], each: int, total: int) -> list[str]:
    """``texts``, each cut to ``each`` characters (:func:`_clip`), as many as fit in ``total``
    (then how many more there are)."""
    out: list[str] = []
    for i, text in enumerate(texts):
        text = _clip(text, each) or ""
        if len(text) > total:
            out.append(f"… {len(texts) - i:,} more")
            break
        out.append(text)
        total -= len(text)
    return out


# -- fingerprints of step definitions --------------------------------------------------------

_code_hashes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _code_hash(obj: Any) -> str:
    """A hash of a function's or class's source (its bytecode and constants when the source is
    not available); cached per object."""
    if obj is None:
        return ""
    try:
        return _code_hashes[obj]
    except (KeyError, TypeError):
        pass
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        text = repr((code.co_code, code.co_consts)) if code is not None else repr(obj)
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    try:
        _code_hashes[obj] = digest
    except TypeError:
        pass
    return digest


def _options_text(options: Mapping[str, Any]) -> str:
    def plain(value: Any) -> Any:
        if callable(value) and not isinstance(value, type):
            return f"code:{_code_hash(value)}"
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "spec") and hasattr(value, "name"):  # a sub-pipeline
            return f"pipeline:{value.name}"
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        func = getattr(value, "func", None)  # a Transform
        if func is not None:
            return f"code:{_code_hash(func)}:{getattr(value, 'per', '')}"
        return type(value).__name__
    return json.dumps(plain(dict(options)), sort_keys=True, default=str)


def fingerprint(step: Any) -> str:
    """What identifies a step's definition for resume: its type, function or class code,
    options, dependencies, inputs and condition. A step whose fingerprint changed since the run
    being resumed is not taken from it without ``--force``."""
    parts = [
        step.step_type,
        _code_hash(step.func),
        _options_text(step.options),
        ",".join(step.depends_on),
        json.dumps({k: v if isinstance(v, str) else v.text for k, v in step.inputs.items()},
                   sort_keys=True),
        step.when.text if step.when is not None else "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


# -- the result store ---------------------------------------------------------------------------


def _write_durably(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically (:func:`pipectl.loads.write_atomically`): the
    temporary file is removed when anything fails (a full disk)."""
    from pipectl.loads import write_atomically

    write_atomically(path, data)


class ResultStore:
    """Step outputs, pickled, one file per step of a run under ``root`` (local files), each
    authenticated, so that a resume never unpickles a file the store did not write.

    Each file is ``pipectl-result-v1``, an HMAC-SHA256 tag, then the pickle. The tag covers
    the run id, the step's name and the pickle, under the store's secret key: the file
    ``result-store.key`` in the pipectl home (``$PIPECTL_HOME``, else ``.pipectl/`` in the
    project of the working directory, where the default tracker is), or ``key_file``, made on first use (32
    random bytes in hex, mode 0600, created with ``O_CREAT | O_EXCL``: of several processes
    making it at once, one writes it and all read it back). :meth:`get` checks the tag before
    it unpickles anything: a file whose tag does not match (planted, damaged, cut short,
    moved from another run or step, written with another key, or in the format of an older
    pipectl) is left alone with a one-line warning naming it, and reads as not stored (the
    step runs again). So a resume takes outputs only from the same pipectl home: another home
    has another key. The key travels with the store when the store is pickled (to dask
    workers, which write outputs into it), so the workers need no access to the home.
    Keep the key as private as the data the pipeline reads.

    Anything with the same two methods can stand in for it (and a third, :meth:`delete_run`,
    for :meth:`SQLTracker.prune` to remove what it holds of a deleted run).
    """

    MAGIC = b"pipectl-result-v1\n"

    def __init__(self, root: str | os.PathLike[str],
                 key_file: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        if key_file is None:
            from pipectl.project import home

            key_file = home() / "result-store.key"
        self.key_file = Path(key_file).absolute()
        self._key: bytes | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_key": self._secret()}  # the key goes with the store

    def _path(self, run_id: str, step: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", step)[:80]
        digest = hashlib.sha256(step.encode()).hexdigest()[:10]
        return self.root / run_id / f"{safe}-{digest}.pickle"

    def _secret(self) -> bytes:
        if self._key is None:
            self._key = _read_or_make_key(self.key_file)
        return self._key

    def _tag(self, run_id: str, step: str, data: Any) -> bytes:
        mac = hmac.new(self._secret(), self.MAGIC + json.dumps([run_id, step]).encode(),
                       hashlib.sha256)
        mac.update(data)
        return mac.digest()

    def put(self, run_id: str, step: str, data: bytes) -> str:
        """Store a pickled output durably (written, fsynced, renamed into place); an OSError
        (a full disk, a key that cannot be read or made) leaves nothing behind."""
        path = self._path(run_id, step)
        tag = self._tag(run_id, step, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(path, self.MAGIC + tag + data)
        return str(path)

    def get(self, run_id: str, step: str) -> tuple[bool, Any]:
        """(True, the output) if stored by this store, else (False, None)."""
        path = self._path(run_id, step)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False, None
        start = len(self.MAGIC) + 32  # the tag: an HMAC-SHA256
        body = memoryview(data)[start:]
        why = ("its tag does not match this store's key (planted, damaged or cut short, from "
               "another run or step, or written with another key)")
        try:
            genuine = data.startswith(self.MAGIC) and len(data) >= start and \
                hmac.compare_digest(data[len(self.MAGIC):start], self._tag(run_id, step, body))
        except OSError as exc:  # the key cannot be read or made: nothing can be checked
            genuine, why = False, f"the key cannot be read: {exc}"
        if not genuine:
            from pipectl.log import get_logger

            get_logger().warning("result_store_ignored", file=str(path),
                                 reason=f"{why}; its step runs again")
            return False, None
        return True, pickle.loads(body)  # noqa: S301 - authenticated: written by put()

    def delete_run(self, run_id: str) -> None:
        """Remove every stored output of run ``run_id`` (its folder); a run with nothing
        stored (or removed already) is fine. An id that is not one plain folder name (empty,
        ``.``, ``..``, with a path separator) removes nothing. Raises OSError when the folder
        cannot be removed."""
        if not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id \
                or "\x00" in run_id:
            return
        folder = self.root / run_id
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass


def _read_or_make_key(path: Path) -> bytes:
    """The key in ``path``, made first when there is none (see :class:`ResultStore`)."""
    for _ in range(200):
        try:
            text = path.read_bytes().strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another process made it: read it
            try:
                os.write(fd, os.urandom(32).hex().encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            continue  # read it back, as the others do
        if len(text) == 64:
            try:
                return bytes.fromhex(text.decode("ascii"))
            except ValueError:
                break
        time.sleep(0.005)  # empty: the process that made it is writing it
    raise OSError(f"result store key {path} is not a key (64 hex digits): remove it and a new "
                  "one is made (outputs stored with the old one then run again)")


# -- trackers -----------------------------------------------------------------------------------


class SQLDialect:
    """What one SQL database does its own way, for :class:`SQLTracker`: the tables, the
    statements, the writer thread, spooling and the reads are the tracker's, the same for
    every database; a dialect says how to connect, how a write transaction starts, which
    errors are worth trying again, and how a failure reads. :class:`SqliteDialect` is the
    built-in one; pipectl-postgres has ``PostgresDialect``.

    The statements are plain SQL with ``?`` placeholders (rewritten to :attr:`placeholder`)
    and ``INSERT ... ON CONFLICT (key) DO UPDATE`` / ``DO NOTHING`` upserts (SQLite 3.24+,
    PostgreSQL 9.5+); the column types (``TEXT``, ``BIGINT``, ``DOUBLE PRECISION``) read the
    same in both, and JSON is kept as ``TEXT``.
    """

    placeholder = "?"
    """The driver's parameter marker (DB-API ``paramstyle`` ``qmark`` ``?``, or ``format``
    ``%s``)."""

    display: str = ""
    """Where the tracker writes, for messages: never with a password."""

    read_only = False
    """The database can be read but not written (set by :meth:`connect`): the tracker then
    checks the schema instead of migrating it, and refuses to delete runs."""

    @property
    def identity(self) -> str:
        """The database, named the same way by every process (the absolute path of a file,
        the URL without password): the spool files of rows the database did not take are
        named by its hash, so that the next command opening the same database writes them."""
        return self.display

    def connect(self, stopping: threading.Event) -> Any:
        """A new connection: an object with the DB-API ``cursor()`` (``execute``,
        ``executemany``, ``fetchone``, ``fetchall``, ``description``), ``commit()``,
        ``rollback()`` and ``close()``. ``stopping`` is set when the tracker closes: a
        connection that retries by itself gives up then. A database that cannot be opened
        for a reason not worth retrying raises :class:`TrackerError`."""
        raise NotImplementedError

    def begin_write(self, conn: Any) -> None:
        """Start a write transaction on ``conn``, taking the write lock now when the database
        has one (SQLite: ``BEGIN IMMEDIATE``, so that two writers never deadlock upgrading a
        read lock). Nothing by default: a DB-API driver begins a transaction with the first
        statement."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth trying the whole transaction again for (a lock, a busy
        database, a serialization failure, a deadlock, a lost connection); False: the error is
        permanent and reported."""
        return False

    @contextmanager
    def migration(self, conn: Any) -> Iterator[None]:
        """Around the migration transaction, after :meth:`begin_write`: a dialect whose write
        transaction does not serialize migrations takes a lock here that does (PostgreSQL:
        an advisory lock), and creates what the tables live in (a schema). Its commit ends
        the migration. Nothing by default."""
        yield

    def reason(self, exc: BaseException) -> str:
        """One line saying why a database call failed, for the tracker's problems (never a
        password)."""
        text = (str(exc).strip().splitlines() or [""])[0]
        prefix = f"tracker {self.display}: "
        if text.startswith(prefix):
            text = text[len(prefix):]
        if not isinstance(exc, TrackerError):
            text = f"{type(exc).__name__}: {text}"
        return text[:300]

    def raise_error(self, exc: BaseException, action: str) -> None:
        """Raise the :class:`TrackerError` that says what ``exc``, the driver's error, means,
        while the tracker was doing ``action`` (``"migrate"``: creating or upgrading the
        tables; ``"read"``: a query); return to let ``exc`` go on as it is. Nothing by
        default."""


class SQLTracker:
    """A tracker on a SQL database (:class:`Tracker`, :class:`ResumableTracker` and
    :class:`PrunableTracker`): the schema, the writer thread, the reads, resume claims and
    retention, through a :class:`SQLDialect` for what the database does its own way.

    ``url`` is the URL the tracker was opened with (default: the dialect's ``display``),
    ``results`` the folder of its :class:`ResultStore` (None: no outputs kept for resume).
    """

    def __init__(self, dialect: SQLDialect, *, url: str | None = None,
                 results: str | os.PathLike[str] | None = None):
        self.dialect = dialect
        self.url = url if url is not None else dialect.display
        self.results: Any = ResultStore(results) if results is not None else None
        #: where rows the database would not take are kept until a later command writes them
        from pipectl.project import home

        self.spool = home() / "spool"
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()  # rows are built by one thread at a time
        self._pending = _Unwritten()
        self._stopping = threading.Event()
        self._failure: BaseException | None = None  # of the writer's last attempt
        self._busy_since: float | None = None  # an attempt in progress
        self._problems: dict[str, str] = {}  # what close() reports, one line each
        self._unstored: list[str] = []  # steps whose output the result store could not take
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._meta: dict[tuple[str, str], dict[str, Any]] = {}  # until the run ends
        self._order: dict[str, int] = {}
        self._read_conn: Any = None
        self._graph: tuple[Any, str] | None = None  # the last graph and its JSON
        c = _contract()
        self._record = {
            c.RunStarted: self._record_run, c.RunFinished: self._record_run,
            c.StepStarted: self._record_step, c.StepRetrying: self._record_step,
            c.StepFinished: self._record_step, c.StepRolledBack: self._record_step,
            c.ExtractorStateSaved: self._record_state,
        }

    # the database, through the dialect

    def _connect(self) -> Any:
        return self.dialect.connect(self._stopping)

    def _sql(self, text: str) -> str:
        placeholder = self.dialect.placeholder
        return text.replace("?", placeholder) if placeholder != "?" else text

    # schema

    def migrate(self) -> int:
        """Create or upgrade the tables; returns the schema version. Safe to call from several
        processes at once (one migrates, the others see the result). Then writes the rows an
        earlier command spooled for this tracker (see :meth:`close`). A database that cannot
        be opened or migrated raises :class:`TrackerError`."""
        try:
            conn = self._connect()
            try:
                self._retrying(lambda: self._migrate(conn))
                self._replay(conn)
                return len(MIGRATIONS)
            finally:
                conn.close()
        except Exception as exc:
            self.dialect.raise_error(exc, "migrate")
            raise

    def _migrate(self, conn: Any) -> None:
        if self.dialect.read_only:  # readable if its schema is the current one
            try:
                cur = conn.cursor()
                cur.execute("SELECT version FROM pipectl_schema")
                version = cur.fetchone()[0]
            except Exception:  # noqa: BLE001 - no such table, no row: not a current schema
                version = None
            if version != len(MIGRATIONS):
                raise TrackerError(
                    f"tracker {self.display} is read-only and its schema is "
                    f"{'missing' if version is None else f'version {version}'}, "
                    f"not {len(MIGRATIONS)}: make it writable once to upgrade it")
            return
        self.dialect.begin_write(conn)
        cur = conn.cursor()
        try:
            with self.dialect.migration(conn):
                cur.execute("CREATE TABLE IF NOT EXISTS pipectl_schema "
                            "(version BIGINT NOT NULL)")
                cur.execute("SELECT version FROM pipectl_schema")
                row = cur.fetchone()
                version = row[0] if row else 0
                if version > len(MIGRATIONS):
                    raise TrackerError(f"tracker {self.display}: its schema is version "
                                       f"{version}, newer than this pipectl knows "
                                       f"({len(MIGRATIONS)}): upgrade pipectl")
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        cur.execute(statement)
                if row is None:
                    cur.execute(self._sql("INSERT INTO pipectl_schema (version) VALUES (?)"),
                                (len(MIGRATIONS),))
                elif version < len(MIGRATIONS):
                    cur.execute(self._sql("UPDATE pipectl_schema SET version = ?"),
                                (len(MIGRATIONS),))
                conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _retrying(self, action: Callable[[], Any], attempts: int = 50) -> Any:
        for attempt in range(attempts):
            try:
                return action()
            except Exception as exc:
                if not self.dialect.is_transient(exc) or attempt == attempts - 1:
                    raise
                time.sleep(min(0.01 * (attempt + 1), 0.25))
        return None  # pragma: no cover

    @property
    def display(self) -> str:
        """Where the tracker writes, for messages (the dialect's: never a password)."""
        return self.dialect.display

    def _spool_key(self) -> str:
        """The tracker's share of the spool's file names: a hash of where it writes."""
        return hashlib.sha256(self.dialect.identity.encode()).hexdigest()[:16]

    def _reason(self, exc: BaseException) -> str:
        """One line saying why a database call failed (never the URL's password)."""
        return self.dialect.reason(exc)

    # writing: called from runs, never blocks on the database

    def record(self, event: TrackerEvent) -> None:
        """Record one event of a run (:class:`Tracker`): a run's row is built now (its params
        serialised, bounded), everything else in the writer thread, which writes it."""
        try:
            record = self._record[type(event)]
        except KeyError:
            raise TypeError(f"a tracker records the events of pipectl.tracking_contract, not "
                            f"{type(event).__name__}") from None
        record(event)

    def _record_run(self, event: RunEvent) -> None:
        self._enqueue(("run", self._run_row(event)))

    def _record_step(self, event: Any) -> None:
        self._enqueue(("step", event))

    def _record_state(self, event: ExtractorStateSaved) -> None:
        self._enqueue(("state", (event.pipeline, event.step_name, _json(event.state),
                                 event.run_id, _iso(event.saved_at))))

    def _run_row(self, event: RunEvent) -> dict[str, Any]:
        finished = event if isinstance(event, _contract().RunFinished) else None
        graph = self._graph
        if graph is None or graph[0] is not event.graph:  # the DAG as JSON, once per run
            graph = self._graph = (event.graph, _json({name: list(deps) for name, deps
                                                       in event.graph.items()}))
        errors = list(finished.errors) if finished is not None else []
        return {
            "execution_id": event.run_id, "pipeline_name": event.pipeline,
            "status": finished.status.value if finished is not None else "running",
            "started_at": _iso(event.started_at) or _now(),
            "completed_at": _iso(finished.finished_at) if finished is not None else None,
            "execution_time_ms": finished.duration_ms if finished is not None else None,
            "parameters": _params_json(event.params),
            "records_processed": finished.records_processed if finished is not None else 0,
            "error_message": "; ".join(_texts(errors, SUMMARY_CHARS, SUMMARY_CHARS))[
                :SUMMARY_CHARS] or None,
            "resumed_from": event.resumed_from,
            "parent_execution_id": event.parent_run_id, "host": event.host,
            "pid": event.pid, "executor": event.executor,
            "pipeline_file": event.pipeline_file, "graph": graph[1],
            "metadata": _json({"errors": _texts(errors, SUMMARY_CHARS, TEXT_CHARS),
                               "description": _clip(event.description or "",
                                                    SUMMARY_CHARS)}),
        }

    def _enqueue(self, op: tuple) -> None:
        """Queue a write for the writer thread (started on first use)."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="pipectl-tracker", daemon=True,
                        args=(self._queue, self._stopping, self._pending))
                    self._writer.start()
        self._queue.put(op)

    def flush(self, timeout: float | None = None, grace: float | None = None) -> bool:
        """Wait until everything queued so far is committed; True when it is. While the
        database fails (an attempt failed, or has not answered for :data:`GIVE_UP_SECONDS`),
        wait ``grace`` seconds at most (default :data:`GIVE_UP_SECONDS`) and return False: the
        rows stay queued, retried in the background, and :meth:`close` spools what is left."""
        writer = self._writer
        if writer is None:
            return True
        grace = GIVE_UP_SECONDS if grace is None else grace
        done = threading.Event()
        self._queue.put(("flush", done))
        start = time.monotonic()
        while not done.wait(0.05):
            elapsed = time.monotonic() - start
            if (not writer.is_alive() or (timeout is not None and elapsed >= timeout)
                    or (elapsed >= grace and self._stalled())):
                return False
        return True

    def _stalled(self) -> bool:
        busy = self._busy_since
        return self._failure is not None or (
            busy is not None and time.monotonic() - busy >= GIVE_UP_SECONDS)

    def close(self, report: bool = True) -> list[str]:
        """Commit what is queued (waiting a few seconds at most if the database fails), stop
        the writer, and spool the rows it could not write to a file under :attr:`spool`, from
        where the next command that opens this tracker writes them (:meth:`migrate`).

        Returns what went wrong, one line each (rows spooled, outputs not stored); with
        ``report`` each line is logged as a warning too."""
        writer = self._writer
        if writer is not None:
            self.flush(grace=0.0 if self._stalled() else None)  # run() waited already
            q, stopping, pending = self._queue, self._stopping, self._pending
            stopping.set()
            q.put(("stop", None))
            writer.join(timeout=STOP_SECONDS)  # it stops after the attempt in progress
            with self._build_lock:  # what it never took (still in an attempt), then spool
                ops = _drain(q, [])
                self._build([op for op in ops if op[0] not in ("flush", "stop")], pending)
                if pending:
                    self._spool_rows(pending)
            for op in ops:
                if op[0] == "flush":
                    op[1].set()
            self._queue, self._stopping, self._pending = (queue.SimpleQueue(), threading.Event(),
                                                          _Unwritten())
            self._failure = None
            self._writer = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        problems = list(self._problems.values())
        self._problems.clear()
        self._unstored.clear()
        if report and problems:
            from pipectl.log import get_logger

            for line in problems:
                get_logger().warning("tracker_problem", problem=line)
        return problems

    def _write_loop(self, q: queue.SimpleQueue, stopping: threading.Event,
                    pending: _Unwritten) -> None:
        """Takes what is queued, builds its rows into ``pending`` and writes them in one
        transaction. When that fails the rows stay in ``pending`` and are tried again with
        backoff (new rows join them); a flush tries at once; a stop ends it."""
        conn: Any = None
        waiting: list[threading.Event] = []  # flushes waiting for a commit
        delay, retry_at = 0.0, None
        try:
            while True:
                timeout = None if retry_at is None else max(retry_at - time.monotonic(), 0.0)
                try:
                    first = [q.get(timeout=timeout)]
                except queue.Empty:
                    first = []
                with self._build_lock:
                    ops = _drain(q, first)  # everything queued meanwhile: one transaction
                    self._build([op for op in ops if op[0] not in ("flush", "stop")], pending)
                    rows = pending.rows() if pending else None
                flushes = [op[1] for op in ops if op[0] == "flush"]
                waiting += flushes
                stop = stopping.is_set() or any(op[0] == "stop" for op in ops)
                if flushes:
                    retry_at = None  # someone waits: try now
                due = retry_at is None or time.monotonic() >= retry_at
                if rows and due and not (stop and self._failure is not None):
                    self._busy_since = time.monotonic()
                    try:
                        if conn is None:
                            conn = self._retrying(self._connect)
                        self._retrying(lambda: self._write(conn, *rows))  # noqa: B023 - now
                    except Exception as exc:  # noqa: BLE001 - kept, retried, reported by close()
                        self._failure = exc
                        delay = min(max(delay * 2, RETRY_FIRST_SECONDS), RETRY_MAX_SECONDS)
                        retry_at = time.monotonic() + delay
                        if conn is not None:
                            try:
                                conn.close()  # a new connection for the next attempt
                            except Exception:  # noqa: BLE001
                                pass
                            conn = None
                    else:
                        with self._build_lock:
                            pending.clear()
                        self._failure = None
                        delay, retry_at = 0.0, None
                        if any(row[_STATUS] == "success" for row in rows[1]):
                            faults.reach("tracker.after-row")  # a step's success is recorded
                    finally:
                        self._busy_since = None
                if not pending or stop:
                    for event in waiting:
                        event.set()
                    waiting = []
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _build(self, work: list[tuple], pending: _Unwritten) -> None:
        """The rows of queued writes into ``pending`` (under ``_build_lock``)."""
        if not work:
            return
        try:
            pending.add(*self._rows(work))
        except Exception as exc:  # noqa: BLE001 - a bug: said, not hidden
            self._problems["build"] = (f"tracker {self.display}: {len(work)} writes could not "
                                       f"be recorded: {type(exc).__name__}: {exc}")

    def _spool_rows(self, pending: _Unwritten) -> None:
        """Write ``pending`` to a spool file (merged with an earlier one of the same run) and
        say so in the problems."""
        runs, steps, states = pending.rows()
        ids = list(dict.fromkeys([r[0] for r in runs] + [r[0] for r in steps]
                                 + [r[3] for r in states]))
        counts = " and ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in (
            (len(steps), "step row"), (len(runs), "run row"), (len(states), "extractor state"))
            if n)
        short = ", ".join(i[:12] for i in ids[:3]) + (", ..." if len(ids) > 3 else "")
        what = f"{counts} of run{'s' if len(ids) > 1 else ''} {short}"
        reason = (self._reason(self._failure) if self._failure is not None
                  else f"no answer in {GIVE_UP_SECONDS:.0f} s")
        path = self.spool / f"{self._spool_key()}.{ids[0] if ids else 'rows'}.jsonl"
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            if path.exists():  # this run spooled before: one file, the later rows win
                pending = _Unwritten.load(path).merge(pending)
            _write_durably(path, pending.dump())
        except (OSError, ValueError) as exc:
            self._problems["spool"] = (
                f"tracker {self.display}: writes failed ({reason}); {what} are LOST: they "
                f"could not be spooled to {path} either ({type(exc).__name__}: {exc})")
            return
        self._problems["spool"] = (
            f"tracker {self.display}: writes failed ({reason}); {what} spooled to {path}; "
            "they are written to the tracker by the next pipectl command that opens it")

    def _replay(self, conn: Any) -> None:
        """Write the rows spooled for this tracker, oldest file first, deleting each file once
        its rows are committed (the writes are upserts: a file written twice does no harm)."""
        def age(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        try:
            files = sorted(self.spool.glob(f"{self._spool_key()}.*.jsonl"), key=age)
        except OSError:
            return
        for path in files:
            try:
                rows = _Unwritten.load(path).rows()
                self._retrying(lambda rows=rows: self._write(conn, *rows, replay=True))
            except FileNotFoundError:
                continue  # another command wrote it meanwhile
            except Exception as exc:  # noqa: BLE001 - the file stays for the next command
                try:
                    conn.rollback()
                except Exception:  # noqa: BLE001
                    pass
                self._problems["replay"] = (
                    f"tracker {self.display}: rows spooled in {path} are not written to it "
                    f"yet ({self._reason(exc)}); the file is kept")
                continue
            path.unlink(missing_ok=True)

    def _rows(self, ops: list[tuple]) -> tuple[list, list, list]:
        """The run rows, step rows (one per step and batch) and extractor states of a batch of
        queued writes, in the database's column order."""
        runs, states = [], []
        steps: dict[tuple[str, str], dict[str, Any]] = {}
        ended: list[str] = []
        c = _contract()
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
            if event is c.StepStarted:
                row = self._started_row(item)
            elif event is c.StepFinished:
                row = self._finished_row(item)
            elif event is c.StepRolledBack:
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
        return ([tuple(map(r.get, RUN_COLUMNS)) for r in _last_per_key(runs, "execution_id")],
                [tuple(map(r.get, STEP_COLUMNS)) for r in steps.values()], states)

    def _write(self, conn: Any, runs: list[tuple], steps: list[tuple],
               states: list[tuple], replay: bool = False) -> None:
        """Write one batch of rows in one transaction and commit it (retried as a whole).
        Every write is an upsert, so writing a batch again changes nothing; ``replay`` (rows
        from the spool) keeps an extractor state a later run wrote meanwhile."""
        self.dialect.begin_write(conn)
        cur = conn.cursor()
        try:
            if runs:
                cols = ", ".join(RUN_COLUMNS)
                updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[2:]
                                    if c not in ("started_at",))
                cur.executemany(self._sql(
                    f"INSERT INTO pipeline_executions ({cols}) VALUES "
                    f"({', '.join('?' * len(RUN_COLUMNS))}) "
                    f"ON CONFLICT (execution_id) DO UPDATE SET {updates}"), runs)
            if steps:
                cols = ", ".join(STEP_COLUMNS)
                updates = ", ".join(f"{c} = COALESCE(excluded.{c}, step_executions.{c})"
                                    for c in STEP_COLUMNS[2:])
                cur.executemany(self._sql(
                    f"INSERT INTO step_executions ({cols}) VALUES "
                    f"({', '.join('?' * len(STEP_COLUMNS))}) "
                    f"ON CONFLICT (execution_id, step_id) DO UPDATE SET {updates}"), steps)
            if states:
                cur.executemany(self._sql(
                    "INSERT INTO extractor_state (pipeline_name, step_id, state, execution_id, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (pipeline_name, step_id) DO "
                    "UPDATE SET state = excluded.state, execution_id = excluded.execution_id, "
                    "updated_at = excluded.updated_at" + (
                        " WHERE extractor_state.updated_at <= excluded.updated_at"
                        if replay else "")), states)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _started_row(self, event: StepStarted) -> dict[str, Any]:
        run_id, step, attempt = event.run_id, event.step_name, event.attempt
        history = self._history.setdefault((run_id, step), [])
        started = _iso(event.started_at)
        history.append({"attempt": attempt, "started_at": started})
        order = self._order.get(run_id, 0)
        self._order[run_id] = order + 1 if attempt == 1 else order
        return {"execution_id": run_id, "step_id": step, "step_name": step,
                "step_type": event.step_type, "status": "running",
                "started_at": started if attempt == 1 else None,
                "retry_count": attempt - 1, "step_order": order if attempt == 1 else None}

    def _retried(self, event: StepRetrying) -> None:
        for entry in reversed(self._history.get((event.run_id, event.step_name), [])):
            if entry["attempt"] == event.attempt:
                entry.update(error=_clip(event.error, SUMMARY_CHARS),
                             retry_delay_s=round(event.delay, 3))
                break

    def _finished_row(self, event: StepFinished) -> dict[str, Any]:
        run_id, step, blob, inputs = event.run_id, event.step, event.pickled_output, event.inputs
        row = step_row(run_id, step, event.result, event.fingerprint)
        if inputs and any(v is not None for v in inputs.values()):
            row["input_data"] = _json(summarize(inputs))
        metadata = row.pop("metadata_dict")
        history = self._history.pop((run_id, step.name), [])
        if history:
            last = history[-1]
            last.setdefault("error", row.get("error_message"))
            last["finished_at"] = row.get("completed_at")
        metadata["attempt_history"] = history
        if event.output_in_store:  # the executor put it in the result store itself
            metadata["output_stored"] = True
        elif blob is not None and self.results is not None:
            try:
                self.results.put(run_id, step.name, blob)  # before the row that points at it
                metadata["output_stored"] = True
            except OSError as exc:  # a full disk: a resume runs the step again
                metadata["output_stored"] = False
                self._unstored.append(step.name)
                names = ", ".join(self._unstored[:5]) + (", ..." if len(self._unstored) > 5
                                                         else "")
                self._problems["results"] = (
                    f"tracker result store {self.results.root}: the output of "
                    f"{len(self._unstored)} step(s) ({names}) not stored "
                    f"({type(exc).__name__}: {exc}); a resume runs them again")
        self._meta[(run_id, step.name)] = metadata
        row["metadata"] = _json(metadata)
        secrets = event.secrets
        if secrets:  # what the step returned, was given or raised may hold a secret's value
            from pipectl.log import redact

            # in JSON text too, where a value with quotes, backslashes or controls is escaped
            spellings = tuple(dict.fromkeys([*secrets, *(json.dumps(v, ensure_ascii=False)[1:-1]
                                                         for v in secrets)]))
            for key in ("input_data", "output_data", "error_message", "traceback", "metadata"):
                if isinstance(row.get(key), str):
                    row[key] = redact(row[key], spellings)
            cut_off = _cut_secrets(spellings)  # a secret a summary's preview cut in two
            for key in ("input_data", "output_data"):
                if isinstance(row.get(key), str):
                    row[key] = cut_off.sub("***", row[key])
        return row

    def _rollback_row(self, event: StepRolledBack) -> dict[str, Any]:
        run_id, step = event.run_id, event.step_name
        metadata = self._meta.get((run_id, step), {})
        metadata["rollback"] = _Bounded(SUMMARY_CHARS)(event.outcome)
        return {"execution_id": run_id, "step_id": step, "step_name": step,
                "status": event.status.value, "metadata": _json(metadata)}

    def _run_ended(self, run_id: str) -> None:
        for key in [k for k in self._meta if k[0] == run_id]:
            del self._meta[key]
        self._order.pop(run_id, None)

    # reading

    def _reader(self) -> Any:
        if self._read_conn is None:
            self._read_conn = self._connect()
        return self._read_conn

    def _query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """The rows of a query, as dicts; a database error is the dialect's
        :class:`TrackerError`."""
        try:
            conn = self._reader()
            cur = conn.cursor()
            try:
                cur.execute(self._sql(sql), params)
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, row)) for row in cur.fetchall()]
            finally:
                try:
                    conn.rollback()  # end the read transaction: see later commits next time
                except Exception:  # noqa: BLE001
                    pass
        except Exception as exc:
            self.dialect.raise_error(exc, "read")
            raise
        return rows

    def list_runs(self, pipeline: str | None = None, status: str | None = None,
                  limit: int = 20) -> list[dict[str, Any]]:
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
        sql = ("SELECT execution_id, pipeline_name, status, started_at, completed_at, "
               "execution_time_ms, records_processed, error_message, resumed_from, host, pid "
               "FROM pipeline_executions"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY started_at DESC LIMIT ?")
        rows = self._query(sql, (*params, limit if status != "interrupted" else limit * 10))
        for row in rows:
            row["status"] = _live_status(row)
        if status == "interrupted":
            rows = [r for r in rows if r["status"] == "interrupted"][:limit]
        return rows

    def resolve(self, run_id: str, pipeline: str | None = None, *,
                finished: bool = False) -> str:
        """A run id from ``run_id`` (``latest``, a full id or a unique prefix).

        ``finished`` (what a resume asks): ``latest`` is the latest run that ended
        (:meth:`latest_finished`), and a run still running raises :class:`RunInProgress`."""
        if finished:
            return self._resolve_finished(run_id, pipeline)
        if run_id == "latest":
            sql = "SELECT execution_id FROM pipeline_executions"
            params: tuple = ()
            if pipeline:
                sql += " WHERE pipeline_name = ?"
                params = (pipeline,)
            rows = self._query(sql + " ORDER BY started_at DESC LIMIT 1", params)
            if not rows:
                where = f" of pipeline {pipeline!r}" if pipeline else ""
                raise TrackerError(f"no run{where} in the tracker {self.display}")
            return rows[0]["execution_id"]
        rows = self._query("SELECT execution_id FROM pipeline_executions WHERE execution_id "
                           "LIKE ? ORDER BY started_at DESC LIMIT 2",
                           (run_id.replace("%", "").replace("_", "\\_") + "%",))
        exact = [r for r in rows if r["execution_id"] == run_id]
        if exact:
            return run_id
        if len(rows) == 1:
            return rows[0]["execution_id"]
        if not rows:
            raise TrackerError(f"no run {run_id!r} in the tracker {self.display} "
                               "(`pipectl runs list` shows the runs)")
        raise TrackerError(f"run id {run_id!r} is ambiguous: give more of it")

    def latest_finished(self, pipeline: str | None = None) -> dict[str, Any] | None:
        """The latest run (of ``pipeline``) that is not running: it ended, or its process died
        (``interrupted``, as :meth:`list_runs` shows it); None if there is none. A row with
        ``execution_id``, ``status``, ``started_at``, ``host`` and ``pid``."""
        where, params = ("pipeline_name = ? AND ", (pipeline,)) if pipeline else ("", ())
        columns = "SELECT execution_id, status, started_at, host, pid FROM pipeline_executions"
        ended = self._query(f"{columns} WHERE {where}status <> 'running' "
                            "ORDER BY started_at DESC LIMIT 1", params)
        since = ("", ()) if not ended else (" AND started_at > ?", (ended[0]["started_at"],))
        # the runs recorded as running since then: the newest whose process died wins
        for row in self._query(f"{columns} WHERE {where}status = 'running'{since[0]} "
                               "ORDER BY started_at DESC", (*params, *since[1])):
            if _live_status(row) == "interrupted":
                row["status"] = "interrupted"
                return row
        return ended[0] if ended else None

    def _resolve_finished(self, run_id: str, pipeline: str | None) -> str:
        """:meth:`resolve` for a resume: a run that is not running."""
        if run_id == "latest":
            row = self.latest_finished(pipeline)
            if row is not None:
                return row["execution_id"]
            where = f" of pipeline {pipeline!r}" if pipeline else ""
            running = self.list_runs(pipeline=pipeline, limit=1)
            if not running:
                raise TrackerError(f"no run{where} in the tracker {self.display}")
            r = running[0]
            raise RunInProgress(r["execution_id"], r["host"], r["pid"],
                                f"no run{where} has ended yet in the tracker {self.display}, "
                                f"nothing to resume: run {r['execution_id']} is still running "
                                f"(pid {r['pid']} on host {r['host']}); wait for it to end")
        run_id = self.resolve(run_id)
        rows = self._query("SELECT execution_id, status, host, pid FROM pipeline_executions "
                           "WHERE execution_id = ?", (run_id,))
        if rows and _live_status(rows[0]) == "running":
            r = rows[0]
            elsewhere = ("" if r["host"] == socket.gethostname() else
                         "; it runs on another host, where `pipectl runs list` tells whether "
                         "its process is alive")
            raise RunInProgress(run_id, r["host"], r["pid"],
                                f"run {run_id} is still running (pid {r['pid']} on host "
                                f"{r['host']}); wait for it to end or stop it, then resume "
                                f"it{elsewhere}")
        return run_id

    # one resumer per run

    def claim_resume(self, run_id: str, by_run_id: str, *,
                     take_over_finished: bool = True) -> None:
        """Claim the resume of run ``run_id`` for the run ``by_run_id`` (about to start, in
        this process), atomically in the database, so that two resumes of one run, in any
        processes on any hosts, never both run; raises :class:`ResumeClaimed` when another run
        holds the claim.

        The claim is a row of ``resume_claims``. One held by another run is refused while that
        run, or a resume of it (and so on: a resume that was killed can be resumed), is running
        (its process alive, or on another host), or once one of them succeeded. A claim whose
        run ended otherwise (failed, cancelled, its process gone) is taken over, unless
        ``take_over_finished`` is false and that run is recorded (it is then newer than
        ``run_id``): ``ResumeClaimed`` with ``state`` ``finished``. The claim stays after the
        resuming run ends: it records who resumed the run."""
        host, pid = socket.gethostname(), os.getpid()
        conn = self._connect()
        try:
            for _ in range(20):
                refusal = self._retrying(lambda: self._claim(
                    conn, run_id, by_run_id, host, pid, take_over_finished))
                if refusal is not None:
                    raise refusal
                # read back after the commit (a transaction replayed on a new connection may
                # have found another claim): ours, or look again at whose it is
                rows = self._query("SELECT claimed_by FROM resume_claims WHERE "
                                   "execution_id = ?", (run_id,))
                if rows and rows[0]["claimed_by"] == by_run_id:
                    return
        finally:
            conn.close()
        raise TrackerError(f"tracker {self.display}: could not claim the resume of run "
                           f"{run_id}: other resumes kept taking it; try again")

    def release_resume(self, run_id: str, by_run_id: str) -> None:
        """Give up the claim of ``by_run_id`` on the resume of ``run_id`` (a resume that did
        not start); nothing if it holds none."""
        conn = self._connect()

        def release() -> None:
            self.dialect.begin_write(conn)
            try:
                conn.cursor().execute(self._sql(
                    "DELETE FROM resume_claims WHERE execution_id = ? AND claimed_by = ?"),
                    (run_id, by_run_id))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

        try:
            self._retrying(release)
        finally:
            conn.close()

    def _claim(self, conn: Any, run_id: str, by_run_id: str, host: str, pid: int,
               take_over_finished: bool) -> ResumeClaimed | None:
        """One claim transaction: insert the claim unless there is one, else take over a claim
        left by a run that ended without success; the refusal, or None when claimed."""
        self.dialect.begin_write(conn)
        cur = conn.cursor()
        try:
            now = _now()
            cur.execute(self._sql(
                "INSERT INTO resume_claims (execution_id, claimed_by, host, pid, claimed_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (execution_id) DO NOTHING"),
                (run_id, by_run_id, host, pid, now))
            claim = _fetch(cur, self._sql(
                "SELECT claimed_by, host, pid FROM resume_claims WHERE execution_id = ?"),
                (run_id,))
            refusal = None
            if claim is not None and claim["claimed_by"] != by_run_id:
                state, holder, through, status, recorded = self._claim_state(cur, claim)
                if state in ("active", "succeeded") or (recorded and not take_over_finished):
                    refusal = ResumeClaimed(run_id, holder["claimed_by"], holder["host"],
                                            holder["pid"], state if state != "ended" else
                                            "finished", through, status)
                else:  # only if nobody took it over since it was read
                    cur.execute(self._sql(
                        "UPDATE resume_claims SET claimed_by = ?, host = ?, pid = ?, "
                        "claimed_at = ? WHERE execution_id = ? AND claimed_by = ?"),
                        (by_run_id, host, pid, now, run_id, claim["claimed_by"]))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return refusal

    def _claim_state(self, cur: Any, claim: dict[str, Any]
                     ) -> tuple[str, dict[str, Any], list[str], str, bool]:
        """(``active``, ``succeeded`` or ``ended``, the claim that decides it, the runs between,
        the status of its run, whether the first claimant's run is recorded) for a claim,
        following the resumes of its run when it ended without success."""
        through: list[str] = []
        recorded: bool | None = None
        while True:
            holder = claim["claimed_by"]
            row = _fetch(cur, self._sql("SELECT status, host, pid FROM pipeline_executions "
                                        "WHERE execution_id = ?"), (holder,))
            if recorded is None:
                recorded = row is not None
            if row is not None:
                status = _live_status(row)
            elif (claim["host"] == socket.gethostname() and claim["pid"]
                  and not _pid_alive(int(claim["pid"]))):
                status = "interrupted"  # killed before its run was recorded
            else:
                status = "running"  # about to start (or on another host)
            if status == "running":
                return "active", claim, through, status, recorded
            if status == "success":
                return "succeeded", claim, through, status, recorded
            # it ended without success: is a resume of it under way (or done)?
            later = _fetch(cur, self._sql("SELECT claimed_by, host, pid FROM resume_claims "
                                          "WHERE execution_id = ?"), (holder,))
            if later is None or later["claimed_by"] in through or len(through) > 1000:
                return "ended", claim, through, status, recorded
            through.append(holder)
            claim = later

    def pipeline_of(self, run_id: str) -> str | None:
        """The pipeline a run (a full id) belongs to, None if there is no such run."""
        rows = self._query("SELECT pipeline_name FROM pipeline_executions WHERE "
                           "execution_id = ?", (run_id,))
        return rows[0]["pipeline_name"] if rows else None

    def get_run(self, run_id: str, pipeline: str | None = None) -> dict[str, Any]:
        """The whole record of one run: the run and every step (the format of
        ``pipectl runs show --json``)."""
        run_id = self.resolve(run_id, pipeline)
        (row,) = self._query("SELECT * FROM pipeline_executions WHERE execution_id = ?",
                             (run_id,))
        steps = self._query("SELECT * FROM step_executions WHERE execution_id = ? "
                            "ORDER BY step_order, started_at, step_id", (run_id,))
        return _record(row, steps)

    def step_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Each step of a run: ``status``, ``fingerprint``, ``output_stored``, ``output_none``,
        and ``committed`` (the outputs a data step committed)."""
        out = {}
        for row in self._query("SELECT step_id, status, metadata FROM step_executions "
                               "WHERE execution_id = ?", (run_id,)):
            meta = _loads(row["metadata"], {})
            committed = [name for name, report in (meta.get("outputs") or {}).items()
                         if report.get("status") in ("committed", "skipped")]
            out[row["step_id"]] = {"status": row["status"],
                                   "fingerprint": meta.get("fingerprint"),
                                   "output_stored": bool(meta.get("output_stored")),
                                   "output_none": bool(meta.get("output_none")),
                                   "committed": committed}
        return out

    def load_run(self, run_id: str) -> str:
        """The run that ``run_id``'s loads belong to: the first run of its chain of resumes."""
        seen = {run_id}
        while True:
            rows = self._query("SELECT resumed_from FROM pipeline_executions WHERE "
                               "execution_id = ?", (run_id,))
            earlier = rows[0]["resumed_from"] if rows else None
            if not earlier or earlier in seen:
                return run_id
            seen.add(earlier)
            run_id = earlier

    def extractor_states(self, pipeline: str) -> dict[str, Any]:
        """The latest incremental state of each data step of ``pipeline``."""
        return {r["step_id"]: json.loads(r["state"]) for r in self._query(
            "SELECT step_id, state FROM extractor_state WHERE pipeline_name = ?", (pipeline,))}

    # retention

    def prune(self, *, keep: int | None = None, older_than: float | None = None,
              pipeline: str | None = None, dry_run: bool = False) -> PrunedRuns:
        """Delete old runs: their rows and their stored outputs. Returns the ids of the runs
        deleted (with ``dry_run``: of those that would be, and nothing is deleted), oldest
        first, as a :class:`PrunedRuns` (a list whose ``runs`` has each one's row).

        Which runs go:

        - ``keep=N`` alone: every run of a pipeline but its N latest (by ``started_at``);
        - ``older_than=S`` alone (seconds; :func:`parse_duration` reads ``"30d"``): the runs
          that started more than S seconds ago;
        - both: only the runs that both rules remove, beyond the N latest of their pipeline
          *and* older than S. So neither limit is crossed: the N latest runs of each pipeline
          stay whatever their age, and no run younger than S goes;
        - ``pipeline``: only runs of that pipeline go (every pipeline's runs are counted for
          ``keep`` as always; the other pipelines' runs stay).

        At least one of ``keep`` (0 or more) and ``older_than`` (0 or more) is given, else
        ValueError.

        Runs go in groups, never some without the others:

        - *sub-pipeline runs* (``parent_execution_id``) go with the run that started them, and
          only with it; they are not counted as runs of their own pipeline;
        - *a resume chain*: the runs linked by ``resumed_from`` (and by the claims of
          :meth:`claim_resume`) stay together: a resume names the runs it resumed, takes the
          loads of the first one (:meth:`load_run`), and holds a claim on each. The chain
          stays while any of its runs would stay, which its latest run decides (a chain whose
          latest run is among the N latest, or younger than S, stays whole).

        Never deleted, with its whole group: a run still running (recorded as running and its
        process alive; on another host, where its process cannot be checked, a run recorded
        as running counts as running, as in :meth:`list_runs`), and a run whose resume has
        been claimed by a run not recorded yet (about to start) whose process is alive. A run
        whose process died (``interrupted``) can go.

        Deleting removes the runs' rows in one transaction: ``pipeline_executions``,
        ``step_executions`` and ``resume_claims`` (the claims on them and by them); then,
        after the commit, each run's folder in the result store (``ResultStore.delete_run``;
        one gone already is fine; one that cannot be removed is reported by :meth:`close`,
        the rows are gone anyway). ``extractor_state`` stays: it is the pipeline's
        incremental cursor, which its next run starts from, whichever run wrote it. The runs
        are chosen inside the deleting transaction (on SQLite nothing is written meanwhile); a
        resume of a deleted run starting at that very instant finds nothing to take from it
        and runs its steps again.

        Raises :class:`TrackerError` when the database cannot be read or written (a
        read-only SQLite file: only ``dry_run`` works on it).
        """
        if keep is None and older_than is None:
            raise ValueError("prune needs keep (the latest runs of each pipeline to keep), "
                             "older_than (seconds) or both")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int)
                                 or keep < 0):
            raise ValueError(f"keep is a whole number of runs, 0 or more, got {keep!r}")
        if older_than is not None and (isinstance(older_than, bool)
                                       or not isinstance(older_than, (int, float))
                                       or not older_than >= 0):
            raise ValueError(f"older_than is a number of seconds, 0 or more, got "
                             f"{older_than!r}")
        cutoff = None
        if older_than is not None:
            try:
                cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
            except OverflowError:  # longer ago than datetime goes: no run is that old
                cutoff = datetime.min.replace(tzinfo=UTC)
        try:
            conn = self._connect()
            try:
                if not dry_run and self.dialect.read_only:
                    raise TrackerError(f"tracker {self.display} is read-only: no run can be "
                                       "deleted from it (make it writable)")
                chosen = self._retrying(lambda: self._prune(conn, keep, cutoff, pipeline,
                                                            dry_run))
            finally:
                conn.close()
        except TrackerError:
            raise
        except Exception as exc:  # a database error: said as the tracker's, no traceback
            raise TrackerError(f"tracker {self.display}: cannot prune runs: "
                               f"{self._reason(exc)}") from exc
        pruned = PrunedRuns(r["execution_id"] for r in chosen)
        pruned.runs = {r["execution_id"]: r for r in chosen}
        delete = getattr(self.results, "delete_run", None)
        if dry_run or delete is None:
            return pruned
        failed: list[str] = []
        reason = ""
        for run_id in pruned:
            try:
                delete(run_id)
            except OSError as exc:
                failed.append(run_id)
                reason = f"{type(exc).__name__}: {exc}"
        if failed:
            shown = ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else "")
            self._problems["prune"] = (
                f"tracker result store {getattr(self.results, 'root', '')}: the stored outputs "
                f"of {len(failed)} deleted run(s) ({shown}) could not be removed ({reason}); "
                "their rows are deleted: remove their folders by hand")
        return pruned

    def _prune(self, conn: Any, keep: int | None, cutoff: datetime | None,
               pipeline: str | None, dry_run: bool) -> list[dict[str, Any]]:
        """One prune transaction: read the runs and claims, choose, delete (unless
        ``dry_run``), commit; the rows of the runs chosen, oldest first."""
        if not dry_run:
            self.dialect.begin_write(conn)
        cur = conn.cursor()
        try:
            runs = _fetch_all(cur, self._sql(
                "SELECT execution_id, pipeline_name, status, started_at, resumed_from, "
                "parent_execution_id, host, pid FROM pipeline_executions"), ())
            claims = _fetch_all(cur, self._sql(
                "SELECT execution_id, claimed_by, host, pid FROM resume_claims"), ())
            chosen = _prune_selection(runs, claims, keep, cutoff, pipeline)
            ids = [r["execution_id"] for r in chosen]
            for start in range(0, 0 if dry_run else len(ids), 500):
                part = tuple(ids[start:start + 500])
                marks = ", ".join("?" * len(part))
                cur.execute(self._sql(f"DELETE FROM step_executions WHERE execution_id IN "
                                      f"({marks})"), part)
                cur.execute(self._sql(f"DELETE FROM resume_claims WHERE execution_id IN "
                                      f"({marks}) OR claimed_by IN ({marks})"), part + part)
                cur.execute(self._sql(f"DELETE FROM pipeline_executions WHERE execution_id IN "
                                      f"({marks})"), part)
            if dry_run:
                conn.rollback()
            else:
                conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return chosen


# -- retention --------------------------------------------------------------------------------

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
        raise TypeError(f"a duration is text such as \"30d\" or \"12h\", got "
                        f"{type(text).__name__} {text!r}")
    if not isinstance(text, str):
        if not 0 <= text < float("inf"):
            raise ValueError(f"a duration in seconds is a number, 0 or more, got {text!r}")
        return float(text)
    if _DURATION.fullmatch(text) is None:
        hint = (" (a unit is missing)" if re.fullmatch(r"\s*[0-9.]+\s*", text) else
                " (units are lower case; there are no months: use d or w)"
                if re.search(r"[0-9]\s*[A-Z]", text) else "")
        raise ValueError(f"{text[:60]!r} is not a duration{hint}: a number and a unit, s "
                         "(seconds), m (minutes), h (hours), d (days) or w (weeks), such as "
                         "30d, 12h, 90m or 1h30m")
    return float(sum(float(number) * _DURATION_UNITS[unit]
                     for number, unit in _DURATION_PART.findall(text)))


class PrunedRuns(list):
    """What :meth:`SQLTracker.prune` returns: the ids of the runs it deleted (or would),
    oldest first. ``runs`` maps each id to its row: ``pipeline_name``, ``status`` (as
    :meth:`SQLTracker.list_runs` shows it: ``interrupted`` for a run whose process died),
    ``started_at``, ``resumed_from``, ``parent_execution_id``."""

    runs: dict[str, dict[str, Any]]

    def __init__(self, ids: Any = ()):
        super().__init__(ids)
        self.runs = {}


def _fetch_all(cur: Any, sql: str, params: tuple) -> list[dict[str, Any]]:
    """Every row of a query on a cursor, as dicts."""
    cur.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


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


def _prune_selection(runs: list[dict[str, Any]], claims: list[dict[str, Any]],
                     keep: int | None, cutoff: datetime | None, pipeline: str | None
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
        row["status"] = _live_status(row)
        if row["status"] == "running" or started[run_id] is None:
            stays.add(find(run_id))
    here = socket.gethostname()
    for claim in claims:  # a resume about to start: its claim is there, its run not yet
        if claim["execution_id"] in by_id and claim["claimed_by"] not in by_id:
            gone = (claim["host"] == here and claim["pid"]
                    and not _pid_alive(int(claim["pid"])))
            if not gone:
                stays.add(find(claim["execution_id"]))
    if keep is not None:  # the N latest top runs of each pipeline keep their groups
        latest: dict[str, list[str]] = {}
        for run_id in set(top.values()):
            latest.setdefault(by_id[run_id]["pipeline_name"], []).append(run_id)
        for ids in latest.values():
            ids.sort(key=lambda r: (started[r] is None, started[r] or datetime.min, r),
                     reverse=True)
            stays.update(find(r) for r in ids[:keep])
    members: dict[str, list[str]] = {}
    for run_id in by_id:
        members.setdefault(find(run_id), []).append(run_id)
    chosen: list[str] = []
    for root, ids in members.items():
        if root in stays:
            continue
        tops = [r for r in ids if top[r] == r]
        if pipeline is not None and not any(by_id[r]["pipeline_name"] == pipeline
                                            for r in tops):
            continue
        if cutoff is not None and any(started[r] >= cutoff for r in tops):
            continue
        chosen.extend(ids)
    chosen.sort(key=lambda r: (started[r], r))
    return [{k: by_id[r][k] for k in ("execution_id", "pipeline_name", "status", "started_at",
                                      "resumed_from", "parent_execution_id")}
            for r in chosen]


def _last_per_key(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key (the last written wins): an upsert may not touch a row twice."""
    return list({r[key]: r for r in rows}.values())


def _drain(q: queue.SimpleQueue, ops: list[tuple]) -> list[tuple]:
    """``ops`` and everything in ``q`` now."""
    while True:
        try:
            ops.append(q.get_nowait())
        except queue.Empty:
            return ops


_TABLES = {"pipeline_executions": RUN_COLUMNS, "step_executions": STEP_COLUMNS,
           "extractor_state": STATE_COLUMNS}


class _Unwritten:
    """Rows not committed yet, one per key, merged as the upserts would merge them (a step
    row's None leaves the earlier value; a run keeps its first ``started_at``): what the
    writer tries again and what :meth:`SQLTracker.close` spools, as JSON lines."""

    _STARTED = RUN_COLUMNS.index("started_at")

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple, tuple]] = {name: {} for name in _TABLES}

    def __bool__(self) -> bool:
        return any(self.tables.values())

    def add(self, runs: list[tuple], steps: list[tuple], states: list[tuple]) -> _Unwritten:
        kept = self.tables["pipeline_executions"]
        for row in runs:
            old = kept.get(row[:1])
            if old is not None:
                i = self._STARTED
                row = (*row[:i], old[i], *row[i + 1:])
            kept[row[:1]] = row
        kept = self.tables["step_executions"]
        for row in steps:
            old = kept.get(row[:2])
            kept[row[:2]] = row if old is None else tuple(
                o if n is None else n for o, n in zip(old, row))
        kept = self.tables["extractor_state"]
        for row in states:
            kept[row[:2]] = row
        return self

    def merge(self, other: _Unwritten) -> _Unwritten:
        return self.add(*other.rows())

    def rows(self) -> tuple[list[tuple], list[tuple], list[tuple]]:
        return tuple(list(self.tables[name].values()) for name in _TABLES)  # type: ignore

    def clear(self) -> None:
        for kept in self.tables.values():
            kept.clear()

    def dump(self) -> bytes:
        return "".join(_json({"table": name, "row": dict(zip(_TABLES[name], row))}) + "\n"
                       for name, kept in self.tables.items()
                       for row in kept.values()).encode()

    @classmethod
    def load(cls, path: Path) -> _Unwritten:
        rows: dict[str, list[tuple]] = {name: [] for name in _TABLES}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                rows[item["table"]].append(tuple(map(item["row"].get, _TABLES[item["table"]])))
        return cls().add(*rows.values())


def _fetch(cur: Any, sql: str, params: tuple) -> dict[str, Any] | None:
    """The first row of a query on a cursor, as a dict (None if none)."""
    cur.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def _live_status(row: Mapping[str, Any]) -> str:
    """``interrupted`` for a run recorded as running whose process (on this host) is gone."""
    status = row["status"]
    if status == "running" and row.get("host") == socket.gethostname() and row.get("pid"):
        if not _pid_alive(int(row["pid"])):
            return "interrupted"
    return status


def _loads(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _record(row: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = _loads(row.get("metadata"), {})
    record: dict[str, Any] = {
        "run_id": row["execution_id"],
        "pipeline": row["pipeline_name"],
        "description": metadata.get("description", ""),
        "status": _live_status(row),
        "started_at": row["started_at"],
        "finished_at": row["completed_at"],
        "duration_ms": row["execution_time_ms"],
        "params": _loads(row["parameters"], {}),
        "records_processed": row["records_processed"],
        "error": row["error_message"],
        "errors": metadata.get("errors", []),
        "resumed_from": row["resumed_from"],
        "parent_run_id": row["parent_execution_id"],
        "host": row["host"],
        "pid": row["pid"],
        "executor": row["executor"],
        "pipeline_file": row["pipeline_file"],
        "graph": _loads(row["graph"], {}),
        "steps": [],
    }
    order = {name: i for i, name in enumerate(record["graph"])}  # the plan's order
    steps = sorted(steps, key=lambda s: (order.get(s["step_id"], len(order)),
                                         s["step_order"] if s["step_order"] is not None else 0))
    for s in steps:
        meta = _loads(s["metadata"], {})
        status = s["status"]
        if status == "running" and record["status"] == "interrupted":
            status = "interrupted"
        record["steps"].append({
            "step_id": s["step_id"],
            "step_name": s["step_name"],
            "step_type": s["step_type"],
            "description": meta.get("description", ""),
            "status": status,
            "started_at": s["started_at"],
            "completed_at": s["completed_at"],
            "execution_time_ms": s["execution_time_ms"],
            "attempts": (s["retry_count"] or 0) + 1 if s["started_at"] and not meta.get(
                "resumed") else 0,
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
            "input_summary": _loads(s["input_data"]),
            "output_summary": _loads(s["output_data"]),
            "resumed_from": meta.get("resumed"),
            "metadata": {k: v for k, v in meta.items() if k in (
                "fingerprint", "output_stored", "output_none", "allow_failure")},
        })
    return record


class SqliteDialect(SQLDialect):
    """SQLite, one file (WAL journal): :class:`SqliteTracker`'s dialect. A write transaction
    is ``BEGIN IMMEDIATE`` (the write lock at once), a locked or busy database is worth
    retrying, and a file that cannot be written (the file or its folder) is opened read-only
    (``immutable``: no journal, no lock files). Any ``sqlite3.Error`` the tracker meets
    becomes a :class:`TrackerError` naming the file."""

    placeholder = "?"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.display = str(self.path)
        self.read_only = False  # set by each connection: see connect

    @property
    def identity(self) -> str:
        return str(self.path.absolute())

    def connect(self, stopping: threading.Event) -> Any:
        """A connection; a read-only one when the file or its folder cannot be written. A
        file that is not a database, or cannot be opened, is a :class:`TrackerError`."""
        import sqlite3

        self.read_only = self.path.exists() and not (
            os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))
        conn = None
        try:
            if self.read_only:
                conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?immutable=1", uri=True,
                                       check_same_thread=False, isolation_level=None)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            else:
                conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if self.is_transient(exc):
                raise
            raise TrackerError(self._file_error(exc)) from None
        return _AutoBegin(conn)

    def begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later

    def is_transient(self, exc: BaseException) -> bool:
        import sqlite3

        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc))

    def raise_error(self, exc: BaseException, action: str) -> None:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            raise TrackerError(self._file_error(exc)) from None

    def _file_error(self, exc: BaseException) -> str:
        hint = " (is it a pipectl tracker?)" if "not a database" in str(exc) else ""
        return f"tracker {self.path}: {exc}{hint}"


class SqliteTracker(SQLTracker):
    """The built-in tracker: one SQLite file (WAL journal), shared by every ``pipectl run`` on
    the machine that points at it. URL: ``sqlite:///relative/path.db`` or
    ``sqlite:////absolute/path.db``; outputs for resume go to ``results/`` beside the file.
    A :class:`SQLTracker` with a :class:`SqliteDialect`."""

    def __init__(self, url: str):
        # sqlite:///relative/file.db and sqlite:////absolute/file.db, as SQLAlchemy has them
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise TrackerError(f"tracker URL {url!r} names no file: sqlite:///relative/file.db "
                               "or sqlite:////absolute/file.db")
        dialect = SqliteDialect(path)
        try:
            dialect.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackerError(f"tracker {url}: cannot create {dialect.path.parent}: {exc}") \
                from None
        super().__init__(dialect, url=url, results=dialect.path.parent / "results")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self.dialect.path

    @property
    def read_only(self) -> bool:
        """Whether the last connection found the file (or its folder) not writable."""
        return self.dialect.read_only


class _AutoBegin:
    """An autocommit sqlite3 connection behind the DB-API calls the tracker makes: ``commit``
    and ``rollback`` end the explicit transaction :meth:`SqliteDialect.begin_write` opened."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, *args: Any) -> Any:
        return self.conn.execute(*args)

    def cursor(self) -> Any:
        return self.conn.cursor()

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


# -- choosing a tracker -----------------------------------------------------------------------


def default_tracker_url(environ: Mapping[str, str] | None = None) -> str:
    """``sqlite:///`` a file ``pipectl.db`` in ``$PIPECTL_HOME``, else in ``.pipectl/`` of the
    project of the working directory (:mod:`pipectl.project`)."""
    environ = os.environ if environ is None else environ
    if environ.get("PIPECTL_HOME"):
        return f"sqlite:///{os.path.join(environ['PIPECTL_HOME'], 'pipectl.db')}"
    from pipectl.project import find_project

    return f"sqlite:///{find_project().home / 'pipectl.db'}"


def open_tracker(url: str | None, registries: Any) -> Tracker | None:
    """The tracker for ``url`` (None or ``none``: no tracking), schema migrated. A factory
    that returns something without the :class:`Tracker` methods is a :class:`TrackerError`
    saying which are missing."""
    if url is None or url.strip().lower() in ("", "none", "off", "false"):
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise TrackerError(f"tracker {url!r} is not a URL: use sqlite:///path.db, "
                           "postgresql://..., or none")
    scheme = {"postgres": "postgresql"}.get(scheme.split("+", 1)[0], scheme.split("+", 1)[0])
    tracker = registries.trackers.create(scheme, url)
    if not isinstance(tracker, _contract().Tracker):
        missing = [m for m in _TRACKER_MEMBERS if not hasattr(tracker, m)]
        raise TrackerError(f"the {scheme!r} tracker ({type(tracker).__module__}."
                           f"{type(tracker).__qualname__}) is not a tracker: it has no "
                           f"{', '.join(missing)} (see pipectl.tracking.Tracker)")
    tracker.migrate()
    return tracker


# -- the listener -------------------------------------------------------------------------------


class TrackingListener:
    """The lifecycle listener that feeds one run (and its sub-pipeline runs) to a tracker, as
    the typed events of :mod:`pipectl.tracking_contract`, each given to
    :meth:`Tracker.record`.

    Every hook call only builds one small event; outputs are pickled here (so the stored value
    is the one the step returned), when the tracker has a result store.
    """

    def __init__(self, tracker: Tracker, run_id: str, spec: Any = None, *,
                 resumed_from: str | None = None, pipeline_file: str | None = None,
                 executor: str | None = None, store_outputs: bool = True,
                 fingerprints: Mapping[str, str] | None = None):
        self.tracker = tracker
        self.record = tracker.record
        self.events = _contract()  # the event classes
        self.run_ids = {run_id}
        self.spec = spec
        self.resumed_from = resumed_from
        self.pipeline_file = pipeline_file
        self.executor = executor
        self.store_outputs = store_outputs and getattr(tracker, "results", None) is not None
        self.fingerprints = fingerprints if fingerprints is not None else (
            {s.name: fingerprint(s) for s in spec.steps} if spec is not None else {})
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._deps: dict[str, tuple[str, ...]] = {}
        self._graph: dict[str, tuple[str, ...]] | None = None

    def _mine(self, run: Any) -> bool:
        if run.run_id in self.run_ids:
            return True
        if run.parent_run_id in self.run_ids:
            self.run_ids.add(run.run_id)
            return True
        return False

    def _run_fields(self, run: Any) -> dict[str, Any]:
        """What both run events say of ``run``."""
        spec = self.spec if run.pipeline_id == getattr(self.spec, "name", None) else None
        if spec is None:
            graph: Mapping[str, tuple[str, ...]] = _NO_GRAPH
        else:
            if self._graph is None:  # the DAG, once per listener
                self._graph = {s.name: tuple(s.all_dependencies) for s in spec.steps}
            graph = self._graph
        return {
            "run_id": run.run_id, "pipeline": run.pipeline_id,
            "started_at": run.start_time or datetime.now(UTC), "params": run.parameters,
            "description": getattr(spec, "description", "") or "", "graph": graph,
            "parent_run_id": run.parent_run_id,
            "resumed_from": self.resumed_from if spec is not None else None,
            "pipeline_file": self.pipeline_file, "executor": self.executor,
            "host": self.host, "pid": self.pid,
        }

    @hookimpl
    def pipectl_run_start(self, run: Any) -> None:
        if self._mine(run):
            self.record(self.events.RunStarted(**self._run_fields(run)))

    @hookimpl
    def pipectl_step_start(self, run: Any, step: Any, attempt: int) -> None:
        if run.run_id in self.run_ids:
            self.record(self.events.StepStarted(
                run_id=run.run_id, step_name=step.name, step_type=step.step_type,
                attempt=attempt, started_at=datetime.now(UTC)))

    @hookimpl
    def pipectl_step_retry(self, run: Any, step: Any, attempt: int, error: BaseException,
                           delay: float) -> None:
        if run.run_id in self.run_ids:
            from pipectl.log import redact, secrets_var

            text = f"{type(error).__name__}: {error}"
            secrets = secrets_var().get()
            self.record(self.events.StepRetrying(
                run_id=run.run_id, step_name=step.name, attempt=attempt,
                error=redact(text, secrets) if secrets else text, delay=delay))

    @hookimpl
    def pipectl_step_finish(self, run: Any, step: Any, result: Any) -> None:
        if run.run_id not in self.run_ids:
            return
        output = result.output
        blob = None
        in_store = False
        if (output is not None and self.store_outputs and result.status.value == "success"
                and getattr(step, "store_output", True)):  # store_output=False: never pickled
            if getattr(output, "pipectl_stored", False) is True:
                in_store = True  # e.g. written by a dask worker, where it stayed
            else:
                try:
                    blob = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - not picklable: resume runs the step again
                    blob = None
                if blob is not None and _holds_secret(blob):
                    blob = None  # a secret is never stored in clear: resume runs the step again
        main = self.spec is not None and run.pipeline_id == self.spec.name
        inputs = None
        if result.attempts:  # it ran: what it was given, summarized by the writer
            deps = self._deps.get(step.name)
            if deps is None:
                deps = self._deps[step.name] = step.all_dependencies
            if deps:
                steps = run.steps
                inputs = {d: steps[d].output for d in deps if d in steps}
        from pipectl.log import secrets_var

        self.record(self.events.StepFinished(
            run_id=run.run_id, step=step, result=result, pickled_output=blob,
            output_in_store=in_store,
            fingerprint=self.fingerprints.get(step.name) if main else None, inputs=inputs,
            secrets=secrets_var().get()))

    @hookimpl
    def pipectl_run_finish(self, run: Any) -> None:
        if run.run_id not in self.run_ids:
            return
        for name, result in run.steps.items():
            outcome = getattr(result, "rollback", None)
            if outcome is not None:  # what the rollbacks did, in the step rows
                self.record(self.events.StepRolledBack(
                    run_id=run.run_id, step_name=name, status=result.status, outcome=outcome))
        if run.status.value == "success":
            for step_name, state in (run.extractor_state or {}).items():
                if state is not None:
                    self.record(self.events.ExtractorStateSaved(
                        run_id=run.run_id, pipeline=run.pipeline_id, step_name=step_name,
                        state=state, saved_at=datetime.now(UTC)))
        self.record(self.events.RunFinished(
            **self._run_fields(run), status=run.status, finished_at=run.end_time,
            duration_ms=run.duration_ms, records_processed=run.records_processed,
            errors=tuple(run.errors)))


_NO_GRAPH: Mapping[str, tuple[str, ...]] = {}  # a sub-pipeline run's (its steps are not listed)


@functools.lru_cache(maxsize=8)
def _cut_secrets(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """The beginnings (3 characters or more) of ``secrets`` where a summary was cut: at the end
    of a JSON string (``"``) or before a cut mark (``…``)."""
    starts = sorted({s[:k] for s in secrets for k in range(3, len(s))}, key=len, reverse=True)
    if not starts:
        return re.compile(r"(?!)")
    return re.compile(f"(?:{'|'.join(map(re.escape, starts))})(?=[\"…])")


def _holds_secret(blob: bytes) -> bool:
    """Whether a pickled output holds the value of one of the running pipeline's secret params
    (pickle keeps strings as UTF-8, inside containers too)."""
    from pipectl.log import secrets_var

    secrets = secrets_var().get()
    return bool(secrets) and any(value.encode("utf-8", "surrogatepass") in blob
                                 for value in secrets)


def step_row(run_id: str, step: Any, result: Any, fingerprint: str | None) -> dict[str, Any]:
    """The ``step_executions`` row of a finished step (``metadata_dict`` still a dict)."""
    meta: dict[str, Any] = {}
    if result.reason:
        meta["reason"] = _clip(result.reason, SUMMARY_CHARS)
    if step.description:
        meta["description"] = _clip(step.description, SUMMARY_CHARS)
    if step.allow_failure:
        meta["allow_failure"] = True
    output = result.output
    data = output if output is not None else getattr(result.exception, "result", None)
    reports = getattr(data, "outputs", None)  # a data step's, also when it failed
    if isinstance(reports, Mapping):
        meta["outputs"] = {name: _Bounded(SUMMARY_CHARS)(r.as_dict())
                           for name, r in reports.items()}
        meta["bad_records"] = getattr(data, "bad_records", 0)
        meta["dead_letter_path"] = getattr(data, "dead_letter_path", None)
    if getattr(result, "resumed_from", None):
        meta["resumed"] = result.resumed_from
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    if output is None and result.status.value == "success":
        meta["output_none"] = True
    return {
        "execution_id": run_id, "step_id": step.name, "step_name": step.name,
        "step_type": step.step_type, "status": result.status.value,
        "started_at": _iso(result.started_at), "completed_at": _iso(result.finished_at),
        "execution_time_ms": result.duration_ms, "retry_count": max(result.attempts - 1, 0),
        "error_message": _clip(result.error, TEXT_CHARS),
        "traceback": _clip(result.traceback, TEXT_CHARS),
        "output_data": None if output is None else _json(summarize(output)),
        "records": result.records, "metadata_dict": meta,
    }

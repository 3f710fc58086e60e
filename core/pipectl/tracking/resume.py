"""Resume: what identifies a step's definition (:func:`fingerprint`), the outputs a resume of a
run takes from it (:func:`resume_outputs`), and the claim transactions that let one run, and
only one, resume another (:func:`claim`, :func:`release_claim`, for the SQL trackers)."""

from __future__ import annotations

import hashlib
import inspect
import json
import socket
import weakref
from collections.abc import Mapping
from typing import Any

from pipectl.loads import pid_alive
from pipectl.tracking.contract import ResumableTracker, Tracker, require_resume
from pipectl.tracking.dialect import SQLDialect, dialect_sql
from pipectl.tracking.errors import ResumeClaimed, ResumeRefused, TrackerError
from pipectl.tracking.reads import fetch_one, live_status
from pipectl.tracking.serialize import now_iso

__all__ = [
    "claim",
    "fingerprint",
    "item_fingerprint",
    "parse_item_fingerprint",
    "release_claim",
    "resume_outputs",
]

#: How many times a resume of ``latest`` looks for the latest run again when the one it found
#: was resumed meanwhile (by a run that has ended since, and so is the latest now).
_LATEST_ATTEMPTS = 10


def _resolve_and_claim(
    tracker: ResumableTracker, pipeline: str, run_id: str, claim_for: str | None
) -> str:
    """The run to resume (``run_id``: ``latest`` or an id), checked to belong to ``pipeline``
    and to have ended; claimed for the run ``claim_for`` when given (see
    :meth:`pipectl.tracking.SQLTracker.claim_resume`)."""
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
    raise TrackerError(
        f"the latest run of pipeline {pipeline!r} kept changing while it was "
        "being claimed for a resume: try again"
    )


def resume_outputs(
    tracker: Tracker, spec: Any, run_id: str, *, force: bool = False, claim_for: str | None = None
) -> tuple[str, dict[str, Any], dict[Any, Any]]:
    """(the resolved run id, the outputs of the steps a resume of it does not run again, and
    the run state to start from).

    ``run_id`` is a run id (or the start of one), or ``latest``: the latest run of the
    pipeline that ended, including one whose process died (``interrupted``), not one still
    running. A run given by id that is still running raises :class:`RunInProgress`.

    With ``claim_for`` (the id of the run about to resume it), the old run is claimed for it
    first (:meth:`pipectl.tracking.SQLTracker.claim_resume`): while another run resumes it,
    or after one resumed it successfully, :class:`ResumeClaimed` is raised. The claim is released when this raises;
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


def _resume_outputs(
    tracker: ResumableTracker, spec: Any, old: str, force: bool
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
            if getattr(step, "map", None) is not None and all(
                dep in taken for dep in graph.dependencies[name]
            ):  # a mapped step runs again: its items that succeeded are taken
                items = _resume_items(tracker, states, old, name, fingerprint(step))
                if items is not None:
                    run_state[("map-items", name)] = items
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


def _resume_items(
    tracker: ResumableTracker, states: Mapping[str, Any], old: str, name: str, fp: str
) -> tuple[int, dict[int, Any]] | None:
    """The items of mapped step ``name`` that succeeded in run ``old`` with a stored output
    and the step's current fingerprint: ``(count, {index: output})`` (the engine takes them
    when the step has ``count`` items again), or None."""
    prefix = name + "["
    count = None
    outputs: dict[int, Any] = {}
    for step_name, state in states.items():
        if not step_name.startswith(prefix) or state["status"] != "success":
            continue
        parsed = parse_item_fingerprint(state["fingerprint"], fp)
        if parsed is None or step_name != f"{name}[{parsed[0]}]":
            continue
        index, n = parsed
        if count is None:
            count = n
        elif n != count:
            continue
        if state["output_stored"] and tracker.results is not None:
            found, value = tracker.results.get(old, step_name)
            if not found:
                continue
        elif state["output_none"]:
            value = None
        else:
            continue
        outputs[index] = value
    return None if count is None or not outputs else (count, outputs)


# -- fingerprints of step definitions --------------------------------------------------------

_code_hashes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


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
        json.dumps(
            {k: v if isinstance(v, str) else v.text for k, v in step.inputs.items()}, sort_keys=True
        ),
        step.when.text if step.when is not None else "",
    ]
    if getattr(step, "map", None) is not None:  # (unmapped steps keep their fingerprints)
        parts.append(f"map:{step.map}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def item_fingerprint(fingerprint: str | None, index: Any, count: Any) -> str | None:
    """What identifies an item of a mapped step for resume (``fetch[3]``): the mapped step's
    fingerprint, the item's index and how many items there were. An item is taken from an
    earlier run only when all three match (:func:`parse_item_fingerprint`)."""
    return None if fingerprint is None else f"{fingerprint}[{index}/{count}]"


def parse_item_fingerprint(recorded: Any, fingerprint: str) -> tuple[int, int] | None:
    """``(index, count)`` of an item's recorded fingerprint when it is one of a mapped step
    whose fingerprint is ``fingerprint``, else None."""
    if not isinstance(recorded, str) or not recorded.startswith(fingerprint + "["):
        return None
    index, _, count = recorded[len(fingerprint) + 1 : -1].partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        return None


# -- one resumer per run (the SQL trackers' claims) --------------------------------------------


def claim(
    conn: Any,
    dialect: SQLDialect,
    run_id: str,
    by_run_id: str,
    host: str,
    pid: int,
    take_over_finished: bool,
) -> ResumeClaimed | None:
    """One claim transaction on ``conn``: insert the claim unless there is one, else take over
    a claim left by a run that ended without success; the refusal, or None when claimed (see
    :meth:`pipectl.tracking.SQLTracker.claim_resume`)."""
    dialect.begin_write(conn)
    cur = conn.cursor()
    try:
        now = now_iso()
        cur.execute(
            dialect_sql(
                dialect,
                "INSERT INTO resume_claims (execution_id, claimed_by, host, pid, claimed_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (execution_id) DO NOTHING",
            ),
            (run_id, by_run_id, host, pid, now),
        )
        held = fetch_one(
            cur,
            dialect_sql(
                dialect, "SELECT claimed_by, host, pid FROM resume_claims WHERE execution_id = ?"
            ),
            (run_id,),
        )
        refusal = None
        if held is not None and held["claimed_by"] != by_run_id:
            state, holder, through, status, recorded = _claim_state(cur, dialect, held)
            if state in ("active", "succeeded") or (recorded and not take_over_finished):
                refusal = ResumeClaimed(
                    run_id,
                    holder["claimed_by"],
                    holder["host"],
                    holder["pid"],
                    state if state != "ended" else "finished",
                    through,
                    status,
                )
            else:  # only if nobody took it over since it was read
                cur.execute(
                    dialect_sql(
                        dialect,
                        "UPDATE resume_claims SET claimed_by = ?, host = ?, pid = ?, "
                        "claimed_at = ? WHERE execution_id = ? AND claimed_by = ?",
                    ),
                    (by_run_id, host, pid, now, run_id, held["claimed_by"]),
                )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return refusal


def _claim_state(
    cur: Any, dialect: SQLDialect, held: dict[str, Any]
) -> tuple[str, dict[str, Any], list[str], str, bool]:
    """(``active``, ``succeeded`` or ``ended``, the claim that decides it, the runs between,
    the status of its run, whether the first claimant's run is recorded) for a claim,
    following the resumes of its run when it ended without success."""
    through: list[str] = []
    recorded: bool | None = None
    while True:
        holder = held["claimed_by"]
        row = fetch_one(
            cur,
            dialect_sql(
                dialect, "SELECT status, host, pid FROM pipeline_executions WHERE execution_id = ?"
            ),
            (holder,),
        )
        if recorded is None:
            recorded = row is not None
        if row is not None:
            status = live_status(row)
        elif (
            held["host"] == socket.gethostname() and held["pid"] and not pid_alive(int(held["pid"]))
        ):
            status = "interrupted"  # killed before its run was recorded
        else:
            status = "running"  # about to start (or on another host)
        if status == "running":
            return "active", held, through, status, recorded
        if status == "success":
            return "succeeded", held, through, status, recorded
        # it ended without success: is a resume of it under way (or done)?
        later = fetch_one(
            cur,
            dialect_sql(
                dialect, "SELECT claimed_by, host, pid FROM resume_claims WHERE execution_id = ?"
            ),
            (holder,),
        )
        if later is None or later["claimed_by"] in through or len(through) > 1000:
            return "ended", held, through, status, recorded
        through.append(holder)
        held = later


def release_claim(conn: Any, dialect: SQLDialect, run_id: str, by_run_id: str) -> None:
    """One transaction on ``conn`` dropping ``by_run_id``'s claim on the resume of ``run_id``
    (nothing if it holds none)."""
    dialect.begin_write(conn)
    try:
        conn.cursor().execute(
            dialect_sql(
                dialect, "DELETE FROM resume_claims WHERE execution_id = ? AND claimed_by = ?"
            ),
            (run_id, by_run_id),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise

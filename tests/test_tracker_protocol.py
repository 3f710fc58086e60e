"""A tracker written from the protocol alone (pipectl.tracking.Tracker and its events, no SQL,
nothing of SQLTracker): runs kept as JSON lines in one file, one line per event. It passes
the tracker contract suite, records real runs (``pipe.run`` and ``pipectl run``, registered
through a plugin's ``pipectl_register_trackers``), and is read by ``pipectl runs`` and
``pipectl story``. The SQLite tracker runs the same suite against itself here."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipectl import Pipeline, RunStatus, hookimpl
from pipectl.testing import check_tracker_contract
from pipectl.tracking import (
    ExtractorStateSaved,
    PrunableTracker,
    PrunedRuns,
    ResultStore,
    ResumableTracker,
    ResumeClaimed,
    RunEvent,
    RunFinished,
    RunInProgress,
    RunStarted,
    SqliteTracker,
    StepFinished,
    StepRetrying,
    StepRolledBack,
    StepStarted,
    Tracker,
    TrackerError,
    TrackerEvent,
    open_tracker,
)

# -- the tracker --------------------------------------------------------------------------------


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _mask(text: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(text, str):
        for secret in secrets:
            text = text.replace(secret, "***")
    return text


class JsonLinesRuns:
    """A :class:`Tracker` (no resume, no prune): every event one line of ``PATH`` (URL
    ``jsonl:///PATH``), appended under a lock as it comes; reads fold the lines again."""

    def __init__(self, url: str):
        if not url.startswith("jsonl://") or len(url) <= len("jsonl://"):
            raise TrackerError(f"tracker {url!r}: a jsonl tracker URL is jsonl:///path")
        self.url = url
        self.path = Path(url[len("jsonl://") :])
        self.display = str(self.path)
        self.results: ResultStore | None = None
        self._lock = threading.Lock()

    # writing

    def migrate(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        return 1

    def _append(self, *items: dict[str, Any]) -> None:
        data = "".join(json.dumps(i, default=repr) + "\n" for i in items).encode()
        with self._lock, self._locked():
            with self.path.open("ab") as f:
                f.write(data)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Every process's writes and read-then-writes, one at a time."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, event: TrackerEvent) -> None:
        if isinstance(event, RunEvent):
            line = {
                "kind": "run",
                "run_id": event.run_id,
                "pipeline": event.pipeline,
                "started_at": _iso(event.started_at),
                "params": dict(event.params),
                "description": event.description,
                "graph": {k: list(v) for k, v in event.graph.items()},
                "parent_run_id": event.parent_run_id,
                "resumed_from": event.resumed_from,
                "pipeline_file": event.pipeline_file,
                "executor": event.executor,
                "host": event.host,
                "pid": event.pid,
                "status": "running",
            }
            if isinstance(event, RunFinished):
                line.update(
                    status=event.status.value,
                    finished_at=_iso(event.finished_at),
                    duration_ms=event.duration_ms,
                    records_processed=event.records_processed,
                    errors=list(event.errors),
                )
        elif isinstance(event, StepStarted):
            line = {
                "kind": "start",
                "run_id": event.run_id,
                "step": event.step_name,
                "step_type": event.step_type,
                "attempt": event.attempt,
                "started_at": _iso(event.started_at),
            }
        elif isinstance(event, StepRetrying):
            line = {
                "kind": "retry",
                "run_id": event.run_id,
                "step": event.step_name,
                "attempt": event.attempt,
                "error": event.error,
                "delay": event.delay,
            }
        elif isinstance(event, StepFinished):
            line = self._finished(event)
        elif isinstance(event, StepRolledBack):
            line = {
                "kind": "rollback",
                "run_id": event.run_id,
                "step": event.step_name,
                "status": event.status.value,
                "outcome": dict(event.outcome),
            }
        elif isinstance(event, ExtractorStateSaved):
            line = {
                "kind": "state",
                "run_id": event.run_id,
                "pipeline": event.pipeline,
                "step": event.step_name,
                "state": event.state,
                "saved_at": _iso(event.saved_at),
            }
        else:
            raise TypeError(f"not a tracker event: {event!r}")
        self._append(line)

    def _finished(self, event: StepFinished) -> dict[str, Any]:
        result, secrets = event.result, event.secrets
        stored = event.output_in_store
        if event.pickled_output is not None and self.results is not None:
            self.results.put(event.run_id, event.step_name, event.pickled_output)
            stored = True
        output = None if result.output is None else repr(result.output)[:200]
        return {
            "kind": "finish",
            "run_id": event.run_id,
            "step": event.step_name,
            "step_type": event.step.step_type,
            "status": event.status.value,
            "started_at": _iso(result.started_at),
            "finished_at": _iso(result.finished_at),
            "duration_ms": result.duration_ms,
            "attempts": result.attempts,
            "error": _mask(result.error, secrets),
            "traceback": _mask(result.traceback, secrets),
            "reason": result.reason,
            "records": result.records,
            "output": _mask(output, secrets),
            "resumed_from": result.resumed_from,
            "fingerprint": event.fingerprint,
            "output_stored": stored,
            "output_none": event.output_none,
            "committed": list(event.committed_outputs),
        }

    def flush(self, timeout: float | None = None) -> bool:
        return True  # every event is written when recorded

    def close(self, report: bool = True) -> list[str]:
        return []

    # reading: the lines folded into runs

    def _lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TrackerError(f"tracker {self.display}: no such file") from None
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _runs(self) -> dict[str, dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        for line in self._lines():
            kind = line["kind"]
            if kind == "run":
                run = runs.setdefault(line["run_id"], {"steps": {}})
                run.update({k: v for k, v in line.items() if k not in ("kind", "started_at")})
                run.setdefault("started_at", line["started_at"])
            elif kind in ("start", "retry", "finish", "rollback"):
                run = runs.setdefault(line["run_id"], {"steps": {}})
                step = run["steps"].setdefault(line["step"], {"history": []})
                if kind == "start":
                    step["history"].append(
                        {"attempt": line["attempt"], "started_at": line["started_at"]}
                    )
                    step.setdefault("started_at", line["started_at"])
                    step.update(
                        step_type=line["step_type"], status="running", attempts=line["attempt"]
                    )
                elif kind == "retry":
                    for entry in step["history"]:
                        if entry["attempt"] == line["attempt"]:
                            entry["error"] = line["error"]
                elif kind == "finish":
                    step.update({k: v for k, v in line.items() if k not in ("kind", "run_id")})
                else:
                    step.update(status=line["status"], rollback=line["outcome"])
        for run in runs.values():
            if (
                run.get("status") == "running"
                and run.get("host") == socket.gethostname()
                and not _alive(run.get("pid"))
            ):
                run["status"] = "interrupted"
        return runs

    def _row(self, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
        errors = run.get("errors") or []
        return {
            "execution_id": run_id,
            "pipeline_name": run.get("pipeline"),
            "status": run.get("status"),
            "started_at": run.get("started_at"),
            "completed_at": run.get("finished_at"),
            "execution_time_ms": run.get("duration_ms"),
            "records_processed": run.get("records_processed", 0),
            "error_message": "; ".join(errors) or None,
            "resumed_from": run.get("resumed_from"),
            "host": run.get("host"),
            "pid": run.get("pid"),
        }

    def _newest(self, pipeline: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return sorted(
            (
                (i, r)
                for i, r in self._runs().items()
                if "pipeline" in r and (pipeline is None or r["pipeline"] == pipeline)
            ),
            key=lambda item: item[1]["started_at"],
            reverse=True,
        )

    def list_runs(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        rows = [self._row(i, r) for i, r in self._newest(pipeline)]
        return [r for r in rows if status is None or r["status"] == status][:limit]

    def resolve(self, run_id: str, pipeline: str | None = None, *, finished: bool = False) -> str:
        if finished:
            raise TrackerError(f"tracker {self.display} cannot resume runs")
        runs = self._newest(pipeline)
        if run_id == "latest":
            if not runs:
                raise TrackerError(f"no run of pipeline {pipeline!r} in {self.display}")
            return runs[0][0]
        found = [i for i, _ in runs if i.startswith(run_id)]
        if run_id in found:
            return run_id
        if len(found) != 1:
            raise TrackerError(
                f"no run {run_id!r} in {self.display}"
                if not found
                else f"run id {run_id!r} is ambiguous"
            )
        return found[0]

    def pipeline_of(self, run_id: str) -> str | None:
        return self._runs().get(run_id, {}).get("pipeline")

    def get_run(self, run_id: str, pipeline: str | None = None) -> dict[str, Any]:
        run_id = self.resolve(run_id, pipeline)
        run = self._runs()[run_id]
        order = {name: i for i, name in enumerate(run.get("graph") or {})}
        steps = sorted(run["steps"].items(), key=lambda item: order.get(item[0], len(order)))
        return {
            "run_id": run_id,
            "pipeline": run["pipeline"],
            "description": run.get("description", ""),
            "status": run["status"],
            "started_at": run["started_at"],
            "finished_at": run.get("finished_at"),
            "duration_ms": run.get("duration_ms"),
            "params": run.get("params", {}),
            "records_processed": run.get("records_processed", 0),
            "error": "; ".join(run.get("errors") or []) or None,
            "errors": run.get("errors") or [],
            "resumed_from": run.get("resumed_from"),
            "parent_run_id": run.get("parent_run_id"),
            "host": run.get("host"),
            "pid": run.get("pid"),
            "executor": run.get("executor"),
            "pipeline_file": run.get("pipeline_file"),
            "graph": run.get("graph") or {},
            "steps": [
                {
                    "step_id": name,
                    "step_name": name,
                    "step_type": s.get("step_type"),
                    "status": s.get("status"),
                    "started_at": s.get("started_at"),
                    "completed_at": s.get("finished_at"),
                    "execution_time_ms": s.get("duration_ms"),
                    "attempts": s.get("attempts", 0),
                    "retry_count": max(s.get("attempts", 0) - 1, 0),
                    "error_message": s.get("error"),
                    "traceback": s.get("traceback"),
                    "reason": s.get("reason"),
                    "records": s.get("records"),
                    "attempt_history": s["history"],
                    "input_summary": None,
                    "output_summary": s.get("output"),
                    "resumed_from": s.get("resumed_from"),
                    "rollback": s.get("rollback"),
                }
                for name, s in steps
            ],
        }

    def extractor_states(self, pipeline: str) -> dict[str, Any]:
        return {
            line["step"]: line["state"]
            for line in self._lines()
            if line["kind"] == "state" and line["pipeline"] == pipeline
        }


class JsonLinesTracker(JsonLinesRuns):
    """A :class:`ResumableTracker` and :class:`PrunableTracker`: outputs in a
    :class:`ResultStore` beside the file, resume claims as lines of the file too."""

    def __init__(self, url: str):
        super().__init__(url)
        self.results = ResultStore(self.path.parent / "results")

    def resolve(self, run_id: str, pipeline: str | None = None, *, finished: bool = False) -> str:
        if not finished:
            return super().resolve(run_id, pipeline)
        if run_id == "latest":
            row = self.latest_finished(pipeline)
            if row is None:
                raise TrackerError(f"no run of pipeline {pipeline!r} has ended")
            return row["execution_id"]
        run_id = super().resolve(run_id)
        run = self._runs()[run_id]
        if run["status"] == "running":
            raise RunInProgress(
                run_id, run.get("host"), run.get("pid"), f"run {run_id} is still running"
            )
        return run_id

    def latest_finished(self, pipeline: str | None = None) -> dict[str, Any] | None:
        for run_id, run in self._newest(pipeline):
            if run["status"] != "running":
                return {
                    "execution_id": run_id,
                    "status": run["status"],
                    "started_at": run["started_at"],
                    "host": run.get("host"),
                    "pid": run.get("pid"),
                }
        return None

    def step_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "status": s.get("status"),
                "fingerprint": s.get("fingerprint"),
                "output_stored": bool(s.get("output_stored")),
                "output_none": bool(s.get("output_none")),
                "committed": s.get("committed", []),
            }
            for name, s in self._runs().get(run_id, {"steps": {}})["steps"].items()
        }

    def load_run(self, run_id: str) -> str:
        runs, seen = self._runs(), {run_id}
        while (earlier := runs.get(run_id, {}).get("resumed_from")) and earlier not in seen:
            seen.add(earlier)
            run_id = earlier
        return run_id

    def _claims(self) -> dict[str, dict[str, Any]]:
        claims: dict[str, dict[str, Any]] = {}
        for line in self._lines():
            if line["kind"] == "claim":
                claims[line["of"]] = line
            elif line["kind"] == "release" and claims.get(line["of"], {}).get("by") == line["by"]:
                del claims[line["of"]]
        return claims

    def claim_resume(self, run_id: str, by_run_id: str, *, take_over_finished: bool = True) -> None:
        with self._lock, self._locked():  # read, decide and write: one process at a time
            claim = self._claims().get(run_id)
            if claim is not None and claim["by"] != by_run_id:
                holder = self._runs().get(claim["by"])
                if holder is None:
                    status = "running" if _alive(claim["pid"]) else "interrupted"
                else:
                    status = holder["status"]
                if status in ("running", "success") or (
                    holder is not None and not take_over_finished
                ):
                    state = {"running": "active", "success": "succeeded"}.get(status, "finished")
                    raise ResumeClaimed(
                        run_id, claim["by"], claim["host"], claim["pid"], state, status=status
                    )
            with self.path.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "kind": "claim",
                            "of": run_id,
                            "by": by_run_id,
                            "host": socket.gethostname(),
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )

    def release_resume(self, run_id: str, by_run_id: str) -> None:
        self._append({"kind": "release", "of": run_id, "by": by_run_id})

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | None = None,
        pipeline: str | None = None,
        dry_run: bool = False,
    ) -> PrunedRuns:
        if keep is None and older_than is None:
            raise ValueError("prune needs keep, older_than or both")
        cutoff = (
            datetime.now(UTC) - timedelta(seconds=older_than) if older_than is not None else None
        )
        with self._lock, self._locked():
            runs = self._runs()
            # a run goes with its sub-pipeline runs and its chain of resumes, or stays with them
            group = {run_id: run_id for run_id in runs}

            def root(run_id: str) -> str:
                while group[run_id] != run_id:
                    run_id = group[run_id]
                return run_id

            for run_id, run in runs.items():
                for other in (run.get("parent_run_id"), run.get("resumed_from")):
                    if other in runs:
                        group[root(run_id)] = root(other)
            groups: dict[str, list[str]] = {}
            for run_id in runs:
                groups.setdefault(root(run_id), []).append(run_id)
            by_pipeline: dict[str, list[list[str]]] = {}
            for ids in groups.values():
                tops = [i for i in ids if runs[i].get("parent_run_id") not in runs]
                by_pipeline.setdefault(runs[tops[0]]["pipeline"], []).append(ids)
            chosen: list[str] = []
            for name, members in by_pipeline.items():
                members.sort(key=lambda ids: max(runs[i]["started_at"] for i in ids), reverse=True)
                for ids in members[keep:] if keep is not None else members:
                    old = cutoff is None or all(
                        datetime.fromisoformat(runs[i]["started_at"]) < cutoff for i in ids
                    )
                    if (
                        (pipeline is None or name == pipeline)
                        and old
                        and all(runs[i]["status"] != "running" for i in ids)
                    ):
                        chosen.extend(ids)
            chosen.sort(key=lambda i: runs[i]["started_at"])
            pruned = PrunedRuns(chosen)
            pruned.runs = {
                i: {
                    "pipeline_name": runs[i]["pipeline"],
                    "status": runs[i]["status"],
                    "started_at": runs[i]["started_at"],
                    "resumed_from": runs[i].get("resumed_from"),
                    "parent_execution_id": runs[i].get("parent_run_id"),
                }
                for i in chosen
            }
            if not dry_run and chosen:
                gone = set(chosen)
                kept = [
                    line
                    for line in self._lines()
                    if line.get("run_id") not in gone and line.get("of") not in gone
                ]
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(line) + "\n" for line in kept))
                os.replace(tmp, self.path)
        if not dry_run and self.results is not None:
            for run_id in chosen:
                self.results.delete_run(run_id)
        return pruned


class Plugin:
    """A plugin registering both: ``jsonl://`` (resume and prune) and ``jsonl-runs://``."""

    @hookimpl
    def pipectl_register_trackers(self, register: Any) -> None:
        register("jsonl", JsonLinesTracker)
        register("jsonl-runs", lambda url: JsonLinesRuns("jsonl://" + url.split("://", 1)[1]))


# -- the contract -------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    return tmp_path


def test_a_tracker_from_the_protocol_alone_keeps_the_contract(home: Path) -> None:
    tracker = JsonLinesTracker(f"jsonl://{home / 'runs.jsonl'}")
    assert isinstance(tracker, ResumableTracker) and isinstance(tracker, PrunableTracker)
    check_tracker_contract(lambda: JsonLinesTracker(f"jsonl://{home / 'runs.jsonl'}"))


def test_a_tracker_without_resume_or_prune_keeps_the_contract(home: Path) -> None:
    tracker = JsonLinesRuns(f"jsonl://{home / 'runs.jsonl'}")
    assert isinstance(tracker, Tracker) and not isinstance(tracker, ResumableTracker)
    check_tracker_contract(lambda: JsonLinesRuns(f"jsonl://{home / 'runs.jsonl'}"))


def test_the_sqlite_tracker_keeps_the_contract(home: Path) -> None:
    check_tracker_contract(lambda: SqliteTracker(f"sqlite:///{home / 'runs.db'}"))


def test_the_contract_says_what_a_tracker_got_wrong(home: Path) -> None:
    class Leaky(JsonLinesTracker):  # records a step's error without masking the secrets
        def _finished(self, event: StepFinished) -> dict[str, Any]:
            line = super()._finished(event)
            line["output"] = repr(event.result.output)
            return line

    with pytest.raises(
        AssertionError, match="tracker contract: the record of the run holds a secret param's value"
    ):
        check_tracker_contract(lambda: Leaky(f"jsonl://{home / 'runs.jsonl'}"))

    class Unordered(JsonLinesTracker):  # list_runs oldest first
        def list_runs(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return super().list_runs(*args, **kwargs)[::-1]

    with pytest.raises(AssertionError, match="list_runs\\(\\) is not newest first"):
        check_tracker_contract(lambda: Unordered(f"jsonl://{home / 'other.jsonl'}"))

    class NoRecord:
        results = None

    with pytest.raises(AssertionError, match="it has no migrate, record, flush"):
        check_tracker_contract(NoRecord)


# -- real runs through a plugin -----------------------------------------------------------------

STEPS = """
from pathlib import Path


def extract(params):
    return [{"id": i} for i in range(params["n"])]


def publish(extract):
    if not Path("ready").exists():
        raise RuntimeError(f"cannot publish {len(extract)} rows: not ready")
    return len(extract)
"""

PIPELINE = """
name: proto
params:
  n: {type: int, default: 3}
steps:
  - {name: extract, run: "proto_steps:extract"}
  - {name: publish, run: "proto_steps:publish", depends_on: [extract]}
"""


@pytest.fixture
def project(home: Path, monkeypatch: pytest.MonkeyPatch, register_plugin: Any) -> Path:
    (home / "proto_steps.py").write_text(textwrap.dedent(STEPS))
    (home / "pipeline.yaml").write_text(textwrap.dedent(PIPELINE))
    monkeypatch.chdir(home)
    monkeypatch.syspath_prepend(str(home))
    record = register_plugin(Plugin(), "jsonl-tracker")
    assert record.status == "loaded", record.error
    return home


def test_pipectl_run_records_a_run_in_it_and_resumes_it(project: Path, run_cli: Any) -> None:
    url = f"jsonl://{project / 'runs' / 'runs.jsonl'}"
    failed = run_cli("run", "pipeline.yaml", "--tracker", url, "--no-progress")
    assert failed.exit_code == 1, failed.output
    assert "resume it with: pipectl run pipeline.yaml --resume" in failed.output

    shown = run_cli("runs", "list", "--tracker", url)
    assert shown.exit_code == 0 and "proto" in shown.output and "failed" in shown.output
    record = json.loads(run_cli("runs", "show", "latest", "--json", "--tracker", url).output)
    assert record["status"] == "failed" and record["params"] == {"n": 3}
    assert [(s["step_name"], s["status"]) for s in record["steps"]] == [
        ("extract", "success"),
        ("publish", "failed"),
    ]
    assert "cannot publish 3 rows" in record["steps"][1]["error_message"]

    (project / "ready").touch()
    resumed = run_cli(
        "run", "pipeline.yaml", "--tracker", url, "--resume", "latest", "--no-progress"
    )
    assert resumed.exit_code == 0, resumed.output
    again = json.loads(run_cli("runs", "show", "latest", "--json", "--tracker", url).output)
    assert again["status"] == "success" and again["resumed_from"] == record["run_id"]
    steps = {s["step_name"]: s for s in again["steps"]}
    assert steps["extract"]["resumed_from"] == record["run_id"]  # from the result store
    assert steps["publish"]["status"] == "success" and steps["publish"]["attempts"] == 1

    story = run_cli("story", again["run_id"], "--format", "md", "--tracker", url)
    assert story.exit_code == 0, story.output
    pruned = run_cli("runs", "prune", "--keep", "1", "--tracker", url)
    assert pruned.exit_code == 0, pruned.output
    assert "no runs to delete" in pruned.output  # a resume chain: one group, the latest


def test_a_tracker_without_resume_says_so(project: Path, run_cli: Any) -> None:
    url = f"jsonl-runs://{project / 'runs.jsonl'}"
    assert run_cli("run", "pipeline.yaml", "--tracker", url, "--no-progress").exit_code == 1
    refused = run_cli(
        "run", "pipeline.yaml", "--tracker", url, "--resume", "latest", "--no-progress"
    )
    assert refused.exit_code == 2
    assert "cannot resume runs (it has no latest_finished, step_states" in refused.output
    prune = run_cli("runs", "prune", "--keep", "1", "--tracker", url)
    assert prune.exit_code == 2 and "cannot delete runs (it has no prune)" in prune.output


def test_pipeline_run_opens_it_by_url(project: Path, plugin_manager: Any) -> None:
    url = f"jsonl://{project / 'runs.jsonl'}"
    pipe = Pipeline("by-url", plugin_manager=plugin_manager)
    pipe.add_step("one", lambda: 1)
    pipe.add_step("two", lambda one: one + 1, depends_on=["one"])
    run = pipe.run_sync(tracker=url)
    assert run.status is RunStatus.SUCCESS
    tracker = open_tracker(url, plugin_manager.registries)
    assert isinstance(tracker, JsonLinesTracker)
    record = tracker.get_run(run.run_id)
    assert [(s["step_name"], s["status"]) for s in record["steps"]] == [
        ("one", "success"),
        ("two", "success"),
    ]
    assert record["graph"] == {"one": [], "two": ["one"]}


def test_the_events_of_a_run_in_order(plugin_manager: Any, home: Path) -> None:
    events: list[TrackerEvent] = []

    class Collect(JsonLinesRuns):
        def record(self, event: TrackerEvent) -> None:
            events.append(event)
            super().record(event)

    tracker = Collect(f"jsonl://{home / 'runs.jsonl'}")
    tracker.migrate()
    tries = {"n": 0}

    def flaky() -> int:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("busy")
        return 2

    pipe = Pipeline("events", plugin_manager=plugin_manager)
    pipe.add_step("flaky", flaky, retries=1, retry_delay=0, retry_jitter=0)
    run = pipe.run_sync(tracker=tracker)
    assert run.ok
    assert [type(e).__name__ for e in events] == [
        "RunStarted",
        "StepStarted",
        "StepRetrying",
        "StepStarted",
        "StepFinished",
        "RunFinished",
    ]
    started, finished = events[0], events[-1]
    assert isinstance(started, RunStarted) and isinstance(finished, RunFinished)
    assert started.run_id == finished.run_id == run.run_id
    assert finished.status is RunStatus.SUCCESS and finished.graph == {"flaky": ()}
    retry = events[2]
    assert isinstance(retry, StepRetrying)
    assert (retry.attempt, retry.error) == (1, "ConnectionError: busy")
    done = events[4]
    assert isinstance(done, StepFinished)
    assert done.step_name == "flaky" and done.result.attempts == 2 and done.fingerprint
    assert done.pickled_output is None  # no result store: nothing pickled

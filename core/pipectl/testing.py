"""A test kit for plugin authors, loaded by pytest as the plugin ``pipectl`` (entry point pytest11).

Fixtures:

``plugin_manager``
    A fresh :class:`~pipectl.plugins.PipectlPluginManager` with the built-ins and no installed
    plugin (autoload off), so a test sees only what it registers.
``register_plugin``
    ``register_plugin(obj, name=None)`` registers a plugin object or module in
    ``plugin_manager`` for this test only and returns its
    :class:`~pipectl.plugins.PluginRecord` (check ``record.status``).
``hook_recorder``
    A :class:`HookRecorder` registered in ``plugin_manager``: every lifecycle hook call, in order.
``run_cli``
    ``run_cli(*args)`` runs the command line built from ``plugin_manager`` and returns click's
    ``Result`` (``exit_code``, ``output``).
``run_pipeline``
    ``run_pipeline(file, params=None, *, name=None, **run_options)`` loads a pipeline file as
    ``pipectl run`` does (its project's param defaults and env file, paths relative to the
    file; the installed plugins) and runs it, untracked unless ``tracker=`` says otherwise,
    with the pipectl home in a temporary folder; returns the
    :class:`~pipectl.model.PipelineRun`. For a project's own tests of its pipelines.

Contract checks:

:func:`check_executor_contract`
    Runs real pipelines on an executor: sync and async steps, outputs passed downstream,
    retries and timeouts (the engine keeps them, the executor runs each attempt), a failing
    step's error surfaced, ``fail_fast``, ``max_concurrent``, ``start``/``shutdown`` once per
    run.
:func:`check_extractor_contract`
    Reads an extractor directly and through the data-step runner: batches of dicts (sync or
    async), ``describe()``, ``batch_size`` when it takes it, incremental state.
:func:`check_output_contract`
    Runs an output plugin through the exactly-once contract of :mod:`pipectl.loads`: every
    record committed once with its load marker, a load found committed is skipped, the cursor
    comes back, an aborted attempt leaves nothing, a second commit of one load adds nothing.
:func:`check_tracker_contract`
    Runs a run tracker through the contract of :mod:`pipectl.tracking.contract`: real runs
    recorded (retries, a failure, a skipped step, a secret param) and read back, by id,
    prefix and ``latest``, from a second tracker on the same store too; resume and resume
    claims when it is a ``ResumableTracker``, retention when it is a ``PrunableTracker``.
:func:`check_browsable_tracker`
    Runs a ``BrowsableTracker`` through the reads of a web UI: thousands of runs paged
    through (ties on the start time), every filter and search, pipeline histories, step logs
    of a retried step, the runs related by a resume and a sub-pipeline, ``run_version``.
:func:`run_killed_at`
    Runs ``pipectl`` in a subprocess that SIGKILLs itself at a named fault point
    (:mod:`pipectl.faults`), for crash tests: kill it there, resume, count the records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pipectl.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.context import StepContext
    from pipectl.data import OutputReport
    from pipectl.model import CacheEvent, PipelineRun, RunPlan, StepResult, StepSpec

__all__ = [
    "HookCall",
    "HookRecorder",
    "check_browsable_tracker",
    "check_executor_contract",
    "check_extractor_contract",
    "check_output_contract",
    "check_tracker_contract",
    "run_killed_at",
]
# fixtures (pytest finds them through the entry point): plugin_manager, register_plugin,
# hook_recorder, run_cli, run_pipeline


class HookCall:
    """One recorded hook call: ``name`` and the keyword arguments it got."""

    __slots__ = ("name", "kwargs")

    def __init__(self, name: str, kwargs: dict[str, Any]):
        self.name = name
        self.kwargs = kwargs

    def __getattr__(self, key: str) -> Any:
        try:
            return self.kwargs[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def step_name(self) -> str | None:
        step = self.kwargs.get("step")
        return getattr(step, "name", None)

    def __repr__(self) -> str:
        extra = f" step={self.step_name!r}" if self.step_name else ""
        attempt = f" attempt={self.kwargs['attempt']}" if "attempt" in self.kwargs else ""
        return f"<HookCall {self.name}{extra}{attempt}>"


class HookRecorder:
    """A plugin recording every lifecycle listener hook call it sees, in order (register it on
    a plugin manager, or give it to one run: ``pipe.run(listeners=[recorder])``)."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append(HookCall(name, kwargs))

    @hookimpl
    def pipectl_run_start(self, run: PipelineRun) -> None:
        self._record("pipectl_run_start", run=run)

    @hookimpl
    def pipectl_run_finish(self, run: PipelineRun) -> None:
        self._record("pipectl_run_finish", run=run)

    @hookimpl
    def pipectl_step_start(self, run: PipelineRun, step: StepSpec, attempt: int) -> None:
        self._record("pipectl_step_start", run=run, step=step, attempt=attempt)

    @hookimpl
    def pipectl_step_retry(
        self, run: PipelineRun, step: StepSpec, attempt: int, error: BaseException, delay: float
    ) -> None:
        self._record(
            "pipectl_step_retry", run=run, step=step, attempt=attempt, error=error, delay=delay
        )

    @hookimpl
    def pipectl_step_finish(self, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        self._record("pipectl_step_finish", run=run, step=step, result=result)

    @hookimpl
    def pipectl_run_planned(self, run: PipelineRun, plan: RunPlan) -> None:
        self._record("pipectl_run_planned", run=run, plan=plan)

    @hookimpl
    def pipectl_step_cache(self, run: PipelineRun, step: StepSpec, event: CacheEvent) -> None:
        self._record("pipectl_step_cache", run=run, step=step, event=event)

    @hookimpl
    def pipectl_output_finish(
        self, run: PipelineRun, step: StepSpec, attempt: int, report: OutputReport
    ) -> None:
        self._record("pipectl_output_finish", run=run, step=step, attempt=attempt, report=report)

    @hookimpl
    def pipectl_rollback_start(self, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        self._record("pipectl_rollback_start", run=run, step=step, result=result)

    @hookimpl
    def pipectl_rollback_finish(
        self, run: PipelineRun, step: StepSpec, result: StepResult, error: BaseException | None
    ) -> None:
        self._record("pipectl_rollback_finish", run=run, step=step, result=result, error=error)

    def names(self) -> list[str]:
        """The hook names called, in order."""
        return [c.name for c in self.calls]

    def calls_for(self, name: str, step: str | None = None) -> list[HookCall]:
        """Calls of hook ``name`` (``pipectl_`` may be left out), optionally for one step."""
        if not name.startswith("pipectl_"):
            name = "pipectl_" + name
        return [c for c in self.calls if c.name == name and (step is None or c.step_name == step)]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def plugin_manager() -> Any:
    """A fresh plugin manager: built-ins only, no installed plugin."""
    from pipectl.plugins import get_plugin_manager

    return get_plugin_manager(autoload=False, entry_points=())


@pytest.fixture
def register_plugin(plugin_manager: Any) -> Iterator[Callable[..., Any]]:
    """``register_plugin(obj, name=None)``: register a plugin for this test only."""
    added: list[tuple[str, Any]] = []

    def register(plugin: Any, name: str | None = None) -> Any:
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{id(plugin):x}"
        record = plugin_manager.add_plugin(plugin, name)
        added.append((name, plugin))
        return record

    yield register
    for name, plugin in added:
        if plugin_manager.get_plugin(name) is plugin:  # not a name it failed to take
            plugin_manager.remove_plugin(name)


@pytest.fixture
def hook_recorder(register_plugin: Callable[..., Any]) -> HookRecorder:
    """A :class:`HookRecorder` registered in ``plugin_manager``."""
    recorder = HookRecorder()
    register_plugin(recorder, "hook-recorder")
    return recorder


@pytest.fixture
def run_cli(plugin_manager: Any) -> Callable[..., Any]:
    """``run_cli(*args, input=None, env=None)`` on a CLI freshly built from ``plugin_manager``."""
    from click.testing import CliRunner

    from pipectl.cli import build_cli

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
        runner = CliRunner()
        return runner.invoke(
            build_cli(plugin_manager), list(args), input=input, env=env, catch_exceptions=False
        )

    return run


@pytest.fixture
def run_pipeline(tmp_path_factory: Any, monkeypatch: Any) -> Callable[..., Any]:
    """``run_pipeline(file, params=None, *, name=None, **run_options)``: a pipeline file loaded
    as ``pipectl run`` loads it and run once; returns the run."""
    import os

    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path_factory.mktemp("pipectl-home")))

    def run(file: Any, params: Any = None, *, name: str | None = None, **run_options: Any) -> Any:
        from pipectl.pipeline import load_pipeline
        from pipectl.project import find_project

        project = find_project(file)
        for variable in project.load_env():  # undone after the test
            monkeypatch.setenv(variable, os.environ.pop(variable))
        pipe = load_pipeline(file, params, name=name, project=project)
        run_options.setdefault("tracker", "none")
        return pipe.run_sync(**run_options)

    return run


# -- the output contract ----------------------------------------------------------------------


def check_output_contract(
    make_output: Callable[[], Any],
    read: Callable[[], list[dict[str, Any]]],
    records: list[dict[str, Any]] | None = None,
) -> None:
    """Check an output against the exactly-once contract (raises AssertionError if it fails).

    ``make_output()`` returns a new output writing to one destination (the same each call, empty
    at first); ``read()`` returns the records in that destination now (any order). The records
    written default to 25 of ``{"id": int, "name": str}``; the destination may hold them with
    more columns, but these keys must read back as written.
    """
    import asyncio

    from pipectl.data import run_data_step
    from pipectl.loads import Load

    records = records or [{"id": i, "name": f"n{i}"} for i in range(25)]

    def held() -> list[tuple[Any, ...]]:
        keys = sorted(records[0])
        return sorted(tuple(r.get(k) for k in keys) for r in read())

    expected = sorted(tuple(r[k] for k in sorted(records[0])) for r in records)

    class Source:
        def __init__(self, cursor: int = 0):
            self.state = {"cursor": cursor}

        def set_state(self, state: Any) -> None:
            self.state = dict(state)

        def describe(self) -> str:
            return "contract records"

        def batches(self, ctx: Any) -> Any:
            assert records is not None  # set above (mypy does not narrow it in a class body)
            for start in range(0, len(records), 10):
                yield [dict(r) for r in records[start : start + 10]]
            self.state = {"cursor": self.state["cursor"] + len(records)}

    def load(run_id: str, load_run: str | None = None, fail: bool = False) -> Any:
        source = Source()
        if fail:

            def batches(ctx: Any) -> Any:
                yield [dict(r) for r in records[:10]]
                raise RuntimeError("the source broke")

            source.batches = batches  # type: ignore[method-assign]
        return asyncio.run(
            run_data_step(
                step="contract",
                extractor=source,
                outputs=[("out", make_output())],
                pipeline="contract",
                run_id=run_id,
                load_run=load_run,
            )
        )

    output = make_output()
    assert getattr(output, "guarantee", None) in ("transactional", "idempotent"), (
        "an output declares guarantee = 'transactional' or 'idempotent'"
    )
    assert isinstance(output.describe(), str), "describe() names the output in messages"
    for method in ("open", "write", "commit", "abort", "close", "loaded", "last_load"):
        assert callable(getattr(output, method, None)), f"an exactly-once output has {method}()"

    # an extraction that fails commits nothing
    try:
        load("run-failed", fail=True)
    except RuntimeError:
        pass
    else:  # pragma: no cover - the runner re-raises the extraction error
        raise AssertionError("a failed extraction must raise")
    assert held() == [], "a failed extraction left records in the destination"

    # an attempt aborted after writing leaves nothing and no marker
    output = make_output()
    probe = Load("contract", "run-aborted", "contract", "out")

    class Ctx:
        load = probe

    output.open(Ctx())
    output.write([dict(r) for r in records])
    output.abort()
    output.close()
    assert held() == [], "abort() left records in the destination"
    output = make_output()
    output.open(Ctx())
    try:
        assert output.loaded(probe) is None, "abort() left a load marker"
    finally:
        output.abort()
        output.close()

    # a load commits every record once, with its marker and the cursor
    result = load("run-1")
    assert result.outputs["out"].status == "committed", result.outputs["out"].error
    assert held() == expected, "the committed records are not the records written"
    output = make_output()
    first = Load("contract", "run-1", "contract", "out")
    output.open(Ctx())
    try:
        marker = output.loaded(first)
        assert marker is not None, "commit() did not commit the load's marker"
        assert marker.records == len(records), f"the marker says {marker.records} records"
        assert marker.committed_by == "run-1"
        last = output.last_load(first)
        assert last is not None and last.state == {"cursor": len(records)}, (
            f"last_load() does not give back the cursor committed with the load: {last!r}"
        )
    finally:
        output.abort()
        output.close()

    # a resume of that run finds the load and writes nothing
    again = load("run-2", load_run="run-1")
    report = again.outputs["out"]
    assert report.status == "skipped" and "already committed by run run-1" in (report.note or ""), (
        f"a load committed already was not skipped: {report!r}"
    )
    assert held() == expected, "a resumed load wrote records twice"

    # committing the same load a second time, past the check, adds nothing
    output = make_output()

    class Same:
        load = Load("contract", "run-1", "contract", "out", "run-3")

    output.open(Same())
    try:
        output.write([dict(r) for r in records])
        Same.load.records = len(records)
        output.commit()
    except Exception:  # noqa: BLE001 - refusing is what a transactional output does
        pass
    finally:
        output.close()
    assert held() == expected, "a second commit of one load wrote its records twice"


# -- the tracker contract ---------------------------------------------------------------------


def check_tracker_contract(make_tracker: Callable[[], Any], *, plugin_manager: Any = None) -> None:
    """Check a run tracker against the contract of :mod:`pipectl.tracking.contract` (raises
    AssertionError saying which rule it broke).

    ``make_tracker()`` returns a new tracker on one store (the same store each call, empty
    at first), as its plugin's ``pipectl_register_trackers`` factory would for one URL: the
    check calls ``migrate()`` itself. Real runs are recorded through it (``Pipeline.run``
    with the tracker: a step retried, a step failing with a secret param in its error, a
    step skipped), then read back with ``list_runs``, ``get_run``, ``resolve``,
    ``pipeline_of`` and ``extractor_states``, also from a second tracker on the same store
    after the first is closed. When the tracker is a
    :class:`~pipectl.tracking.ResumableTracker`, the failed run is resumed (steps with a
    stored output are not run again, a second resume of it is refused) and resume claims are
    checked; when it is a :class:`~pipectl.tracking.PrunableTracker`, old runs are pruned.
    ``plugin_manager`` runs the pipelines (default: the built-ins alone). Set
    ``PIPECTL_HOME`` to a temporary folder first (the result store's key is there).
    """
    import json
    import uuid
    from datetime import UTC, datetime

    from pipectl.model import RunStatus
    from pipectl.pipeline import Pipeline
    from pipectl.tracking import (
        TRACKER_MEMBERS,
        ExtractorStateSaved,
        PrunableTracker,
        ResumableTracker,
        ResumeClaimed,
        Tracker,
        TrackerError,
    )

    def check(condition: Any, message: str) -> None:
        if not condition:
            raise AssertionError(f"tracker contract: {message}")

    def raises(error: type[BaseException], call: Callable[[], Any], message: str) -> Any:
        try:
            call()
        except error as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - said
            raise AssertionError(
                f"tracker contract: {message}, got {type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError(f"tracker contract: {message}, and nothing was raised")

    if plugin_manager is None:
        from pipectl.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager(autoload=False, entry_points=())
    tracker = make_tracker()
    missing = [m for m in TRACKER_MEMBERS if not hasattr(tracker, m)]
    check(
        isinstance(tracker, Tracker),
        f"{type(tracker).__qualname__} is not a "
        f"pipectl.tracking.Tracker: it has no {', '.join(missing)}",
    )
    tracker.migrate()

    token = uuid.uuid4().hex[:8]
    failing, good = f"contract-{token}", f"contract-ok-{token}"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    calls = {"load": 0, "flaky": 0, "publish": 0}
    broken = {"publish": True}

    pipe = Pipeline(
        failing, plugin_manager=plugin_manager, description="the tracker contract's pipeline"
    )
    pipe.param("day", "2024-01-01")
    pipe.param("token", secret, secret=True)

    def load(params: Any) -> dict[str, Any]:
        calls["load"] += 1
        return {"rows": 3, "day": params["day"]}

    def flaky(load: Any) -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise ConnectionError("warehouse busy")
        return int(load["rows"]) * 2

    def publish(flaky: Any, params: Any) -> str:
        calls["publish"] += 1
        if broken["publish"]:
            raise ValueError(f"cannot publish {flaky} rows with {params['token']}")
        return "published"

    def report(publish: Any) -> str:
        return f"report of {publish}"

    def echo(params: Any) -> str:
        return f"the token is {params['token']}"

    pipe.add_step("load", load)
    pipe.add_step("flaky", flaky, depends_on=["load"], retries=1, retry_delay=0, retry_jitter=0)
    pipe.add_step("publish", publish, depends_on=["flaky"])
    pipe.add_step("report", report, depends_on=["publish"])
    pipe.add_step("echo", echo)
    order = ["load", "flaky", "publish", "report", "echo"]

    first = pipe.run_sync(tracker=tracker)
    check(
        first.status is RunStatus.FAILED,
        f"the contract's first run should fail, it "
        f"ended {first.status.value} (a step of the pipeline?)",
    )
    run1 = first.run_id

    ok = Pipeline(good, plugin_manager=plugin_manager)
    ok.add_step("only", lambda: 1)
    oks = [ok.run_sync(tracker=tracker).run_id for _ in range(3)]

    def read_back(t: Any, where: str) -> None:
        record = t.get_run(run1)
        for key in (
            "run_id",
            "pipeline",
            "description",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "params",
            "error",
            "errors",
            "resumed_from",
            "parent_run_id",
            "steps",
        ):
            check(key in record, f"get_run() of a run has no {key!r} ({where})")
        check(
            record["run_id"] == run1 and record["pipeline"] == failing,
            f"get_run({run1!r}) gave run {record['run_id']!r} of pipeline "
            f"{record['pipeline']!r} ({where})",
        )
        check(
            record["status"] == "failed",
            f"a failed run was recorded as {record['status']!r} ({where})",
        )
        check(
            record["started_at"] and record["finished_at"],
            f"a run that ended has no started_at or finished_at ({where})",
        )
        check(
            record["params"].get("day") == "2024-01-01",
            f"the run's params were recorded as {record['params']!r} ({where})",
        )
        check(
            record["params"].get("token") == "***",
            f"a secret param is recorded as {record['params'].get('token')!r}, not '***'",
        )
        check(
            "cannot publish" in (record["error"] or ""),
            f"the run's error does not say why it failed: {record['error']!r} ({where})",
        )
        names = [s.get("step_name") for s in record["steps"]]
        check(
            names == order,
            f"the run's steps are {names}, not {order} (every step, in "
            f"the pipeline's order) ({where})",
        )
        steps = {s["step_name"]: s for s in record["steps"]}
        for step in record["steps"]:
            for key in (
                "step_id",
                "step_type",
                "status",
                "started_at",
                "completed_at",
                "attempts",
                "retry_count",
                "error_message",
                "attempt_history",
            ):
                check(
                    key in step, f"step {step['step_name']!r} of get_run() has no {key!r} ({where})"
                )
        want = {
            "load": ("success", 1),
            "flaky": ("success", 2),
            "publish": ("failed", 1),
            "report": ("skipped", 0),
            "echo": ("success", 1),
        }
        for name, (status, attempts) in want.items():
            got = (steps[name]["status"], steps[name]["attempts"])
            check(
                got == (status, attempts),
                f"step {name!r} was recorded as {got[0]!r} after "
                f"{got[1]} attempt(s), not {status!r} after {attempts} ({where})",
            )
        history = steps["flaky"]["attempt_history"]
        check(
            len(history) == 2 and "warehouse busy" in str(history[0].get("error")),
            f"the retried step's attempt_history does not hold its two attempts and the "
            f"first one's error: {history!r} ({where})",
        )
        check(
            steps["flaky"]["retry_count"] == 1,
            f"the retried step's retry_count is {steps['flaky']['retry_count']!r}, not 1 ({where})",
        )
        check(
            "cannot publish" in (steps["publish"]["error_message"] or ""),
            f"the failed step's error_message is {steps['publish']['error_message']!r} ({where})",
        )
        text = json.dumps(record, default=str)
        check(
            secret not in text,
            f"the record of the run holds a secret param's value "
            f"({where}): mask StepFinished.secrets in what is recorded of a step",
        )
        check(
            secret not in json.dumps(t.list_runs(limit=100), default=str),
            f"list_runs() holds a secret param's value ({where})",
        )

    read_back(tracker, "as recorded")

    # reading runs: list, resolve, pipeline_of
    rows = tracker.list_runs(limit=100)
    ids = [r.get("execution_id") for r in rows]
    check(
        ids[:3] == oks[::-1],
        f"list_runs() is not newest first: the three latest runs are {ids[:3]}, not {oks[::-1]}",
    )
    check(run1 in ids, "list_runs() does not list the failed run")
    for key in (
        "execution_id",
        "pipeline_name",
        "status",
        "started_at",
        "completed_at",
        "execution_time_ms",
        "records_processed",
        "error_message",
        "resumed_from",
        "host",
        "pid",
    ):
        check(key in rows[0], f"a row of list_runs() has no {key!r}")
    check(
        [r["execution_id"] for r in tracker.list_runs(pipeline=failing)] == [run1],
        "list_runs(pipeline=...) does not give that pipeline's runs alone",
    )
    failed = [r["execution_id"] for r in tracker.list_runs(status="failed", limit=100)]
    check(
        run1 in failed and not set(oks) & set(failed),
        "list_runs(status='failed') does not give the failed runs alone",
    )
    check(len(tracker.list_runs(limit=2)) == 2, "list_runs(limit=2) does not give 2 runs")
    check(tracker.resolve("latest") == oks[-1], "resolve('latest') is not the newest run")
    check(
        tracker.resolve("latest", failing) == run1,
        "resolve('latest', pipeline) is not that pipeline's newest run",
    )
    check(tracker.resolve(run1) == run1, "resolve() of a full id is not that id")
    check(tracker.resolve(run1[:12]) == run1, "resolve() of the start of an id is not the id")
    raises(
        TrackerError,
        lambda: tracker.resolve("no-such-run"),
        "resolve() of an unknown id should raise TrackerError",
    )
    raises(
        TrackerError,
        lambda: tracker.resolve("latest", f"no-such-pipeline-{token}"),
        "resolve('latest') of a pipeline without runs should raise TrackerError",
    )
    raises(
        TrackerError,
        lambda: tracker.get_run("no-such-run"),
        "get_run() of an unknown id should raise TrackerError",
    )
    check(tracker.pipeline_of(run1) == failing, "pipeline_of() is not the run's pipeline")
    check(tracker.pipeline_of("no-such-run") is None, "pipeline_of() of an unknown id is not None")
    check(
        tracker.get_run(oks[0])["status"] == "success",
        "a successful run is not recorded as 'success'",
    )

    # extractor states: the latest of each step
    check(
        tracker.extractor_states(good) == {},
        "extractor_states() of a pipeline that saved none is not {}",
    )
    for cursor in (1, 2):
        tracker.record(
            ExtractorStateSaved(
                run_id=oks[-1],
                pipeline=good,
                step_name="rows",
                state={"cursor": cursor},
                saved_at=datetime.now(UTC),
            )
        )
    check(tracker.flush(timeout=30) is True, "flush() did not return True")
    states = tracker.extractor_states(good)
    check(
        states == {"rows": {"cursor": 2}},
        f"extractor_states() gave {states!r}, not the "
        "latest state saved, {'rows': {'cursor': 2}}",
    )

    problems = tracker.close(report=False)
    check(
        isinstance(problems, list) and not problems,
        f"close() returned {problems!r}, not an empty list",
    )
    again = make_tracker()
    again.migrate()
    try:
        read_back(again, "by a second tracker on the same store")
        check(
            again.extractor_states(good) == {"rows": {"cursor": 2}},
            "extractor_states() are not kept in the store",
        )
    finally:
        again.close(report=False)

    if isinstance(tracker, ResumableTracker):
        latest = tracker.latest_finished(failing)
        check(
            latest is not None and latest.get("execution_id") == run1,
            f"latest_finished() is {latest!r}, not the failed run",
        )
        states = tracker.step_states(run1)
        check(
            set(states) == set(order),
            f"step_states() has the steps {sorted(states)}, not {sorted(order)}",
        )
        for key in ("status", "fingerprint", "output_stored", "output_none", "committed"):
            check(key in states["load"], f"step_states() of a step has no {key!r}")
        check(
            states["load"]["status"] == "success" and states["load"]["fingerprint"],
            "step_states() does not give a succeeded step's status and fingerprint",
        )
        check(
            states["publish"]["status"] == "failed",
            f"step_states() of the failed step is {states['publish']['status']!r}",
        )
        stored = getattr(tracker, "results", None) is not None
        check(
            states["load"]["output_stored"] is stored,
            f"step_states() says output_stored={states['load']['output_stored']!r} for a "
            f"step with a picklable output, with results {'set' if stored else 'None'}",
        )

        # one resumer per run
        tracker.claim_resume(run1, f"contract-claim-1-{token}")
        refused = raises(
            ResumeClaimed,
            lambda: tracker.claim_resume(run1, f"contract-claim-2-{token}"),
            "a second claim on a run being resumed should raise ResumeClaimed",
        )
        check(refused.state == "active", f"the refused claim says {refused.state!r}, not 'active'")
        tracker.release_resume(run1, f"contract-claim-1-{token}")
        tracker.claim_resume(run1, f"contract-claim-2-{token}")  # free again
        tracker.release_resume(run1, f"contract-claim-2-{token}")

        broken["publish"] = False
        before = dict(calls)
        second = pipe.run_sync(tracker=tracker, resume="latest")
        check(
            second.status is RunStatus.SUCCESS,
            f"the resumed run ended {second.status.value}: {second.errors}",
        )
        check(second.resumed_from == run1, "resume='latest' did not resume the failed run")
        if stored:
            check(
                calls["load"] == before["load"] and calls["flaky"] == before["flaky"],
                "a resume ran again steps that succeeded with a stored output",
            )
        check(
            calls["publish"] == before["publish"] + 1, "a resume did not run the failed step again"
        )
        record = tracker.get_run(second.run_id)
        check(
            record["resumed_from"] == run1,
            f"the resumed run's record has resumed_from {record['resumed_from']!r}",
        )
        steps = {s["step_name"]: s for s in record["steps"]}
        check(
            all(steps[n]["status"] == "success" for n in order),
            f"the resumed run's steps are {[(n, steps[n]['status']) for n in order]}",
        )
        if stored:
            check(
                steps["load"]["resumed_from"] == run1,
                "a step taken from the run resumed "
                f"has resumed_from {steps['load']['resumed_from']!r}",
            )
        check(
            tracker.load_run(second.run_id) == run1,
            "load_run() of a resume is not the run it resumed",
        )
        check(
            tracker.load_run(run1) == run1, "load_run() of a run that resumes nothing is not itself"
        )
        refused = raises(
            ResumeClaimed,
            lambda: pipe.run_sync(tracker=tracker, resume=run1),
            "resuming again a run that a successful run resumed should raise ResumeClaimed",
        )
        check(refused.state == "succeeded", f"the refusal says {refused.state!r}, not 'succeeded'")

    if isinstance(tracker, PrunableTracker):
        raises(
            ValueError,
            lambda: tracker.prune(),
            "prune() without keep or older_than should raise ValueError",
        )
        would = tracker.prune(keep=1, pipeline=good, dry_run=True)
        check(
            list(would) == oks[:2],
            f"prune(keep=1, dry_run=True) gave {list(would)}, not "
            f"the two oldest runs {oks[:2]}, oldest first",
        )
        check(len(tracker.list_runs(pipeline=good)) == 3, "prune(dry_run=True) deleted runs")
        check(
            list(tracker.prune(keep=0, older_than=3600, pipeline=good)) == [],
            "prune(older_than=3600) deleted runs younger than an hour",
        )
        gone = tracker.prune(keep=1, pipeline=good)
        check(list(gone) == oks[:2], f"prune(keep=1) deleted {list(gone)}, not {oks[:2]}")
        left = [r["execution_id"] for r in tracker.list_runs(pipeline=good)]
        check(left == oks[2:], f"after prune(keep=1) the pipeline's runs are {left}")
        raises(
            TrackerError,
            lambda: tracker.get_run(oks[0]),
            "get_run() of a pruned run should raise TrackerError",
        )
        check(
            tracker.get_run(run1)["status"] == "failed",
            "prune(pipeline=...) touched another pipeline's runs",
        )
    problems = tracker.close(report=False)
    check(not problems, f"close() reported problems: {problems}")


# -- the extractor contract -------------------------------------------------------------------


def check_browsable_tracker(
    make_tracker: Callable[[], Any], *, plugin_manager: Any = None, runs: int = 2000
) -> None:
    """Check a :class:`~pipectl.tracking.BrowsableTracker` (the reads of a web UI and of
    ``pipectl runs logs``): raises AssertionError saying which rule it broke.

    ``make_tracker()`` returns a new tracker on one empty store (the check migrates it).
    ``runs`` runs are recorded as run events (groups of 7 sharing a start time, so that paging
    must break ties by id), then paged through with every filter and search; real runs
    (``Pipeline.run`` with the tracker) give step logs, a resume and a sub-pipeline run for
    :meth:`related_runs`; run events recorded one by one move :meth:`run_version`. Set
    ``PIPECTL_HOME`` to a temporary folder first.
    """
    import os
    import socket
    import uuid
    from datetime import UTC, datetime, timedelta

    from pipectl.model import RunStatus, StepResult, StepSpec, StepStatus
    from pipectl.pipeline import Pipeline
    from pipectl.tracking import (
        BrowsableTracker,
        RunFinished,
        RunStarted,
        StepFinished,
        StepStarted,
        TrackerError,
    )

    def check(condition: Any, message: str) -> None:
        if not condition:
            raise AssertionError(f"browsable tracker: {message}")

    def refused(call: Callable[[], Any], message: str) -> None:
        try:
            call()
        except TrackerError:
            return
        raise AssertionError(f"browsable tracker: {message}")

    if plugin_manager is None:
        from pipectl.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager(autoload=False, entry_points=())
    tracker = make_tracker()
    check(isinstance(tracker, BrowsableTracker), f"{type(tracker).__qualname__} is not one")
    tracker.migrate()
    token = uuid.uuid4().hex[:8]
    alpha, beta = f"browse-{token}-alpha", f"browse-{token}-Beta"
    base = datetime(2031, 1, 1, tzinfo=UTC)
    host, pid = socket.gethostname(), os.getpid()
    expected: list[dict[str, Any]] = []
    for i in range(runs):
        started = base + timedelta(seconds=i // 7)
        failed = i % 5 == 0
        run: dict[str, Any] = {
            "execution_id": uuid.uuid4().hex,
            "pipeline_name": beta if i % 3 == 0 else alpha,
            "status": "failed" if failed else "success",
            "started_at": started,
            "error": (f"boom {i} NeedLE" if i % 10 == 0 else "plain failure") if failed else None,
        }
        expected.append(run)
        tracker.record(
            RunFinished(
                run_id=run["execution_id"],
                pipeline=run["pipeline_name"],
                started_at=started,
                status=RunStatus(run["status"]),
                finished_at=started + timedelta(seconds=1),
                duration_ms=1000.0,
                errors=(run["error"],) if run["error"] else (),
                host=host,
                pid=pid,
            )
        )
    late = base + timedelta(days=30)
    live: dict[str, Any] = {"execution_id": uuid.uuid4().hex, "status": "running", "pid": pid}
    dead: dict[str, Any] = {
        "execution_id": uuid.uuid4().hex,
        "status": "interrupted",
        "pid": 4_194_304 + 7,  # above any pid_max: no such process
    }
    for k, run in enumerate((live, dead)):
        run.update(pipeline_name=alpha, started_at=late + timedelta(seconds=k), error=None)
        tracker.record(
            RunStarted(
                run_id=run["execution_id"],
                pipeline=alpha,
                started_at=run["started_at"],
                host=host,
                pid=run["pid"],
            )
        )
        expected.append(run)
    check(tracker.flush(timeout=60) is True, "flush() did not return True")
    newest_first = sorted(
        expected, key=lambda r: (r["started_at"], r["execution_id"]), reverse=True
    )

    def paged(limit: int, **filters: Any) -> list[str]:
        ids: list[str] = []
        cursor = None
        for _ in range(runs + 10):
            page = tracker.page_runs(cursor=cursor, limit=limit, **filters)
            check(
                set(page) == {"runs", "next"} and len(page["runs"]) <= limit,
                f"page_runs() gave {sorted(page)} with {len(page['runs'])} runs (limit {limit})",
            )
            ids += [r["execution_id"] for r in page["runs"]]
            cursor = page["next"]
            if cursor is None:
                return ids
        raise AssertionError("browsable tracker: page_runs() never gave next=None")

    def want(keep: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [r["execution_id"] for r in newest_first if keep(r)]

    everything = paged(97)
    check(
        everything == want(lambda r: True),
        f"paging through {len(expected)} runs (97 a page) gave {len(everything)} runs, "
        f"{len(set(everything))} different, not each once, newest first",
    )
    first = tracker.page_runs(limit=3)["runs"]
    for key in ("execution_id", "pipeline_name", "status", "started_at", "completed_at",
                "execution_time_ms", "records_processed", "error_message", "resumed_from",
                "parent_execution_id", "host", "pid"):  # fmt: skip
        check(key in first[0], f"a row of page_runs() has no {key!r}")
    cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
        ({"pipeline": alpha}, lambda r: r["pipeline_name"] == alpha),
        ({"status": "failed"}, lambda r: r["status"] == "failed"),
        ({"status": "running"}, lambda r: r["status"] == "running"),
        ({"status": "interrupted"}, lambda r: r["status"] == "interrupted"),
        (
            {"since": (base + timedelta(seconds=40)).isoformat(), "until": "2031-01-01T00:01:00"},
            lambda r: base + timedelta(seconds=40) <= r["started_at"] < base + timedelta(minutes=1),
        ),
        ({"search": "needle"}, lambda r: "needle" in (r["error"] or "").lower()),
        ({"search": "-beta"}, lambda r: r["pipeline_name"] == beta),
        (
            {"search": expected[5]["execution_id"][:12]},
            lambda r: r["execution_id"].startswith(expected[5]["execution_id"][:12]),
        ),
        (
            {"pipeline": beta, "status": "failed", "search": "NEEDLE"},
            lambda r: r["pipeline_name"] == beta and "needle" in (r["error"] or "").lower(),
        ),
        ({"search": "50%_x"}, lambda r: False),  # LIKE's wildcards are plain characters
    ]
    for filters, keep in cases:
        got = paged(13, **filters)
        check(
            got == want(keep),
            f"page_runs({filters}) paged 13 at a time gave {len(got)} runs, not the "
            f"{len(want(keep))} that match, newest first",
        )
    statuses = {r["execution_id"]: r["status"] for r in tracker.page_runs(limit=2)["runs"]}
    check(
        statuses == {dead["execution_id"]: "interrupted", live["execution_id"]: "running"},
        f"page_runs() shows the live and dead runs as {statuses}",
    )
    refused(lambda: tracker.page_runs(cursor="not-a-cursor"), "a bad cursor is not refused")
    refused(lambda: tracker.page_runs(since="yesterday"), "a bad since is not refused")
    names = tracker.pipeline_names()
    check(
        alpha in names and beta in names and names == sorted(names),
        f"pipeline_names() gave {names}",
    )
    history = tracker.pipeline_runs(beta, limit=20)
    check(
        [r["execution_id"] for r in history] == want(lambda r: r["pipeline_name"] == beta)[:20]
        and set(history[0])
        == {"execution_id", "status", "started_at", "execution_time_ms", "records_processed"},
        "pipeline_runs() is not the pipeline's latest runs, newest first, with their "
        "execution_id, status, started_at, execution_time_ms and records_processed",
    )

    # real runs: step logs per attempt, a resume, a sub-pipeline
    calls = {"flaky": 0}
    broken = {"last": True}

    def flaky() -> int:
        calls["flaky"] += 1
        print(f"flaky says {calls['flaky']}")
        if calls["flaky"] == 1:
            raise ConnectionError("try again")
        return 1

    def last(flaky: Any) -> int:
        if broken["last"]:
            raise ValueError("broken")
        return 2

    pipe = Pipeline(f"browse-{token}-real", plugin_manager=plugin_manager)
    pipe.add_step("flaky", flaky, retries=1, retry_delay=0, retry_jitter=0)
    pipe.add_step("last", last, depends_on=["flaky"])
    failed_run = pipe.run_sync(tracker=tracker)
    broken["last"] = False
    resumed = pipe.run_sync(tracker=tracker, resume=failed_run.run_id)
    check(resumed.ok, f"the resume of the check's failed run ended {resumed.status.value}")
    lines = tracker.step_logs(failed_run.run_id, "flaky")
    said = [(r["attempt"], r["message"]) for r in lines if r["stream"] == "stdout"]
    check(
        said == [(1, "flaky says 1"), (2, "flaky says 2")],
        f"step_logs() of a retried step that printed gave {said}",
    )
    check(
        set(lines[0]) == {"attempt", "seq", "logged_at", "stream", "level", "message"},
        f"a line of step_logs() has the keys {sorted(lines[0])}",
    )
    second = tracker.step_logs(failed_run.run_id[:12], "flaky", attempt=2)
    check(
        {r["attempt"] for r in second} == {2},
        "step_logs(attempt=2) gave other attempts' lines",
    )
    check(tracker.step_logs(failed_run.run_id, "no-such-step") == [], "an unknown step's logs")
    refused(lambda: tracker.step_logs("no-such-run", "flaky"), "step_logs() of an unknown run")
    links = tracker.related_runs(resumed.run_id)
    check(
        (links["resumed_from"] or {}).get("execution_id") == failed_run.run_id
        and links["resumes"] == []
        and links["parent"] is None
        and links["children"] == [],
        f"related_runs() of a resume gave {links}",
    )
    links = tracker.related_runs(failed_run.run_id)
    check(
        [r["execution_id"] for r in links["resumes"]] == [resumed.run_id],
        f"related_runs() of a resumed run does not list its resume: {links}",
    )
    child = Pipeline(f"browse-{token}-child", plugin_manager=plugin_manager)
    child.add_step("inner", lambda: 1)
    parent = Pipeline(f"browse-{token}-parent", plugin_manager=plugin_manager)
    parent.add_subpipeline(child, "sub")
    parent_run = parent.run_sync(tracker=tracker)
    child_id = parent_run.steps["sub"].output.run.run_id
    links = tracker.related_runs(parent_run.run_id)
    check(
        [r["execution_id"] for r in links["children"]] == [child_id],
        f"related_runs() of a run with a sub-pipeline does not list it: {links}",
    )
    links = tracker.related_runs(child_id)
    check(
        (links["parent"] or {}).get("execution_id") == parent_run.run_id,
        f"related_runs() of a sub-pipeline run does not give its parent: {links}",
    )
    refused(lambda: tracker.related_runs("no-such-run"), "related_runs() of an unknown run")

    # run_version moves with every change of the run and its steps
    run_id = uuid.uuid4().hex
    at = datetime.now(UTC)
    fields: dict[str, Any] = {"run_id": run_id, "pipeline": alpha, "started_at": at}
    spec = StepSpec("only", lambda: None)
    versions = []
    for event in (
        RunStarted(**fields, host=host, pid=pid),
        StepStarted(run_id=run_id, step_name="only", step_type="python", attempt=1, started_at=at),
        StepStarted(run_id=run_id, step_name="only", step_type="python", attempt=2, started_at=at),
        StepFinished(
            run_id=run_id,
            step=spec,
            result=StepResult(
                "only", StepStatus.SUCCESS, started_at=at, finished_at=at, attempts=2
            ),
        ),
        RunFinished(**fields, status=RunStatus.SUCCESS, finished_at=at, host=host, pid=pid),
    ):
        tracker.record(event)
        check(tracker.flush(timeout=30) is True, "flush() did not return True")
        versions.append(tracker.run_version(run_id))
        check(
            tracker.run_version(run_id) == versions[-1],
            "run_version() changed while nothing did",
        )
    check(
        None not in versions and len(set(versions)) == len(versions),
        f"run_version() did not change with each step event: {versions}",
    )
    check(tracker.run_version(uuid.uuid4().hex) is None, "run_version() of no run is not None")
    check(tracker.close(report=False) == [], "close() reported problems")


def check_extractor_contract(
    make_extractor: Callable[..., Any],
    expected_records: list[dict[str, Any]],
    *,
    params: dict[str, Any] | None = None,
    append: Callable[[], list[dict[str, Any]]] | None = None,
) -> None:
    """Check an extractor against the contract of :mod:`pipectl.data` (raises AssertionError
    saying which rule it broke).

    ``make_extractor(**options)`` returns a new extractor over one source (the same each
    call) holding ``expected_records`` (compared in any order); when it takes ``batch_size``
    (a keyword of its signature, or ``**options``) the batch size is checked too, else the
    extractor is built without it (``batch_size`` is an optional option). Checked:

    - ``describe()`` gives a non-empty string;
    - ``batches(ctx)`` is a sync iterable or an async generator of batches, each a list of
      record dicts, which hold the expected records;
    - with ``batch_size=N``: no batch holds more than N records, and all the records come;
    - the records come the same through the runner (:func:`pipectl.data.run_data_step`,
      into an output that collects them);
    - an extractor with incremental state (``state`` and ``set_state``) whose ``state`` is
      not None after a read: the state is JSON, and a new extractor given it reads nothing
      again, or, with ``append`` (a callable adding records to the source and returning
      them), only the appended records.
    """
    import asyncio
    import inspect
    import json

    from pipectl.data import DataContext, run_data_step

    def canon(records: Any) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True, default=str) for r in records)

    expected = canon(expected_records)
    ctx_params = dict(params or {})

    def read(extractor: Any) -> list[list[dict[str, Any]]]:
        ctx = DataContext("contract", ctx_params, "fail", None, None)
        batches = extractor.batches(ctx)
        if inspect.isasyncgen(batches):

            async def drain() -> list[Any]:
                return [b async for b in batches]

            got = asyncio.run(drain())
        else:
            assert not inspect.iscoroutine(batches) and hasattr(batches, "__iter__"), (
                f"batches(ctx) returned {type(batches).__name__}, not a sync iterable or an "
                "async generator"
            )
            got = list(batches)
        for batch in got:
            assert isinstance(batch, list), f"a batch is a {type(batch).__name__}, not a list"
            for record in batch:
                assert isinstance(record, dict), (
                    f"a record is a {type(record).__name__}, not a dict: {record!r}"
                )
        return got

    def records(batches: list[list[dict[str, Any]]]) -> list[str]:
        return canon(r for batch in batches for r in batch)

    extractor = make_extractor()
    label = extractor.describe() if callable(getattr(extractor, "describe", None)) else None
    assert isinstance(label, str) and label, f"describe() gave {label!r}, not a name for messages"
    where = f"extractor {label!r}"
    got = records(read(extractor))
    assert got == expected, (
        f"{where}: read {len(got)} records, not the {len(expected)} "
        f"expected (or not the same): {got[:3]} vs {expected[:3]}"
    )

    try:
        signature = inspect.signature(make_extractor)
        takes_size = "batch_size" in signature.parameters or any(
            p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
        )
    except (TypeError, ValueError):
        takes_size = False
    if takes_size:
        size = max(1, len(expected_records) // 3)
        batches = read(make_extractor(batch_size=size))
        sizes = [len(b) for b in batches]
        assert all(n <= size for n in sizes), f"{where}: batch_size={size} gave batches of {sizes}"
        assert records(batches) == expected, (
            f"{where}: with batch_size={size} the records read are not the records expected"
        )

    class Collect:
        guarantee = "transactional"

        def __init__(self) -> None:
            self.pending: list[dict[str, Any]] = []
            self.committed: list[dict[str, Any]] = []

        def describe(self) -> str:
            return "contract collector"

        def open(self, ctx: Any) -> None:
            self.pending = []

        def write(self, batch: list[dict[str, Any]]) -> None:
            self.pending.extend(batch)

        def commit(self) -> None:
            self.committed.extend(self.pending)

        def abort(self) -> None:
            self.pending = []

        def close(self) -> None:
            pass

    def through_runner(source: Any) -> tuple[list[str], Any]:
        out = Collect()
        result = asyncio.run(
            run_data_step(
                step="contract", extractor=source, outputs=[("out", out)], params=ctx_params
            )
        )
        report = result.outputs["out"]
        assert report.status == "committed", (
            f"{where}: the runner's load ended {report.status}: {report.error}"
        )
        return canon(out.committed), result.state

    source = make_extractor()
    got, _ = through_runner(source)
    assert got == expected, (
        f"{where}: the runner loaded {len(got)} records, not the {len(expected)} expected"
    )
    state = getattr(source, "state", None)
    if state is not None and callable(getattr(source, "set_state", None)):
        try:
            state = json.loads(json.dumps(state))
        except TypeError as exc:
            raise AssertionError(f"{where}: its state {state!r} is not JSON: {exc}") from None
        again = make_extractor()
        again.set_state(state)
        added = append() if append is not None else []
        got = records(read(again))
        assert got == canon(added), (
            f"{where}: from its state {state!r} a new extractor read "
            f"{len(got)} records, not {'only the ' if added else ''}{len(added)} new ones"
        )


# -- the executor contract --------------------------------------------------------------------


class _FileLog:
    """Lines appended to a file: a log that steps in other processes (workers) write too."""

    def __init__(self, path: str):
        self.path = path
        open(path, "a").close()

    def add(self, value: str) -> int:
        import os

        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
        return len(self.lines())

    def lines(self) -> list[str]:
        with open(self.path) as f:
            return f.read().splitlines()


class _FileGauge:
    """Steps running at once, across threads and processes (a file under a lock)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "w") as f:
            f.write("0 0 0")

    def _update(self, delta: int) -> None:
        import fcntl

        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            current, peak, entered = map(int, f.read().split())
            current += delta
            if delta > 0:
                entered, peak = entered + 1, max(peak, current + 0)
            f.seek(0)
            f.write(f"{current} {peak} {entered}")
            f.truncate()

    def enter(self) -> None:
        self._update(1)

    def leave(self) -> None:
        self._update(-1)

    def read(self) -> tuple[int, int, int]:
        with open(self.path) as f:
            current, peak, entered = map(int, f.read().split())
        return current, peak, entered


def check_executor_contract(
    executor: Any,
    *,
    options: dict[str, Any] | None = None,
    plugin_manager: Any = None,
    workdir: Any = None,
) -> None:
    """Check an executor against what the engine needs of every executor (raises
    AssertionError saying which rule it broke).

    ``executor`` is the name of an executor registered in ``plugin_manager`` (default: the
    built-ins alone) or a factory ``(**options) -> Executor``; ``options`` are given to it
    for every run (they must make every step's output a value in ``run.steps``, as
    ``local`` does: dask's ``fetch="all"``). Real pipelines run through ``Pipeline.run`` on
    it, their steps counting and meeting through files in ``workdir`` (default: a temporary
    folder; steps may run in other processes, so it must be shared with them):

    - sync and async steps run, get their params and ``ctx``, and their outputs are passed
      downstream (a diamond);
    - retries: the engine keeps the count, the executor runs each attempt (a step failing
      twice succeeds on attempt 3; one failing always fails after ``retries + 1``);
    - timeouts: an attempt over its ``timeout`` fails with ``StepTimeout`` (sync and
      async), and is retried;
    - a failing step's exception comes back with its type and message, downstream is skipped;
    - ``fail_fast``: running steps are cancelled, queued ones never start;
    - ``max_concurrent`` is reached and never exceeded;
    - ``start()`` is called once before a run's steps and ``shutdown()`` once after,
      whatever happened in the run.
    """
    import asyncio
    import os
    import tempfile
    import time

    from pipectl.errors import StepTimeout
    from pipectl.model import RunStatus, StepStatus
    from pipectl.pipeline import Pipeline
    from pipectl.plugins import get_plugin_manager

    options = dict(options or {})
    pm = (
        plugin_manager
        if plugin_manager is not None
        else get_plugin_manager(autoload=False, entry_points=())
    )
    if callable(executor) and not isinstance(executor, str):
        factory = executor
        label = getattr(executor, "__name__", repr(executor))
    else:
        label = str(executor)
        factory = lambda **kw: pm.registries.executors.create(label, **kw)  # noqa: E731
    lifecycle: list[tuple[str, Any]] = []

    def spied(**kw: Any) -> Any:
        instance = factory(**kw)
        start, shutdown = instance.start, instance.shutdown

        async def start_spy(run: Any, config: Any, max_concurrent: Any) -> None:
            lifecycle.append(("start", max_concurrent))
            await start(run, config, max_concurrent)

        async def shutdown_spy() -> None:
            lifecycle.append(("shutdown", None))
            await shutdown()

        instance.start, instance.shutdown = start_spy, shutdown_spy
        return instance

    class _Spy:
        @hookimpl
        def pipectl_register_executors(self, register: Any) -> None:
            register("contract-under-test", spied)

    spy_name = f"executor-contract-{id(lifecycle):x}"
    pm.add_plugin(_Spy(), spy_name)
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="pipectl-executor-contract-")
        workdir = own_dir.name
    os.makedirs(str(workdir), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="contract-", dir=str(workdir))  # fresh logs each call
    where = f"executor {label!r}"
    runs = 0

    def run(pipe: Any, **kwargs: Any) -> Any:
        nonlocal runs
        runs += 1
        recorder = HookRecorder()
        result = pipe.run_sync(
            executor="contract-under-test",
            executor_options=options,
            tracker="none",
            listeners=[recorder],
            **kwargs,
        )
        return result, recorder

    def path(name: str) -> str:
        return os.path.join(str(workdir), name)

    try:
        # sync and async steps, params and ctx, outputs passed downstream
        pipe = Pipeline("contract_shapes", plugin_manager=pm)

        @pipe.step("source")
        async def source(params: dict[str, Any]) -> list[int]:
            await asyncio.sleep(0.01)
            return list(range(params.get("n", 3)))

        @pipe.step("double", depends_on=["source"])
        def double(source: list[int]) -> list[int]:
            return [x * 2 for x in source]

        @pipe.step("square", depends_on=["source"])
        async def square(source: list[int]) -> list[int]:
            return [x * x for x in source]

        @pipe.step("join", depends_on=["double", "square"])
        def join(double: list[int], square: list[int], ctx: StepContext) -> dict[str, Any]:
            return {"sum": sum(double) + sum(square), "step": ctx.step, "attempt": ctx.attempt}

        shapes, _ = run(pipe, params={"n": 4})
        assert shapes.status is RunStatus.SUCCESS, (
            f"{where}: a plain pipeline failed: {shapes.errors}"
        )
        got = {name: r.output for name, r in shapes.steps.items()}
        want = {
            "source": [0, 1, 2, 3],
            "double": [0, 2, 4, 6],
            "square": [0, 1, 4, 9],
            "join": {"sum": 26, "step": "join", "attempt": 1},
        }
        assert got == want, f"{where}: the outputs are {got!r}, not {want!r}"

        # retries: the engine counts, the executor runs every attempt
        calls = _FileLog(path("retry-calls"))
        always = _FileLog(path("always-calls"))
        pipe = Pipeline("contract_retries", plugin_manager=pm)

        def flaky() -> int:
            n = calls.add("call")
            if n <= 2:
                raise ConnectionError(f"failure {n}")
            return n

        def broken() -> None:
            always.add("call")
            raise ConnectionError("always")

        pipe.add_step("flaky", flaky, retries=3, retry_delay=0.01, retry_jitter=0)
        pipe.add_step("broken", broken, retries=1, retry_delay=0.01, retry_jitter=0)
        pipe.add_step("after_broken", lambda broken: broken, depends_on=["broken"])
        retried, recorded = run(pipe)
        flaky_result = retried.steps["flaky"]
        assert flaky_result.status is StepStatus.SUCCESS and flaky_result.output == 3, (
            f"{where}: a step failing twice with retries=3 ended {flaky_result.status.value} "
            f"with {flaky_result.output!r} ({flaky_result.error})"
        )
        assert flaky_result.attempts == 3 and len(calls.lines()) == 3, (
            f"{where}: 3 attempts expected, the engine saw {flaky_result.attempts}, the step "
            f"ran {len(calls.lines())} times"
        )
        starts = [c.attempt for c in recorded.calls_for("step_start", "flaky")]
        assert starts == [1, 2, 3], f"{where}: step_start attempts {starts}"
        broken_result = retried.steps["broken"]
        assert (
            broken_result.status is StepStatus.FAILED
            and broken_result.attempts == 2
            and len(always.lines()) == 2
        ), (
            f"{where}: a step always failing with retries=1 "
            f"ran {len(always.lines())} times ({broken_result.attempts} attempts), not 2"
        )
        assert retried.steps["after_broken"].status is StepStatus.SKIPPED
        assert retried.status is RunStatus.FAILED

        # a failing step's error comes back with its type and message
        pipe = Pipeline("contract_error", plugin_manager=pm)

        def fails() -> None:
            raise ValueError("contract boom 42")

        pipe.add_step("fails", fails)
        pipe.add_step("after", lambda fails: fails, depends_on=["fails"])
        failed, _ = run(pipe)
        result = failed.steps["fails"]
        assert failed.status is RunStatus.FAILED and result.status is StepStatus.FAILED
        assert isinstance(result.exception, ValueError) and "contract boom 42" in str(
            result.exception
        ), f"{where}: the step's exception came back as {result.exception!r}"
        assert "contract boom 42" in (result.error or ""), f"{where}: error {result.error!r}"
        assert failed.steps["after"].status is StepStatus.SKIPPED

        # timeouts: an attempt over its timeout fails with StepTimeout, and is retried
        stop = path("timeouts-stop")
        tries = _FileLog(path("timeout-calls"))

        async def nap(seconds: float) -> None:  # ends early once the check is done
            for _ in range(int(seconds / 0.01)):
                if os.path.exists(stop):
                    return
                await asyncio.sleep(0.01)

        pipe = Pipeline("contract_timeouts", plugin_manager=pm)

        @pipe.step(timeout=0.1, retries=1, retry_delay=0.001, retry_jitter=0)
        async def slow_async() -> None:
            tries.add("call")
            await nap(3)

        @pipe.step(timeout=0.1)
        def slow_sync() -> None:
            for _ in range(100):
                if os.path.exists(stop):
                    return
                time.sleep(0.01)

        began = time.monotonic()
        try:
            timed, _ = run(pipe)
            took = time.monotonic() - began
        finally:
            open(stop, "w").close()
        for name, attempts in (("slow_async", 2), ("slow_sync", 1)):
            result = timed.steps[name]
            assert result.status is StepStatus.FAILED and isinstance(
                result.exception, StepTimeout
            ), (
                f"{where}: a {name} step over its timeout ended {result.status.value} with "
                f"{result.exception!r}, not StepTimeout"
            )
            assert result.attempts == attempts, (
                f"{where}: {name} had {result.attempts} attempts, not {attempts}"
            )
        # (an attempt may time out before a remote worker even called the function)
        assert len(tries.lines()) <= 2, (
            f"{where}: 2 attempts ran the step {len(tries.lines())} times"
        )
        assert took < 2.5, f"{where}: the run waited {took:.1f}s for steps past their timeout"

        # fail_fast: running steps cancelled, queued ones never started
        started, stop = path("ff-started"), path("ff-stop")
        effects = _FileLog(path("ff-effects"))
        pipe = Pipeline("contract_fail_fast", plugin_manager=pm, fail_fast=True, max_concurrent=2)

        @pipe.step
        async def running() -> None:
            open(started, "w").close()
            for _ in range(1000):
                if os.path.exists(stop):
                    return
                await asyncio.sleep(0.01)

        @pipe.step
        async def bad() -> None:
            for _ in range(500):
                if os.path.exists(started):
                    break
                await asyncio.sleep(0.01)
            raise RuntimeError("bad data")

        @pipe.step
        def queued() -> None:
            effects.add("queued")

        began = time.monotonic()
        try:
            ff, _ = run(pipe)
            took = time.monotonic() - began
        finally:
            open(stop, "w").close()
        got = {name: r.status.value for name, r in ff.steps.items()}
        assert ff.status is RunStatus.FAILED and got == {
            "running": "cancelled",
            "bad": "failed",
            "queued": "cancelled",
        }, f"{where}: with fail_fast the steps ended {got}"
        assert effects.lines() == [] and ff.steps["queued"].attempts == 0, (
            f"{where}: fail_fast started a queued step"
        )
        assert took < 8, f"{where}: fail_fast waited {took:.1f}s for the cancelled step"

        # max_concurrent: reached, never exceeded (sync and async steps)
        for limit in (1, 2):
            gauge = _FileGauge(path(f"gauge-{limit}"))
            pipe = Pipeline("contract_limit", plugin_manager=pm, max_concurrent=limit)

            def make(i: int, sync: bool, gauge: _FileGauge = gauge) -> Any:
                if sync:

                    def step() -> int:
                        gauge.enter()
                        try:
                            time.sleep(0.05)
                        finally:
                            gauge.leave()
                        return i

                    return step

                async def astep() -> int:
                    gauge.enter()
                    try:
                        await asyncio.sleep(0.05)
                    finally:
                        gauge.leave()
                    return i

                return astep

            for i in range(6):
                pipe.add_step(f"s{i}", make(i, sync=i % 2 == 0))
            pipe.add_step("last", make(99, sync=False), depends_on=[f"s{i}" for i in range(6)])
            limited, _ = run(pipe)
            assert limited.ok, f"{where}: {limited.errors}"
            _current, peak, entered = gauge.read()
            assert entered == 7, f"{where}: {entered} of 7 steps ran"
            assert peak <= limit, f"{where}: {peak} steps ran at once with max_concurrent={limit}"
            assert peak == limit, (
                f"{where}: max_concurrent={limit} with 6 ready steps, "
                f"yet at most {peak} ran at once"
            )

        # start and shutdown: once per run, whatever happened
        kinds = [kind for kind, _ in lifecycle]
        assert kinds == ["start", "shutdown"] * runs, (
            f"{where}: start()/shutdown() calls over {runs} runs were {kinds}"
        )
        limits = [value for kind, value in lifecycle if kind == "start"]
        assert limits[-2:] == [1, 2], f"{where}: start() got max_concurrent {limits[-2:]}"
    finally:
        pm.remove_plugin(spy_name)
        if own_dir is not None:
            own_dir.cleanup()


# -- crash tests ------------------------------------------------------------------------------


def run_killed_at(
    fault: str, *args: str, cwd: Any, env: dict[str, str] | None = None, timeout: float = 600
) -> Any:
    """Run ``pipectl ARGS`` in a subprocess that kills itself at the fault point ``fault``
    (``NAME`` or ``NAME:N``, see :mod:`pipectl.faults`); check that it died there (SIGKILL)
    and return the ``subprocess.CompletedProcess``."""
    import os
    import signal
    import subprocess
    import sys

    environ = {**os.environ, **(env or {}), "PIPECTL_FAULT": fault}
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"pipectl {' '.join(args)} with PIPECTL_FAULT={fault} did not die at the fault point "
        f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc

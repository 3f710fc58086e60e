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

:func:`check_output_contract`
    Runs an output plugin through the exactly-once contract of :mod:`pipectl.loads`: every
    record committed once with its load marker, a load found committed is skipped, the cursor
    comes back, an aborted attempt leaves nothing, a second commit of one load adds nothing.
:func:`check_tracker_contract`
    Runs a run tracker through the contract of :mod:`pipectl.tracking_contract`: real runs
    recorded (retries, a failure, a skipped step, a secret param) and read back, by id,
    prefix and ``latest``, from a second tracker on the same store too; resume and resume
    claims when it is a ``ResumableTracker``, retention when it is a ``PrunableTracker``.
:func:`run_killed_at`
    Runs ``pipectl`` in a subprocess that SIGKILLs itself at a named fault point
    (:mod:`pipectl.faults`), for crash tests: kill it there, resume, count the records.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from pipectl.hookspecs import hookimpl

__all__ = ["HookCall", "HookRecorder", "check_output_contract", "check_tracker_contract",
           "run_killed_at"]
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
    def pipectl_run_start(self, run):
        self._record("pipectl_run_start", run=run)

    @hookimpl
    def pipectl_run_finish(self, run):
        self._record("pipectl_run_finish", run=run)

    @hookimpl
    def pipectl_step_start(self, run, step, attempt):
        self._record("pipectl_step_start", run=run, step=step, attempt=attempt)

    @hookimpl
    def pipectl_step_retry(self, run, step, attempt, error, delay):
        self._record("pipectl_step_retry", run=run, step=step, attempt=attempt, error=error,
                     delay=delay)

    @hookimpl
    def pipectl_step_finish(self, run, step, result):
        self._record("pipectl_step_finish", run=run, step=step, result=result)

    @hookimpl
    def pipectl_run_planned(self, run, plan):
        self._record("pipectl_run_planned", run=run, plan=plan)

    @hookimpl
    def pipectl_output_finish(self, run, step, attempt, report):
        self._record("pipectl_output_finish", run=run, step=step, attempt=attempt,
                     report=report)

    @hookimpl
    def pipectl_rollback_start(self, run, step, result):
        self._record("pipectl_rollback_start", run=run, step=step, result=result)

    @hookimpl
    def pipectl_rollback_finish(self, run, step, result, error):
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
        return runner.invoke(build_cli(plugin_manager), list(args), input=input, env=env,
                             catch_exceptions=False)

    return run


@pytest.fixture
def run_pipeline(tmp_path_factory: Any, monkeypatch: Any) -> Callable[..., Any]:
    """``run_pipeline(file, params=None, *, name=None, **run_options)``: a pipeline file loaded
    as ``pipectl run`` loads it and run once; returns the run."""
    import os

    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path_factory.mktemp("pipectl-home")))

    def run(file: Any, params: Any = None, *, name: str | None = None,
            **run_options: Any) -> Any:
        from pipectl.pipelinefile import load_pipeline
        from pipectl.project import find_project

        project = find_project(file)
        for variable in project.load_env():  # undone after the test
            monkeypatch.setenv(variable, os.environ.pop(variable))
        pipe = load_pipeline(file, params, name=name, project=project)
        run_options.setdefault("tracker", "none")
        return pipe.run_sync(**run_options)

    return run


# -- the output contract ----------------------------------------------------------------------


def check_output_contract(make_output: Callable[[], Any],
                          read: Callable[[], list[dict[str, Any]]],
                          records: list[dict[str, Any]] | None = None) -> None:
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
            for start in range(0, len(records), 10):
                yield [dict(r) for r in records[start:start + 10]]
            self.state = {"cursor": self.state["cursor"] + len(records)}

    def load(run_id: str, load_run: str | None = None, fail: bool = False) -> Any:
        source = Source()
        if fail:
            def batches(ctx: Any) -> Any:
                yield [dict(r) for r in records[:10]]
                raise RuntimeError("the source broke")
            source.batches = batches  # type: ignore[method-assign]
        return asyncio.run(run_data_step(
            step="contract", extractor=source, outputs=[("out", make_output())],
            pipeline="contract", run_id=run_id, load_run=load_run))

    output = make_output()
    assert getattr(output, "guarantee", None) in ("transactional", "idempotent"), \
        "an output declares guarantee = 'transactional' or 'idempotent'"
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
        assert last is not None and last.state == {"cursor": len(records)}, \
            f"last_load() does not give back the cursor committed with the load: {last!r}"
    finally:
        output.abort()
        output.close()

    # a resume of that run finds the load and writes nothing
    again = load("run-2", load_run="run-1")
    report = again.outputs["out"]
    assert report.status == "skipped" and "already committed by run run-1" in (report.note or ""), \
        f"a load committed already was not skipped: {report!r}"
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


def check_tracker_contract(make_tracker: Callable[[], Any], *,
                           plugin_manager: Any = None) -> None:
    """Check a run tracker against the contract of :mod:`pipectl.tracking_contract` (raises
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
    from pipectl.tracking import (ExtractorStateSaved, PrunableTracker, ResumableTracker,
                                  ResumeClaimed, Tracker, TrackerError)

    def check(condition: Any, message: str) -> None:
        if not condition:
            raise AssertionError(f"tracker contract: {message}")

    def raises(error: type[BaseException], call: Callable[[], Any], message: str) -> Any:
        try:
            call()
        except error as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - said
            raise AssertionError(f"tracker contract: {message}, got {type(exc).__name__}: "
                                 f"{exc}") from exc
        raise AssertionError(f"tracker contract: {message}, and nothing was raised")

    if plugin_manager is None:
        from pipectl.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager(autoload=False, entry_points=())
    tracker = make_tracker()
    members = ("results", "migrate", "record", "flush", "close", "list_runs", "get_run",
               "resolve", "pipeline_of", "extractor_states")
    missing = [m for m in members if not hasattr(tracker, m)]
    check(isinstance(tracker, Tracker), f"{type(tracker).__qualname__} is not a "
          f"pipectl.tracking.Tracker: it has no {', '.join(missing)}")
    tracker.migrate()

    token = uuid.uuid4().hex[:8]
    failing, good = f"contract-{token}", f"contract-ok-{token}"
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    calls = {"load": 0, "flaky": 0, "publish": 0}
    broken = {"publish": True}

    pipe = Pipeline(failing, plugin_manager=plugin_manager,
                    description="the tracker contract's pipeline")
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
    pipe.add_step("flaky", flaky, depends_on=["load"], retries=1, retry_delay=0,
                  retry_jitter=0)
    pipe.add_step("publish", publish, depends_on=["flaky"])
    pipe.add_step("report", report, depends_on=["publish"])
    pipe.add_step("echo", echo)
    order = ["load", "flaky", "publish", "report", "echo"]

    first = pipe.run_sync(tracker=tracker)
    check(first.status is RunStatus.FAILED, f"the contract's first run should fail, it "
          f"ended {first.status.value} (a step of the pipeline?)")
    run1 = first.run_id

    ok = Pipeline(good, plugin_manager=plugin_manager)
    ok.add_step("only", lambda: 1)
    oks = [ok.run_sync(tracker=tracker).run_id for _ in range(3)]

    def read_back(t: Any, where: str) -> None:
        record = t.get_run(run1)
        for key in ("run_id", "pipeline", "description", "status", "started_at",
                    "finished_at", "duration_ms", "params", "error", "errors", "resumed_from",
                    "parent_run_id", "steps"):
            check(key in record, f"get_run() of a run has no {key!r} ({where})")
        check(record["run_id"] == run1 and record["pipeline"] == failing,
              f"get_run({run1!r}) gave run {record['run_id']!r} of pipeline "
              f"{record['pipeline']!r} ({where})")
        check(record["status"] == "failed", f"a failed run was recorded as "
              f"{record['status']!r} ({where})")
        check(record["started_at"] and record["finished_at"],
              f"a run that ended has no started_at or finished_at ({where})")
        check(record["params"].get("day") == "2024-01-01",
              f"the run's params were recorded as {record['params']!r} ({where})")
        check(record["params"].get("token") == "***",
              f"a secret param is recorded as {record['params'].get('token')!r}, not '***'")
        check("cannot publish" in (record["error"] or ""),
              f"the run's error does not say why it failed: {record['error']!r} ({where})")
        names = [s.get("step_name") for s in record["steps"]]
        check(names == order, f"the run's steps are {names}, not {order} (every step, in "
              f"the pipeline's order) ({where})")
        steps = {s["step_name"]: s for s in record["steps"]}
        for step in record["steps"]:
            for key in ("step_id", "step_type", "status", "started_at", "completed_at",
                        "attempts", "retry_count", "error_message", "attempt_history"):
                check(key in step, f"step {step['step_name']!r} of get_run() has no "
                      f"{key!r} ({where})")
        want = {"load": ("success", 1), "flaky": ("success", 2), "publish": ("failed", 1),
                "report": ("skipped", 0), "echo": ("success", 1)}
        for name, (status, attempts) in want.items():
            got = (steps[name]["status"], steps[name]["attempts"])
            check(got == (status, attempts), f"step {name!r} was recorded as {got[0]!r} after "
                  f"{got[1]} attempt(s), not {status!r} after {attempts} ({where})")
        history = steps["flaky"]["attempt_history"]
        check(len(history) == 2 and "warehouse busy" in str(history[0].get("error")),
              f"the retried step's attempt_history does not hold its two attempts and the "
              f"first one's error: {history!r} ({where})")
        check(steps["flaky"]["retry_count"] == 1, "the retried step's retry_count is "
              f"{steps['flaky']['retry_count']!r}, not 1 ({where})")
        check("cannot publish" in (steps["publish"]["error_message"] or ""),
              f"the failed step's error_message is {steps['publish']['error_message']!r} "
              f"({where})")
        text = json.dumps(record, default=str)
        check(secret not in text, f"the record of the run holds a secret param's value "
              f"({where}): mask StepFinished.secrets in what is recorded of a step")
        check(secret not in json.dumps(t.list_runs(limit=100), default=str),
              f"list_runs() holds a secret param's value ({where})")

    read_back(tracker, "as recorded")

    # reading runs: list, resolve, pipeline_of
    rows = tracker.list_runs(limit=100)
    ids = [r.get("execution_id") for r in rows]
    check(ids[:3] == oks[::-1], f"list_runs() is not newest first: the three latest runs "
          f"are {ids[:3]}, not {oks[::-1]}")
    check(run1 in ids, "list_runs() does not list the failed run")
    for key in ("execution_id", "pipeline_name", "status", "started_at", "completed_at",
                "execution_time_ms", "records_processed", "error_message", "resumed_from",
                "host", "pid"):
        check(key in rows[0], f"a row of list_runs() has no {key!r}")
    check([r["execution_id"] for r in tracker.list_runs(pipeline=failing)] == [run1],
          "list_runs(pipeline=...) does not give that pipeline's runs alone")
    failed = [r["execution_id"] for r in tracker.list_runs(status="failed", limit=100)]
    check(run1 in failed and not set(oks) & set(failed),
          "list_runs(status='failed') does not give the failed runs alone")
    check(len(tracker.list_runs(limit=2)) == 2, "list_runs(limit=2) does not give 2 runs")
    check(tracker.resolve("latest") == oks[-1], "resolve('latest') is not the newest run")
    check(tracker.resolve("latest", failing) == run1,
          "resolve('latest', pipeline) is not that pipeline's newest run")
    check(tracker.resolve(run1) == run1, "resolve() of a full id is not that id")
    check(tracker.resolve(run1[:12]) == run1, "resolve() of the start of an id is not the id")
    raises(TrackerError, lambda: tracker.resolve("no-such-run"),
           "resolve() of an unknown id should raise TrackerError")
    raises(TrackerError, lambda: tracker.resolve("latest", f"no-such-pipeline-{token}"),
           "resolve('latest') of a pipeline without runs should raise TrackerError")
    raises(TrackerError, lambda: tracker.get_run("no-such-run"),
           "get_run() of an unknown id should raise TrackerError")
    check(tracker.pipeline_of(run1) == failing, "pipeline_of() is not the run's pipeline")
    check(tracker.pipeline_of("no-such-run") is None, "pipeline_of() of an unknown id is not "
          "None")
    check(tracker.get_run(oks[0])["status"] == "success", "a successful run is not recorded as "
          "'success'")

    # extractor states: the latest of each step
    check(tracker.extractor_states(good) == {}, "extractor_states() of a pipeline that saved "
          "none is not {}")
    for cursor in (1, 2):
        tracker.record(ExtractorStateSaved(run_id=oks[-1], pipeline=good, step_name="rows",
                                           state={"cursor": cursor}, saved_at=datetime.now(UTC)))
    check(tracker.flush(timeout=30) is True, "flush() did not return True")
    states = tracker.extractor_states(good)
    check(states == {"rows": {"cursor": 2}}, f"extractor_states() gave {states!r}, not the "
          "latest state saved, {'rows': {'cursor': 2}}")

    problems = tracker.close(report=False)
    check(isinstance(problems, list) and not problems,
          f"close() returned {problems!r}, not an empty list")
    again = make_tracker()
    again.migrate()
    try:
        read_back(again, "by a second tracker on the same store")
        check(again.extractor_states(good) == {"rows": {"cursor": 2}},
              "extractor_states() are not kept in the store")
    finally:
        again.close(report=False)

    if isinstance(tracker, ResumableTracker):
        latest = tracker.latest_finished(failing)
        check(latest is not None and latest.get("execution_id") == run1,
              f"latest_finished() is {latest!r}, not the failed run")
        states = tracker.step_states(run1)
        check(set(states) == set(order), f"step_states() has the steps {sorted(states)}, not "
              f"{sorted(order)}")
        for key in ("status", "fingerprint", "output_stored", "output_none", "committed"):
            check(key in states["load"], f"step_states() of a step has no {key!r}")
        check(states["load"]["status"] == "success" and states["load"]["fingerprint"],
              "step_states() does not give a succeeded step's status and fingerprint")
        check(states["publish"]["status"] == "failed", "step_states() of the failed step is "
              f"{states['publish']['status']!r}")
        stored = getattr(tracker, "results", None) is not None
        check(states["load"]["output_stored"] is stored,
              f"step_states() says output_stored={states['load']['output_stored']!r} for a "
              f"step with a picklable output, with results {'set' if stored else 'None'}")

        # one resumer per run
        tracker.claim_resume(run1, f"contract-claim-1-{token}")
        refused = raises(ResumeClaimed, lambda: tracker.claim_resume(
            run1, f"contract-claim-2-{token}"), "a second claim on a run being resumed "
            "should raise ResumeClaimed")
        check(refused.state == "active", f"the refused claim says {refused.state!r}, not "
              "'active'")
        tracker.release_resume(run1, f"contract-claim-1-{token}")
        tracker.claim_resume(run1, f"contract-claim-2-{token}")  # free again
        tracker.release_resume(run1, f"contract-claim-2-{token}")

        broken["publish"] = False
        before = dict(calls)
        second = pipe.run_sync(tracker=tracker, resume="latest")
        check(second.status is RunStatus.SUCCESS, f"the resumed run ended "
              f"{second.status.value}: {second.errors}")
        check(second.resumed_from == run1, "resume='latest' did not resume the failed run")
        if stored:
            check(calls["load"] == before["load"] and calls["flaky"] == before["flaky"],
                  "a resume ran again steps that succeeded with a stored output")
        check(calls["publish"] == before["publish"] + 1, "a resume did not run the failed "
              "step again")
        record = tracker.get_run(second.run_id)
        check(record["resumed_from"] == run1, "the resumed run's record has resumed_from "
              f"{record['resumed_from']!r}")
        steps = {s["step_name"]: s for s in record["steps"]}
        check(all(steps[n]["status"] == "success" for n in order),
              f"the resumed run's steps are {[(n, steps[n]['status']) for n in order]}")
        if stored:
            check(steps["load"]["resumed_from"] == run1, "a step taken from the run resumed "
                  f"has resumed_from {steps['load']['resumed_from']!r}")
        check(tracker.load_run(second.run_id) == run1, "load_run() of a resume is not the "
              "run it resumed")
        check(tracker.load_run(run1) == run1, "load_run() of a run that resumes nothing is "
              "not itself")
        refused = raises(ResumeClaimed, lambda: pipe.run_sync(tracker=tracker, resume=run1),
                         "resuming again a run that a successful run resumed should raise "
                         "ResumeClaimed")
        check(refused.state == "succeeded", f"the refusal says {refused.state!r}, not "
              "'succeeded'")

    if isinstance(tracker, PrunableTracker):
        raises(ValueError, lambda: tracker.prune(), "prune() without keep or older_than "
               "should raise ValueError")
        would = tracker.prune(keep=1, pipeline=good, dry_run=True)
        check(list(would) == oks[:2], f"prune(keep=1, dry_run=True) gave {list(would)}, not "
              f"the two oldest runs {oks[:2]}, oldest first")
        check(len(tracker.list_runs(pipeline=good)) == 3, "prune(dry_run=True) deleted runs")
        check(list(tracker.prune(keep=0, older_than=3600, pipeline=good)) == [],
              "prune(older_than=3600) deleted runs younger than an hour")
        gone = tracker.prune(keep=1, pipeline=good)
        check(list(gone) == oks[:2], f"prune(keep=1) deleted {list(gone)}, not {oks[:2]}")
        left = [r["execution_id"] for r in tracker.list_runs(pipeline=good)]
        check(left == oks[2:], f"after prune(keep=1) the pipeline's runs are {left}")
        raises(TrackerError, lambda: tracker.get_run(oks[0]),
               "get_run() of a pruned run should raise TrackerError")
        check(tracker.get_run(run1)["status"] == "failed", "prune(pipeline=...) touched "
              "another pipeline's runs")
    problems = tracker.close(report=False)
    check(not problems, f"close() reported problems: {problems}")


# -- crash tests ------------------------------------------------------------------------------


def run_killed_at(fault: str, *args: str, cwd: Any, env: dict[str, str] | None = None,
                  timeout: float = 600) -> Any:
    """Run ``pipectl ARGS`` in a subprocess that kills itself at the fault point ``fault``
    (``NAME`` or ``NAME:N``, see :mod:`pipectl.faults`); check that it died there (SIGKILL)
    and return the ``subprocess.CompletedProcess``."""
    import os
    import signal
    import subprocess
    import sys

    environ = {**os.environ, **(env or {}), "PIPECTL_FAULT": fault}
    proc = subprocess.run([sys.executable, "-m", "pipectl.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"pipectl {' '.join(args)} with PIPECTL_FAULT={fault} did not die at the fault point "
        f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

"""Lifecycle hooks through pluggy: monitoring and tracing see every call, each listener is
isolated, and a run's own listeners (``Pipeline.run(listeners=...)``) hear that run only."""

from __future__ import annotations

import asyncio
import io
import re
import warnings

import pluggy
import pytest
from helpers import FlakyStore, RaisingListener

from pipectl import Pipeline, RunStatus, hookimpl
from pipectl.hookspecs import LISTENER_HOOKS
from pipectl.testing import HookRecorder

EVERY_EVENT = {name.removeprefix("pipectl_") for name in LISTENER_HOOKS}


@pytest.fixture
def log_stream():
    """pipectl's log lines (warnings and up) for this test."""
    from pipectl import log

    stream = io.StringIO()
    log.configure_logging("warning", stream=stream)
    yield stream
    log.reset_logging()


class _Numbers:
    def describe(self):
        return "numbers"

    def batches(self, ctx):
        yield [{"id": i} for i in range(4)]


def every_event_pipeline(pm, name="every-event") -> Pipeline:
    """A pipeline whose run (``rollback=True``) fires every listener hook: a retry, a data step
    with a failing then committing output, a cache miss, a failure, and rollbacks. Built afresh each time
    (its steps keep state); ``max_concurrent=1`` keeps the events in one order."""
    pipe = Pipeline(name, plugin_manager=pm, max_concurrent=1)
    attempts = []
    undone = []

    @pipe.step(
        "flaky",
        retries=1,
        retry_delay=0.0,
        retry_jitter=0.0,
        rollback=lambda output: undone.append("flaky"),
    )
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails")
        return 1

    pipe.data_step(
        "load",
        extractor=_Numbers(),
        outputs=[FlakyStore("a"), FlakyStore("b", 1)],
        retries=1,
        retry_delay=0.0,
        depends_on=["flaky"],
        rollback=lambda output: undone.append("load"),
    )
    # cached, without a tracker: its lookup is a miss (pipectl_step_cache), then it fails
    pipe.add_step("boom", lambda: 1 / 0, depends_on=["load"], cache=True)
    pipe.add_step("after_boom", lambda: None, depends_on=["boom"])
    pipe.undone = undone  # type: ignore[attr-defined]
    return pipe


def _calls(recorder):
    return [
        (c.name, c.step_name, getattr(c.report, "name", None) if "report" in c.kwargs else None)
        for c in recorder.calls
    ]


# -- monitoring and tracing ------------------------------------------------------------------


def test_add_hookcall_monitoring_sees_every_lifecycle_call_in_order(plugin_manager, hook_recorder):
    seen, outcomes = [], []

    def before(hook_name, hook_impls, kwargs):
        if hook_name in LISTENER_HOOKS:
            step = kwargs.get("step")
            report = kwargs.get("report")
            seen.append(
                (
                    hook_name,
                    getattr(step, "name", None),
                    getattr(report, "name", None),
                    [impl.plugin_name for impl in hook_impls],
                )
            )

    def after(outcome, hook_name, hook_impls, kwargs):
        if hook_name in LISTENER_HOOKS:
            outcomes.append(outcome.exception)

    undo = plugin_manager.add_hookcall_monitoring(before, after)
    try:
        run = every_event_pipeline(plugin_manager).run_sync(rollback=True)
    finally:
        undo()

    assert run.status is RunStatus.ROLLED_BACK
    # exactly the calls the listener got, in the same order, every kind of event among them
    assert [s[:3] for s in seen] == _calls(hook_recorder)
    assert {name.removeprefix("pipectl_") for name, *_ in seen} == EVERY_EVENT
    assert all("hook-recorder" in plugins for *_, plugins in seen)
    assert outcomes == [None] * len(seen)
    names = [s[0].removeprefix("pipectl_") for s in seen]
    assert names[:3] == ["run_start", "run_planned", "step_start"]
    assert names[-5:] == [
        "rollback_start",
        "rollback_finish",
        "rollback_start",
        "rollback_finish",
        "run_finish",
    ]
    assert names.count("step_retry") == 2 and names.count("output_finish") == 4
    assert plugin_manager.hookcall_monitors == 0  # undone


def test_a_monitor_sees_every_event_even_when_no_plugin_listens(plugin_manager):
    seen = []
    undo = plugin_manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append((name, list(impls))),
        lambda outcome, name, impls, kwargs: None,
    )
    assert plugin_manager.hookcall_monitors == 1
    try:
        reference = HookRecorder()
        every_event_pipeline(plugin_manager).run_sync(rollback=True, listeners=[reference])
        seen_with_listener = [name for name, _ in seen if name in LISTENER_HOOKS]
        seen.clear()
        every_event_pipeline(plugin_manager).run_sync(rollback=True)
    finally:
        undo()
    undo()  # twice: harmless

    assert seen_with_listener == reference.names()
    assert [name for name, _ in seen if name in LISTENER_HOOKS] == reference.names()
    assert all(impls == [] for name, impls in seen if name in LISTENER_HOOKS)
    assert plugin_manager.hookcall_monitors == 0
    seen.clear()
    every_event_pipeline(plugin_manager).run_sync(rollback=True)
    assert seen == []  # the monitor is gone, and nothing listens: nothing is called


def test_enable_tracing_writes_each_lifecycle_call(plugin_manager):
    lines = []
    plugin_manager.trace.root.setwriter(lines.append)
    undo = plugin_manager.enable_tracing()
    try:
        pipe = Pipeline("traced", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1)
        pipe.add_step("b", lambda a: a + 1, depends_on=["a"])
        assert pipe.run_sync().ok
    finally:
        undo()
    calls = re.findall(r"^\s*(pipectl_\w+) \[hook\]$", "".join(lines), flags=re.MULTILINE)
    # the manager's first run configures it first (pipectl_configure, once)
    assert calls == [
        "pipectl_configure",
        "pipectl_run_start",
        "pipectl_run_planned",
        "pipectl_step_start",
        "pipectl_step_finish",
        "pipectl_step_start",
        "pipectl_step_finish",
        "pipectl_run_finish",
    ]


def test_run_listeners_are_in_the_monitored_implementations(plugin_manager):
    seen = []
    undo = plugin_manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append((name, [i.plugin_name for i in impls])),
        lambda *args: None,
    )
    try:
        pipe = Pipeline("listened", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1)
        pipe.on_step_complete(lambda result: None)
        pipe.run_sync(listeners=[HookRecorder()])
    finally:
        undo()
    # pluggy's list (called last to first): the run listeners as if registered in order
    assert ("pipectl_step_finish", ["HookRecorder", "on_step_complete"]) in seen
    assert ("pipectl_run_start", ["HookRecorder"]) in seen


# -- isolation -------------------------------------------------------------------------------


def test_raiser_implements_every_listener_hook():
    assert {n for n in vars(RaisingListener) if n.startswith("pipectl_")} == set(LISTENER_HOOKS)


def _outcome(run):
    return (
        run.status,
        {
            name: (
                r.status,
                r.attempts,
                r.output if not hasattr(r.output, "outputs") else r.output.records_processed,
            )
            for name, r in run.steps.items()
        },
    )


def test_a_listener_raising_in_every_hook_changes_nothing(plugin_manager, log_stream):
    baseline_recorder = HookRecorder()
    baseline = every_event_pipeline(plugin_manager).run_sync(
        rollback=True, listeners=[baseline_recorder]
    )

    before, after = HookRecorder(), HookRecorder()
    assert plugin_manager.add_plugin(before, "before").status == "loaded"
    raiser, run_raiser = RaisingListener(), RaisingListener()
    assert plugin_manager.add_plugin(raiser, "raiser").status == "loaded"
    assert plugin_manager.add_plugin(after, "after").status == "loaded"
    own = HookRecorder()
    pipe = every_event_pipeline(plugin_manager)
    run = pipe.run_sync(rollback=True, listeners=[run_raiser, own])

    assert _outcome(run) == _outcome(baseline)
    assert pipe.undone == ["load", "flaky"]
    expected = _calls(baseline_recorder)
    assert {c[0].removeprefix("pipectl_") for c in expected} == EVERY_EVENT
    for recorder in (before, after, own):  # the others still get every call, in order
        assert _calls(recorder) == expected
    assert raiser.calls == run_raiser.calls == len(expected)
    failures = [line for line in log_stream.getvalue().splitlines() if "plugin_hook_failed" in line]
    assert len(failures) == 2 * len(expected)
    for hook in LISTENER_HOOKS:
        assert any(f"hook={hook}" in line and "plugin=raiser" in line for line in failures), hook
        assert any(
            f"hook={hook}" in line and "plugin=RaisingListener" in line for line in failures
        ), hook


def test_a_direct_pm_hook_call_is_isolated_too(plugin_manager):
    got = []

    class Good:
        @hookimpl
        def pipectl_run_finish(self, run):
            got.append(run)

    class Bad:
        @hookimpl
        def pipectl_run_finish(self, run):
            raise RuntimeError("bad")

    plugin_manager.add_plugin(Good(), "good")
    plugin_manager.add_plugin(Bad(), "bad")  # called first: registered last
    assert plugin_manager.hook.pipectl_run_finish(run="r") == []
    assert got == ["r"]
    (impl,) = [
        i for i in plugin_manager.hook.pipectl_run_finish.get_hookimpls() if i.plugin_name == "bad"
    ]
    assert impl.function.__wrapped__.__name__ == "pipectl_run_finish"  # the original, kept


def test_wrap_step_is_not_isolated(plugin_manager, register_plugin):
    class Broken:
        @hookimpl
        def pipectl_wrap_step(self, step, context):
            raise RuntimeError("no middleware today")

    register_plugin(Broken(), "broken")
    pipe = Pipeline("wrapped", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert "no middleware today" in run.steps["a"].error


# -- run scope -------------------------------------------------------------------------------


def _interleaving_pipeline(pm, name, seen_plugins=None):
    pipe = Pipeline(name, plugin_manager=pm)

    async def step(**_):
        await asyncio.sleep(0.005)
        if seen_plugins is not None:
            seen_plugins.append(set(pm.get_plugins()))
        return name

    previous = None
    for i in range(4):
        pipe.add_step(f"{name}-{i}", step, depends_on=[previous] if previous else [])
        previous = f"{name}-{i}"
    return pipe


def test_two_concurrent_runs_each_listener_sees_only_its_run(plugin_manager, hook_recorder):
    mine_a, mine_b = HookRecorder(), HookRecorder()
    completed_a, completed_b = [], []
    plugins_seen = []
    pipe_a = _interleaving_pipeline(plugin_manager, "a", plugins_seen)
    pipe_b = _interleaving_pipeline(plugin_manager, "b", plugins_seen)
    pipe_a.on_step_complete(lambda result: completed_a.append(result.step_name))
    pipe_b.on_step_complete(lambda result: completed_b.append(result.step_name))

    async def main():
        return await asyncio.gather(pipe_a.run(listeners=[mine_a]), pipe_b.run(listeners=[mine_b]))

    run_a, run_b = asyncio.run(main())

    assert run_a.ok and run_b.ok
    # the runs did overlap: the process-wide plugin heard their events interleaved
    order = [c.run.run_id for c in hook_recorder.calls]
    assert order.index(run_b.run_id) < max(i for i, r in enumerate(order) if r == run_a.run_id)
    for mine, run in ((mine_a, run_a), (mine_b, run_b)):
        assert {c.run.run_id for c in mine.calls} == {run.run_id}
        assert _calls(mine) == _calls_of(hook_recorder, run)
        assert len(mine.calls_for("step_finish")) == 4
    assert completed_a == [f"a-{i}" for i in range(4)]
    assert completed_b == [f"b-{i}" for i in range(4)]
    # a run listener is never registered on the shared manager
    for plugins in plugins_seen:
        assert mine_a not in plugins and mine_b not in plugins
    assert hook_recorder in plugins_seen[0]


def _calls_of(recorder, run):
    return [
        (c.name, c.step_name, getattr(c.report, "name", None) if "report" in c.kwargs else None)
        for c in recorder.calls
        if c.run.run_id == run.run_id
    ]


def test_a_run_listener_hears_its_sub_pipeline_runs_not_another_run(plugin_manager):
    child = Pipeline("child", plugin_manager=plugin_manager)

    @child.step
    async def inner():
        await asyncio.sleep(0.005)
        return "in"

    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_subpipeline(child, name="sub")
    parent.add_step("last", lambda sub: sub["inner"], depends_on=["sub"])
    other = _interleaving_pipeline(plugin_manager, "other")
    mine, theirs = HookRecorder(), HookRecorder()

    async def main():
        return await asyncio.gather(parent.run(listeners=[mine]), other.run(listeners=[theirs]))

    run, other_run = asyncio.run(main())

    assert run.ok and other_run.ok
    runs = {c.run.run_id for c in mine.calls}
    assert run.run_id in runs and other_run.run_id not in runs
    (child_id,) = runs - {run.run_id}
    child_calls = [c for c in mine.calls if c.run.run_id == child_id]
    assert child_calls[0].run.parent_run_id == run.run_id
    assert [c.step_name for c in child_calls if c.name == "pipectl_step_finish"] == ["inner"]
    assert {c.run.run_id for c in theirs.calls} == {other_run.run_id}


def test_run_listeners_are_called_as_if_registered_last(plugin_manager, register_plugin):
    order = []

    def listener(label, **opts):
        class Listener:
            @hookimpl(**opts)
            def pipectl_run_start(self, run):
                order.append(label)

        return Listener()

    register_plugin(listener("plugin"), "plugin")
    register_plugin(listener("plugin-first", tryfirst=True), "plugin-first")
    register_plugin(listener("plugin-last", trylast=True), "plugin-last")
    pipe = Pipeline("ordered", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.run_sync(
        listeners=[listener("run-1"), listener("run-2"), listener("run-last", trylast=True)]
    )
    assert order == ["plugin-first", "run-2", "run-1", "plugin", "plugin-last", "run-last"]


def test_a_bad_run_listener_is_refused_before_the_run(plugin_manager, hook_recorder):
    class Registers:
        @hookimpl
        def pipectl_register_outputs(self, register):
            pass

    class Typo:
        @hookimpl
        def pipectl_step_strat(self, run):
            pass

    class WrongArgs:
        @hookimpl
        def pipectl_step_finish(self, run, outcome):
            pass

    pipe = Pipeline("refused", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    with pytest.raises(TypeError, match="'pipectl_register_outputs', which is not a hook a run"):
        pipe.run_sync(listeners=[Registers()])
    with pytest.raises(TypeError, match="'pipectl_step_strat', which is not a pipectl hook"):
        pipe.run_sync(listeners=[Typo()])
    with pytest.raises(pluggy.PluginValidationError, match="outcome"):
        pipe.run_sync(listeners=[WrongArgs()])
    assert hook_recorder.calls == []  # no run started
    assert pipe.run_sync(listeners=[HookRecorder()]).ok  # and the next one is fine


# -- the fast path ---------------------------------------------------------------------------


def test_an_event_nobody_listens_to_is_not_called(plugin_manager, register_plugin):
    """Without listeners or monitors, no lifecycle call reaches pluggy (the per-step cost of
    hooks is one truth test); with one listener, only its hook is called."""
    reached = []
    inner = plugin_manager._inner_hookexec

    def counting(hook_name, impls, kwargs, firstresult):  # not a monitor: the count stays 0
        reached.append(hook_name)
        return inner(hook_name, impls, kwargs, firstresult)

    plugin_manager._inner_hookexec = counting
    pipe = Pipeline("quiet", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a: a, depends_on=["a"])
    assert pipe.run_sync().ok
    assert [h for h in reached if h in LISTENER_HOOKS] == []

    class Finishes:
        @hookimpl
        def pipectl_step_finish(self, result):
            pass

    register_plugin(Finishes(), "finishes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pipe.run_sync().ok
    assert [h for h in reached if h in LISTENER_HOOKS] == ["pipectl_step_finish"] * 2

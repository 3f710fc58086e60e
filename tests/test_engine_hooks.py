"""Lifecycle hooks: run_start and run_finish once each, step_start once per attempt, exactly one
step_finish per step, in an order consistent with the DAG."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest
from helpers import CallLog

import pipectl
from pipectl import Pipeline, RunStatus, StepStatus


def mixed_pipeline(plugin_manager, **options) -> Pipeline:
    pipe = Pipeline("hooks", plugin_manager=plugin_manager, **options)
    calls = CallLog(tempfile.mkstemp(prefix="pipectl-calls-")[1])  # counts on any process

    def flaky():
        if calls.record() < 3:
            raise ConnectionError("flaky")
        return "ok"

    pipe.add_step("extract", lambda: [1, 2, 3])
    pipe.add_step("flaky", flaky, retries=3, retry_delay=0.001, retry_jitter=0)
    pipe.add_step("always_fails", lambda: 1 / 0, retries=1, retry_delay=0.001, retry_jitter=0)
    pipe.add_step("optional", lambda: 1 / 0, allow_failure=True)
    pipe.add_step("transform", lambda extract, flaky: extract, depends_on=["extract", "flaky"])
    pipe.add_step("skipped", lambda: None, depends_on=["always_fails"])
    pipe.add_step("skipped_too", lambda: None, depends_on=["skipped", "transform"])
    pipe.add_step("uses_optional", lambda optional: optional, depends_on=["optional"])
    pipe.add_step(
        "cleanup", lambda: "clean", depends_on=["skipped_too", "transform"], trigger="all_done"
    )
    return pipe


def check_hook_sequence(recorder, run, pipe) -> None:
    names = recorder.names()
    assert names.count("pipectl_run_start") == 1
    assert names.count("pipectl_run_finish") == 1
    assert names[0] == "pipectl_run_start"
    assert names[-1] == "pipectl_run_finish"
    assert all(c.run is run for c in recorder.calls)

    position_of_finish: dict[str, int] = {}
    for i, call in enumerate(recorder.calls):
        if call.name == "pipectl_step_finish":
            assert call.step_name not in position_of_finish, f"two finishes for {call.step_name}"
            position_of_finish[call.step_name] = i
            assert call.result.status.terminal
    assert set(position_of_finish) == set(run.steps)

    for name, result in run.steps.items():
        (finish,) = recorder.calls_for("step_finish", name)
        assert finish.result is result
        starts = recorder.calls_for("step_start", name)
        retries = recorder.calls_for("step_retry", name)
        assert [c.attempt for c in starts] == list(range(1, result.attempts + 1))
        # the step's own calls: start(1) [retry(1) start(2) ...] finish
        own = [
            (c.name.removeprefix("pipectl_step_"), getattr(c, "attempt", None))
            for c in recorder.calls
            if c.step_name == name
        ]
        expected = []
        for attempt in range(1, result.attempts + 1):
            if attempt > 1:
                expected.append(("retry", attempt - 1))
            expected.append(("start", attempt))
        if result.status is StepStatus.CANCELLED and own[-2:-1] == [("retry", result.attempts)]:
            expected.append(("retry", result.attempts))  # cancelled while waiting to retry
        expected.append(("finish", None))
        assert own == expected, (name, own)
        assert len(retries) == len(expected) - result.attempts - 1
        # a step starts only after every dependency finished, and finishes after them
        first_event = recorder.calls.index(starts[0]) if starts else position_of_finish[name]
        for dep in pipe.graph.dependencies[name]:
            assert position_of_finish[dep] < first_event, (dep, name)


def test_every_step_has_exactly_one_finish_and_a_start_per_attempt(
    plugin_manager, hook_recorder, executor
):
    pipe = mixed_pipeline(plugin_manager)
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert {n: r.status for n, r in run.steps.items()} == {
        "extract": StepStatus.SUCCESS,
        "flaky": StepStatus.SUCCESS,
        "always_fails": StepStatus.FAILED,
        "optional": StepStatus.FAILED,
        "transform": StepStatus.SUCCESS,
        "skipped": StepStatus.SKIPPED,
        "skipped_too": StepStatus.SKIPPED,
        "uses_optional": StepStatus.SUCCESS,
        "cleanup": StepStatus.SUCCESS,
    }
    assert run.steps["flaky"].attempts == 3
    assert run.steps["always_fails"].attempts == 2
    assert run.steps["skipped"].attempts == 0
    check_hook_sequence(hook_recorder, run, pipe)
    assert len(hook_recorder.calls_for("step_start")) == sum(r.attempts for r in run.steps.values())


@pytest.mark.parametrize("max_concurrent", [1, 2, None])
def test_hook_sequence_with_fail_fast(plugin_manager, hook_recorder, max_concurrent, executor):
    pipe = mixed_pipeline(plugin_manager, fail_fast=True, max_concurrent=max_concurrent)
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert run.steps["always_fails"].status is StepStatus.FAILED
    check_hook_sequence(hook_recorder, run, pipe)


def test_run_hooks_see_the_run_status_of_their_moment(plugin_manager, register_plugin, executor):
    seen: list[tuple[str, str, int]] = []

    class Snapshot:
        @pipectl.hookimpl
        def pipectl_run_start(self, run):
            seen.append(("run_start", run.status.value, len(run.steps)))

        @pipectl.hookimpl
        def pipectl_step_finish(self, run, step, result):
            seen.append(("step_finish", run.steps[step.name].status.value, len(run.steps)))

        @pipectl.hookimpl
        def pipectl_run_finish(self, run):
            seen.append(("run_finish", run.status.value, len(run.steps)))

    register_plugin(Snapshot(), "snapshot")
    pipe = Pipeline("hooks", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a: a, depends_on=["a"])
    run = pipe.run_sync()
    assert run.ok
    assert seen == [
        ("run_start", "running", 0),
        ("step_finish", "success", 1),  # the result is recorded before listeners hear of it
        ("step_finish", "success", 2),
        ("run_finish", "success", 2),
    ]
    assert run.end_time is not None


def test_a_failing_listener_does_not_break_the_run_or_other_listeners(
    plugin_manager, register_plugin, hook_recorder, executor
):
    class Broken:
        @pipectl.hookimpl
        def pipectl_step_finish(self, run, step, result):
            raise RuntimeError("listener bug")

        @pipectl.hookimpl
        def pipectl_run_start(self, run):
            raise RuntimeError("listener bug")

    register_plugin(Broken(), "broken")
    pipe = Pipeline("hooks", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a: a + 1, depends_on=["a"])
    run = pipe.run_sync()
    assert run.ok
    assert run.steps["b"].output == 2
    assert len(hook_recorder.calls_for("step_finish")) == 2
    assert len(hook_recorder.calls_for("run_start")) == 1


def test_cancelled_run_still_finishes_every_step_once(
    plugin_manager, hook_recorder, executor, tmp_path
):
    pipe = Pipeline("hooks", plugin_manager=plugin_manager, max_concurrent=2)
    flag = str(tmp_path / "long-started")  # a file: the step may run in another process

    @pipe.step
    async def long():
        Path(flag).touch()
        await asyncio.sleep(30)

    @pipe.step
    async def other():
        await asyncio.sleep(30)

    @pipe.step
    async def waiting_for_slot():
        pass

    @pipe.step(depends_on=["long"])
    def downstream():
        pass

    async def main():
        task = asyncio.create_task(pipe.run())
        deadline = time.monotonic() + 10
        while not Path(flag).exists():
            assert time.monotonic() < deadline, "step 'long' never started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(pipectl.RunCancelled) as info:
            await task
        return info.value.run

    run = asyncio.run(main())
    assert run.status is RunStatus.CANCELLED
    check_hook_sequence(hook_recorder, run, pipe)
    assert all(r.status is StepStatus.CANCELLED for r in run.steps.values())
    (finish,) = hook_recorder.calls_for("run_finish")
    assert finish.run.status is RunStatus.CANCELLED

"""Timeouts: an attempt running longer than ``timeout`` fails with StepTimeout (and is retried
like any failure), sync steps too, without holding up the rest of the run; a step's own
TimeoutError is not a pipectl timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import EventLog, Flag

from pipectl import Pipeline, RunStatus, StepStatus, StepTimeout

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py).
# A timed-out attempt on dask is forgotten but runs on in its worker, as a timed-out sync step
# runs on in its thread: the slow steps here sleep seconds, not minutes.


STOP: Flag | None = None  # set when the test ends: the slow attempts left running return


@pytest.fixture(autouse=True)
def _stop_slow_attempts(tmp_path):
    global STOP
    STOP = Flag(tmp_path / "stop")
    yield
    STOP.set()


async def nap(seconds: float) -> None:
    """Sleep ``seconds``, or until the test ends."""
    stop = STOP
    for _ in range(int(seconds / 0.01)):
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(0.01)


def wait_for(predicate, limit: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``limit`` seconds pass (for threads left running)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_async_step_over_its_timeout_fails_with_step_timeout(
    plugin_manager, hook_recorder, executor, tmp_path
):
    reached_end = EventLog(tmp_path / "ends")
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.05)
    async def slow():
        await nap(2)
        reached_end.append("end")

    @pipe.step(depends_on=["slow"])
    def after(slow):
        return slow

    run = pipe.run_sync()
    result = run.steps["slow"]
    assert result.status is StepStatus.FAILED
    assert result.attempts == 1
    assert "timed out" in result.error
    assert result.error == "StepTimeout: step 'slow' timed out after 0.05s"
    assert isinstance(result.exception, StepTimeout)
    assert isinstance(result.exception, TimeoutError)  # catchable as the builtin too
    assert result.exception.step == "slow" and result.exception.timeout == 0.05
    assert run.steps["after"].status is StepStatus.SKIPPED
    assert run.status is RunStatus.FAILED
    assert reached_end == []
    (finish,) = hook_recorder.calls_for("step_finish", "slow")
    assert finish.result.status is StepStatus.FAILED


def test_a_timeout_is_a_failed_attempt_and_is_retried(plugin_manager, hook_recorder, executor):
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.03, retries=2, retry_delay=0.001, retry_jitter=0)
    async def always_slow():
        await nap(2)

    run = pipe.run_sync()
    result = run.steps["always_slow"]
    assert result.status is StepStatus.FAILED
    assert result.attempts == 3
    assert "timed out" in result.error
    retries = hook_recorder.calls_for("step_retry", "always_slow")
    assert [c.attempt for c in retries] == [1, 2]
    assert all(isinstance(c.error, StepTimeout) for c in retries)


@pytest.mark.slow
def test_a_timed_out_attempt_followed_by_a_fast_one_succeeds(plugin_manager, executor):
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.3, retries=1, retry_delay=0.001, retry_jitter=0)
    async def first_slow(ctx):
        if ctx.attempt == 1:
            await nap(2)
        return ctx.attempt

    run = pipe.run_sync()
    assert run.ok
    assert run.steps["first_slow"].output == 2
    assert run.steps["first_slow"].attempts == 2


@pytest.mark.slow
def test_retry_on_timeouts_only(plugin_manager, executor):
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.3, retries=1, retry_delay=0.001, retry_on=StepTimeout)
    async def slow_then_fine(ctx):
        if ctx.attempt == 1:
            await nap(2)
        return "ok"

    @pipe.step(timeout=5, retries=3, retry_delay=0.001, retry_on=StepTimeout)
    async def own_timeout():
        raise TimeoutError("the remote end gave up")

    run = pipe.run_sync()
    assert run.steps["slow_then_fine"].output == "ok"
    own = run.steps["own_timeout"]
    assert own.status is StepStatus.FAILED
    assert own.attempts == 1  # a step's own TimeoutError is not a StepTimeout


def test_a_step_finishing_in_time_succeeds(plugin_manager, executor):
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)
    pipe.add_step("quick_async", _quick_async, timeout=10)
    pipe.add_step("quick_sync", lambda: "sync", timeout=10)
    run = pipe.run_sync()
    assert run.ok
    assert run.outputs() == {"quick_async": "async", "quick_sync": "sync"}


async def _quick_async():
    await asyncio.sleep(0)
    return "async"


def test_sync_step_over_its_timeout_fails_without_blocking_other_steps(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    release = Flag(tmp_path / "release")
    pipe = Pipeline("sync-timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.05)
    def blocking():
        events.append("blocking:start")
        deadline = time.monotonic() + 5
        while not release.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        events.append("blocking:end")
        return "too late"

    @pipe.step
    async def ticker():
        for i in range(20):
            events.append(f"tick{i}")
            await asyncio.sleep(0.005)
        return "ticked"

    @pipe.step(depends_on=["ticker"])
    def after_ticker(ticker):
        events.append("after_ticker")
        return ticker

    @pipe.step(depends_on=["blocking"], trigger="all_done")
    def cleanup(blocking):
        events.append("cleanup")
        return blocking

    try:
        run = pipe.run_sync()
        # the run ended while the abandoned thread was still inside the step
        assert "blocking:end" not in events
    finally:
        release.set()
    result = run.steps["blocking"]
    assert result.status is StepStatus.FAILED
    assert "timed out" in result.error and isinstance(result.exception, StepTimeout)
    assert run.steps["ticker"].output == "ticked"
    assert run.steps["after_ticker"].status is StepStatus.SUCCESS
    assert run.steps["cleanup"].status is StepStatus.SUCCESS
    assert run.steps["cleanup"].output is None  # the timed-out step has no output
    assert events.index("tick19") < events.index("after_ticker")
    assert wait_for(lambda: "blocking:end" in events)
    assert run.status is RunStatus.FAILED


@pytest.mark.slow
def test_sync_step_timeout_is_retried_on_a_fresh_thread(plugin_manager, executor, tmp_path):
    release = Flag(tmp_path / "release")
    pipe = Pipeline("sync-timeout", plugin_manager=plugin_manager)

    @pipe.step(timeout=0.3, retries=1, retry_delay=0.001, retry_jitter=0)
    def first_blocks(ctx):
        if ctx.attempt == 1:
            release.wait(5)
            return "abandoned"
        return f"attempt {ctx.attempt}"

    try:
        run = pipe.run_sync()
    finally:
        release.set()
    result = run.steps["first_blocks"]
    assert result.status is StepStatus.SUCCESS
    assert result.output == "attempt 2"
    assert result.attempts == 2


@pytest.mark.parametrize("with_timeout", [True, False])
def test_a_steps_own_timeout_error_is_not_a_pipectl_timeout(plugin_manager, with_timeout, executor):
    pipe = Pipeline("own", plugin_manager=plugin_manager)
    options = {"timeout": 10} if with_timeout else {}

    @pipe.step(**options)
    async def own_async():
        await asyncio.sleep(0)
        raise TimeoutError("the database took too long")

    @pipe.step(**options)
    def own_sync():
        raise TimeoutError("the API took too long")

    @pipe.step(**options)
    async def wait_for_something():
        await asyncio.wait_for(asyncio.Event().wait(), 0.01)  # raises TimeoutError

    run = pipe.run_sync()
    for name, message in (
        ("own_async", "TimeoutError: the database took too long"),
        ("own_sync", "TimeoutError: the API took too long"),
        ("wait_for_something", "TimeoutError"),
    ):
        result = run.steps[name]
        assert result.status is StepStatus.FAILED
        assert result.error == message
        assert "timed out" not in result.error
        assert isinstance(result.exception, TimeoutError)
        assert not isinstance(result.exception, StepTimeout)


def test_a_timed_out_sync_step_does_not_hold_back_the_next_sync_step(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    release = Flag(tmp_path / "release")
    pipe = Pipeline("starved", plugin_manager=plugin_manager, max_concurrent=1)

    @pipe.step(timeout=0.05)
    def stuck():
        release.wait(1.0)
        events.append("stuck:end")

    @pipe.step
    def next_one():
        events.append("next_one")

    try:
        run = pipe.run_sync()
    finally:
        release.set()
    assert run.steps["stuck"].status is StepStatus.FAILED
    assert run.steps["next_one"].status is StepStatus.SUCCESS
    assert wait_for(lambda: "stuck:end" in events)
    assert events.index("next_one") < events.index("stuck:end")


@pytest.mark.slow
def test_an_attempt_that_timed_out_before_starting_never_runs_later(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    pipe = Pipeline("zombie", plugin_manager=plugin_manager, max_concurrent=1)

    @pipe.step(timeout=0.05)
    def stuck():
        time.sleep(0.4)
        events.append("stuck:end")

    @pipe.step(timeout=0.05)
    def victim():
        events.append("victim ran")

    run = pipe.run_sync()
    assert wait_for(lambda: "stuck:end" in events)
    time.sleep(0.2)  # room for a queued call to run, if one is left behind
    if run.steps["victim"].status is StepStatus.SUCCESS:
        assert events.count("victim ran") == 1
    else:  # reported as never finished in time: then it must not run at all
        assert events.count("victim ran") == 0, (run.steps["victim"], events)

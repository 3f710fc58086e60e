"""Retries: exact attempt counts, backoff delays (with cap and jitter), ``retry_on``."""

from __future__ import annotations

import tempfile

import pytest
from helpers import CallLog

from pipectl import Pipeline, RunStatus, StepStatus

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py).


def flaky(failures: int, error: type[BaseException] = ConnectionError):
    """A step function failing ``failures`` times, then returning the number of calls; its
    calls are counted in a file (``step.log``), so calls on a dask worker count too."""
    log = CallLog(tempfile.mkstemp(prefix="pipectl-calls-")[1])

    def step():
        calls = log.record()
        if calls <= failures:
            raise error(f"failure {calls}")
        return calls

    step.log = log  # type: ignore[attr-defined]
    return step


def test_fails_twice_then_succeeds_with_three_retries(plugin_manager, hook_recorder, executor):
    pipe = Pipeline("retry", plugin_manager=plugin_manager)
    func = flaky(2)
    pipe.add_step("flaky", func, retries=3, retry_delay=0.01, retry_jitter=0)
    run = pipe.run_sync()
    result = run.steps["flaky"]
    assert run.status is RunStatus.SUCCESS
    assert result.status is StepStatus.SUCCESS
    assert result.attempts == 3 and result.retries == 2
    assert result.output == 3
    assert len(func.log) == 3
    assert [c.attempt for c in hook_recorder.calls_for("step_start", "flaky")] == [1, 2, 3]
    retries = hook_recorder.calls_for("step_retry", "flaky")
    assert [c.attempt for c in retries] == [1, 2]
    assert [str(c.error) for c in retries] == ["failure 1", "failure 2"]
    assert all(isinstance(c.error, ConnectionError) for c in retries)


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_exhausted_retries_fail_with_retries_plus_one_attempts(
    plugin_manager, hook_recorder, retries, executor
):
    pipe = Pipeline("retry", plugin_manager=plugin_manager)
    func = flaky(100)

    @pipe.step(depends_on=["always"])
    def downstream(always):
        return always

    pipe.add_step("always", func, retries=retries, retry_delay=0.001, retry_jitter=0)
    run = pipe.run_sync()
    result = run.steps["always"]
    assert run.status is RunStatus.FAILED
    assert result.status is StepStatus.FAILED
    assert result.attempts == retries + 1 == len(func.log)
    assert result.error == f"ConnectionError: failure {retries + 1}"  # the last attempt's error
    assert isinstance(result.exception, ConnectionError)
    assert "raise error" in result.traceback and "pipectl/engine.py" not in result.traceback
    assert len(hook_recorder.calls_for("step_start", "always")) == retries + 1
    assert len(hook_recorder.calls_for("step_retry", "always")) == retries
    assert run.steps["downstream"].status is StepStatus.SKIPPED
    assert any("'always' failed" in e for e in run.errors)


def test_backoff_delays_grow_exponentially_without_jitter(plugin_manager, hook_recorder, executor):
    pipe = Pipeline("backoff", plugin_manager=plugin_manager)
    pipe.add_step(
        "s",
        flaky(100),
        retries=4,
        retry_delay=0.002,
        retry_backoff=3.0,
        retry_jitter=0,
        retry_max_delay=None,
    )
    run = pipe.run_sync()
    assert run.steps["s"].attempts == 5
    delays = [c.delay for c in hook_recorder.calls_for("step_retry", "s")]
    assert delays == pytest.approx([0.002 * 3.0 ** (n - 1) for n in range(1, 5)])


def test_backoff_is_capped_by_retry_max_delay(plugin_manager, hook_recorder, executor):
    pipe = Pipeline("backoff", plugin_manager=plugin_manager)
    pipe.add_step(
        "s",
        flaky(100),
        retries=5,
        retry_delay=0.001,
        retry_backoff=2.0,
        retry_max_delay=0.004,
        retry_jitter=0,
    )
    pipe.run_sync()
    delays = [c.delay for c in hook_recorder.calls_for("step_retry", "s")]
    assert delays == pytest.approx([0.001, 0.002, 0.004, 0.004, 0.004])


def test_jitter_lowers_the_delay_by_at_most_its_fraction(plugin_manager, hook_recorder, executor):
    jitter = 0.5
    pipe = Pipeline("jitter", plugin_manager=plugin_manager)
    for i in range(4):
        pipe.add_step(
            f"s{i}",
            flaky(100),
            retries=5,
            retry_delay=0.001,
            retry_backoff=2.0,
            retry_max_delay=0.01,
            retry_jitter=jitter,
        )
    pipe.run_sync()
    retries = hook_recorder.calls_for("step_retry")
    assert len(retries) == 4 * 5
    for call in retries:
        base = min(0.001 * 2.0 ** (call.attempt - 1), 0.01)
        assert base * (1 - jitter) - 1e-12 <= call.delay <= base + 1e-12, (call, base)
    # jitter is random: not every delay sits on its upper bound
    assert any(c.delay < min(0.001 * 2.0 ** (c.attempt - 1), 0.01) for c in retries)


def test_the_step_waits_for_the_backoff_delay(plugin_manager):
    """The retry waits without blocking the loop: a sibling gets many turns in between, and
    the step's duration covers at least the delay (a lower bound only)."""
    import asyncio

    ticks: list[int] = []
    tick_at_attempt: list[int] = []
    pipe = Pipeline("wait", plugin_manager=plugin_manager)

    async def once_flaky():
        tick_at_attempt.append(len(ticks))
        if len(tick_at_attempt) == 1:
            raise ConnectionError("once")
        return len(tick_at_attempt)

    @pipe.step
    async def ticker():
        for i in range(1_000_000):
            if len(tick_at_attempt) == 2:
                break
            ticks.append(i)
            await asyncio.sleep(0)

    pipe.add_step("flaky", once_flaky, retries=1, retry_delay=0.05, retry_jitter=0)
    run = pipe.run_sync()
    assert run.ok and run.steps["flaky"].attempts == 2
    first, second = tick_at_attempt
    assert second - first >= 3  # the loop ran on while the retry waited
    assert run.steps["flaky"].duration_ms >= 0.05 * 1000 * 0.8


def test_retry_on_retries_only_the_listed_errors(plugin_manager, hook_recorder, executor):
    pipe = Pipeline("retry_on", plugin_manager=plugin_manager)
    conn = flaky(2, ConnectionError)
    value = flaky(2, ValueError)
    pipe.add_step(
        "conn", conn, retries=3, retry_delay=0.001, retry_jitter=0, retry_on=(ConnectionError,)
    )
    pipe.add_step(
        "value", value, retries=3, retry_delay=0.001, retry_jitter=0, retry_on=(ConnectionError,)
    )
    run = pipe.run_sync()
    assert run.steps["conn"].status is StepStatus.SUCCESS
    assert run.steps["conn"].attempts == 3
    assert run.steps["value"].status is StepStatus.FAILED
    assert run.steps["value"].attempts == 1 and len(value.log) == 1
    assert run.steps["value"].error == "ValueError: failure 1"
    assert hook_recorder.calls_for("step_retry", "value") == []
    assert run.status is RunStatus.FAILED


def test_retry_on_accepts_a_single_class_and_subclasses(plugin_manager, executor):
    pipe = Pipeline("retry_on", plugin_manager=plugin_manager)
    # ConnectionRefusedError is a ConnectionError
    func = flaky(1, ConnectionRefusedError)
    pipe.add_step("s", func, retries=1, retry_delay=0.001, retry_on=ConnectionError)
    run = pipe.run_sync()
    assert run.ok and run.steps["s"].attempts == 2


def test_retry_on_rejects_non_exceptions(plugin_manager):
    pipe = Pipeline("retry_on", plugin_manager=plugin_manager)
    with pytest.raises(TypeError, match="retry_on takes exception classes"):
        pipe.add_step("s", flaky(0), retry_on=("ConnectionError",))


def test_async_steps_retry_too(plugin_manager, executor, tmp_path):
    log = CallLog(tmp_path / "calls")
    pipe = Pipeline("async", plugin_manager=plugin_manager)

    @pipe.step(retries=2, retry_delay=0.001, retry_jitter=0)
    async def step():
        if log.record() < 3:
            raise OSError("nope")
        return "ok"

    run = pipe.run_sync()
    assert run.steps["step"].output == "ok" and run.steps["step"].attempts == 3
    assert len(log) == 3


@pytest.mark.parametrize(
    "bad",
    [
        dict(retries=-1),
        dict(retry_delay=-0.1),
        dict(timeout=0),
        dict(retry_jitter=1.5),
        dict(retry_max_delay=-1),
    ],
)
def test_invalid_retry_and_timeout_options(plugin_manager, bad):
    pipe = Pipeline("bad", plugin_manager=plugin_manager)
    with pytest.raises(ValueError):
        pipe.add_step("s", flaky(0), **bad)

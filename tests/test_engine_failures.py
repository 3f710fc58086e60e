"""When steps fail: skips propagate downstream (naming the failed step), ``fail_fast`` cancels
and starts nothing new, ``allow_failure`` keeps the run green, ``all_done`` steps still run."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from helpers import EventLog, Rendezvous

from pipectl import Pipeline, RunStatus, StepStatus


def statuses(run) -> dict[str, str]:
    return {name: result.status.value for name, result in run.steps.items()}


# -- the seeds' example: parallel fetches, a merge, an independent branch ---------------------


def seed_pipeline(plugin_manager, events: EventLog, fail_orders: bool) -> Pipeline:
    pipe = Pipeline("seed", plugin_manager=plugin_manager)
    both = Rendezvous(events.path + ".started", ["users", "orders"], timeout=5)

    async def until_both_started(me: str) -> None:
        await both.arrive_async(me)

    @pipe.step
    async def fetch_users():
        events.append("fetch_users:start")
        await until_both_started("users")
        events.append("fetch_users:end")
        return [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]

    @pipe.step
    async def fetch_orders():
        events.append("fetch_orders:start")
        await until_both_started("orders")
        events.append("fetch_orders:end")
        if fail_orders:
            raise ConnectionError("orders API is down")
        return [{"user_id": 1, "total": 10}, {"user_id": 1, "total": 5}]

    @pipe.step(depends_on=["fetch_users", "fetch_orders"])
    def merge(fetch_users, fetch_orders):
        events.append("merge")
        totals: dict[int, int] = {}
        for order in fetch_orders:
            totals[order["user_id"]] = totals.get(order["user_id"], 0) + order["total"]
        return {u["name"]: totals.get(u["id"], 0) for u in fetch_users}

    @pipe.step(depends_on=["merge"])
    def report(merge):
        events.append("report")
        return sorted(merge)

    @pipe.step
    def fetch_config():
        events.append("fetch_config")
        return {"currency": "EUR"}

    @pipe.step(depends_on=["fetch_config"])
    def validate_config(fetch_config):
        events.append("validate_config")
        return fetch_config["currency"] == "EUR"

    return pipe


def test_parallel_fetches_feed_the_merge(plugin_manager, executor, tmp_path):
    events = EventLog(tmp_path / "events")
    run = seed_pipeline(plugin_manager, events, fail_orders=False).run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["merge"].output == {"ann": 15, "bob": 0}
    assert run.steps["report"].output == ["ann", "bob"]
    # both fetches started before either ended: they ran in parallel
    assert max(events.index("fetch_users:start"), events.index("fetch_orders:start")) < min(
        events.index("fetch_users:end"), events.index("fetch_orders:end")
    )
    assert events.index("merge") > max(
        events.index("fetch_users:end"), events.index("fetch_orders:end")
    )


def test_a_failed_fetch_skips_the_merge_and_the_independent_branch_succeeds(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    run = seed_pipeline(plugin_manager, events, fail_orders=True).run_sync()
    assert run.status is RunStatus.FAILED
    assert statuses(run) == {
        "fetch_users": "success",
        "fetch_orders": "failed",
        "merge": "skipped",
        "report": "skipped",
        "fetch_config": "success",
        "validate_config": "success",
    }
    assert run.steps["fetch_orders"].error == "ConnectionError: orders API is down"
    assert "fetch_orders" in run.steps["merge"].reason
    assert run.steps["merge"].reason == "upstream step 'fetch_orders' failed"
    assert run.steps["merge"].attempts == 0 and run.steps["merge"].started_at is None
    assert "merge" not in events and "report" not in events
    assert run.steps["validate_config"].output is True
    assert run.errors == ["step 'fetch_orders' failed: ConnectionError: orders API is down"]
    assert run.outputs().keys() == {"fetch_users", "fetch_config", "validate_config"}


def test_skips_cascade_through_several_levels(plugin_manager, executor, tmp_path):
    ran = EventLog(tmp_path / "ran")
    pipe = Pipeline("cascade", plugin_manager=plugin_manager)

    def boom():
        raise RuntimeError("boom")

    def make(name):
        def step(**upstream):
            ran.append(name)

        return step

    pipe.add_step("root", boom)
    pipe.add_step("l1", make("l1"), depends_on=["root"])
    pipe.add_step("l2", make("l2"), depends_on=["l1"])
    pipe.add_step("side", make("side"))
    pipe.add_step("l3", make("l3"), depends_on=["l2", "side"])
    pipe.add_step("l4", make("l4"), depends_on=["l3"])
    run = pipe.run_sync()
    assert statuses(run) == {
        "root": "failed",
        "l1": "skipped",
        "l2": "skipped",
        "side": "success",
        "l3": "skipped",
        "l4": "skipped",
    }
    assert ran == ["side"]
    # every skip names the step whose failure caused it, however far downstream
    for name in ("l1", "l2", "l3", "l4"):
        assert run.steps[name].reason == "upstream step 'root' failed"
    assert run.status is RunStatus.FAILED
    assert len(run.errors) == 1  # skips are not errors


def test_failed_step_records_error_traceback_and_times(plugin_manager, executor):
    pipe = Pipeline("errors", plugin_manager=plugin_manager)

    def helper():
        raise KeyError("missing")

    @pipe.step
    def broken():
        helper()

    run = pipe.run_sync()
    result = run.steps["broken"]
    assert result.status is StepStatus.FAILED
    assert result.error == "KeyError: 'missing'"
    assert "in helper" in result.traceback and "in broken" in result.traceback
    assert result.started_at is not None and result.finished_at >= result.started_at
    assert result.duration_ms >= 0 and result.output is None
    assert run.end_time >= run.start_time


# -- fail_fast ---------------------------------------------------------------------------------


def test_fail_fast_cancels_running_steps_and_starts_nothing_new(
    plugin_manager, hook_recorder, executor, tmp_path
):
    side_effects = EventLog(tmp_path / "effects")
    pipe = Pipeline("ff", plugin_manager=plugin_manager, fail_fast=True, max_concurrent=3)
    started, stop = str(tmp_path / "slow-started"), str(tmp_path / "stop")

    async def sleep_until_stopped(seconds: float) -> None:
        # a cancelled dask task runs on (a worker does not interrupt it): the test ends it
        for _ in range(int(seconds / 0.01)):
            if os.path.exists(stop):
                return
            await asyncio.sleep(0.01)

    @pipe.step
    async def slow():
        side_effects.append("slow:start")
        open(started, "w").close()
        try:
            await sleep_until_stopped(30)
        except asyncio.CancelledError:
            side_effects.append("slow:cancelled")
            raise
        side_effects.append("slow:end")

    @pipe.step
    async def bad():
        for _ in range(500):  # fail once slow is running
            if os.path.exists(started):
                break
            await asyncio.sleep(0.01)
        side_effects.append("bad:raise")
        raise RuntimeError("bad data")

    @pipe.step
    async def sleeper():
        await sleep_until_stopped(30)

    @pipe.step
    def queued():  # waits for a free slot (max_concurrent=3): never gets one
        side_effects.append("queued")

    @pipe.step(depends_on=["slow"])
    def after_slow(slow):
        side_effects.append("after_slow")

    @pipe.step(depends_on=["bad"])
    def after_bad(bad):
        side_effects.append("after_bad")

    @pipe.step(depends_on=["after_bad"])
    def after_after_bad(after_bad):
        side_effects.append("after_after_bad")

    try:
        run = pipe.run_sync()
        effects = side_effects.calls  # before the stop file lets a forgotten dask task end
    finally:
        open(stop, "w").close()
    assert run.status is RunStatus.FAILED
    if executor == "local":  # the step's coroutine is cancelled where it runs
        assert effects == ["slow:start", "bad:raise", "slow:cancelled"]
    else:  # the task is forgotten, its function runs on: it had not ended when the run did
        assert effects[:2] == ["slow:start", "bad:raise"]
        assert "slow:end" not in effects
    assert statuses(run) == {
        "slow": "cancelled",
        "bad": "failed",
        "sleeper": "cancelled",
        "queued": "cancelled",
        "after_slow": "cancelled",
        "after_bad": "skipped",
        "after_after_bad": "skipped",
    }
    assert "fail_fast" in run.steps["slow"].reason and "'bad'" in run.steps["slow"].reason
    assert run.steps["slow"].attempts == 1
    assert run.steps["queued"].attempts == 0
    assert run.steps["after_bad"].reason == "upstream step 'bad' failed"
    assert run.steps["after_slow"].reason == "upstream step 'slow' was cancelled"
    # the never-started steps never had a step_start
    assert hook_recorder.calls_for("step_start", "queued") == []
    assert hook_recorder.calls_for("step_start", "after_slow") == []
    assert len(hook_recorder.calls_for("step_finish")) == 7


def test_fail_fast_given_to_run_overrides_the_pipeline(plugin_manager, executor, tmp_path):
    pipe = Pipeline("ff", plugin_manager=plugin_manager, max_concurrent=1)
    ran = EventLog(tmp_path / "ran")
    pipe.add_step("bad", lambda: 1 / 0)
    pipe.add_step("later", lambda: ran.append("later"))
    run = pipe.run_sync(fail_fast=True)
    assert statuses(run) == {"bad": "failed", "later": "cancelled"}
    assert ran == []
    run = pipe.run_sync()  # the pipeline's default: keep going
    assert statuses(run) == {"bad": "failed", "later": "success"}
    assert ran == ["later"]


def test_fail_fast_does_not_stop_for_an_allowed_failure(plugin_manager, executor):
    pipe = Pipeline("ff", plugin_manager=plugin_manager, fail_fast=True, max_concurrent=1)
    pipe.add_step("optional", lambda: 1 / 0, allow_failure=True)
    pipe.add_step("later", lambda: "ran")
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS
    assert statuses(run) == {"optional": "failed", "later": "success"}


def test_fail_fast_cancels_a_step_waiting_to_retry(
    plugin_manager, hook_recorder, executor, tmp_path
):
    pipe = Pipeline("ff", plugin_manager=plugin_manager, fail_fast=True)
    attempts = EventLog(tmp_path / "attempts")

    @pipe.step(retries=5, retry_delay=10, retry_jitter=0)
    async def flaky(ctx):
        attempts.append(ctx.attempt)
        raise ConnectionError("try later")

    @pipe.step
    async def bad():
        for _ in range(500):
            if len(attempts):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # flaky has failed and now sleeps before its retry
        raise RuntimeError("bad")

    run = pipe.run_sync()
    assert [c.attempt for c in hook_recorder.calls_for("step_retry", "flaky")] == [1]
    assert attempts == ["1"]
    assert run.steps["flaky"].status is StepStatus.CANCELLED
    assert run.steps["bad"].status is StepStatus.FAILED
    assert run.status is RunStatus.FAILED


def test_fail_fast_with_sync_steps(plugin_manager, executor, tmp_path):
    release = str(tmp_path / "release")
    ran = EventLog(tmp_path / "ran")
    pipe = Pipeline("ff", plugin_manager=plugin_manager, fail_fast=True)

    @pipe.step
    def long_sync():
        for _ in range(500):
            if os.path.exists(release):
                break
            time.sleep(0.01)
        ran.append("long_sync:end")

    @pipe.step
    def bad():
        raise ValueError("bad")

    @pipe.step(depends_on=["long_sync"])
    def after_long(long_sync):
        ran.append("after_long")

    try:
        run = pipe.run_sync()
    finally:
        open(release, "w").close()
    assert statuses(run) == {"long_sync": "cancelled", "bad": "failed", "after_long": "cancelled"}
    assert "after_long" not in ran


# -- allow_failure -----------------------------------------------------------------------------


def test_allow_failure_keeps_the_run_green_and_dependents_get_none(plugin_manager, executor):
    pipe = Pipeline("allowed", plugin_manager=plugin_manager)

    @pipe.step(allow_failure=True)
    def enrich():
        raise ConnectionError("enrichment service down")

    @pipe.step
    def base():
        return [1, 2]

    @pipe.step(depends_on=["base", "enrich"])
    def combine(base, enrich):
        return {"base": base, "enrich": enrich}

    @pipe.step(depends_on=["combine"])
    def publish(combine):
        return combine["enrich"] is None

    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS
    assert run.ok
    assert run.steps["enrich"].status is StepStatus.FAILED
    assert run.steps["combine"].output == {"base": [1, 2], "enrich": None}
    assert run.steps["publish"].output is True
    assert run.errors == [
        "step 'enrich' failed (allowed to fail): ConnectionError: enrichment service down"
    ]


def test_allow_failure_after_retries(plugin_manager, executor):
    pipe = Pipeline("allowed", plugin_manager=plugin_manager)
    pipe.add_step("flaky", lambda: 1 / 0, allow_failure=True, retries=2, retry_delay=0.001)
    pipe.add_step("after", lambda flaky: flaky, depends_on=["flaky"])
    run = pipe.run_sync()
    assert run.ok
    assert run.steps["flaky"].attempts == 3
    assert run.steps["after"].status is StepStatus.SUCCESS and run.steps["after"].output is None


def test_a_skipped_allow_failure_step_still_skips_its_dependents(plugin_manager, executor):
    pipe = Pipeline("allowed", plugin_manager=plugin_manager)
    pipe.add_step("root", lambda: 1 / 0)
    pipe.add_step("optional", lambda root: root, depends_on=["root"], allow_failure=True)
    pipe.add_step("after", lambda optional: optional, depends_on=["optional"])
    run = pipe.run_sync()
    assert statuses(run) == {"root": "failed", "optional": "skipped", "after": "skipped"}
    assert run.steps["after"].reason == "upstream step 'root' failed"


# -- all_done ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_fast", [False, True])
def test_all_done_cleanup_runs_after_its_upstream_failed(
    plugin_manager, fail_fast, executor, tmp_path
):
    ran = EventLog(tmp_path / "ran")
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager, fail_fast=fail_fast)

    @pipe.step
    def load():
        ran.append("load")
        raise RuntimeError("load failed half way")

    @pipe.step(depends_on=["load"])
    def publish(load):
        ran.append("publish")

    @pipe.step(depends_on=["load"], trigger="all_done")
    def cleanup(load, ctx):
        ran.append("cleanup")
        if executor != "local":  # ctx.results is the driver's
            return (load, "failed")
        return (load, ctx.results["load"].status.value)

    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert ran == ["load", "cleanup"]
    assert run.steps["cleanup"].status is StepStatus.SUCCESS
    assert run.steps["cleanup"].output == (None, "failed")  # and it can see why
    assert run.steps["publish"].status is StepStatus.SKIPPED


def test_all_done_runs_after_skipped_and_successful_dependencies(plugin_manager, executor):
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager)
    pipe.add_step("ok", lambda: "fine")
    pipe.add_step("bad", lambda: 1 / 0)
    pipe.add_step("skipped", lambda bad: bad, depends_on=["bad"])
    pipe.add_step("cleanup", lambda **up: up, depends_on=["ok", "skipped"], trigger="all_done")
    pipe.add_step("after_cleanup", lambda cleanup: sorted(cleanup), depends_on=["cleanup"])
    run = pipe.run_sync()
    assert run.steps["skipped"].status is StepStatus.SKIPPED
    assert run.steps["cleanup"].output == {"ok": "fine", "skipped": None}
    assert run.steps["after_cleanup"].output == ["ok", "skipped"]
    assert run.status is RunStatus.FAILED


def test_all_done_step_waits_for_every_dependency(plugin_manager, executor, tmp_path):
    events = EventLog(tmp_path / "events")
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager)

    @pipe.step
    async def fails_fast():
        events.append("fails_fast")
        raise RuntimeError("x")

    @pipe.step
    async def slow():
        await asyncio.sleep(0.05)
        events.append("slow")

    @pipe.step(depends_on=["fails_fast", "slow"], trigger="all_done")
    def cleanup():
        events.append("cleanup")

    pipe.run_sync()
    assert events == ["fails_fast", "slow", "cleanup"]


def test_all_done_cleanup_with_fail_fast_after_cancelled_dependencies(
    plugin_manager, executor, tmp_path
):
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager, fail_fast=True)
    ran = EventLog(tmp_path / "ran")

    @pipe.step
    async def long():
        await asyncio.sleep(2)  # still running when bad fails

    @pipe.step
    async def bad():
        await asyncio.sleep(0.01)
        raise RuntimeError("bad")

    @pipe.step(depends_on=["long", "bad"], trigger="all_done")
    def cleanup():
        ran.append("cleanup")

    @pipe.step(depends_on=["cleanup"])
    def after_cleanup():
        ran.append("after_cleanup")

    run = pipe.run_sync()
    assert statuses(run) == {
        "long": "cancelled",
        "bad": "failed",
        "cleanup": "success",
        "after_cleanup": "cancelled",
    }
    assert ran == ["cleanup"]


def test_a_failing_all_done_step_fails_the_run(plugin_manager, executor):
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("cleanup", lambda: 1 / 0, depends_on=["a"], trigger="all_done")
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert run.steps["cleanup"].status is StepStatus.FAILED


def test_trigger_must_be_known(plugin_manager, executor):
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager)
    with pytest.raises(ValueError):
        pipe.add_step("a", lambda: 1, trigger="sometimes")


# -- sync steps cancelled by fail_fast keep running in their thread (regressions) -------------


def test_a_cancelled_sync_steps_late_output_is_not_passed_downstream(plugin_manager):
    go = threading.Event()
    returned = threading.Event()
    pipe = Pipeline("late", plugin_manager=plugin_manager, fail_fast=True)

    @pipe.step
    def slow():  # running when the run stops: recorded as cancelled, its thread goes on
        go.wait(5)
        returned.set()
        return "late output"

    @pipe.step
    async def bad():
        await asyncio.sleep(0.02)
        raise RuntimeError("bad")

    @pipe.step(depends_on=["bad"], trigger="all_done")
    async def gate():  # lets slow return only after it was recorded as cancelled
        await asyncio.sleep(0.02)
        go.set()
        while not returned.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)

    @pipe.step(depends_on=["slow", "gate"], trigger="all_done")
    def cleanup(slow):
        return slow

    try:
        run = pipe.run_sync()
    finally:
        go.set()
    assert run.steps["slow"].status is StepStatus.CANCELLED
    assert run.steps["slow"].output is None
    assert run.steps["cleanup"].output is None  # what the record says slow produced


def test_cancelled_sync_steps_do_not_hold_back_all_done_steps(plugin_manager):
    release = threading.Event()
    both_inside = threading.Barrier(2, timeout=1)
    pipe = Pipeline("pool", plugin_manager=plugin_manager, max_concurrent=2, fail_fast=True)

    @pipe.step
    def stuck():
        release.wait(5)

    @pipe.step
    def bad():
        time.sleep(0.05)  # stuck is running by now
        raise RuntimeError("bad")

    def cleanup():
        both_inside.wait()  # two clean-up steps at once: max_concurrent=2 allows it

    pipe.add_step("cleanup1", cleanup, depends_on=["bad"], trigger="all_done")
    pipe.add_step("cleanup2", cleanup, depends_on=["bad"], trigger="all_done")
    try:
        run = pipe.run_sync()
    finally:
        release.set()
    assert run.steps["stuck"].status is StepStatus.CANCELLED
    assert run.steps["cleanup1"].status is StepStatus.SUCCESS, run.steps["cleanup1"].error
    assert run.steps["cleanup2"].status is StepStatus.SUCCESS, run.steps["cleanup2"].error

"""The dask executor on a real LocalCluster (2 worker processes), compared with ``local``."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import Pipeline, hookimpl  # noqa: E402
from pipectl.errors import ExecutorError  # noqa: E402

from pipectl_dask.executor import (  # noqa: E402
    DaskExecutor,
    DaskOutput,
    SchedulerUnreachable,
    UnpicklableOutput,
)

# the step functions below travel to the workers by value, not as an import of this file
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def run_both(make, pm, cluster, **dask_options):
    """Run the pipeline ``make()`` builds on local, then on dask; (local run, dask run)."""
    local = make(pm).run_sync(executor="local")
    options = {"scheduler": cluster.scheduler_address, "fetch": "all", **dask_options}
    remote = make(pm).run_sync(executor="dask", executor_options=options)
    return local, remote


def value(output):
    return output.result() if isinstance(output, DaskOutput) else output


def statuses(run):
    return {name: result.status.value for name, result in run.steps.items()}


def outputs(run):
    return {name: value(result.output) for name, result in run.steps.items()}


# -- pipelines -----------------------------------------------------------------------------


def chain_and_diamond(pm):
    pipe = Pipeline("shapes", plugin_manager=pm)

    @pipe.step("source")
    async def source(params):
        await asyncio.sleep(0.01)
        return list(range(params.get("n", 10)))

    @pipe.step("double", depends_on=["source"])
    def double(source):
        return [x * 2 for x in source]

    @pipe.step("square", depends_on=["source"])
    async def square(source):
        return [x * x for x in source]

    @pipe.step("join", depends_on=["double", "square"])
    def join(double, square, ctx):
        return {"sum": sum(double) + sum(square), "step": ctx.step, "attempt": ctx.attempt}

    @pipe.step("tail", depends_on=["join"])
    async def tail(join):
        return join["sum"] + 1

    return pipe


def test_chain_and_diamond_same_outputs_as_local(pm, cluster):
    local, remote = run_both(chain_and_diamond, pm, cluster)
    assert remote.status.value == "success", remote.errors
    assert outputs(remote) == outputs(local)
    assert outputs(remote)["join"] == {"sum": 375, "step": "join", "attempt": 1}


def failing_first(marker_dir):
    def make(pm):
        pipe = Pipeline("retry", plugin_manager=pm)

        @pipe.step("flaky", retries=2, retry_delay=0.01)
        def flaky():
            marker = Path(marker_dir) / "tried"
            if not marker.exists():
                marker.write_text("1")
                raise ConnectionError("first attempt fails")
            return os.getpid()

        return pipe

    return make


def test_retry_runs_a_new_attempt(pm, cluster, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    local = failing_first(tmp_path / "local")(pm).run_sync(executor="local")
    remote = failing_first(tmp_path / "dask")(pm).run_sync(
        executor="dask", executor_options={"scheduler": cluster.scheduler_address}
    )
    for run in (local, remote):
        assert run.steps["flaky"].status.value == "success"
        assert run.steps["flaky"].attempts == 2
    assert value(remote.steps["flaky"].output) != os.getpid()


def semantics(pm):
    """A timeout, an allowed failure, skips after a failure, and an all_done clean-up."""
    pipe = Pipeline("semantics", plugin_manager=pm)

    @pipe.step("slow", timeout=0.5)
    def slow():
        time.sleep(1.5)
        return "late"

    @pipe.step("after_slow", depends_on=["slow"])
    def after_slow(slow):
        return slow

    @pipe.step("optional", allow_failure=True)
    def optional():
        raise ValueError("allowed to fail")

    @pipe.step("ok")
    async def ok():
        return 1

    @pipe.step("after_ok", depends_on=["ok"])
    def after_ok(ok):
        return ok + 1

    @pipe.step("cleanup", depends_on=["after_slow", "after_ok"], trigger="all_done")
    def cleanup():
        return "cleaned"

    return pipe


def test_timeout_skip_allow_failure_all_done_like_local(pm, cluster, monkeypatch):
    cancelled = []
    original = DaskExecutor._cancel

    def spy(self, future):
        cancelled.append(future.key)
        original(self, future)

    monkeypatch.setattr(DaskExecutor, "_cancel", spy)
    local, remote = run_both(semantics, pm, cluster)
    assert statuses(remote) == statuses(local)
    assert statuses(remote)["slow"] == "failed"
    assert "StepTimeout" in remote.steps["slow"].error
    assert statuses(remote)["after_slow"] == "skipped"
    assert statuses(remote)["optional"] == "failed"
    assert statuses(remote)["cleanup"] == "success"
    assert value(remote.steps["cleanup"].output) == "cleaned"
    assert value(remote.steps["after_ok"].output) == 2
    assert remote.status == local.status
    assert [k for k in cancelled if k.startswith("pipectl-slow-a1-")]


def fail_fast(pm):
    pipe = Pipeline("ff", plugin_manager=pm, fail_fast=True)

    @pipe.step("boom")
    def boom():
        raise RuntimeError("boom")

    @pipe.step("long")
    async def long():
        await asyncio.sleep(1.5)
        return 1

    @pipe.step("after_long", depends_on=["long"])
    def after_long(long):
        return long

    @pipe.step("cleanup", depends_on=["after_long"], trigger="all_done")
    def cleanup():
        return "cleaned"

    return pipe


def test_fail_fast_like_local(pm, cluster):
    local, remote = run_both(fail_fast, pm, cluster)
    assert statuses(remote) == statuses(local)
    assert statuses(remote)["long"] == "cancelled"
    assert statuses(remote)["cleanup"] == "success"
    assert remote.status == local.status


# -- hooks and middleware ------------------------------------------------------------------


async def pid_middleware(call_next, attempt):
    output = await call_next()
    return {"output": output, "middleware_pid": os.getpid(), "attempt": attempt}


class WorkerMiddleware:
    @hookimpl
    def pipectl_wrap_step(self, step, context):
        return pid_middleware if step.name == "tail" else pass_through


async def pass_through(call_next, attempt):
    return await call_next()


def test_hooks_fire_in_driver_and_middleware_runs_on_worker(
    pm, register_plugin, hook_recorder, cluster
):
    register_plugin(WorkerMiddleware(), name="worker-middleware")
    run = chain_and_diamond(pm).run_sync(
        executor="dask", executor_options={"scheduler": cluster.scheduler_address}
    )
    assert run.status.value == "success", run.errors
    steps = set(run.steps)
    started = {c.step_name for c in hook_recorder.calls if c.name == "pipectl_step_start"}
    finished = [c.step_name for c in hook_recorder.calls if c.name == "pipectl_step_finish"]
    assert started == steps
    assert sorted(finished) == sorted(steps)
    names = [c.name for c in hook_recorder.calls]
    assert names[0] == "pipectl_run_start" and names[-1] == "pipectl_run_finish"
    tail = run.steps["tail"].output  # a final step: fetched at the end, the value
    assert tail["middleware_pid"] != os.getpid()
    assert tail["attempt"] == 1


# -- data stays on the workers -------------------------------------------------------------

SIZE = 20_000_000


def big_data(pm):
    pipe = Pipeline("big", plugin_manager=pm)

    @pipe.step("big")
    def big():
        return b"x" * SIZE

    @pipe.step("use", depends_on=["big"])
    def use(big):
        return {"length": len(big), "pid": os.getpid()}

    return pipe


def test_large_intermediate_output_never_reaches_the_driver(pm, cluster):
    pipe = big_data(pm)
    options = {"scheduler": cluster.scheduler_address}
    pipe.run_sync(executor="dask", executor_options=options)  # warm up: imports, connections
    tracemalloc.start()
    try:
        run = pipe.run_sync(executor="dask", executor_options=options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.status.value == "success", run.errors
    handle = run.steps["big"].output
    assert isinstance(handle, DaskOutput) and handle.type_name == "bytes"
    assert not handle.fetched  # consumed by "use": released, never gathered
    used = run.steps["use"].output
    assert used["length"] == SIZE and used["pid"] != os.getpid()
    assert peak < SIZE // 2, f"the driver allocated {peak} bytes at its peak"


# -- errors --------------------------------------------------------------------------------


def unpicklable(pm):
    pipe = Pipeline("unpicklable", plugin_manager=pm)

    @pipe.step("lock")
    def lock():
        return threading.Lock()

    return pipe


def test_unpicklable_output_names_step_and_type(pm, cluster):
    run = unpicklable(pm).run_sync(
        executor="dask", executor_options={"scheduler": cluster.scheduler_address}
    )
    result = run.steps["lock"]
    assert result.status.value == "failed"
    assert isinstance(result.exception, UnpicklableOutput)
    assert "'lock'" in result.error and "_thread.lock" in result.error


def test_unreachable_scheduler_fails_within_the_timeout(pm):
    pipe = chain_and_diamond(pm)
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError) as info:
        pipe.run_sync(
            executor="dask", executor_options={"scheduler": "tcp://127.0.0.1:9", "timeout": 1.5}
        )
    elapsed = time.perf_counter() - t0
    assert isinstance(info.value.__cause__, SchedulerUnreachable)
    assert "tcp://127.0.0.1:9" in str(info.value) and "1.5 s" in str(info.value)
    assert elapsed < 1.5 + 3

"""Per-run state: one Pipeline object runs again, or twice at once, each run seeing only its
own params, outputs, services and results."""

from __future__ import annotations

import asyncio
import time

from helpers import CallLog, Rendezvous

from pipectl import Pipeline, RunStatus, StepStatus

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py);
# steps that meet or count do it through files, as they may run in other processes. ``ctx``'s
# services, results and state live in the driver: dask's worker context does not offer them.


def test_two_concurrent_runs_of_the_same_pipeline_do_not_mix(plugin_manager, executor, tmp_path):
    pipe = Pipeline("twice", plugin_manager=plugin_manager)
    both = Rendezvous(tmp_path / "arrived", ["1", "2"], timeout=5)

    @pipe.step
    async def read(params, ctx):
        n = params["n"]
        # both runs are inside this step at once before either goes on
        await both.arrive_async(str(n))
        return {"n": n, "run_id": ctx.run_id}

    @pipe.step(depends_on=["read"])
    def double(read, params, ctx):
        assert read["run_id"] == ctx.run_id
        return read["n"] * 2 + params["n"] * 100

    @pipe.step(depends_on=["double", "read"])
    async def report(double, read, ctx):
        await asyncio.sleep(0)
        if executor != "local":  # ctx.results is the driver's
            return (double, double, read["n"], read["n"])
        return (double, ctx.results["double"].output, ctx.results["read"].output["n"], read["n"])

    async def main():
        return await asyncio.gather(pipe.run(params={"n": 1}), pipe.run(params={"n": 2}))

    run1, run2 = asyncio.run(main())
    assert run1 is not run2
    assert run1.run_id != run2.run_id
    assert run1.status is run2.status is RunStatus.SUCCESS
    assert run1.parameters == {"n": 1} and run2.parameters == {"n": 2}
    assert run1.steps["read"].output == {"n": 1, "run_id": run1.run_id}
    assert run2.steps["read"].output == {"n": 2, "run_id": run2.run_id}
    assert run1.steps["double"].output == 102
    assert run2.steps["double"].output == 204
    assert run1.steps["report"].output == (102, 102, 1, 1)
    assert run2.steps["report"].output == (204, 204, 2, 2)


def test_concurrent_runs_with_sync_steps_and_failures(plugin_manager, executor, tmp_path):
    both = Rendezvous(tmp_path / "arrived", ["1", "2"], timeout=5)
    pipe = Pipeline("twice", plugin_manager=plugin_manager)

    @pipe.step
    def read(params):
        both.arrive(str(params["n"]))  # both runs' steps run at once
        if params["fail"]:
            raise ValueError(f"run {params['n']} fails")
        return params["n"]

    @pipe.step(depends_on=["read"])
    def after(read):
        return read * 10

    async def main():
        return await asyncio.gather(
            pipe.run(params={"n": 1, "fail": True}), pipe.run(params={"n": 2, "fail": False})
        )

    failed, ok = asyncio.run(main())
    assert failed.status is RunStatus.FAILED
    assert failed.steps["read"].error == "ValueError: run 1 fails"
    assert failed.steps["after"].status is StepStatus.SKIPPED
    assert ok.status is RunStatus.SUCCESS
    assert ok.steps["after"].output == 20
    assert ok.errors == []


def test_running_again_gives_a_fresh_result(plugin_manager, executor, tmp_path):
    pipe = Pipeline("again", plugin_manager=plugin_manager)
    calls = CallLog(tmp_path / "calls")

    @pipe.step
    def count(params):
        calls.record(params["n"])
        if params["n"] == 1:
            raise RuntimeError("first time fails")
        return len(calls)

    @pipe.step(depends_on=["count"])
    def after(count, ctx):
        if executor != "local":  # ctx.results is the driver's
            return (count, ["count"])
        return (count, sorted(ctx.results))

    first = pipe.run_sync(params={"n": 1})
    second = pipe.run_sync(params={"n": 2})
    assert first is not second and first.run_id != second.run_id
    assert first.status is RunStatus.FAILED
    assert second.status is RunStatus.SUCCESS
    assert second.errors == [] and len(first.errors) == 1
    assert second.steps["after"].output == (2, ["count"])
    # the first result is untouched by the second run
    assert first.steps["after"].status is StepStatus.SKIPPED
    assert first.parameters == {"n": 1}
    assert list(first.steps) == list(second.steps) == ["count", "after"]


def test_services_given_to_a_run_belong_to_that_run(plugin_manager):
    pipe = Pipeline("services", plugin_manager=plugin_manager, services={"shared": "S"})

    @pipe.step
    def look(ctx):
        return (ctx.services["shared"], ctx.services.get("only_here"))

    first = pipe.run_sync(services={"only_here": 1})
    second = pipe.run_sync()
    assert first.steps["look"].output == ("S", 1)
    assert second.steps["look"].output == ("S", None)
    assert "only_here" not in pipe.services


def test_shared_state_between_steps_is_per_run(plugin_manager):
    pipe = Pipeline("state", plugin_manager=plugin_manager)

    @pipe.step
    def put(ctx, params):
        assert "value" not in ctx.state
        ctx.state["value"] = params["n"]

    @pipe.step(depends_on=["put"])
    def get(ctx):
        return ctx.state["value"]

    assert pipe.run_sync(params={"n": 1}).steps["get"].output == 1
    assert pipe.run_sync(params={"n": 2}).steps["get"].output == 2


def test_run_records_timing_and_parameters(plugin_manager, executor):
    pipe = Pipeline("record", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    run = pipe.run_sync(params={"day": "today"}, run_id="fixed-id")
    assert run.run_id == "fixed-id"
    assert run.pipeline_id == "record"
    assert run.parameters == {"day": "today"}
    assert run.start_time <= run.end_time
    assert run.duration_ms is not None and run.duration_ms >= 0


def test_concurrent_runs_each_get_their_own_max_concurrent(plugin_manager, executor, tmp_path):
    both_inside = Rendezvous(tmp_path / "inside", ["1", "2"], timeout=5)
    pipe = Pipeline("limit", plugin_manager=plugin_manager, max_concurrent=1)

    @pipe.step
    def meet(params):
        both_inside.arrive(str(params["n"]))  # one step of each run, at the same time
        time.sleep(0.002)
        return params["n"]

    async def main():
        return await asyncio.gather(pipe.run(params={"n": 1}), pipe.run(params={"n": 2}))

    first, second = asyncio.run(main())
    assert first.ok, first.errors
    assert second.ok, second.errors

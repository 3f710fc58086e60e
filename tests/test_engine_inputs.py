"""What a step function receives: upstream outputs by name, ``inputs=`` mappings, ``params``,
``ctx``, ``**kwargs``; and ``only=`` running a step with what it depends on."""

from __future__ import annotations

import asyncio
import types

import pytest
from helpers import EventLog

from pipectl import (
    Pipeline,
    PipelineValidationError,
    RunStatus,
    Services,
    StepContext,
    StepStatus,
)

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py).
# ``ctx.services`` and ``ctx.results`` live in the driver, so their tests run on local only.


def test_upstream_outputs_arrive_by_parameter_name(plugin_manager, executor):
    pipe = Pipeline("inputs", plugin_manager=plugin_manager)

    @pipe.step
    async def users():
        return ["ann", "bob"]

    @pipe.step
    def orders():
        return {"ann": 2}

    @pipe.step(depends_on=["users", "orders"])
    def merge(orders, users):  # parameter order does not matter
        return {u: orders.get(u, 0) for u in users}

    run = pipe.run_sync()
    assert run.ok
    assert run.steps["merge"].output == {"ann": 2, "bob": 0}
    assert run.outputs() == {
        "users": ["ann", "bob"],
        "orders": {"ann": 2},
        "merge": {"ann": 2, "bob": 0},
    }


def test_inputs_maps_a_non_identifier_step_name(plugin_manager, executor):
    pipe = Pipeline("inputs", plugin_manager=plugin_manager)
    pipe.add_step("fetch-users", lambda: ["ann"])
    pipe.add_step("fetch orders", lambda: [1, 2])

    def merge(users, orders):
        return (users, orders)

    pipe.add_step("merge", merge, inputs={"users": "fetch-users", "orders": "fetch orders"})
    # the mapped steps are dependencies without being listed in depends_on
    assert set(pipe.graph.dependencies["merge"]) == {"fetch-users", "fetch orders"}
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.steps["merge"].output == (["ann"], [1, 2])


def test_inputs_can_rename_an_identifier_step(plugin_manager, executor):
    pipe = Pipeline("inputs", plugin_manager=plugin_manager)
    pipe.add_step("extract", lambda: 41)
    pipe.add_step("load", lambda rows: rows + 1, inputs={"rows": "extract"})
    assert pipe.run_sync().steps["load"].output == 42


def test_params_and_ctx(plugin_manager):
    seen: dict[str, object] = {}
    pipe = Pipeline("ctx", plugin_manager=plugin_manager, services={"db": "the-db"})

    @pipe.step
    async def first(params, ctx):
        seen["first"] = (
            dict(params),
            ctx.run_id,
            ctx.pipeline_id,
            ctx.step,
            ctx.attempt,
            ctx.params is params or dict(ctx.params) == dict(params),
        )
        ctx.logger.info("hello from a step", rows=3)  # usable: a bound structlog logger
        ctx.logger.debug("quiet")
        seen["db"] = ctx.services["db"]
        seen["extra"] = ctx.services["extra"]
        seen["ctx_type"] = type(ctx)
        seen["services_type"] = type(ctx.services)
        return params["day"]

    @pipe.step(depends_on=["first"])
    def second(first, context):  # ``context`` is the other name for ctx
        seen["second"] = (context.step, context.attempt, context.run_id)
        return first

    run = pipe.run_sync(params={"day": "2026-11-23"}, run_id="run-1", services={"extra": 7})
    assert run.ok, run.errors
    assert run.run_id == "run-1"
    assert run.parameters == {"day": "2026-11-23"}
    assert seen["first"] == ({"day": "2026-11-23"}, "run-1", "ctx", "first", 1, True)
    assert seen["second"] == ("second", 1, "run-1")
    assert seen["db"] == "the-db" and seen["extra"] == 7
    assert seen["ctx_type"] is StepContext and seen["services_type"] is Services
    assert run.steps["second"].output == "2026-11-23"


def test_params_cannot_be_mutated_by_a_step(plugin_manager, executor):
    pipe = Pipeline("params", plugin_manager=plugin_manager)

    @pipe.step
    def meddle(params):
        params["n"] = 2

    run = pipe.run_sync(params={"n": 1})
    assert run.steps["meddle"].status is StepStatus.FAILED
    assert "TypeError" in run.steps["meddle"].error
    assert run.parameters == {"n": 1}


def test_ctx_on_every_executor(plugin_manager, executor):
    """What ``ctx`` and ``params`` tell a step wherever it runs (the dask worker's context too)."""
    pipe = Pipeline("ctx", plugin_manager=plugin_manager)

    @pipe.step
    async def first(params, ctx):
        ctx.logger.info("hello from a step", rows=3)  # usable: a bound structlog logger
        return (
            dict(params),
            ctx.run_id,
            ctx.pipeline_id,
            ctx.step,
            ctx.attempt,
            dict(ctx.params) == dict(params),
        )

    @pipe.step(depends_on=["first"])
    def second(first, context):  # ``context`` is the other name for ctx
        return (first, context.step, context.attempt, context.run_id)

    run = pipe.run_sync(params={"day": "2026-11-23"}, run_id="run-1")
    assert run.ok, run.errors
    assert run.steps["second"].output == (
        ({"day": "2026-11-23"}, "run-1", "ctx", "first", 1, True),
        "second",
        1,
        "run-1",
    )


def test_ctx_attempt_counts_attempts(plugin_manager, executor, tmp_path):
    attempts = EventLog(tmp_path / "attempts")
    pipe = Pipeline("attempt", plugin_manager=plugin_manager)

    @pipe.step(retries=2, retry_delay=0.001, retry_jitter=0)
    def flaky(ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("again")
        return ctx.attempt

    run = pipe.run_sync()
    assert attempts == ["1", "2", "3"]
    assert run.steps["flaky"].output == 3


def test_service_factory_runs_once_per_run(plugin_manager):
    made: list[object] = []
    services = Services()
    services.register_factory("conn", lambda: made.append(object()) or made[-1])
    pipe = Pipeline("services", plugin_manager=plugin_manager, services=services)

    @pipe.step
    async def a(ctx):
        await asyncio.sleep(0)
        return ctx.services["conn"]

    @pipe.step(depends_on=["a"])
    def b(a, ctx):
        return ctx.services["conn"] is a

    run1 = pipe.run_sync()
    assert run1.steps["b"].output is True
    assert len(made) == 1
    run2 = pipe.run_sync()
    assert run2.steps["b"].output is True
    assert len(made) == 2  # each run its own instance
    assert run1.steps["a"].output is not run2.steps["a"].output


def test_missing_service_fails_the_step_with_a_helpful_error(plugin_manager):
    pipe = Pipeline("services", plugin_manager=plugin_manager, services={"db": 1})

    @pipe.step
    def a(ctx):
        return ctx.services["cache"]

    run = pipe.run_sync()
    assert run.steps["a"].status is StepStatus.FAILED
    assert "no service named 'cache'" in run.steps["a"].error
    assert "db" in run.steps["a"].error


def test_var_kwargs_receive_every_upstream_output(plugin_manager, executor):
    pipe = Pipeline("kwargs", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b-dash", lambda: 2)
    pipe.add_step("c", lambda: 3)

    def collect(a, params, **upstream):
        return (a, dict(upstream), isinstance(params, types.MappingProxyType))

    pipe.add_step("collect", collect, depends_on=["a", "b-dash", "c"])
    run = pipe.run_sync(params={"x": 1})
    assert run.ok, run.errors
    a, upstream, params_ok = run.steps["collect"].output
    assert a == 1
    assert upstream == {"b-dash": 2, "c": 3}  # the named one is not repeated
    assert params_ok


def test_var_kwargs_only(plugin_manager, executor):
    pipe = Pipeline("kwargs", plugin_manager=plugin_manager)
    pipe.add_step("x", lambda: "X")
    pipe.add_step("y", lambda: "Y")
    pipe.add_step("all", lambda **kw: kw, depends_on=["x", "y"])
    assert pipe.run_sync().steps["all"].output == {"x": "X", "y": "Y"}


def test_defaults_are_kept_for_unbound_parameters(plugin_manager, executor):
    pipe = Pipeline("defaults", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a, scale=10: a * scale, depends_on=["a"])
    assert pipe.run_sync().steps["b"].output == 10


def test_dependency_without_parameter_orders_but_passes_nothing(plugin_manager, executor, tmp_path):
    events = EventLog(tmp_path / "events")
    pipe = Pipeline("order", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: events.append("a"))
    pipe.add_step("b", lambda: events.append("b"), depends_on=["a"])
    assert pipe.run_sync().ok
    assert events == ["a", "b"]


def _only_pipeline(plugin_manager, ran: EventLog) -> Pipeline:
    pipe = Pipeline("only", plugin_manager=plugin_manager)

    def make(name):
        def step(**upstream):
            ran.append(name)
            return name

        return step

    pipe.add_step("extract", make("extract"))
    pipe.add_step("fetch_config", make("fetch_config"))
    pipe.add_step("unrelated", make("unrelated"))
    pipe.add_step("transform", make("transform"), depends_on=["extract", "fetch_config"])
    pipe.add_step("load", make("load"), depends_on=["transform"])
    pipe.add_step("report", make("report"), depends_on=["unrelated"])
    return pipe


def test_only_runs_a_step_and_what_it_depends_on(plugin_manager, executor, tmp_path):
    ran = EventLog(tmp_path / "ran")
    pipe = _only_pipeline(plugin_manager, ran)
    run = pipe.run_sync(only=["transform"])
    assert run.status is RunStatus.SUCCESS
    assert sorted(ran) == ["extract", "fetch_config", "transform"]
    assert set(run.steps) == {"extract", "fetch_config", "transform"}
    assert run.steps["transform"].output == "transform"


def test_only_accepts_a_single_name_and_several_names(plugin_manager, executor, tmp_path):
    ran = EventLog(tmp_path / "ran")
    pipe = _only_pipeline(plugin_manager, ran)
    assert set(pipe.run_sync(only="extract").steps) == {"extract"}
    assert set(pipe.run_sync(only=["load", "report"]).steps) == {
        "extract",
        "fetch_config",
        "transform",
        "load",
        "unrelated",
        "report",
    }


def test_only_with_an_unknown_step_suggests_names(plugin_manager, executor, tmp_path):
    ran = EventLog(tmp_path / "ran")
    pipe = _only_pipeline(plugin_manager, ran)
    with pytest.raises(PipelineValidationError, match="did you mean 'transform'"):
        pipe.run_sync(only=["transfrom"])
    assert ran == []


def test_run_sync_refuses_a_running_loop(plugin_manager, executor):
    pipe = Pipeline("nested", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)

    async def main():
        with pytest.raises(RuntimeError, match="await pipe.run"):
            pipe.run_sync()
        return await pipe.run()

    assert asyncio.run(main()).ok


def test_service_factory_runs_once_per_run_under_concurrent_sync_steps(plugin_manager):
    import threading
    import time

    from pipectl import Services

    made = []
    lock = threading.Lock()

    def make_db():
        time.sleep(0.05)  # slow enough for the steps to ask at the same moment
        with lock:
            made.append(object())
        return made[-1]

    services = Services()
    services.register_factory("db", make_db)
    pipe = Pipeline("svc", plugin_manager=plugin_manager, services=services)
    for i in range(4):
        pipe.add_step(f"s{i}", lambda ctx: ctx.services["db"])

    run = pipe.run_sync()
    assert run.ok
    assert len(made) == 1
    assert {id(r.output) for r in run.steps.values()} == {id(made[0])}
    pipe.run_sync()
    assert len(made) == 2  # each run gets its own instance


@pytest.mark.parametrize("timeout", [None, 10])
def test_a_sync_callable_returning_an_awaitable_is_awaited(plugin_manager, timeout, executor):
    import functools

    async def fetch(n):
        await asyncio.sleep(0)
        return n * 2

    pipe = Pipeline("awaitable", plugin_manager=plugin_manager)
    pipe.add_step("lambda_step", lambda: fetch(1), timeout=timeout)
    pipe.add_step("partial_step", functools.partial(fetch, 2), timeout=timeout)
    pipe.add_step(
        "after",
        lambda lambda_step, partial_step: lambda_step + partial_step,
        depends_on=["lambda_step", "partial_step"],
        timeout=timeout,
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.outputs() == {"lambda_step": 2, "partial_step": 4, "after": 6}


def test_ctx_results_is_a_snapshot_of_finished_steps(plugin_manager):
    pipe = Pipeline("results", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)

    @pipe.step("b", depends_on=["a"])
    def b(a, ctx):
        seen = ctx.results
        seen["injected"] = None  # a copy: the run's record is not touched
        return sorted(seen)

    run = pipe.run_sync()
    assert run.steps["b"].output == ["a", "injected"]
    assert "injected" not in run.steps
    assert run.steps["a"].ok

"""Scheduling: a step starts when its own dependencies are done (no level barrier), never more
than ``max_concurrent`` steps at once, and independent steps run in parallel."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from helpers import EventLog, Gauge, Rendezvous

from pipectl import Pipeline, RunStatus, StepStatus

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py):
# steps count and meet through files, since they may run in other processes.


def test_no_level_barrier_a_chain_finishes_while_a_slow_root_runs(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    pipe = Pipeline("nobarrier", plugin_manager=plugin_manager)

    @pipe.step
    async def slow():
        events.append("slow:start")
        # wait until the fast chain is done (bounded, so a barrier fails the test, not hangs it)
        for _ in range(500):
            if "c:end" in events:
                break
            await asyncio.sleep(0.01)
        events.append("slow:end")

    @pipe.step
    async def a():
        events.append("a:start")
        events.append("a:end")
        return 1

    @pipe.step(depends_on=["a"])
    async def b(a):
        events.append("b:start")
        events.append("b:end")
        return a + 1

    @pipe.step(depends_on=["b"])
    def c(b):  # a sync step in the chain, too
        events.append("c:start")
        events.append("c:end")
        return b + 1

    @pipe.step(depends_on=["slow", "c"])
    async def join(c):
        events.append("join:start")
        return c

    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS
    assert run.steps["join"].output == 3
    pos = {e: i for i, e in enumerate(events)}
    # b (level 1) and c (level 2) started and finished while slow (level 0) was still running
    assert pos["slow:start"] < pos["b:start"] < pos["c:end"] < pos["slow:end"]
    assert pos["slow:end"] < pos["join:start"]


def test_a_step_starts_when_its_own_dependencies_finish_not_its_level(
    plugin_manager, executor, tmp_path
):
    """Two level-1 steps: the one whose dependency is fast runs before the slow level-0 ends."""
    events = EventLog(tmp_path / "events")
    release = str(tmp_path / "release")
    pipe = Pipeline("levels", plugin_manager=plugin_manager)

    @pipe.step
    def slow_root():
        events.append("slow_root:start")
        for _ in range(500):
            if os.path.exists(release):
                break
            time.sleep(0.01)
        events.append("slow_root:end")
        return "slow"

    @pipe.step
    def fast_root():
        return "fast"

    @pipe.step(depends_on=["fast_root"])
    def after_fast(fast_root):
        events.append("after_fast")
        open(release, "w").close()  # only now may the slow root end
        return fast_root

    @pipe.step(depends_on=["slow_root"])
    def after_slow(slow_root):
        events.append("after_slow")

    run = pipe.run_sync()
    assert run.ok
    assert events.index("after_fast") < events.index("slow_root:end") < events.index("after_slow")


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_max_concurrent_is_never_exceeded_async(plugin_manager, limit, executor, tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    pipe = Pipeline("limit", plugin_manager=plugin_manager, max_concurrent=limit)

    def make(i):
        async def step():
            gauge.enter()
            try:
                await asyncio.sleep(0.05)
            finally:
                gauge.leave()
            return i

        return step

    for i in range(8):
        pipe.add_step(f"s{i}", make(i))
    # a few dependent steps too, released in bursts
    for i in range(4):
        pipe.add_step(f"d{i}", make(i), depends_on=[f"s{i}", f"s{i + 4}"])

    run = pipe.run_sync()
    assert run.ok
    assert gauge.entered == 12
    assert gauge.peak == limit  # reached (eight roots are ready at once) and never exceeded


@pytest.mark.parametrize("limit", [1, 3])
def test_max_concurrent_is_never_exceeded_sync(plugin_manager, limit, executor, tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    pipe = Pipeline("limit", plugin_manager=plugin_manager, max_concurrent=limit)

    def make(i):
        def step():
            gauge.enter()
            try:
                time.sleep(0.02)
            finally:
                gauge.leave()
            return i

        return step

    for i in range(7):
        pipe.add_step(f"s{i}", make(i))
    pipe.add_step("last", make(99), depends_on=[f"s{i}" for i in range(7)])
    run = pipe.run_sync()
    assert run.ok
    assert gauge.entered == 8
    assert 1 <= gauge.peak <= limit


@pytest.mark.slow
def test_max_concurrent_given_to_run_overrides_the_pipeline(plugin_manager, executor, tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    pipe = Pipeline("limit", plugin_manager=plugin_manager, max_concurrent=4)

    def make():
        async def step():
            gauge.enter()
            await asyncio.sleep(0.05)
            gauge.leave()

        return step

    for i in range(6):
        pipe.add_step(f"s{i}", make())
    assert pipe.run_sync(max_concurrent=1).ok
    assert gauge.peak == 1
    gauge.peak = 0
    assert pipe.run_sync().ok
    assert gauge.peak == 4


def test_mixed_sync_and_async_steps_respect_max_concurrent(plugin_manager, executor, tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    pipe = Pipeline("limit", plugin_manager=plugin_manager, max_concurrent=2)

    def make_sync():
        def step():
            gauge.enter()
            time.sleep(0.01)
            gauge.leave()

        return step

    def make_async():
        async def step():
            gauge.enter()
            await asyncio.sleep(0.01)
            gauge.leave()

        return step

    for i in range(5):
        pipe.add_step(f"sync{i}", make_sync())
        pipe.add_step(f"async{i}", make_async())
    assert pipe.run_sync().ok
    assert gauge.entered == 10
    assert gauge.peak <= 2


def test_independent_async_steps_run_in_parallel(plugin_manager, executor, tmp_path):
    """Each step waits for the other to have started: only possible if they overlap."""
    pipe = Pipeline("parallel", plugin_manager=plugin_manager)
    both = Rendezvous(tmp_path / "started", ["left", "right"], timeout=5)

    def make(me, other):
        async def step():
            await both.arrive_async(me)
            return me

        return step

    pipe.add_step("left", make("left", "right"))
    pipe.add_step("right", make("right", "left"))
    run = pipe.run_sync()
    assert run.ok, run.errors


def test_independent_sync_steps_run_in_parallel(plugin_manager, executor, tmp_path):
    three = Rendezvous(tmp_path / "inside", ["a", "b", "c"], timeout=5)  # all inside at once
    pipe = Pipeline("parallel", plugin_manager=plugin_manager)

    def step(ctx):
        three.arrive(ctx.step)
        return (os.getpid(), threading.get_ident())

    for name in ("a", "b", "c"):
        pipe.add_step(name, step)
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert len({r.output for r in run.steps.values()}) == 3  # three different threads


def test_sync_steps_do_not_block_the_event_loop(plugin_manager):
    ticks: list[int] = []
    release = threading.Event()
    pipe = Pipeline("loop", plugin_manager=plugin_manager)

    @pipe.step
    def blocking():
        release.wait(5)
        return len(ticks)

    @pipe.step
    async def ticker():
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0.001)
        release.set()

    run = pipe.run_sync()
    assert run.ok
    assert run.steps["blocking"].output == 5


def test_max_concurrent_with_a_limit_of_one_runs_steps_one_after_another(
    plugin_manager, executor, tmp_path
):
    events = EventLog(tmp_path / "events")
    pipe = Pipeline("serial", plugin_manager=plugin_manager, max_concurrent=1)

    def make(name):
        async def step():
            events.append(f"{name}:start")
            await asyncio.sleep(0)
            events.append(f"{name}:end")

        return step

    for name in ("a", "b", "c", "d"):
        pipe.add_step(name, make(name))
    assert pipe.run_sync().ok
    # strictly alternating start/end: never two at once
    events = events.calls
    for i in range(0, len(events), 2):
        assert events[i].endswith(":start") and events[i + 1].endswith(":end")
        assert events[i].split(":")[0] == events[i + 1].split(":")[0]


def test_all_steps_of_a_run_end_in_a_terminal_status(plugin_manager, executor):
    pipe = Pipeline("terminal", plugin_manager=plugin_manager, max_concurrent=2)
    for i in range(6):
        pipe.add_step(f"s{i}", lambda: None, depends_on=[f"s{i - 1}"] if i else [])
    run = pipe.run_sync()
    assert list(run.steps) == [f"s{i}" for i in range(6)]
    assert all(r.status is StepStatus.SUCCESS and r.status.terminal for r in run.steps.values())


def test_a_usually_instant_sync_step_that_blocks_does_not_hold_back_others(
    plugin_manager, executor, tmp_path
):
    both_inside = Rendezvous(tmp_path / "inside", ["a", "b"], timeout=5)
    pipe = Pipeline("quick", plugin_manager=plugin_manager)

    def rendezvous(ctx, params):
        if params["meet"]:
            both_inside.arrive(ctx.step)  # only possible if the two steps run at the same time
        return ctx.step

    pipe.add_step("a", rendezvous)
    pipe.add_step("b", rendezvous)
    for _ in range(5):  # earlier runs where the function returns at once
        assert pipe.run_sync(params={"meet": False}).ok
    run = pipe.run_sync(params={"meet": True})
    assert run.ok, run.errors

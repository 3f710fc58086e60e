"""Properties over random DAGs: dependencies before dependents, never more than max_concurrent
at once, exactly one terminal status per step, and skips exactly where an independent oracle
puts them."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipectl import Pipeline, RunStatus, StepStatus

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class StepPlan:
    name: str
    deps: list[str]
    fails: bool  # every attempt raises
    flaky: bool  # the first attempt raises, later ones succeed
    retries: int
    allow_failure: bool
    all_done: bool
    pause: float | None  # None: no await at all; 0: yield once; else sleep that long
    is_async: bool = True
    timeout: float | None = None  # a generous one: changes how the step is run, never fires

    @property
    def fails_in_the_end(self) -> bool:
        return self.fails or (self.flaky and self.retries == 0)

    @property
    def expected_attempts(self) -> int:
        if self.fails:
            return self.retries + 1
        if self.flaky:
            return min(2, self.retries + 1)
        return 1


@dataclass
class Dag:
    plans: list[StepPlan]  # index order is a topological order
    declaration: list[int]  # the order steps are added in (any permutation)
    max_concurrent: int

    def __repr__(self) -> str:  # readable falsifying examples
        lines = [f"Dag(max_concurrent={self.max_concurrent}, declared={self.declaration})"]
        for p in self.plans:
            flags = [
                k
                for k in ("fails", "flaky", "allow_failure", "all_done", "is_async")
                if getattr(p, k)
            ]
            lines.append(
                f"  {p.name} <- {p.deps} retries={p.retries} pause={p.pause} "
                f"timeout={p.timeout} {flags}"
            )
        return "\n".join(lines)


rare = st.sampled_from([False, False, False, True])


@st.composite
def dags(
    draw, max_steps: int = 25, pauses=(None, 0, 0.001), kinds=("async",), timeouts=(None,)
) -> Dag:
    """Random DAGs: edges only from earlier to later steps (so acyclic), declared in a random
    order. ``kinds`` are the step kinds to pick from ("async", "sync")."""
    n = draw(st.integers(1, max_steps))
    plans = []
    for j in range(n):
        deps = draw(st.lists(st.integers(0, j - 1), max_size=min(j, 4), unique=True)) if j else []
        fails = draw(rare)
        plans.append(
            StepPlan(
                name=f"s{j}",
                deps=[f"s{d}" for d in sorted(deps)],
                fails=fails,
                flaky=not fails and draw(rare),
                retries=draw(st.sampled_from([0, 0, 1, 2])),
                allow_failure=draw(rare),
                all_done=draw(rare),
                pause=draw(st.sampled_from(pauses)),
                is_async=draw(st.sampled_from(kinds)) == "async",
                timeout=draw(st.sampled_from(timeouts)),
            )
        )
    declaration = draw(st.permutations(range(n)))
    return Dag(plans, list(declaration), draw(st.integers(1, 4)))


def oracle(dag: Dag) -> dict[str, str]:
    """Each step's expected status, worked out independently of the engine."""
    by_name = {p.name: p for p in dag.plans}
    status: dict[str, str] = {}
    for p in dag.plans:  # topological order
        blocked = any(
            status[d] == "skipped" or (status[d] == "failed" and not by_name[d].allow_failure)
            for d in p.deps
        )
        if blocked and not p.all_done:
            status[p.name] = "skipped"
        else:
            status[p.name] = "failed" if p.fails_in_the_end else "success"
    return status


@dataclass
class Trace:
    """What the steps record about themselves."""

    events: list[tuple[str, str]] = field(default_factory=list)
    upstream: dict[str, dict] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    current: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, name: str, upstream: dict) -> int:
        with self.lock:
            self.events.append(("start", name))
            self.current += 1
            self.peak = max(self.peak, self.current)
            self.upstream[name] = dict(upstream)
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def leave(self, name: str) -> None:
        with self.lock:
            self.current -= 1
            self.events.append(("end", name))


def async_step(plan: StepPlan, trace: Trace):
    async def step(**upstream):
        attempt = trace.enter(plan.name, upstream)
        try:
            if plan.pause is not None:
                await asyncio.sleep(plan.pause)
            if plan.fails or (plan.flaky and attempt == 1):
                trace.events.append(("raise", plan.name))
                raise RuntimeError(f"{plan.name} failed on attempt {attempt}")
            return f"out:{plan.name}"
        finally:
            trace.leave(plan.name)

    return step


def sync_step(plan: StepPlan, trace: Trace):
    def step(**upstream):
        attempt = trace.enter(plan.name, upstream)
        try:
            if plan.pause:  # a pause of 0 is nothing to a thread
                time.sleep(plan.pause)
            if plan.fails or (plan.flaky and attempt == 1):
                raise RuntimeError(f"{plan.name} failed on attempt {attempt}")
            return f"out:{plan.name}"
        finally:
            trace.leave(plan.name)

    return step


def any_step(plan: StepPlan, trace: Trace):
    return (async_step if plan.is_async else sync_step)(plan, trace)


def build(dag: Dag, plugin_manager, make_step, trace: Trace, **options) -> Pipeline:
    pipe = Pipeline(
        "prop", plugin_manager=plugin_manager, max_concurrent=dag.max_concurrent, **options
    )
    for i in dag.declaration:
        p = dag.plans[i]
        pipe.add_step(
            p.name,
            make_step(p, trace),
            depends_on=p.deps,
            retries=p.retries,
            retry_delay=0,
            retry_jitter=0,
            allow_failure=p.allow_failure,
            timeout=p.timeout,
            trigger="all_done" if p.all_done else "all_success",
        )
    return pipe


def check_run(dag: Dag, run, trace: Trace, recorder) -> None:
    expected = oracle(dag)
    by_name = {p.name: p for p in dag.plans}

    # exactly one terminal status per step, one step_finish each, matching the run's record
    assert set(run.steps) == set(by_name)
    finishes = recorder.calls_for("step_finish")
    assert sorted(c.step_name for c in finishes) == sorted(by_name)
    for call in finishes:
        assert call.result.status.terminal
        assert call.result is run.steps[call.step_name]

    # statuses (and so the SKIPPED set) equal the oracle's
    actual = {n: r.status.value for n, r in run.steps.items()}
    assert actual == expected
    assert {n for n, s in actual.items() if s == "skipped"} == {
        n for n, s in expected.items() if s == "skipped"
    }

    # the run's status
    must_fail = any(s == "failed" and not by_name[n].allow_failure for n, s in expected.items())
    assert run.status is (RunStatus.FAILED if must_fail else RunStatus.SUCCESS)

    # never more than max_concurrent at once
    assert trace.peak <= dag.max_concurrent

    # every step starts after all its dependencies finished
    position: dict[tuple[str, str], int] = {}
    for i, event in enumerate(trace.events):
        position.setdefault(event, i)  # first start; first end
    last_end = {name: i for i, (kind, name) in enumerate(trace.events) if kind == "end"}
    for p in dag.plans:
        ran = ("start", p.name) in position
        assert ran == (expected[p.name] != "skipped"), p.name
        if not ran:
            assert p.name not in trace.calls
            continue
        first_start = position[("start", p.name)]
        for d in p.deps:
            if expected[d] == "skipped":
                assert p.all_done
                continue
            assert last_end[d] < first_start, (d, p.name)

    # attempts: one step_start per attempt, and the function called once per attempt
    for p in dag.plans:
        attempts = 0 if expected[p.name] == "skipped" else p.expected_attempts
        assert run.steps[p.name].attempts == attempts, p.name
        assert trace.calls.get(p.name, 0) == attempts, p.name
        assert len(recorder.calls_for("step_start", p.name)) == attempts, p.name

    # upstream outputs: the output of a dependency that succeeded, else None
    for p in dag.plans:
        if p.name in trace.upstream:
            assert trace.upstream[p.name] == {
                d: (f"out:{d}" if expected[d] == "success" else None) for d in p.deps
            }, p.name


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(dag=dags())
def test_random_dags_async_steps(plugin_manager, hook_recorder, dag):
    hook_recorder.clear()
    trace = Trace()
    pipe = build(dag, plugin_manager, any_step, trace)
    run = pipe.run_sync()
    check_run(dag, run, trace, hook_recorder)


@pytest.mark.slow
@settings(max_examples=25, **SETTINGS)
@given(
    dag=dags(
        max_steps=15, pauses=(None, 0, 0.001), kinds=("async", "sync"), timeouts=(None, None, 30.0)
    )
)
def test_random_dags_mixed_sync_async_and_timeouts(plugin_manager, hook_recorder, dag):
    """Sync steps with and without a timeout run on different paths (a thread per call, or
    a chain on the worker threads); mixed with async steps the same properties hold."""
    hook_recorder.clear()
    trace = Trace()
    pipe = build(dag, plugin_manager, any_step, trace)
    run = pipe.run_sync()
    check_run(dag, run, trace, hook_recorder)


@settings(max_examples=20, **SETTINGS)
@given(dag=dags(max_steps=15, pauses=(None, 0.001), kinds=("sync",)))
def test_random_dags_sync_steps(plugin_manager, hook_recorder, dag):
    hook_recorder.clear()
    trace = Trace()
    pipe = build(dag, plugin_manager, any_step, trace, fail_fast=False)
    run = pipe.run_sync()
    check_run(dag, run, trace, hook_recorder)


def check_fail_fast(dag: Dag, run, trace: Trace, recorder, *, ordering: bool) -> None:
    by_name = {p.name: p for p in dag.plans}

    # every step ends exactly once, in a terminal status
    assert sorted(c.step_name for c in recorder.calls_for("step_finish")) == sorted(by_name)
    assert set(run.steps) == set(by_name)
    assert all(r.status.terminal for r in run.steps.values())
    for call in recorder.calls_for("step_finish"):
        assert call.result is run.steps[call.step_name]

    # the run fails exactly when a step that may not fail failed
    must_fail = any(
        r.status is StepStatus.FAILED and not by_name[n].allow_failure for n, r in run.steps.items()
    )
    assert run.status is (RunStatus.FAILED if must_fail else RunStatus.SUCCESS)

    for name, result in run.steps.items():
        p = by_name[name]
        if result.status is StepStatus.SKIPPED:
            assert not p.all_done
            assert any(
                run.steps[d].status is StepStatus.SKIPPED
                or (run.steps[d].status is StepStatus.FAILED and not by_name[d].allow_failure)
                for d in p.deps
            ), name
        if result.status is StepStatus.FAILED:
            assert p.fails_in_the_end, name
            assert result.attempts == p.expected_attempts, name
        if result.status is StepStatus.SUCCESS:
            assert not p.fails
            assert ("end", name) in trace.events
            # a dependency recorded as cancelled passes None, even if its thread returned later
            assert trace.upstream[name] == {
                d: run.steps[d].output if run.steps[d].status is StepStatus.SUCCESS else None
                for d in p.deps
            }, name
        if result.status is StepStatus.CANCELLED:
            assert must_fail  # only a stop cancels anything
        if result.attempts == 0:
            assert recorder.calls_for("step_start", name) == []
    if not must_fail:
        assert {n: r.status.value for n, r in run.steps.items()} == oracle(dag)
    # a running sync step cannot be interrupted: once recorded as cancelled, its slot goes to
    # the all_done steps while its thread may still be inside the function
    still_running = sum(
        1
        for n, r in run.steps.items()
        if r.status is StepStatus.CANCELLED and r.attempts and not by_name[n].is_async
    )
    assert trace.peak <= dag.max_concurrent + still_running

    if not ordering:
        return
    # async steps only: after the failure that stops the run (the last attempt of a failing
    # step that may not fail), nothing starts but all_done steps: no new step, no new attempt
    stop_at = None
    raises: dict[str, int] = {}
    for i, (kind, name) in enumerate(trace.events):
        if kind == "raise":
            raises[name] = raises.get(name, 0) + 1
            p = by_name[name]
            if p.fails and raises[name] == p.retries + 1 and not p.allow_failure:
                stop_at = i
                break
            if p.flaky and p.retries == 0 and not p.allow_failure:
                stop_at = i
                break
    assert (stop_at is not None) == must_fail
    if stop_at is not None:
        late_starts = {name for kind, name in trace.events[stop_at + 1 :] if kind == "start"}
        assert all(by_name[n].all_done for n in late_starts), late_starts


@pytest.mark.slow
@settings(max_examples=40, **SETTINGS)
@given(dag=dags(max_steps=20))
def test_random_dags_fail_fast(plugin_manager, hook_recorder, dag):
    """With fail_fast: after the first failure that is not allowed, nothing starts but
    ``all_done`` steps, and every step still ends exactly once in a consistent status."""
    hook_recorder.clear()
    trace = Trace()
    pipe = build(dag, plugin_manager, async_step, trace, fail_fast=True)
    run = pipe.run_sync()
    check_fail_fast(dag, run, trace, hook_recorder, ordering=True)


@settings(max_examples=20, **SETTINGS)
@given(
    dag=dags(
        max_steps=15, pauses=(None, 0, 0.001), kinds=("async", "sync"), timeouts=(None, None, 30.0)
    )
)
def test_random_dags_fail_fast_mixed(plugin_manager, hook_recorder, dag):
    hook_recorder.clear()
    trace = Trace()
    pipe = build(dag, plugin_manager, any_step, trace, fail_fast=True)
    run = pipe.run_sync()
    check_fail_fast(dag, run, trace, hook_recorder, ordering=False)

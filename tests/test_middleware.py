"""``pipectl_wrap_step``: middlewares that plugins return and the engine composes around every
attempt of a step (a cache that short-circuits, a timer, composition, failures and retries)."""

from __future__ import annotations

import asyncio
import tempfile
import time

from helpers import EventLog
from plugin_fixtures.fakedist import fake_dists  # noqa: F401 - fixture

from pipectl import Pipeline, RunStatus, StepStatus, hookimpl
from pipectl.context import StepContext
from pipectl.errors import StepTimeout
from pipectl.plugins import get_plugin_manager

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py).
# A middleware runs where the step runs (on a dask worker, in another process): the plugins here
# record what they see in files.


def a_log() -> EventLog:
    return EventLog(tempfile.mkstemp(prefix="pipectl-middleware-")[1])


class CachePlugin:
    """Serves a step's output from a cache without running it."""

    def __init__(self, cache):
        self.cache = cache
        self.log = a_log()

    @property
    def hits(self):
        return [(name, int(attempt)) for name, attempt in (h.split("|") for h in self.log)]

    @hookimpl
    def pipectl_wrap_step(self, step, context):
        if step.name not in self.cache:
            return None
        log = self.log

        async def cached(call_next, attempt):
            log.append(f"{step.name}|{attempt}")
            return self.cache[step.name]

        return cached


class Timings(EventLog):
    """(step, attempt, elapsed seconds, outcome) lines in a file, read back as tuples."""

    def append(self, item):
        return self.record("|".join(map(str, item)))

    def read(self):
        return [(n, int(a), float(s), o) for n, a, s, o in (line.split("|") for line in self)]

    def __eq__(self, other):
        return self.read() == list(other)

    __hash__ = None


class TimingPlugin:
    """Records (step, attempt, elapsed seconds, outcome) for every attempt of every step."""

    def __init__(self):
        self.log = Timings(tempfile.mkstemp(prefix="pipectl-timings-")[1])

    @property
    def timings(self):
        return self.log.read()

    @hookimpl
    def pipectl_wrap_step(self, step, context):
        log = self.log

        async def timed(call_next, attempt):
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await call_next()
            except Exception as exc:
                outcome = type(exc).__name__
                raise
            finally:
                log.append((step.name, attempt, time.perf_counter() - started, outcome))

        return timed


def test_cache_middleware_short_circuits_the_step(
    register_plugin, plugin_manager, hook_recorder, executor
):
    cache = CachePlugin({"extract": [10, 20, 30]})
    register_plugin(cache, name="cache")
    pipe = Pipeline("cached", plugin_manager=plugin_manager)
    called = a_log()

    @pipe.step("extract")
    async def extract():
        called.append("extract")
        return [1, 2, 3]

    @pipe.step("total", depends_on=["extract"])
    def total(extract):
        called.append("total")
        return sum(extract)

    run = pipe.run_sync()

    assert run.status is RunStatus.SUCCESS
    assert called == ["total"]  # extract was never called
    assert run.steps["extract"].status is StepStatus.SUCCESS
    assert run.steps["extract"].output == [10, 20, 30]
    assert run.steps["extract"].attempts == 1
    assert run.steps["total"].output == 60  # downstream received the cached value
    assert cache.hits == [("extract", 1)]
    finishes = hook_recorder.calls_for("step_finish", step="extract")
    assert len(finishes) == 1 and finishes[0].result.output == [10, 20, 30]


def test_cache_middleware_short_circuits_a_sync_step(register_plugin, plugin_manager, executor):
    register_plugin(CachePlugin({"slow": "cached"}), name="cache")
    pipe = Pipeline("cached-sync", plugin_manager=plugin_manager)

    @pipe.step("slow")
    def slow():
        raise AssertionError("the cached step must not run")

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert run.steps["slow"].output == "cached"


def test_timing_middleware_sees_every_attempt_of_every_step(
    register_plugin, plugin_manager, executor
):
    timer = TimingPlugin()
    register_plugin(timer, name="timer")
    pipe = Pipeline("timed", plugin_manager=plugin_manager)
    flaky_calls = a_log()

    @pipe.step("async_step")
    async def async_step():
        await asyncio.sleep(0.02)
        return "a"

    @pipe.step("sync_step")
    def sync_step():
        time.sleep(0.02)
        return "s"

    @pipe.step("flaky", retries=2, retry_delay=0.001, retry_jitter=0.0)
    def flaky():
        calls = flaky_calls.record(1)
        time.sleep(0.01)
        if calls < 3:
            raise ConnectionError(f"attempt {calls} fails")
        return "f"

    @pipe.step("last", depends_on=["async_step", "sync_step", "flaky"])
    async def last(async_step, sync_step, flaky):
        return async_step + sync_step + flaky

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert run.steps["last"].output == "asf"
    assert run.steps["flaky"].attempts == 3
    seen = sorted((name, attempt, outcome) for name, attempt, _, outcome in timer.timings)
    assert seen == [
        ("async_step", 1, "ok"),
        ("flaky", 1, "ConnectionError"),
        ("flaky", 2, "ConnectionError"),
        ("flaky", 3, "ok"),
        ("last", 1, "ok"),
        ("sync_step", 1, "ok"),
    ]
    elapsed = {(name, attempt): seconds for name, attempt, seconds, _ in timer.timings}
    assert elapsed[("async_step", 1)] >= 0.015
    assert elapsed[("sync_step", 1)] >= 0.015  # the middleware awaited the thread
    assert all(elapsed[("flaky", a)] >= 0.008 for a in (1, 2, 3))
    # the attempts of one step come in order
    flaky_attempts = [a for name, a, _, _ in timer.timings if name == "flaky"]
    assert flaky_attempts == [1, 2, 3]


def test_hook_pipectl_wrap_step(register_plugin, plugin_manager, executor):
    """Called once per step per run (not per attempt), with the step and its context; the
    middleware it returns gets the attempt number and the context follows the attempts."""
    calls = []  # the hook is called in the driver
    attempts_seen = a_log()  # the middleware runs where the step runs

    class Plugin:
        @hookimpl
        def pipectl_wrap_step(self, step, context):
            calls.append((step.name, type(context), context.step, context.run_id))

            async def middleware(call_next, attempt):
                attempts_seen.append(f"{step.name}|{attempt}|{context.attempt}")
                return await call_next()

            return middleware

    register_plugin(Plugin(), name="wrapper")
    pipe = Pipeline("wrapped", plugin_manager=plugin_manager)
    tries = a_log()

    @pipe.step("retried", retries=1, retry_delay=0.0)
    def retried():
        if tries.record(1) == 1:
            raise ValueError("once")
        return "ok"

    @pipe.step("plain")
    async def plain():
        return 1

    run = pipe.run_sync(run_id="run-42")

    assert run.ok, run.errors
    assert sorted(c[0] for c in calls) == ["plain", "retried"]
    assert all(c[1] is StepContext and c[2] == c[0] and c[3] == "run-42" for c in calls)
    assert sorted(attempts_seen) == ["plain|1|1", "retried|1|1", "retried|2|2"]


def test_wrap_step_returning_none_leaves_the_step_alone(register_plugin, plugin_manager, executor):
    register_plugin(CachePlugin({}), name="cache")
    pipe = Pipeline("untouched", plugin_manager=plugin_manager)
    pipe.add_step("one", lambda: 1)

    run = pipe.run_sync()

    assert run.ok and run.steps["one"].output == 1


def _tagging_plugin(tag, log, **impl_options):
    class Plugin:
        @hookimpl(**impl_options)
        def pipectl_wrap_step(self, step, context):
            async def middleware(call_next, attempt):
                log.append(f"{tag}:before")
                output = await call_next()
                log.append(f"{tag}:after")
                return f"{output}+{tag}"

            return middleware

    return Plugin()


def test_middlewares_of_two_plugins_compose_last_registered_outermost(
    register_plugin, plugin_manager, executor
):
    log = a_log()
    register_plugin(_tagging_plugin("first", log), name="first")
    register_plugin(_tagging_plugin("second", log), name="second")
    pipe = Pipeline("nested", plugin_manager=plugin_manager)

    @pipe.step("s")
    def s():
        log.append("step")
        return "out"

    run = pipe.run_sync()

    assert run.ok, run.errors
    # pluggy's call order (last registered first) is the nesting order, first one outermost
    assert log == ["second:before", "first:before", "step", "first:after", "second:after"]
    assert run.steps["s"].output == "out+first+second"


def test_tryfirst_middleware_is_outermost(register_plugin, plugin_manager, executor):
    log = a_log()
    register_plugin(_tagging_plugin("eager", log, tryfirst=True), name="eager")
    register_plugin(_tagging_plugin("normal", log), name="normal")
    pipe = Pipeline("nested", plugin_manager=plugin_manager)
    pipe.add_step("s", lambda: "out")

    run = pipe.run_sync()

    assert log == ["eager:before", "normal:before", "normal:after", "eager:after"]
    assert run.steps["s"].output == "out+normal+eager"


def test_cache_outside_a_timer_skips_the_timer(register_plugin, plugin_manager, executor):
    timer = TimingPlugin()
    register_plugin(timer, name="timer")
    register_plugin(CachePlugin({"s": "hit"}), name="cache")  # called first: outermost
    pipe = Pipeline("cache-timer", plugin_manager=plugin_manager)
    pipe.add_step("s", lambda: "miss")

    run = pipe.run_sync()

    assert run.steps["s"].output == "hit"
    assert timer.timings == []


class FailingMiddleware:
    """Raises in the middleware for the first ``failures`` attempts of every step."""

    def __init__(self, failures, error=RuntimeError):
        self.failures = failures
        self.error = error

    @hookimpl
    def pipectl_wrap_step(self, step, context):
        async def middleware(call_next, attempt):
            if attempt <= self.failures:
                raise self.error(f"middleware failed attempt {attempt}")
            return await call_next()

        return middleware


def test_raising_middleware_fails_the_attempt_and_retry_applies(
    register_plugin, plugin_manager, hook_recorder, executor
):
    register_plugin(FailingMiddleware(failures=2), name="flaky-middleware")
    pipe = Pipeline("retried", plugin_manager=plugin_manager)
    calls = a_log()

    @pipe.step("s", retries=2, retry_delay=0.001, retry_jitter=0.0)
    def s():
        calls.append(1)
        return "done"

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert run.steps["s"].attempts == 3
    assert run.steps["s"].output == "done"
    assert calls == ["1"]  # the step ran only on the attempt the middleware let through
    retries = hook_recorder.calls_for("step_retry", step="s")
    assert [c.attempt for c in retries] == [1, 2]
    assert all(isinstance(c.error, RuntimeError) for c in retries)
    assert str(retries[0].error) == "middleware failed attempt 1"


def test_raising_middleware_fails_the_step_when_retries_run_out(
    register_plugin, plugin_manager, executor
):
    register_plugin(FailingMiddleware(failures=99), name="broken-middleware")
    pipe = Pipeline("failing", plugin_manager=plugin_manager)
    pipe.add_step("s", lambda: "never", retries=1, retry_delay=0.001)
    pipe.add_step("downstream", lambda s: s, depends_on=["s"])

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert run.steps["s"].status is StepStatus.FAILED
    assert run.steps["s"].attempts == 2
    assert run.steps["s"].error == "RuntimeError: middleware failed attempt 2"
    assert run.steps["downstream"].status is StepStatus.SKIPPED


def test_raising_middleware_respects_retry_on(register_plugin, plugin_manager, executor):
    register_plugin(FailingMiddleware(failures=1, error=ValueError), name="mw")
    pipe = Pipeline("retry-on", plugin_manager=plugin_manager)
    pipe.add_step("s", lambda: "ok", retries=3, retry_delay=0.001, retry_on=(KeyError,))

    run = pipe.run_sync()

    assert run.steps["s"].status is StepStatus.FAILED
    assert run.steps["s"].attempts == 1  # ValueError is not retried


def test_step_timeout_covers_the_middleware(register_plugin, plugin_manager, executor):
    class SlowMiddleware:
        @hookimpl
        def pipectl_wrap_step(self, step, context):
            async def middleware(call_next, attempt):
                await asyncio.sleep(1.5)  # on dask it runs on after the timeout: keep it short
                return await call_next()

            return middleware

    register_plugin(SlowMiddleware(), name="slow")
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)
    pipe.add_step("s", lambda: "ok", timeout=0.05)

    started = time.perf_counter()
    run = pipe.run_sync()

    assert time.perf_counter() - started < 2
    assert run.steps["s"].status is StepStatus.FAILED
    assert isinstance(run.steps["s"].exception, StepTimeout)


def test_wrap_step_hook_raising_fails_only_that_step(register_plugin, plugin_manager, executor):
    class BrokenHook:
        @hookimpl
        def pipectl_wrap_step(self, step, context):
            if step.name == "bad":
                raise RuntimeError("wrap_step hook is broken")
            return None

    register_plugin(BrokenHook(), name="broken-hook")
    pipe = Pipeline("wrap-fails", plugin_manager=plugin_manager)
    pipe.add_step("bad", lambda: "never")
    pipe.add_step("after_bad", lambda bad: bad, depends_on=["bad"])
    pipe.add_step("fine", lambda: "fine")

    run = pipe.run_sync()

    assert run.steps["bad"].status is StepStatus.FAILED
    assert run.steps["bad"].error == "RuntimeError: wrap_step hook is broken"
    assert run.steps["after_bad"].status is StepStatus.SKIPPED
    assert run.steps["fine"].output == "fine"


def test_middleware_from_an_installed_plugin(fake_dists):
    dist = fake_dists.add(
        "timer",
        """
        import time

        from pipectl import hookimpl

        TIMINGS = []


        @hookimpl
        def pipectl_wrap_step(step, context):
            async def timed(call_next, attempt):
                started = time.perf_counter()
                try:
                    return await call_next()
                finally:
                    TIMINGS.append((step.name, attempt, time.perf_counter() - started))

            return timed
        """,
    )
    pm = get_plugin_manager()
    assert pm.hooks_of("timer") == ["pipectl_wrap_step"]
    pipe = Pipeline("installed-middleware", plugin_manager=pm)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a: a + 1, depends_on=["a"])

    run = pipe.run_sync()

    assert run.ok and run.steps["b"].output == 2
    assert [(name, attempt) for name, attempt, _ in dist.loaded_module().TIMINGS] == [
        ("a", 1),
        ("b", 1),
    ]


def test_middleware_runs_with_many_concurrent_steps(register_plugin, plugin_manager, executor):
    timer = TimingPlugin()
    register_plugin(timer, name="timer")
    pipe = Pipeline("wide", plugin_manager=plugin_manager)
    for i in range(20):
        pipe.add_step(f"s{i}", (lambda i=i: i) if i % 2 else _async_value(i))

    run = pipe.run_sync()

    assert run.ok
    assert sorted(name for name, *_ in timer.timings) == sorted(f"s{i}" for i in range(20))
    assert [run.steps[f"s{i}"].output for i in range(20)] == list(range(20))


def _async_value(value):
    async def step():
        await asyncio.sleep(0)
        return value

    return step

"""The engine: runs a pipeline's DAG on an executor and owns its semantics.

A step starts the moment its own dependencies are done (no level barrier), up to
``max_concurrent`` at once, first come first served. Retries, timeouts, skip propagation,
``fail_fast``, allowed failures, ``all_done`` triggers and cancellation are decided here,
whatever the executor, and every lifecycle event is emitted from here (through
:class:`pipectl.hooks.Hooks`). The bookkeeping runs under one lock, on the event loop thread or
on a local worker thread (the sync lane, see :class:`_RunState`); no hook fires per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import random
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from pipectl.binding import is_async
from pipectl.context import Services, StepContext, frozen_params
from pipectl.errors import (
    ExecutorError,
    PipectlError,
    StepTimeout,
)
from pipectl.executors import Invocation
from pipectl.hooks import Hooks
from pipectl.model import (
    PipelineRun,
    PipelineSpec,
    RunConfig,
    RunStatus,
    StepResult,
    StepSpec,
    StepStatus,
    Trigger,
)
from pipectl.planning import Node, Plan, plan_run


def bind_contextvars(**values: Any) -> Any:  # noqa: F811 - rebound on first use
    """structlog's ``bind_contextvars``, imported on first use: importing structlog costs tens
    of milliseconds that ``pipectl validate`` / ``graph`` / ``--help`` need not pay."""
    global bind_contextvars, reset_contextvars
    from structlog.contextvars import bind_contextvars as bind
    from structlog.contextvars import reset_contextvars as reset

    bind_contextvars, reset_contextvars = bind, reset
    return bind(**values)


def reset_contextvars(**tokens: Any) -> None:  # noqa: F811 - rebound on first use
    from structlog.contextvars import reset_contextvars as reset

    reset(**tokens)

__all__ = ["Plan", "RunCancelled", "execute", "plan_run"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_OK = StepStatus.SUCCESS
_FAILED = StepStatus.FAILED
_SKIPPED = StepStatus.SKIPPED
_CANCELLED = StepStatus.CANCELLED
_ALL_DONE = Trigger.ALL_DONE
_ALL_SUCCESS = Trigger.ALL_SUCCESS
_ONE_SUCCESS = Trigger.ONE_SUCCESS
_MISSING = object()


def _resolve_none(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class RunCancelled(asyncio.CancelledError):
    """The run was cancelled (Ctrl-C); ``run`` is its record, status ``cancelled``."""

    def __init__(self, run: PipelineRun):
        super().__init__(f"run {run.run_id} of {run.pipeline_id!r} was cancelled")
        self.run = run


def _now() -> datetime:
    return datetime.now(UTC)


def _framework_dirs(executor: Any) -> tuple[str, ...]:
    """pipectl's directory, the package directory of a plugin executor (its frames, such as
    pipectl-dask's task wrapper, are not the user's code either) and the directories it names
    in ``framework_paths`` (the distributed library's, for pipectl-dask)."""
    dirs = [_PACKAGE_DIR, *getattr(executor, "framework_paths", ())]
    top = type(executor).__module__.partition(".")[0]
    path = getattr(sys.modules.get(top), "__file__", None)
    if top != "pipectl" and path:
        dirs.append(str(Path(path).resolve().parent))
    return tuple(dirs)


def _user_traceback(exc: BaseException, hidden: tuple[str, ...] = (_PACKAGE_DIR,)) -> str:
    """The exception's traceback without pipectl's (``hidden``) and asyncio's own frames."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(hidden) and "/asyncio/" not in f.filename
        and "/concurrent/" not in f.filename and "/contextvars" not in f.filename
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


class _RunState:
    """Everything one run owns; nothing here outlives the run or is shared with another.

    Sync steps without a timeout or middleware run in the *sync lane*: on the local executor's
    threads, where the worker that finishes a step also records it and goes on with the next
    sync step it unblocked, so a chain of sync steps costs no thread switch per step. The
    bookkeeping is therefore guarded by ``lock``; lifecycle hooks are called under it too, so
    listeners are never called concurrently (but may be called from a pipectl worker thread).
    """

    def __init__(self, plan: Plan, config: RunConfig, hooks: Hooks, executor: Any,
                 run: PipelineRun, services: Services, logger: Any, components: Any = None):
        spec = plan.spec
        self.components = components
        self.secrets: tuple[str, ...] = ()  # secret param values, set by execute()
        self.plan = plan
        self.nodes = plan.nodes
        self.hooks = hooks
        self.executor = executor
        self.hidden_dirs = _framework_dirs(executor)
        self.run = run
        self.logger = logger
        self.params = frozen_params(config.params)
        self.services = services
        self.shared_state: dict[Any, Any] = {**config.resume_state,
                                             "extractor_state": dict(config.extractor_state)}
        run.extractor_state = self.shared_state["extractor_state"]
        limit = config.max_concurrent if config.max_concurrent is not None else spec.max_concurrent
        self.limit = limit if limit is not None else len(plan.nodes) + 1
        self.fail_fast = config.fail_fast if config.fail_fast is not None else spec.fail_fast
        n = len(plan.nodes)
        self.outputs: list[Any] = [None] * n
        self.status: list[StepStatus | None] = [None] * n
        self.branch_skip = [False] * n  # skipped by a condition, not because of a failure
        self.completed: list[int] = []  # steps that succeeded, in the order they did (rollback)
        self.preloaded: frozenset[int] = frozenset()  # resumed: outputs from an earlier run
        self._index_of: dict[str, int] | None = None
        self.config = config
        self.pm: Any = None  # the plugin manager, for sub-pipelines (set by execute())
        self.remaining = [len(node.deps) for node in plan.nodes]
        self.ready: deque[int] = deque()
        self.tasks: dict[int, asyncio.Task | None] = {}
        self.lane_running: set[int] = set()
        self.lane_progress: dict[int, tuple[datetime, float, int]] = {}  # started, t0, attempt
        self.lent: set[int] = set()  # cancelled lane steps whose thread the pool lent
        self.quick: deque[int] = deque()  # instant lane steps, run one after another
        self.quick_runners = 0
        self.quick_busy: dict[int, float] = {}  # runner thread -> when its current step began
        self.quick_watched = False
        self.probing: dict[Any, threading.Event] = {}  # functions whose first call runs
        self.active = 0
        self.finished = 0
        self.stopping: str | None = None  # why nothing new starts (fail_fast or interrupt)
        self.stop_event = threading.Event()
        self.interrupted = False
        self.rng = random.Random()
        self.lock = threading.RLock()
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.context = contextvars.copy_context()
        self.all_done: asyncio.Future = self.loop.create_future()
        enabled = getattr(logger, "is_enabled_for", None)
        self.log_info = enabled(logging.INFO) if enabled is not None else True
        self.log_debug = enabled(logging.DEBUG) if enabled is not None else False
        self.lane = [False] * n  # decided in start_roots(), once the executor has started
        self.local = False  # the plain local executor and no middleware: steps called directly
        self.threads: Any = None  # the local executor's pool, when the lane is used

    # -- scheduling (every method here runs with ``lock`` held) ---------------------------

    def start_roots(self) -> None:
        from pipectl.executors import LocalExecutor

        # the lane bypasses execute(): only for the local executor itself (not a subclass that
        # overrides execute), with its threads started, and only when no middleware wraps steps
        executor = self.executor
        if (getattr(type(executor), "execute", None) is LocalExecutor.execute
                and getattr(executor, "threads", None) is not None and not self.hooks.wraps_steps):
            self.local = True
            self.threads = executor.threads  # kept: late lane threads may still reach it
            self.lane = [not node.is_async and node.spec.timeout is None for node in self.nodes]
        with self.lock:
            if self.config.resume:
                self._preload()
            for node in self.nodes:
                if not node.deps and self.status[node.index] is None:
                    decided = self._decide(node.index) if node.spec.when is not None else None
                    if decided is None:
                        self._schedule(node.index)
                    else:
                        self._complete(node.index, decided, ran=False)
            if not self.nodes:
                self.all_done.set_result(None)

    def _preload(self) -> None:
        """Resume: record the steps whose outputs come from an earlier run as succeeded, in
        plan order, without running them; what they unblock starts as usual."""
        resume = self.config.resume
        source = self.config.resumed_from
        index = {node.spec.name: node.index for node in self.nodes}
        self.preloaded = frozenset(index[n] for n in resume if n in index)
        now = _now()
        for i in sorted(self.preloaded):
            name = self.nodes[i].spec.name
            self.outputs[i] = resume[name]
            self._complete(i, StepResult(
                name, _OK, output=resume[name], started_at=now, finished_at=now,
                reason=f"output from run {source} (resumed)", resumed_from=source,
                records=_records_of(resume[name])), ran=False)

    async def rollback(self) -> None:
        """Run the rollbacks of the steps that succeeded, in reverse order of completion, one
        at a time; record each outcome in the step's result and the run's status."""
        run = self.run
        failed: list[str] = []
        undone = 0
        for i in reversed(self.completed):
            spec = self.nodes[i].spec
            func = spec.rollback
            if func is None:
                continue
            result = run.steps[spec.name]
            started = _now()
            kwargs = _rollback_kwargs(func, output=self.outputs[i], result=result,
                                      params=self.params, ctx=self._begin_rollback(spec))
            with self.lock:
                self.hooks.rollback_start(run=run, step=spec, result=result)
            self.logger.info("rollback_started", run_id=run.run_id, step=spec.name)
            raised: Exception | None = None
            try:
                if is_async(func):
                    await func(**kwargs)
                else:
                    await asyncio.to_thread(func, **kwargs)
            except Exception as exc:  # noqa: BLE001 - recorded, the others still run
                raised = exc
                error = f"{type(exc).__name__}: {exc}"
                if self.secrets:
                    from pipectl.log import redact

                    error = redact(error, self.secrets)
                failed.append(f"rollback of step {spec.name!r} failed: {error}")
                outcome = {"status": "failed", "error": error, "started_at": started.isoformat(),
                           "finished_at": _now().isoformat()}
                new = attrs.evolve(result, rollback=outcome)
                self.logger.warning("rollback_failed", run_id=run.run_id, step=spec.name,
                                    error=error)
            else:
                undone += 1
                outcome = {"status": "success", "error": None, "started_at": started.isoformat(),
                           "finished_at": _now().isoformat()}
                new = attrs.evolve(result, status=StepStatus.ROLLED_BACK, rollback=outcome)
                self.logger.info("rollback_finished", run_id=run.run_id, step=spec.name)
            run.steps[spec.name] = new
            with self.lock:
                self.hooks.rollback_finish(run=run, step=spec, result=new, error=raised)
        if failed:
            run.errors.extend(failed)
            run.status = RunStatus.ROLLBACK_FAILED
        elif undone:
            run.status = RunStatus.ROLLED_BACK

    def _begin_rollback(self, spec: StepSpec) -> StepContext:
        run = self.run
        return StepContext(run.run_id, run.pipeline_id, spec.name, self.params, self.services,
                           run.steps, self.shared_state, self.lock, self.components)

    def _schedule(self, i: int) -> None:
        if self.active < self.limit:
            self.active += 1
            self._launch(i)
        else:
            self.ready.append(i)

    def _launch(self, i: int) -> None:
        """Start step ``i`` (its slot already counted) in the lane or in a task of its own."""
        if self.lane[i]:
            self.lane_running.add(i)
            func = self.nodes[i].func
            speed = _speed(func)
            if speed is None and func not in self.probing:
                self.probing[func] = threading.Event()  # its first call shows how long it takes
                self.threads.call(self._lane_task, i)
            elif speed is not None and speed >= _INSTANT:
                self.threads.call(self._lane_task, i)  # a thread of its own
            else:  # instant (or waiting for its function's first call to tell)
                self.quick.append(i)
                if self.quick_runners == 0:
                    self._add_quick_runner()
                elif not self.quick_watched:  # a runner is busy: watch that it stays instant
                    self.quick_watched = True
                    self.loop.call_soon_threadsafe(self.loop.call_later, _STUCK, self._watch_quick)
        elif threading.get_ident() == self.loop_thread:
            self.tasks[i] = self.loop.create_task(self._step_task(i))
        else:
            self.tasks[i] = None
            self.loop.call_soon_threadsafe(self._start_task, i)

    def _add_quick_runner(self) -> None:
        self.quick_runners += 1
        self.threads.call(self._quick_task)

    def _watch_quick(self) -> None:
        """On the loop, every few ms while instant steps wait: if every quick-lane runner is
        stuck in one call (an instant function that blocks this time), add a runner, so the
        steps behind it still run in parallel."""
        with self.lock:
            if not self.quick or self.stopping is not None and self.interrupted:
                self.quick_watched = False
                return
            now = time.perf_counter()
            busy = self.quick_busy.values()
            if len(busy) >= self.quick_runners and all(now - t > _STUCK for t in busy):
                self._add_quick_runner()
        self.loop.call_later(_STUCK, self._watch_quick)

    def _start_task(self, i: int) -> None:
        with self.lock:
            if i in self.tasks and self.tasks[i] is None:
                self.tasks[i] = self.loop.create_task(self._step_task(i))

    def _decide(self, i: int) -> StepResult | None:
        """Once all of step ``i``'s dependencies ended: None to run it, or its terminal result.

        A step skipped by its ``when`` condition, and the ``all_success`` steps after it, are
        *branch* skips (``branch_skip``): ``none_failed`` and ``one_success`` steps still run
        after them, while a skip caused by a failure skips those too."""
        node = self.nodes[i]
        spec = node.spec
        if self.interrupted:
            return StepResult(spec.name, _CANCELLED, reason="the run was cancelled")
        trigger = spec.trigger
        if trigger is not _ALL_DONE:
            decided = (self._all_success(node) if trigger is _ALL_SUCCESS
                       else self._none_failed(node, trigger is _ONE_SUCCESS))
            if decided is not None:
                return decided
            if self.stopping is not None:
                return StepResult(spec.name, _CANCELLED, reason=f"not started: {self.stopping}")
        if spec.when is not None:
            return self._condition(node)
        return None

    def _all_success(self, node: Node) -> StepResult | None:
        spec = node.spec
        cancelled_dep = None
        for d in node.deps:
            status = self.status[d]
            if status is _OK:
                continue
            if status is _FAILED:
                if self.nodes[d].spec.allow_failure:
                    continue
                return StepResult(spec.name, _SKIPPED,
                                  reason=f"upstream step {self.nodes[d].spec.name!r} failed")
            if status is _SKIPPED:
                self.branch_skip[node.index] = self.branch_skip[d]
                return StepResult(spec.name, _SKIPPED,
                                  reason=self.run.steps[self.nodes[d].spec.name].reason)
            cancelled_dep = cancelled_dep or self.nodes[d].spec.name
        if cancelled_dep is not None:
            return StepResult(spec.name, _CANCELLED,
                              reason=f"upstream step {cancelled_dep!r} was cancelled")
        return None

    def _none_failed(self, node: Node, one_success: bool) -> StepResult | None:
        spec = node.spec
        succeeded = False
        cancelled_dep = None
        for d in node.deps:
            status = self.status[d]
            name = self.nodes[d].spec.name
            if status is _OK:
                succeeded = True
            elif status is _FAILED:
                if not self.nodes[d].spec.allow_failure:
                    return StepResult(spec.name, _SKIPPED, reason=f"upstream step {name!r} failed")
            elif status is _SKIPPED:
                if not self.branch_skip[d]:
                    return StepResult(spec.name, _SKIPPED, reason=self.run.steps[name].reason)
            else:
                cancelled_dep = cancelled_dep or name
        if cancelled_dep is not None:
            return StepResult(spec.name, _CANCELLED,
                              reason=f"upstream step {cancelled_dep!r} was cancelled")
        if one_success and not succeeded and node.deps:
            self.branch_skip[node.index] = True
            return StepResult(spec.name, _SKIPPED, reason="no upstream step succeeded "
                              "(trigger one_success)")
        return None

    def _condition(self, node: Node) -> StepResult | None:
        """Evaluate the step's ``when``: None to run it, SKIPPED when false, FAILED when it
        cannot be evaluated."""
        from pipectl.binding import make_scope
        from pipectl.expr import ExpressionError

        spec = node.spec
        when = spec.when
        scope = make_scope(self.index_of, self.outputs, self.params, self.status)
        try:
            value = when.holds(scope)
        except ExpressionError as exc:
            now = _now()
            return StepResult(spec.name, _FAILED, error=f"when: {when.text}: {exc}",
                              started_at=now, finished_at=now)
        if value:
            return None
        self.branch_skip[node.index] = True
        values = when.explain(scope)
        return StepResult(spec.name, _SKIPPED, reason=f"condition is false: {when.text}"
                          + (f" ({values})" if values else ""))

    @property
    def index_of(self) -> dict[str, int]:
        if self._index_of is None:
            self._index_of = {node.spec.name: node.index for node in self.nodes}
        return self._index_of

    def _complete(self, i: int, result: StepResult, ran: bool,
                  claim: str | None = None) -> int | None:
        """Record step ``i``'s terminal result and start what its end unblocks.

        With ``claim`` ("task" from a step task, "lane" from a lane worker) the caller keeps
        the first unblocked step of its own kind and gets its index back, to run it next
        without a new task or thread hand-off (a chain runs in one task or one thread).
        """
        claimed: int | None = None
        if ran and self.tasks.pop(i, _MISSING) is _MISSING:
            self.lane_running.discard(i)
        if ran:
            self.active -= 1
        work = [(i, result)]
        run = self.run
        lane = self.lane
        claim_lane = claim == "lane"
        while work:
            j, res = work.pop()
            node = self.nodes[j]
            spec = node.spec
            self.status[j] = res.status
            run.steps[spec.name] = res
            self.finished += 1
            if res.status is _OK:
                self.completed.append(j)
            self.hooks.step_finish(run=run, step=spec, result=res)
            if self.log_info:
                extra = {k: v for k, v in (("error", res.error), ("reason", res.reason),
                                           ("records", res.records)) if v is not None}
                self.logger.info(
                    "step_finished", run_id=run.run_id, step=spec.name, status=str(res.status),
                    attempts=res.attempts, duration_ms=round(res.duration_ms, 3), **extra,
                )
            if res.status is _FAILED and self.fail_fast and not spec.allow_failure:
                self._stop(f"fail_fast stopped the run after step {spec.name!r} failed")
            for k in node.dependents:
                self.remaining[k] -= 1
                if self.remaining[k] == 0 and k not in self.preloaded:
                    decided = self._decide(k)
                    if decided is not None:
                        work.append((k, decided))
                    else:  # first come, first served: behind the steps already waiting
                        self.ready.append(k)
                        if self.log_debug:
                            self.logger.debug(
                                "step_ready", run_id=run.run_id, step=self.nodes[k].spec.name,
                                after=spec.name, running=self.active, limit=self.limit,
                                waiting=len(self.ready))
        while self.ready and self.active < self.limit:
            k = self.ready.popleft()
            self.active += 1
            if claim is not None and claimed is None and lane[k] is claim_lane:
                claimed = k
            else:
                self._launch(k)
        if claimed is not None:
            if claim_lane:
                self.lane_running.add(claimed)
            else:
                self.tasks[claimed] = asyncio.current_task()
        if self.finished == len(self.nodes) and not self.all_done.done():
            if threading.get_ident() == self.loop_thread:
                self.all_done.set_result(None)
            else:
                self.loop.call_soon_threadsafe(_resolve_none, self.all_done)
        return claimed

    def _stop(self, reason: str) -> None:
        """Start nothing new (but ``all_done`` steps) and cancel every running step."""
        if self.stopping is not None:
            return
        self.stopping = reason
        self.stop_event.set()
        current = asyncio.current_task() if threading.get_ident() == self.loop_thread else None
        for i, task in list(self.tasks.items()):
            if task is not None and task is not current:
                self.loop.call_soon_threadsafe(self._cancel_task, i, task)
        # a sync step cannot be interrupted: it is recorded as cancelled now, and its thread's
        # result is dropped when it returns
        for k in list(self.lane_running):
            self.loop.call_soon_threadsafe(self._cancel_lane, k)
        waiting, self.ready = list(self.ready), deque()
        for k in waiting:
            self.loop.call_soon_threadsafe(self._cancel_waiting, k)

    def _cancel_task(self, i: int, task: asyncio.Task) -> None:
        if self.tasks.get(i) is not task or self.status[i] is not None:
            return  # the task moved on (or ended) since the stop was decided
        task.cancel()
        # a task cancelled before its first step never enters it: settle it when it ends
        task.add_done_callback(lambda _t: self._settle_cancelled(i))

    def _settle_cancelled(self, i: int) -> None:
        with self.lock:
            if self.status[i] is None:
                self._complete(i, StepResult(self.nodes[i].spec.name, _CANCELLED,
                                             reason=self.stopping), ran=True)

    def _cancel_lane(self, k: int) -> None:
        with self.lock:
            if self.status[k] is None and k in self.lane_running:
                # its thread stays busy until the function returns: lend the pool one more
                self.threads.lend()
                self.lent.add(k)
                started_at, t0, attempts = self.lane_progress.get(k, (None, None, 0))
                self._complete(k, StepResult(
                    self.nodes[k].spec.name, _CANCELLED, started_at=started_at,
                    finished_at=_now() if started_at else None,
                    duration_ms=(time.perf_counter() - t0) * 1000.0 if t0 else 0.0,
                    attempts=attempts, reason=self.stopping), ran=True)

    def _cancel_waiting(self, k: int) -> None:
        with self.lock:
            if self.status[k] is None:
                decided = self._decide(k)
                if decided is None:  # an all_done step: it still runs
                    self._schedule(k)
                else:
                    self._complete(k, decided, ran=False)

    def interrupt(self) -> None:
        with self.lock:
            self.interrupted = True
            self._stop("the run was cancelled")

    # -- one step on the loop ---------------------------------------------------------------

    async def _step_task(self, i: int) -> None:
        """Run step ``i``, then every step its end lets this task claim (a chain: no new task)."""
        chained = 0
        while True:
            result = await self._run_step(i)
            with self.lock:
                if self.status[i] is not None:  # settled meanwhile (cancelled)
                    return
                nxt = self._complete(i, result, ran=True, claim="task")
            if nxt is None:
                return
            i = nxt
            chained += 1
            if chained % 64 == 0:
                await asyncio.sleep(0)  # let the loop breathe in a long chain of instant steps

    async def _run_step(self, i: int) -> StepResult:
        """Every attempt of step ``i``; returns its terminal result and never raises."""
        node = self.nodes[i]
        spec = node.spec
        run = self.run
        hooks = self.hooks
        ctx, refused = self._begin(spec)
        if refused is not None:
            return refused
        started_at = _now()
        t0 = time.perf_counter()
        attempt = 0
        try:
            kwargs = node.binder.bind(self.outputs, self.params, ctx, self.status)
            middleware = hooks.wrap_step(step=spec, context=ctx) if hooks.wraps_steps else ()
        except Exception as exc:  # noqa: BLE001 - a wrap_step hook failed: the step fails
            return self._failed(spec, exc, started_at, t0, attempt)
        executor = self.executor
        timeout = spec.timeout
        log_info = self.log_info
        lock = self.lock
        direct = self.local and node.is_async and timeout is None
        while True:
            attempt += 1
            ctx.attempt = attempt
            if hooks.step_start_listened:
                with lock:
                    hooks.step_start(run=run, step=spec, attempt=attempt)
            if log_info:
                self.logger.info("step_started", run_id=run.run_id, step=spec.name,
                                 attempt=attempt)
            try:
                if direct:  # the local executor, no middleware, no timeout: call it here
                    output = await node.func(**kwargs)
                elif timeout is None:
                    output = await executor.execute(Invocation(
                        spec, node.func, node.is_async, kwargs, middleware, ctx, attempt,
                        node.driver_reads, not node.dependents))
                else:
                    deadline = asyncio.timeout(timeout)
                    invocation = Invocation(spec, node.func, node.is_async, kwargs, middleware,
                                            ctx, attempt, node.driver_reads, not node.dependents)
                    try:
                        async with deadline:
                            output = await executor.execute(invocation)
                    except TimeoutError:
                        if not deadline.expired():
                            raise  # the step's own TimeoutError
                        raise StepTimeout(spec.name, timeout) from None
            except asyncio.CancelledError:
                if self.stopping is None:  # not ours: the step itself raised CancelledError
                    exc = asyncio.CancelledError("the step raised CancelledError")
                    return self._failed(spec, exc, started_at, t0, attempt)
                return StepResult(
                    spec.name, _CANCELLED, started_at=started_at, finished_at=_now(),
                    duration_ms=(time.perf_counter() - t0) * 1000.0, attempts=attempt,
                    reason=self.stopping,
                )
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the step's failure
                failure: BaseException | None = exc
            else:
                failure = None
            if hooks.output_finish_listened:  # a data step's outputs, after each attempt
                self._outputs_ended(spec, attempt, output if failure is None
                                    else getattr(failure, "result", None))
            if failure is not None:
                exc = failure
                if spec.should_retry(exc, attempt):
                    if not self._may_retry(spec):  # would retry, but the run stopped
                        return self._failed(spec, exc, started_at, t0, attempt, _CANCELLED)
                    delay = self._retrying(spec, attempt, exc)
                    try:
                        await asyncio.sleep(delay)
                    except asyncio.CancelledError:
                        return self._failed(spec, exc, started_at, t0, attempt, _CANCELLED)
                    if not self._may_retry(spec):  # stopped while it waited: no new attempt
                        return self._failed(spec, exc, started_at, t0, attempt, _CANCELLED)
                    continue
                return self._failed(spec, exc, started_at, t0, attempt)
            self.outputs[i] = output
            return self._succeeded(spec, output, started_at, t0, attempt)

    def _outputs_ended(self, spec: StepSpec, attempt: int, value: Any) -> None:
        """``pipectl_output_finish`` for each output of a data step's attempt that ended with
        ``value`` (its :class:`~pipectl.data.DataStepResult`, or the failure's), if it is one.
        Data steps are async: they run here, never in the sync lane."""
        reports = getattr(value, "outputs", None)
        if not reports or not isinstance(reports, dict):
            return
        from pipectl.data import DataStepResult

        if not isinstance(value, DataStepResult):
            return
        with self.lock:
            for report in list(reports.values()):
                self.hooks.output_finish(run=self.run, step=spec, attempt=attempt, report=report)

    def _may_retry(self, spec: StepSpec) -> bool:
        """No new attempt once the run stops, except for ``all_done`` (clean-up) steps after
        fail_fast; nothing at all after an interrupt."""
        if self.stopping is None:
            return True
        return spec.trigger is _ALL_DONE and not self.interrupted

    def _retrying(self, spec: StepSpec, attempt: int, exc: BaseException) -> float:
        delay = spec.backoff_delay(attempt, self.rng)
        with self.lock:
            self.hooks.step_retry(run=self.run, step=spec, attempt=attempt, error=exc, delay=delay)
        self.logger.info("step_retry", run_id=self.run.run_id, step=spec.name, attempt=attempt,
                         error=f"{type(exc).__name__}: {exc}", delay_s=round(delay, 3))
        return delay

    # -- one step in the sync lane ----------------------------------------------------------

    def _lane_task(self, i: int) -> None:
        """A worker thread's job: run sync step ``i`` and every sync step it then claims."""
        self.context.copy().run(self._lane_loop, i)

    def _quick_task(self) -> None:
        """The quick lane's worker: run the queued instant steps one after another."""
        self.context.copy().run(self._quick_loop)

    def _quick_loop(self) -> None:
        while True:
            with self.lock:
                if not self.quick:
                    self.quick_runners -= 1
                    return
                i = self.quick.popleft()
            func = self.nodes[i].func
            if _speed(func) is None:  # its first call is under way: instant means done by now
                probe = self.probing.get(func)
                if probe is not None:
                    probe.wait(_INSTANT)
            speed = _speed(func)
            if speed is None or speed >= _INSTANT:  # not instant: a thread of its own
                self.threads.call(self._lane_task, i)
                continue
            me = threading.get_ident()
            try:
                self._lane_loop(i, quick=True)
            finally:
                self.quick_busy.pop(me, None)

    def _lane_loop(self, i: int | None, quick: bool = False) -> None:
        while i is not None:
            if quick and self.status[i] is None:
                speed = _speed(self.nodes[i].func)
                if speed is None or speed >= _INSTANT:  # claimed, but not for this thread
                    self.threads.call(self._lane_task, i)
                    return
                self.quick_busy[threading.get_ident()] = time.perf_counter()
            if self.status[i] is None:
                try:
                    result, output = self._run_sync_step(i)
                except BaseException as exc:  # noqa: BLE001 - a bug must not lose the step
                    result = self._failed(self.nodes[i].spec, exc, None, time.perf_counter(), 0)
                    output = None
            with self.lock:
                if self.status[i] is not None:  # recorded as cancelled (before or while it ran)
                    if i in self.lent:
                        self.lent.discard(i)
                        self.threads.reclaim()
                    return
                self.outputs[i] = output
                self.lane_progress.pop(i, None)
                i = self._complete(i, result, ran=True, claim="lane")

    def _run_sync_step(self, i: int) -> tuple[StepResult, Any]:
        """Every attempt of lane step ``i`` on this thread: (terminal result, output)."""
        node = self.nodes[i]
        spec = node.spec
        run = self.run
        ctx, refused = self._begin(spec)
        if refused is not None:
            return refused, None
        started_at = _now()
        t0 = time.perf_counter()
        attempt = 0
        try:
            kwargs = node.binder.bind(self.outputs, self.params, ctx, self.status)
        except Exception as exc:  # noqa: BLE001
            return self._failed(spec, exc, started_at, t0, attempt), None
        func = node.func
        while True:
            attempt += 1
            ctx.attempt = attempt
            with self.lock:
                if self.status[i] is not None:  # recorded as cancelled: no new attempt
                    return self._failed(spec, RuntimeError("cancelled"), started_at, t0,
                                        attempt - 1, _CANCELLED), None
                self.lane_progress[i] = (started_at, t0, attempt)
                if self.hooks.step_start_listened:
                    self.hooks.step_start(run=run, step=spec, attempt=attempt)
            if self.log_info:
                self.logger.info("step_started", run_id=run.run_id, step=spec.name,
                                 attempt=attempt)
            try:
                called = time.perf_counter()
                try:
                    output = func(**kwargs)
                finally:
                    _clock(func, time.perf_counter() - called)
                    probe = self.probing.pop(func, None)
                    if probe is not None:
                        probe.set()
                if output is not None and inspect.isawaitable(output):  # returned a coroutine
                    output = asyncio.run_coroutine_threadsafe(output, self.loop).result()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the step's failure
                if spec.should_retry(exc, attempt):
                    if not self._may_retry(spec):  # would retry, but the run stopped
                        return self._failed(spec, exc, started_at, t0, attempt, _CANCELLED), None
                    delay = self._retrying(spec, attempt, exc)
                    if self.stopping is None:
                        self.stop_event.wait(delay)  # a stop ends the wait at once
                    else:
                        time.sleep(delay)  # an all_done step retrying after the stop
                    if not self._may_retry(spec):
                        return self._failed(spec, exc, started_at, t0, attempt, _CANCELLED), None
                    continue
                return self._failed(spec, exc, started_at, t0, attempt), None
            return self._succeeded(spec, output, started_at, t0, attempt), output

    def _begin(self, spec: StepSpec) -> tuple[Any, StepResult | None]:
        """The step's ``ctx``, or (None, its result) when the run's stop forbids it to start."""
        if self.stopping is not None and (self.interrupted or spec.trigger is not _ALL_DONE):
            return None, StepResult(spec.name, _CANCELLED, reason=f"not started: {self.stopping}")
        run = self.run
        bind_contextvars(step=spec.name)  # plugin log lines carry it (run_id: bound per run)
        return StepContext(run.run_id, run.pipeline_id, spec.name, self.params, self.services,
                           run.steps, self.shared_state, self.lock, self.components,
                           self.run_child), None

    async def run_child(self, pipeline: Any, params: Mapping[str, Any], step: str) -> PipelineRun:
        """Run ``pipeline`` (a :class:`~pipectl.Pipeline`) as a sub-pipeline of step ``step``:
        same plugins, executor and log context, its run linked by ``parent_run_id``."""
        config = self.config
        try:
            return await pipeline.run(
                params, plugin_manager=self.pm, executor=config.executor,
                executor_options=config.executor_options, max_threads=config.max_threads,
                parent_run_id=self.run.run_id, listeners=self.hooks.listeners)
        finally:
            bind_contextvars(run_id=self.run.run_id, step=step)

    @staticmethod
    def _succeeded(spec: StepSpec, output: Any, started_at: datetime, t0: float,
                   attempts: int) -> StepResult:
        return StepResult(
            spec.name, _OK, output=output, started_at=started_at, finished_at=_now(),
            duration_ms=(time.perf_counter() - t0) * 1000.0, attempts=attempts,
            records=_records_of(output),
        )

    def _failed(self, spec: StepSpec, exc: BaseException, started_at: datetime | None, t0: float,
                attempts: int, status: StepStatus = _FAILED) -> StepResult:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        trace = _user_traceback(exc, self.hidden_dirs)
        if self.secrets:  # a secret param's value never reaches the record, hooks or logs
            from pipectl.log import redact

            message, trace = redact(message, self.secrets), redact(trace, self.secrets)
        return StepResult(
            spec.name, status, error=message, started_at=started_at, finished_at=_now(),
            duration_ms=(time.perf_counter() - t0) * 1000.0, attempts=attempts,
            exception=exc, traceback=trace,
            reason=self.stopping if status is _CANCELLED else None,
            records=_records_of(getattr(exc, "result", None)),  # a data step's partial commits
        )


_STUCK = 0.005
"""Seconds a quick-lane runner may spend in one call, while instant steps wait, before another
runner is added."""

_INSTANT = 0.001
"""Seconds: a sync function whose calls take less is *instant*. Instant steps share one worker
thread (the quick lane) instead of a thread each, which would only fight over the GIL."""

_durations: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _speed(func: Any) -> float | None:
    """The running average of ``func``'s call time in seconds, None before its first call."""
    try:
        return _durations.get(func)
    except TypeError:  # not weakly referenceable: never treated as instant
        return 1.0


def _clock(func: Any, seconds: float) -> None:
    try:
        previous = _durations.get(func)
        _durations[func] = seconds if previous is None else previous * 0.7 + seconds * 0.3
    except TypeError:
        pass


def _rollback_kwargs(func: Callable[..., Any], **available: Any) -> dict[str, Any]:
    """What a rollback function asks for, by name: ``output`` (the step's), ``result`` (its
    StepResult), ``params`` and ``ctx``/``context``; all of them to ``**kwargs``."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(available)
    out = {name: available[name] for name in parameters if name in available}
    if "context" in parameters:
        out["context"] = available["ctx"]
    return out


def _records_of(output: Any) -> int | None:
    if output is None:
        return None
    records = getattr(output, "records_processed", None)
    return records if isinstance(records, int) else None


async def execute(
    spec: PipelineSpec,
    config: RunConfig,
    pm: Any,
    *,
    services: Services | None = None,
    plan: Plan | None = None,
    listeners: tuple[Any, ...] = (),
) -> PipelineRun:
    """Run ``spec`` once with ``config`` and the plugins of ``pm``; return the finished run.

    ``listeners``: the run's own lifecycle listeners (see :class:`pipectl.hooks.Hooks`): called
    with the plugins' implementations for this run and its sub-pipeline runs only.

    If the awaiting task is cancelled (Ctrl-C), running steps are cancelled, the run is recorded
    as ``cancelled`` (hooks fire) and the cancellation propagates.
    """
    from pipectl import log

    if plan is None:
        plan = plan_run(spec, pm.registries.step_types, config.only, pm.registries,
                        config.skip)
    hooks = Hooks(pm, listeners)
    executor_name = config.executor or spec.executor
    try:
        executor = pm.registries.executors.create(executor_name, **config.executor_options)
    except (TypeError, ValueError) as exc:
        raise ExecutorError(executor_name, f"bad options {dict(config.executor_options)!r}: "
                                           f"{exc}") from exc
    run = PipelineRun(
        run_id=config.run_id or uuid.uuid4().hex,
        pipeline_id=spec.name,
        status=RunStatus.RUNNING,
        start_time=_now(),
        parameters={k: "***" if k in config.secrets else v for k, v in config.params.items()},
        parent_run_id=config.parent_run_id,
        resumed_from=config.resumed_from,
        left_out=list(plan.left_out),
    )
    secret_values = tuple(sorted(
        {str(config.params[n]) for n in config.secrets
         if n in config.params and len(str(config.params[n])) >= 3}, key=len, reverse=True))
    secrets_token = log.secrets_var().set(secret_values) if secret_values else None
    run_services = (services or Services()).child()
    for name, service in config.services.items():
        run_services.register(name, service)
    logger = log.get_logger()
    tokens = bind_contextvars(run_id=run.run_id)  # every step's log lines carry it; reset below
    state = _RunState(plan, config, hooks, executor, run, run_services, logger, pm.registries)
    state.secrets = secret_values
    if secret_values:  # what is shown of the run after it ended masks them (pipectl.preview)
        log.remember_secrets(run, secret_values)
    state.pm = pm
    try:  # before run_start: an executor that cannot start leaves no run behind
        await executor.start(run, config, state.limit if state.limit <= len(plan.nodes) else None)
    except BaseException as exc:
        reset_contextvars(**tokens)
        if secrets_token is not None:
            log.secrets_var().reset(secrets_token)
        with contextlib.suppress(Exception):
            await executor.shutdown()
        if isinstance(exc, (PipectlError, asyncio.CancelledError)) or \
                not isinstance(exc, Exception):
            raise
        raise ExecutorError(executor_name, f"cannot start: {exc}") from exc
    hooks.run_start(run=run)
    hooks.run_planned(run=run, plan=lambda: _run_plan(plan, config))
    logger.info("run_started", run_id=run.run_id, pipeline=spec.name, steps=len(plan.nodes),
                executor=executor_name)
    if state.log_debug:  # -v: the plan, level by level, and what bounds it
        logger.debug("plan", run_id=run.run_id, pipeline=spec.name,
                     levels=[[node.spec.name for node in level] for level in _levels(plan)],
                     max_concurrent=state.limit, only=list(config.only) or None,
                     skip=list(config.skip) or None,
                     resumed_steps=len(config.resume) or None)
    cancelled = False
    try:
        state.start_roots()
        try:
            await asyncio.shield(state.all_done)
        except asyncio.CancelledError:
            cancelled = True
            state.interrupt()
            while not state.all_done.done():
                try:
                    await asyncio.shield(state.all_done)
                except asyncio.CancelledError:  # cancelled again: keep cleaning up
                    state.interrupt()
    finally:
        reset_contextvars(**tokens)
        await executor.shutdown()
    _finalize(run, plan, cancelled)
    if config.rollback and run.status is RunStatus.FAILED:
        await state.rollback()
    run.end_time = _now()
    hooks.run_finish(run=run)
    logger.info("run_finished", run_id=run.run_id, pipeline=spec.name, status=run.status.value,
                duration_ms=round(run.duration_ms or 0.0, 3), errors=len(run.errors))
    if secrets_token is not None:
        log.secrets_var().reset(secrets_token)
    if cancelled:
        raise RunCancelled(run)
    return run


def _run_plan(plan: Plan, config: RunConfig) -> Any:
    """The :class:`~pipectl.model.RunPlan` of ``pipectl_run_planned``."""
    from pipectl.model import RunPlan

    nodes = plan.nodes
    resume = config.resume
    return RunPlan(
        steps=tuple(node.spec for node in nodes),
        edges=tuple((nodes[d].spec.name, node.spec.name) for node in nodes for d in node.deps),
        left_out=tuple(plan.left_out),
        resumed=tuple(node.spec.name for node in nodes if node.spec.name in resume),
    )


def _levels(plan: Any) -> list[list[Any]]:
    """The plan's nodes by level: each after every level holding one of its dependencies."""
    depth: dict[int, int] = {}
    for node in plan.nodes:  # in topological order
        depth[node.index] = 1 + max((depth[d] for d in node.deps), default=-1)
    levels: list[list[Any]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in plan.nodes:
        levels[depth[node.index]].append(node)
    return levels


def _finalize(run: PipelineRun, plan: Plan, cancelled: bool) -> None:
    failed = False
    records = 0
    for node in plan.nodes:
        result = run.steps[node.spec.name]
        if result.records:
            records += result.records
        if result.status is _FAILED:
            allowed = " (allowed to fail)" if node.spec.allow_failure else ""
            run.errors.append(f"step {node.spec.name!r} failed{allowed}: {result.error}")
            failed = failed or not node.spec.allow_failure
    run.records_processed = records
    if cancelled:
        run.status = RunStatus.CANCELLED
    elif failed:
        run.status = RunStatus.FAILED
    else:  # skipped steps follow a failure (then the run failed) or a false ``when``
        run.status = RunStatus.SUCCESS
    # order the results like the plan, for people reading them
    run.steps = {node.spec.name: run.steps[node.spec.name] for node in plan.nodes}

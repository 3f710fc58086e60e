"""The attempt runner: every attempt of one step, for async and sync steps alike.

:meth:`AttemptRunner.run` is the one loop over attempts: it binds the step's arguments, emits
``step_start`` before each attempt, calls the step (itself, on the executor, or through the
executor's lanes), emits ``output_finish`` for a data step's outputs, decides a retry (emitting
``step_retry``, then waiting the backoff delay), and returns the step's terminal
:class:`~pipectl.model.StepResult`; it never raises. (``step_finish`` is emitted when the
scheduler records that result.)

The same coroutine runs a *lane* step (sync, no timeout, on a thread the executor lent, see
:class:`pipectl.executors.Lanes`): :meth:`AttemptRunner.run_in_thread` drives it to its end on
the calling thread, where it never awaits: the step is called and the backoff waited with
plain blocking calls.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipectl.context import StepContext
from pipectl.engine.state import RunState, now, records_of
from pipectl.errors import StepTimeout
from pipectl.executors import Invocation
from pipectl.model import PipelineRun, StepResult, StepSpec, StepStatus, Trigger

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.step_logs import StepCapture

__all__ = ["PACKAGE_DIR", "AttemptRunner", "framework_dirs", "user_traceback"]

PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
"""pipectl's own directory: its frames are left out of a failed step's traceback."""

_OK = StepStatus.SUCCESS
_FAILED = StepStatus.FAILED
_CANCELLED = StepStatus.CANCELLED
_ALL_DONE = Trigger.ALL_DONE


def framework_dirs(executor: Any) -> tuple[str, ...]:
    """pipectl's directory, the package directory of a plugin executor (its frames, such as
    pipectl-dask's task wrapper, are not the user's code either) and the directories it names
    in ``framework_paths`` (the distributed library's, for pipectl-dask)."""
    dirs = [PACKAGE_DIR, *getattr(executor, "framework_paths", ())]
    top = type(executor).__module__.partition(".")[0]
    path = getattr(sys.modules.get(top), "__file__", None)
    if top != "pipectl" and path:
        dirs.append(str(Path(path).resolve().parent))
    return tuple(dirs)


def user_traceback(exc: BaseException, hidden: tuple[str, ...] = (PACKAGE_DIR,)) -> str:
    """The exception's traceback without pipectl's (``hidden``) and asyncio's own frames."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(hidden)
        and "/asyncio/" not in f.filename
        and "/concurrent/" not in f.filename
        and "/contextvars" not in f.filename
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


class AttemptRunner:
    """Runs steps' attempts for one run (see the module's docstring)."""

    def __init__(self, state: RunState):
        # structlog, imported when a run starts (not with the engine: importing it costs tens
        # of milliseconds that ``pipectl validate`` / ``graph`` / ``--help`` need not pay)
        from structlog.contextvars import bind_contextvars

        self.state = state
        self.hidden_dirs = framework_dirs(state.executor)
        self.bind_log_context = bind_contextvars
        #: every attempt of a step (see :meth:`attempts`): with step logs captured when the
        #: run captures them (chosen once, so a run without a tracker pays nothing)
        self.run: Callable[..., Coroutine[Any, Any, StepResult]] = self.attempts
        if state.capture_logs:
            from pipectl import step_logs

            self.current_log = step_logs.CURRENT
            self.step_capture = step_logs.StepCapture
            self.run = self.captured

    def run_in_thread(self, i: int) -> StepResult:
        """Every attempt of lane step ``i``, on this (lane) thread."""
        attempts = self.run(i, True)
        try:
            attempts.send(None)
        except StopIteration as end:
            result: StepResult = end.value
            return result
        attempts.close()
        raise RuntimeError(f"lane step {self.state.nodes[i].spec.name!r} awaited the loop")

    async def captured(self, i: int, lane: bool = False) -> StepResult:
        """:meth:`attempts`, capturing each attempt's logs (:mod:`pipectl.step_logs`) into
        the result's ``logs``, secret values masked."""
        current = self.current_log
        capture = self.step_capture()
        token = current.set(None)  # each attempt sets it; put back when the step ends
        try:
            result = await self.attempts(i, lane, capture)
        finally:
            current.reset(token)
        logs = capture.finish(self.state.secrets)
        if logs:  # the result is the engine's own, just made: set before anyone sees it
            object.__setattr__(result, "logs", logs)
        return result

    async def attempts(
        self, i: int, lane: bool = False, capture: StepCapture | None = None
    ) -> StepResult:
        """Every attempt of step ``i``; returns its terminal result (output in ``.output`` when
        it succeeded) and never raises. ``lane``: a sync step on a lane thread (driven by
        :meth:`run_in_thread`, never awaiting). ``capture``: where each attempt's logs go."""
        state = self.state
        node = state.nodes[i]
        spec = node.spec
        run = state.run
        hooks = state.hooks
        ctx, refused = self.begin(spec)
        if refused is not None:
            return refused
        assert ctx is not None
        started_at = now()
        t0 = time.perf_counter()
        attempt = 0
        lanes = state.lanes  # lent only when no plugin wraps steps
        try:
            binder = node.binder
            kwargs = binder.bind(state.outputs, state.params, ctx, state.status)
            middleware = (
                hooks.wrap_step(step=spec, context=ctx)
                if lanes is None and hooks.wraps_steps
                else ()
            )
        except Exception as exc:  # noqa: BLE001 - a wrap_step hook failed: the step fails
            return self.failed(spec, exc, started_at, t0, attempt)
        cache_key: str | None = None
        cache = state.cache
        if spec.cache is not None and cache is not None:  # looked up before any attempt
            hit, cache_key = cache.lookup(node, kwargs, started_at, t0)
            if hit is not None:
                return hit
        executor = state.executor
        timeout = spec.timeout
        func = node.func
        log_info = state.log_info
        lock = state.lock
        # lanes lent by the executor, no middleware, no timeout: the step is called here
        direct = lanes is not None and node.is_async and timeout is None
        while True:
            attempt += 1
            ctx.attempt = attempt
            if capture is not None:  # its step_started event line: added when it ends
                capture.begin(attempt)
            listened = hooks.step_start_listened
            if lane or listened:
                with lock:
                    if lane:
                        if state.status[i] is not None:  # recorded as cancelled: no new attempt
                            return self.failed(
                                spec,
                                RuntimeError("cancelled"),
                                started_at,
                                t0,
                                attempt - 1,
                                _CANCELLED,
                            )
                        state.lane_progress[i] = (started_at, t0, attempt)
                    if listened:
                        hooks.step_start(run=run, step=spec, attempt=attempt)
            if log_info:
                state.logger.info(
                    "step_started", run_id=run.run_id, step=spec.name, attempt=attempt
                )
            failure: BaseException | None = None
            output: Any = None
            try:
                if lane:
                    assert lanes is not None
                    output = lanes.call(func, kwargs)
                    if output is not None and inspect.isawaitable(output):  # a coroutine
                        output = asyncio.run_coroutine_threadsafe(
                            cast(Coroutine[Any, Any, Any], output), state.loop
                        ).result()
                elif direct:
                    output = await func(**kwargs)
                else:
                    invocation = Invocation(
                        spec,
                        func,
                        node.is_async,
                        kwargs,
                        middleware,
                        ctx,
                        attempt,
                        node.driver_reads,
                        not node.dependents,
                    )
                    if timeout is None:
                        output = await executor.execute(invocation)
                    else:
                        deadline = asyncio.timeout(timeout)
                        try:
                            async with deadline:
                                output = await executor.execute(invocation)
                        except TimeoutError:
                            if not deadline.expired():
                                raise  # the step's own TimeoutError
                            raise StepTimeout(spec.name, timeout) from None
            except asyncio.CancelledError:
                if state.stopping is None:  # not ours: the step itself raised CancelledError
                    error = asyncio.CancelledError("the step raised CancelledError")
                    return self.failed(
                        spec, error, started_at, t0, attempt, received=binder.received(kwargs)
                    )
                return StepResult(
                    spec.name,
                    _CANCELLED,
                    started_at=started_at,
                    finished_at=now(),
                    duration_ms=(time.perf_counter() - t0) * 1000.0,
                    attempts=attempt,
                    reason=state.stopping,
                )
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the step's failure
                failure = exc
            if not lane and hooks.output_finish_listened:  # a data step's (async) outputs
                self.outputs_ended(
                    spec, attempt, output if failure is None else getattr(failure, "result", None)
                )
            if failure is None:
                if cache_key is not None and cache is not None:
                    cache.store_output(node, cache_key, output)
                return self.succeeded(
                    spec, output, started_at, t0, attempt, binder.received(kwargs)
                )
            if not spec.should_retry(failure, attempt):
                return self.failed(
                    spec, failure, started_at, t0, attempt, received=binder.received(kwargs)
                )
            if not self.may_retry(spec):  # would retry, but the run stopped
                return self.failed(
                    spec, failure, started_at, t0, attempt, _CANCELLED, binder.received(kwargs)
                )
            delay = self.retrying(spec, attempt, failure)
            if capture is not None:
                capture.event(
                    "info",
                    f"step_retry attempt={attempt} "
                    f"error={f'{type(failure).__name__}: {failure}'!r} delay_s={round(delay, 3)}",
                )
            if not lane:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    return self.failed(
                        spec, failure, started_at, t0, attempt, _CANCELLED, binder.received(kwargs)
                    )
            elif state.stopping is None:
                state.stop_event.wait(delay)  # a stop ends the wait at once
            else:
                time.sleep(delay)  # an all_done step retrying after the stop
            if not self.may_retry(spec):  # stopped while it waited: no new attempt
                return self.failed(
                    spec, failure, started_at, t0, attempt, _CANCELLED, binder.received(kwargs)
                )

    def outputs_ended(self, spec: StepSpec, attempt: int, value: Any) -> None:
        """``pipectl_output_finish`` for each output of a data step's attempt that ended with
        ``value`` (its :class:`~pipectl.data.DataStepResult`, or the failure's), if it is one."""
        reports = getattr(value, "outputs", None)
        if not reports or not isinstance(reports, dict):
            return
        from pipectl.data import DataStepResult

        if not isinstance(value, DataStepResult):
            return
        state = self.state
        with state.lock:
            for report in list(reports.values()):
                state.hooks.output_finish(run=state.run, step=spec, attempt=attempt, report=report)

    def may_retry(self, spec: StepSpec) -> bool:
        """No new attempt once the run stops, except for ``all_done`` (clean-up) steps after
        fail_fast; nothing at all after an interrupt."""
        state = self.state
        if state.stopping is None:
            return True
        return spec.trigger is _ALL_DONE and not state.interrupted

    def retrying(self, spec: StepSpec, attempt: int, exc: BaseException) -> float:
        """``step_retry`` and its log line; returns the backoff delay before the next attempt."""
        state = self.state
        delay: float = spec.backoff_delay(attempt, state.rng)
        with state.lock:
            state.hooks.step_retry(
                run=state.run, step=spec, attempt=attempt, error=exc, delay=delay
            )
        state.logger.info(
            "step_retry",
            run_id=state.run.run_id,
            step=spec.name,
            attempt=attempt,
            error=f"{type(exc).__name__}: {exc}",
            delay_s=round(delay, 3),
        )
        return delay

    def begin(self, spec: StepSpec) -> tuple[StepContext | None, StepResult | None]:
        """The step's ``ctx``, or (None, its result) when the run's stop forbids it to start."""
        state = self.state
        if state.stopping is not None and (state.interrupted or spec.trigger is not _ALL_DONE):
            return None, StepResult(spec.name, _CANCELLED, reason=f"not started: {state.stopping}")
        run = state.run
        self.bind_log_context(step=spec.name)  # plugin log lines carry it (run_id: bound per run)
        return StepContext(
            run.run_id,
            run.pipeline_id,
            spec.name,
            state.params,
            state.services,
            run.steps,
            state.shared_state,
            state.lock,
            state.components,
            self.run_child,
        ), None

    async def run_child(self, pipeline: Any, params: Mapping[str, Any], step: str) -> PipelineRun:
        """Run ``pipeline`` (a :class:`~pipectl.Pipeline`) as a sub-pipeline of step ``step``:
        same plugins, executor, rollback and log context, its run linked by
        ``parent_run_id``. Under ``rollback``, a sub-pipeline run that fails undoes its own
        completed steps before its step fails."""
        state = self.state
        config = state.config
        try:
            child: PipelineRun = await pipeline.run(
                params,
                plugin_manager=state.pm,
                executor=config.executor,
                executor_options=config.executor_options,
                max_threads=config.max_threads,
                rollback=config.rollback,
                capture_logs=config.capture_logs,
                cache=config.cache,
                parent_run_id=state.run.run_id,
                listeners=state.hooks.listeners,
            )
            return child
        finally:
            self.bind_log_context(run_id=state.run.run_id, step=step)

    @staticmethod
    def succeeded(
        spec: StepSpec,
        output: Any,
        started_at: datetime,
        t0: float,
        attempts: int,
        received: dict[str, Any] | None = None,
    ) -> StepResult:
        return StepResult(
            spec.name,
            _OK,
            output=output,
            started_at=started_at,
            finished_at=now(),
            duration_ms=(time.perf_counter() - t0) * 1000.0,
            attempts=attempts,
            records=records_of(output),
            received=received,
        )

    def failed(
        self,
        spec: StepSpec,
        exc: BaseException,
        started_at: datetime | None,
        t0: float,
        attempts: int,
        status: StepStatus = _FAILED,
        received: dict[str, Any] | None = None,
    ) -> StepResult:
        """The result of a step that ended with ``exc`` (``status``: failed, or cancelled),
        called with ``received`` (see :attr:`StepResult.received`)."""
        state = self.state
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        trace = user_traceback(exc, self.hidden_dirs)
        if state.secrets:  # a secret param's value never reaches the record, hooks or logs
            from pipectl.log import redact

            message, trace = redact(message, state.secrets), redact(trace, state.secrets)
        return StepResult(
            spec.name,
            status,
            error=message,
            started_at=started_at,
            finished_at=now(),
            duration_ms=(time.perf_counter() - t0) * 1000.0,
            attempts=attempts,
            exception=exc,
            traceback=trace,
            reason=state.stopping if status is _CANCELLED else None,
            records=records_of(getattr(exc, "result", None)),  # a data step's partial commits
            received=received,
        )

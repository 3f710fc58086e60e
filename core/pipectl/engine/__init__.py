"""The engine: runs a pipeline's DAG on an executor and owns its semantics.

Retries, timeouts, skip propagation, ``fail_fast``, allowed failures, ``all_done`` triggers and
cancellation are decided here, whatever the executor, and every lifecycle event is emitted from
here (through :class:`pipectl.hooks.Hooks`); no hook fires per record. The parts:

- :mod:`pipectl.engine.state`: :class:`~pipectl.engine.state.RunState`, what one run owns;
- :mod:`pipectl.engine.scheduler`: the worklist, trigger rules, ``when``, skips, stops;
- :mod:`pipectl.engine.attempts`: the attempt runner (retries, timeouts, step hooks);
- :mod:`pipectl.engine.rollback`: rollbacks in reverse completion order;
- this module: :func:`execute`, one run from the executor's start to ``run_finish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from pipectl.context import Services
from pipectl.engine.attempts import AttemptRunner
from pipectl.engine.rollback import rollback
from pipectl.engine.scheduler import Scheduler
from pipectl.engine.state import RunState, now
from pipectl.errors import ExecutorError, PipectlError
from pipectl.hooks import Hooks
from pipectl.model import PipelineRun, PipelineSpec, RunConfig, RunStatus, StepStatus
from pipectl.planning import Node, Plan, plan_run

__all__ = ["Plan", "RunCancelled", "execute", "plan_run"]


class RunCancelled(asyncio.CancelledError):
    """The run was cancelled (Ctrl-C); ``run`` is its record, status ``cancelled``."""

    def __init__(self, run: PipelineRun):
        super().__init__(f"run {run.run_id} of {run.pipeline_id!r} was cancelled")
        self.run = run


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
    from structlog.contextvars import bind_contextvars, reset_contextvars

    from pipectl import log

    if plan is None:
        plan = plan_run(spec, pm.registries.step_types, config.only, pm.registries, config.skip)
    hooks = Hooks(pm, listeners)
    executor_name = config.executor or spec.executor
    try:
        executor = pm.registries.executors.create(executor_name, **config.executor_options)
    except (TypeError, ValueError) as exc:
        raise ExecutorError(
            executor_name, f"bad options {dict(config.executor_options)!r}: {exc}"
        ) from exc
    run = PipelineRun(
        run_id=config.run_id or uuid.uuid4().hex,
        pipeline_id=spec.name,
        status=RunStatus.RUNNING,
        start_time=now(),
        parameters={k: "***" if k in config.secrets else v for k, v in config.params.items()},
        parent_run_id=config.parent_run_id,
        resumed_from=config.resumed_from,
        left_out=list(plan.left_out),
    )
    secret_values = tuple(
        sorted(
            {
                str(config.params[n])
                for n in config.secrets
                if n in config.params and len(str(config.params[n])) >= 3
            }
            | {v for v in config.secret_values if len(v) >= 3},
            key=len,
            reverse=True,
        )
    )
    secrets_token = log.secrets_var().set(secret_values) if secret_values else None
    run_services = (services or Services()).child()
    for name, service in config.services.items():
        run_services.register(name, service)
    logger = log.get_logger()
    tokens = bind_contextvars(run_id=run.run_id)  # every step's log lines carry it; reset below
    state = RunState(plan, config, hooks, executor, run, run_services, logger, pm.registries)
    state.secrets = secret_values
    if secret_values:  # what is shown of the run after it ended masks them (pipectl.preview)
        log.remember_secrets(run, secret_values)
    state.pm = pm
    # step logs: captured only when a listener (the tracker's) asks for them
    state.capture_logs = config.capture_logs and _wants_step_logs(hooks, pm)
    if plan.cached:  # a step has a cache policy
        from pipectl.engine.cache import StepCache

        state.cache = StepCache(state)
    scheduler = Scheduler(state, AttemptRunner(state))
    try:  # before run_start: an executor that cannot start leaves no run behind
        await executor.start(run, config, state.limit if state.limit <= len(plan.nodes) else None)
    except BaseException as exc:
        reset_contextvars(**tokens)
        if secrets_token is not None:
            log.secrets_var().reset(secrets_token)
        with contextlib.suppress(Exception):
            await executor.shutdown()
        if isinstance(exc, (PipectlError, asyncio.CancelledError)) or not isinstance(
            exc, Exception
        ):
            raise
        raise ExecutorError(executor_name, f"cannot start: {exc}") from exc
    hooks.run_start(run=run)
    hooks.run_planned(run=run, plan=lambda: _run_plan(plan, config))
    logger.info(
        "run_started",
        run_id=run.run_id,
        pipeline=spec.name,
        steps=len(plan.nodes),
        executor=executor_name,
    )
    if state.log_debug:  # -v: the plan, level by level, and what bounds it
        logger.debug(
            "plan",
            run_id=run.run_id,
            pipeline=spec.name,
            levels=[[node.spec.name for node in level] for level in _levels(plan)],
            max_concurrent=state.limit,
            only=list(config.only) or None,
            skip=list(config.skip) or None,
            resumed_steps=len(config.resume) or None,
        )
    cancelled = False
    if state.capture_logs:
        from pipectl import step_logs

        step_logs.install()  # until the steps ended (uninstalled below, whatever happens)
    try:
        scheduler.start_roots()
        try:
            await asyncio.shield(scheduler.all_done)
        except asyncio.CancelledError:
            cancelled = True
            scheduler.interrupt()
            while not scheduler.all_done.done():
                try:
                    await asyncio.shield(scheduler.all_done)
                except asyncio.CancelledError:  # cancelled again: keep cleaning up
                    scheduler.interrupt()
    finally:
        reset_contextvars(**tokens)
        try:
            if state.lanes is not None:
                state.lanes.close()
            await executor.shutdown()
        finally:
            if state.capture_logs:
                step_logs.uninstall()
    _finalize(run, plan, cancelled)
    if config.rollback and run.status is RunStatus.FAILED:
        await rollback(state)
    run.end_time = now()
    hooks.run_finish(run=run)
    logger.info(
        "run_finished",
        run_id=run.run_id,
        pipeline=spec.name,
        status=run.status.value,
        duration_ms=round(run.duration_ms or 0.0, 3),
        errors=len(run.errors),
    )
    if secrets_token is not None:
        log.secrets_var().reset(secrets_token)
    if cancelled:
        raise RunCancelled(run)
    return run


def _wants_step_logs(hooks: Hooks, pm: Any) -> bool:
    from pipectl.step_logs import wants_step_logs

    return wants_step_logs(hooks.listeners, pm)


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


def _levels(plan: Plan) -> list[list[Node]]:
    """The plan's nodes by level: each after every level holding one of its dependencies."""
    depth: dict[int, int] = {}
    for node in plan.nodes:  # in topological order
        depth[node.index] = 1 + max((depth[d] for d in node.deps), default=-1)
    levels: list[list[Node]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in plan.nodes:
        levels[depth[node.index]].append(node)
    return levels


def _finalize(run: PipelineRun, plan: Plan, cancelled: bool) -> None:
    """The run's status, error lines and record count, and its results in plan order."""
    failed = False
    records = 0
    for node in plan.nodes:
        result = run.steps[node.spec.name]
        if result.records:
            records += result.records
        if result.status is StepStatus.FAILED:
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

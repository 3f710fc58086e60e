"""Rollback: after a failed run (with rollback on), undo the steps that succeeded.

The rollback functions run one at a time, in reverse order of completion, each between a
``rollback_start`` and a ``rollback_finish`` hook; each outcome is recorded in the step's
result (``rollback``, status ``rolled_back`` when it worked) and the run's status becomes
``rolled_back``, or ``rollback_failed`` with an error line per failed rollback.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import attrs

from pipectl.binding import is_async
from pipectl.context import StepContext
from pipectl.engine.state import RunState, now
from pipectl.model import RunStatus, StepStatus

__all__ = ["rollback", "rollback_kwargs"]


async def rollback(state: RunState) -> None:
    """Run the rollbacks of the steps that succeeded in the run of ``state`` (in
    ``state.completed``), last completed first; record each outcome and the run's status."""
    run = state.run
    failed: list[str] = []
    undone = 0
    for i in reversed(state.completed):
        spec = state.nodes[i].spec
        func = spec.rollback
        if func is None:
            continue
        result = run.steps[spec.name]
        started = now()
        ctx = StepContext(
            run.run_id,
            run.pipeline_id,
            spec.name,
            state.params,
            state.services,
            run.steps,
            state.shared_state,
            state.lock,
            state.components,
        )
        kwargs = rollback_kwargs(
            func, output=state.outputs[i], result=result, params=state.params, ctx=ctx
        )
        with state.lock:
            state.hooks.rollback_start(run=run, step=spec, result=result)
        state.logger.info("rollback_started", run_id=run.run_id, step=spec.name)
        raised: Exception | None = None
        try:
            if is_async(func):
                await func(**kwargs)
            else:
                await asyncio.to_thread(func, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, the others still run
            raised = exc
            error = f"{type(exc).__name__}: {exc}"
            if state.secrets:
                from pipectl.log import redact

                error = redact(error, state.secrets)
            failed.append(f"rollback of step {spec.name!r} failed: {error}")
            outcome: dict[str, Any] = {
                "status": "failed",
                "error": error,
                "started_at": started.isoformat(),
                "finished_at": now().isoformat(),
            }
            new = attrs.evolve(result, rollback=outcome)
            state.logger.warning("rollback_failed", run_id=run.run_id, step=spec.name, error=error)
        else:
            undone += 1
            outcome = {
                "status": "success",
                "error": None,
                "started_at": started.isoformat(),
                "finished_at": now().isoformat(),
            }
            new = attrs.evolve(result, status=StepStatus.ROLLED_BACK, rollback=outcome)
            state.logger.info("rollback_finished", run_id=run.run_id, step=spec.name)
        run.steps[spec.name] = new
        with state.lock:
            state.hooks.rollback_finish(run=run, step=spec, result=new, error=raised)
    if failed:
        run.errors.extend(failed)
        run.status = RunStatus.ROLLBACK_FAILED
    elif undone:
        run.status = RunStatus.ROLLED_BACK


def rollback_kwargs(func: Callable[..., Any], **available: Any) -> dict[str, Any]:
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

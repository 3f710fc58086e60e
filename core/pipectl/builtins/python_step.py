"""Built-in plugin ``python``: the step types ``python`` (a function or a step class) and
``pipeline`` (a sub-pipeline)."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from typing import Any

from pipectl.hookspecs import hookimpl


def _python_step(step: Any) -> Callable[..., Any]:
    if step.func is None:
        raise ValueError("a python step needs a function (func=...)")
    if inspect.isclass(step.func):
        return _class_step(step, step.func)
    if not callable(step.func):
        raise TypeError(f"func must be callable, got {type(step.func).__name__}")
    if step.options:
        raise ValueError(f"options {sorted(step.options)!r} go with a step class or a plugin "
                         "step type, not a function (give the function parameters instead)")
    return step.func


def _class_step(step: Any, cls: type) -> Callable[..., Any]:
    """A step class (the ia_modules design): built as ``cls(step_name, options)`` for each
    attempt, then ``run(data)`` is called (sync or async) with the step's inputs as a dict,
    and ``run(data, ctx)`` if it takes a second parameter named ``ctx`` or ``context``.

    ``data`` holds the ``inputs`` by name, and the output of every dependency that no input
    refers to, by step name."""
    from pipectl.model import callable_name

    name = callable_name(cls)
    method = getattr(cls, "run", None)
    if not callable(method):
        raise TypeError(f"{name} is a class without a run method; a step class has "
                        "`async def run(self, data) -> dict` (or a sync one)")
    try:
        inspect.signature(cls).bind(step.name, {})
    except TypeError as exc:
        raise TypeError(f"{name} cannot be built as {cls.__name__}(name, config): {exc}") from None
    except ValueError:  # no signature to check (a builtin base): try it when the step runs
        pass
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        parameters = []
    takes_ctx = len(parameters) >= 3 and parameters[2] in ("ctx", "context")
    options = dict(step.options)
    step_name = step.name

    if inspect.iscoroutinefunction(method):
        async def run_step_class(ctx: Any, **data: Any) -> Any:
            instance = cls(step_name, dict(options))
            return await (instance.run(data, ctx) if takes_ctx else instance.run(data))
    else:
        def run_step_class(ctx: Any, **data: Any) -> Any:  # type: ignore[misc]
            instance = cls(step_name, dict(options))
            return instance.run(data, ctx) if takes_ctx else instance.run(data)

    run_step_class.__qualname__ = f"{cls.__qualname__}.run"
    run_step_class.__module__ = cls.__module__
    return run_step_class


class SubPipelineOutput(dict):
    """The output of a sub-pipeline step: each of the sub-pipeline's steps' outputs by step
    name (``steps.NAME.output.STEP`` in references), with its run as ``run``."""

    def __init__(self, run: Any):
        super().__init__(run.outputs())
        self.run = run

    @property
    def records_processed(self) -> int:
        return self.run.records_processed


_planning: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "pipectl_planning", default=())


def _pipeline_step(step: Any, components: Any = None) -> Callable[..., Any]:
    from pipectl.errors import SubPipelineFailed
    from pipectl.pipeline import Pipeline

    child = step.options.get("pipeline")
    if not isinstance(child, Pipeline):
        raise TypeError(f"a pipeline step needs options {{'pipeline': Pipeline}}, got "
                        f"{type(child).__name__}")
    unknown = sorted(set(step.options) - {"pipeline", "params"})
    if unknown:
        raise ValueError(f"unknown option(s) {unknown!r} of a pipeline step (known: pipeline, "
                         "params)")
    params = dict(step.options.get("params") or {})
    chain = _planning.get()
    if child.name in chain:
        raise ValueError("sub-pipelines form a cycle: " + " -> ".join((*chain, child.name)))
    if components is not None:  # validate the sub-pipeline now, with the parent
        from pipectl.planning import plan_run

        token = _planning.set((*chain, child.name))
        try:
            plan_run(child.spec, components.step_types, (), components)
        finally:
            _planning.reset(token)

    async def run_subpipeline(ctx: Any) -> SubPipelineOutput:
        run = await ctx.run_pipeline(child, params)
        if not run.ok:
            raise SubPipelineFailed(child.name, run)
        return SubPipelineOutput(run)

    run_subpipeline.__qualname__ = f"subpipeline[{child.name}]"
    run_subpipeline.runs_in_driver = True  # type: ignore[attr-defined] - it orchestrates a run
    return run_subpipeline


@hookimpl(trylast=True)
def pipectl_register_step_types(register):
    register("python", _python_step)
    register("pipeline", _pipeline_step)

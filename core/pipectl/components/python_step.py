"""The step types ``python`` (a function or a step class) and ``pipeline`` (a sub-pipeline),
registered by the built-in plugin ``python`` (:mod:`pipectl.builtins.python_step`) and imported
when a pipeline is planned."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipectl.context import StepContext
    from pipectl.model import StepSpec
    from pipectl.registry import Registries

__all__ = ["WHOLE_INPUT", "SubPipelineOutput", "class_step", "pipeline_step", "python_step"]


def python_step(step: StepSpec) -> Callable[..., Any]:
    """The callable of a ``python`` step: its function, or a step class's ``run`` wrapped by
    :func:`class_step`."""
    if step.func is None:
        raise ValueError("a python step needs a function (func=...)")
    if inspect.isclass(step.func):
        return class_step(step, step.func)
    if not callable(step.func):
        raise TypeError(f"func must be callable, got {type(step.func).__name__}")
    if step.options:
        raise ValueError(
            f"options {sorted(step.options)!r} go with a step class or a plugin "
            "step type, not a function (give the function parameters instead)"
        )
    return step.func


def class_step(step: StepSpec, cls: type) -> Callable[..., Any]:
    """A step class (the ia_modules design): built as ``cls(step_name, options)`` for each
    attempt, then ``run(data)`` is called (sync or async) with the step's inputs as a dict,
    and ``run(data, ctx)`` if it takes a second parameter named ``ctx`` or ``context``.

    ``data`` holds the ``inputs`` by name, and the output of every dependency that no input
    refers to, by step name. An input named ``*`` (:data:`WHOLE_INPUT`) is ``data`` itself:
    ``inputs: {"*": prepare}`` hands ``run`` prepare's output (a copy of it, when a dict), the
    way ia_modules hands a step the previous step's result; other inputs beside it are laid
    over it."""
    from pipectl.model import callable_name

    name = callable_name(cls)
    method = getattr(cls, "run", None)
    if not callable(method):
        raise TypeError(
            f"{name} is a class without a run method; a step class has "
            "`async def run(self, data) -> dict` (or a sync one)"
        )
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
            data = _whole(data)
            instance = cls(step_name, dict(options))
            return await (instance.run(data, ctx) if takes_ctx else instance.run(data))
    else:

        def run_step_class(ctx: Any, **data: Any) -> Any:  # type: ignore[misc]  # sync variant
            data = _whole(data)
            instance = cls(step_name, dict(options))
            return instance.run(data, ctx) if takes_ctx else instance.run(data)

    run_step_class.__qualname__ = f"{cls.__qualname__}.run"
    run_step_class.__module__ = cls.__module__
    return run_step_class


WHOLE_INPUT = "*"
"""The input name that is a step class's whole ``data`` (see :func:`class_step`)."""


def _whole(data: dict[str, Any]) -> Any:
    if WHOLE_INPUT not in data:
        return data
    whole = data.pop(WHOLE_INPUT)
    if isinstance(whole, Mapping):
        return {**whole, **data}
    return whole if not data else {WHOLE_INPUT: whole, **data}


class SubPipelineOutput(dict[str, Any]):
    """The output of a sub-pipeline step: each of the sub-pipeline's steps' outputs by step
    name (``steps.NAME.output.STEP`` in references), with its run as ``run``."""

    def __init__(self, run: Any):
        super().__init__(run.outputs())
        self.run = run

    @property
    def records_processed(self) -> int:
        count: int = self.run.records_processed
        return count


#: the sub-pipelines being planned, outermost first (a cycle is found when one comes again)
planning_chain: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "pipectl_planning", default=()
)


def pipeline_step(step: StepSpec, components: Registries | None = None) -> Callable[..., Any]:
    """The callable of a ``pipeline`` step: runs ``options["pipeline"]`` with
    ``options["params"]`` as a sub-pipeline of the run (validated now, with the parent, when
    ``components`` is given)."""
    from pipectl.errors import SubPipelineFailed
    from pipectl.pipeline import Pipeline

    child = step.options.get("pipeline")
    if not isinstance(child, Pipeline):
        raise TypeError(
            f"a pipeline step needs options {{'pipeline': Pipeline}}, got {type(child).__name__}"
        )
    unknown = sorted(set(step.options) - {"pipeline", "params"})
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown!r} of a pipeline step (known: pipeline, params)"
        )
    params = dict(step.options.get("params") or {})
    chain = planning_chain.get()
    if child.name in chain:
        raise ValueError("sub-pipelines form a cycle: " + " -> ".join((*chain, child.name)))
    if components is not None:  # validate the sub-pipeline now, with the parent
        from pipectl.planning import plan_run

        token = planning_chain.set((*chain, child.name))
        try:
            plan_run(child.spec, components.step_types, (), components)
        finally:
            planning_chain.reset(token)

    async def run_subpipeline(ctx: StepContext) -> SubPipelineOutput:
        run = await ctx.run_pipeline(child, params)
        if not run.ok:
            raise SubPipelineFailed(child.name, run)
        return SubPipelineOutput(run)

    run_subpipeline.__qualname__ = f"subpipeline[{child.name}]"
    run_subpipeline.runs_in_driver = True  # type: ignore[attr-defined]  # orchestrates a run
    return run_subpipeline

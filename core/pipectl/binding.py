"""How a step function's parameters are filled: upstream outputs by name, ``params``, ``ctx``."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

from pipectl.model import StepSpec, callable_name, is_async_callable

DEP, PARAMS, CTX, REF = 0, 1, 2, 3
CONTEXT_NAMES = ("ctx", "context")

# weak keys: the cache must not keep step functions alive
_signatures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(func: Callable[..., Any]) -> tuple[tuple[tuple[str, Any, bool], ...], bool, bool]:
    """(name, kind, has_default) per parameter, whether it takes ``**kwargs``, and whether it is
    async; cached per function, so 10,000 steps of one function inspect it once."""
    try:
        return _signatures[func]
    except (KeyError, TypeError):
        pass
    is_async = is_async_callable(func)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: call them with nothing
        entry: tuple[tuple[tuple[str, Any, bool], ...], bool, bool] = ((), False, is_async)
    else:
        params = tuple(
            (p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in sig.parameters.values()
        )
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        entry = (params, var_kw, is_async)
    try:
        _signatures[func] = entry
    except TypeError:  # unhashable or not weakly referenceable
        pass
    return entry


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine to await (cached)."""
    return _signature(func)[2]


class Binder:
    """Builds the keyword arguments of one step's call from the run's state."""

    __slots__ = ("extra", "index_of", "plan", "refs")

    def __init__(self, plan: list[tuple[str, int, int]], extra: list[tuple[str, int]],
                 refs: list[Any] | None = None, index_of: dict[str, int] | None = None):
        self.plan = plan  # (parameter, source kind, dependency index or reference number)
        self.extra = extra  # (dependency name, index) handed to **kwargs; index -1 - k: refs[k]
        self.refs = refs or []  # reference expressions (pipectl.expr) of ``inputs``
        self.index_of = index_of or {}  # step name -> index, for the references

    def bind(self, outputs: list[Any], params: Any, ctx: Any,
             status: list[Any] | None = None) -> dict[str, Any]:
        """The keyword arguments; ``status`` (each step's status by index) is needed only when
        ``inputs`` hold references, which raise :class:`~pipectl.expr.ExpressionError`."""
        kwargs: dict[str, Any] = {}
        for name, kind, index in self.plan:
            if kind == DEP:
                kwargs[name] = outputs[index]
            elif kind == PARAMS:
                kwargs[name] = params
            elif kind == CTX:
                kwargs[name] = ctx
            else:
                kwargs[name] = self.refs[index].evaluate(self.scope(outputs, params, status))
        for name, index in self.extra:
            if index >= 0:
                kwargs[name] = outputs[index]
            else:
                kwargs[name] = self.refs[-1 - index].evaluate(
                    self.scope(outputs, params, status))
        return kwargs

    def scope(self, outputs: list[Any], params: Any, status: list[Any] | None) -> Any:
        """What a reference reads: params, and outputs and statuses of steps by name."""
        return make_scope(self.index_of, outputs, params, status)


def make_binder(
    step: StepSpec, func: Callable[..., Any], index_of: dict[str, int], problems: list[str],
    deps: tuple[str, ...] | None = None,
) -> Binder:
    """The :class:`Binder` of ``step`` calling ``func``; what cannot be bound goes to ``problems``.

    ``deps`` is the step's dependencies when the caller has them (the graph does)."""
    params, var_kw, _ = _signature(func)
    if deps is None:
        deps = step.all_dependencies
    from pipectl.expr import Expression

    plan: list[tuple[str, int, int]] = []
    refs: list[Any] = []
    bound_deps: set[str] = set()
    for name, kind, has_default in params:
        if kind is inspect.Parameter.VAR_KEYWORD or kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            if not has_default:
                problems.append(
                    f"step {step.name!r}: parameter {name!r} of {callable_name(func)} is "
                    "positional-only; step functions receive keyword arguments"
                )
            continue
        source = step.inputs.get(name)
        if source is None and name in deps:
            source = name
        if isinstance(source, Expression):
            plan.append((name, REF, len(refs)))
            refs.append(source)
            bound_deps.update(source.steps)
        elif source is not None:
            plan.append((name, DEP, index_of[source]))
            bound_deps.add(source)
        elif name == "params":
            plan.append((name, PARAMS, -1))
        elif name in CONTEXT_NAMES:
            plan.append((name, CTX, -1))
        elif not has_default:
            problems.append(
                f"step {step.name!r}: parameter {name!r} of {callable_name(func)} is not an "
                f"upstream step, 'params' or 'ctx'; add {name!r} to depends_on, map it with "
                f"inputs={{{name!r}: 'step-name'}}, or give it a default"
            )
    names = {name for name, kind, _ in params if kind is not inspect.Parameter.VAR_KEYWORD}
    extra: list[tuple[str, int]] = []
    for param, source in step.inputs.items():
        if param in names:
            continue
        if var_kw and isinstance(source, Expression):
            extra.append((param, -1 - len(refs)))
            refs.append(source)
            bound_deps.update(source.steps)
        elif var_kw:  # **kwargs takes the mapped name
            extra.append((param, index_of[source]))
            bound_deps.add(source)
        else:
            what = f"{source.text!r}" if isinstance(source, Expression) else f"step {source!r}"
            problems.append(
                f"step {step.name!r}: inputs maps {param!r} to {what}, but "
                f"{callable_name(func)} has no parameter {param!r}"
            )
    if var_kw:
        extra.extend((d, index_of[d]) for d in deps if d not in bound_deps)
    return Binder(plan, extra, refs, {d: index_of[d] for d in deps} if refs else None)


def make_scope(index_of: dict[str, int], outputs: list[Any], params: Any,
               status: list[Any] | None) -> Any:
    """A :class:`pipectl.expr.Scope` over one run's outputs and statuses, by step name."""
    from pipectl.expr import Scope

    def output(name: str) -> Any:
        return outputs[index_of[name]]

    def status_of(name: str) -> str | None:
        value = status[index_of[name]] if status is not None else None
        return None if value is None else str(value)

    return Scope(params, output, status_of)

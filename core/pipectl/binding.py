"""How a step function's parameters are filled: upstream outputs by name, ``params``, ``ctx``."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import FunctionType, MappingProxyType
from typing import Any

from pipectl.model import StepSpec, callable_name, is_async_callable

DEP, PARAMS, CTX, REF = 0, 1, 2, 3
CONTEXT_NAMES = ("ctx", "context")
_NO_INDEX: Mapping[str, int] = MappingProxyType({})

_EMPTY = inspect.Parameter.empty
_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
# attributes by which a function tells inspect.signature to look elsewhere
_SIGNATURE_ATTRS = ("__wrapped__", "__signature__", "_partialmethod", "__text_signature__")


class Facts:
    """What binding needs to know of a callable, derived from its signature once.

    ``params``: (name, kind, has_default) per parameter; ``var_kw``: it takes ``**kwargs``;
    ``is_async``: calling it returns a coroutine; ``slots``: (name, positional-only without a
    default, has_default) per parameter a step fills or must report, in order (``*args``,
    ``**kwargs`` and defaulted positional-only ones left out); ``names``: every parameter name
    but that of ``**kwargs`` (an ``inputs`` key naming one is not handed to ``**kwargs``).
    """

    __slots__ = ("is_async", "names", "params", "slots", "var_kw")

    def __init__(self, params: tuple[tuple[str, Any, bool], ...], is_async: bool):
        self.params = params
        self.is_async = is_async
        self.var_kw = any(kind is _VAR_KEYWORD for _, kind, _ in params)
        self.names = frozenset(name for name, kind, _ in params if kind is not _VAR_KEYWORD)
        self.slots = tuple(
            (name, kind is _POSITIONAL_ONLY, has_default)
            for name, kind, has_default in params
            if kind is not _VAR_KEYWORD
            and kind is not _VAR_POSITIONAL
            and not (kind is _POSITIONAL_ONLY and has_default)
        )


def _function_params(func: FunctionType) -> tuple[tuple[str, Any, bool], ...]:
    """(name, kind, has_default) per parameter of a plain Python function, read from its code
    object the way :func:`inspect.signature` reads it (``_signature_from_function``), without
    building the Signature: under a tenth of the cost, for pipelines whose every step has its own
    function."""
    code = func.__code__
    pos_count = code.co_argcount
    names = code.co_varnames
    posonly_count = code.co_posonlyargcount
    kwonly_count = code.co_kwonlyargcount
    defaults = func.__defaults__
    kwdefaults = func.__kwdefaults__
    first_default = pos_count - (len(defaults) if defaults else 0)
    params: list[tuple[str, Any, bool]] = []
    for i in range(pos_count):
        has_default = i >= first_default and defaults[i - first_default] is not _EMPTY  # type: ignore[index]
        params.append(
            (
                names[i],
                _POSITIONAL_ONLY if i < posonly_count else _POSITIONAL_OR_KEYWORD,
                has_default,
            )
        )
    flags = code.co_flags
    if flags & inspect.CO_VARARGS:
        params.append((names[pos_count + kwonly_count], _VAR_POSITIONAL, False))
    for name in names[pos_count : pos_count + kwonly_count]:
        has_default = kwdefaults is not None and kwdefaults.get(name, _EMPTY) is not _EMPTY
        params.append((name, _KEYWORD_ONLY, has_default))
    if flags & inspect.CO_VARKEYWORDS:
        index = pos_count + kwonly_count + (1 if flags & inspect.CO_VARARGS else 0)
        params.append((names[index], _VAR_KEYWORD, False))
    return tuple(params)


def _params(func: Callable[..., Any]) -> tuple[tuple[str, Any, bool], ...]:
    if type(func) is FunctionType and not any(a in func.__dict__ for a in _SIGNATURE_ATTRS):
        return _function_params(func)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: call them with nothing
        return ()
    return tuple((p.name, p.kind, p.default is not _EMPTY) for p in sig.parameters.values())


# weak keys: the cache must not keep step functions alive. Keyed by the function object, not
# its code: closures and lambdas share a code object but may differ in defaults.
_facts: weakref.WeakKeyDictionary[Callable[..., Any], Facts] = weakref.WeakKeyDictionary()


def facts(func: Callable[..., Any]) -> Facts:
    """The :class:`Facts` of ``func``, cached per function: 10,000 steps of one function
    inspect it once."""
    try:
        return _facts[func]
    except (KeyError, TypeError):
        pass
    entry = Facts(_params(func), is_async_callable(func))
    try:
        _facts[func] = entry
    except TypeError:  # unhashable or not weakly referenceable
        pass
    return entry


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine to await (cached)."""
    return facts(func).is_async


class Binder:
    """Builds the keyword arguments of one step's call from the run's state."""

    __slots__ = ("extra", "hidden", "index_of", "plan", "refs")

    def __init__(
        self,
        plan: Sequence[tuple[str, int, int]],
        extra: Sequence[tuple[str, int]],
        refs: Sequence[Any] | None = None,
        index_of: Mapping[str, int] | None = None,
    ):
        self.plan = plan  # (parameter, source kind, dependency index or reference number)
        # the parameters that are not what the step receives of the run's data: params, ctx
        self.hidden = tuple([name for name, kind, _ in plan if kind == PARAMS or kind == CTX])
        self.extra = extra  # (dependency name, index) handed to **kwargs; index -1 - k: refs[k]
        # reference expressions (pipectl.expr) of ``inputs``
        self.refs: Sequence[Any] = refs if refs else ()
        # step name -> index, for the references
        self.index_of: Mapping[str, int] = index_of if index_of is not None else _NO_INDEX

    def bind(
        self, outputs: list[Any], params: Any, ctx: Any, status: list[Any] | None = None
    ) -> dict[str, Any]:
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
                kwargs[name] = self.refs[-1 - index].evaluate(self.scope(outputs, params, status))
        return kwargs

    def scope(self, outputs: list[Any], params: Any, status: list[Any] | None) -> Any:
        """What a reference reads: params, and outputs and statuses of steps by name."""
        return make_scope(self.index_of, outputs, params, status)

    def received(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """What of ``kwargs`` (made by :meth:`bind`) the step receives of the run's data: every
        argument but ``params`` and ``ctx``."""
        hidden = self.hidden
        return kwargs if not hidden else {k: v for k, v in kwargs.items() if k not in hidden}


_NOTHING_TO_BIND = Binder((), ())  # shared: a Binder is never changed once made


def make_binder(
    step: StepSpec,
    func: Callable[..., Any],
    index_of: dict[str, int],
    problems: list[str],
    deps: tuple[str, ...] | None = None,
    known: Facts | None = None,
) -> Binder:
    """The :class:`Binder` of ``step`` calling ``func``; what cannot be bound goes to ``problems``.

    ``deps`` is the step's dependencies when the caller has them (the graph does); ``known``
    the :func:`facts` of ``func`` when the caller has looked them up."""
    f = known if known is not None else facts(func)
    if deps is None:
        deps = step.all_dependencies
    inputs = step.inputs
    # what a plan keeps is built as tuples: tuples of strings and numbers drop out of the cyclic
    # garbage collector's lists, and 10,000 steps otherwise pay for its full passes
    if not inputs and not f.slots:  # nothing to match by name (``**kwargs`` or no parameter)
        if f.var_kw and deps:
            return Binder((), tuple([(d, index_of[d]) for d in deps]))
        return _NOTHING_TO_BIND
    if inputs:
        from pipectl.expr import Expression
    plan: list[tuple[str, int, int]] = []
    refs: list[Any] = []
    bound_deps: set[str] = set()
    for name, positional_only, has_default in f.slots:
        if positional_only:  # without a default (those with one are not in slots)
            problems.append(
                f"step {step.name!r}: parameter {name!r} of {callable_name(func)} is "
                "positional-only; step functions receive keyword arguments"
            )
            continue
        source = inputs.get(name) if inputs else None
        if source is None and name in deps:
            source = name
        if source is None:
            if name == "params":
                plan.append((name, PARAMS, -1))
            elif name in CONTEXT_NAMES:
                plan.append((name, CTX, -1))
            elif not has_default:
                problems.append(
                    f"step {step.name!r}: parameter {name!r} of {callable_name(func)} is not "
                    f"an upstream step, 'params' or 'ctx'; add {name!r} to depends_on, map it "
                    f"with inputs={{{name!r}: 'step-name'}}, or give it a default"
                )
        elif inputs and isinstance(source, Expression):
            plan.append((name, REF, len(refs)))
            refs.append(source)
            bound_deps.update(source.steps)
        else:
            plan.append((name, DEP, index_of[source]))
            bound_deps.add(source)
    var_kw = f.var_kw
    extra: list[tuple[str, int]] = []
    if inputs:
        names = f.names
        for param, source in inputs.items():
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
    if var_kw and deps:
        if bound_deps:
            extra.extend((d, index_of[d]) for d in deps if d not in bound_deps)
        else:
            extra.extend((d, index_of[d]) for d in deps)
    return Binder(
        tuple(plan), tuple(extra), tuple(refs), {d: index_of[d] for d in deps} if refs else None
    )


def make_scope(
    index_of: Mapping[str, int], outputs: list[Any], params: Any, status: list[Any] | None
) -> Any:
    """A :class:`pipectl.expr.Scope` over one run's outputs and statuses, by step name."""
    from pipectl.expr import Scope

    def output(name: str) -> Any:
        return outputs[index_of[name]]

    def status_of(name: str) -> str | None:
        value = status[index_of[name]] if status is not None else None
        return None if value is None else str(value)

    return Scope(params, output, status_of)

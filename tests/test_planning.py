"""Planning a run: what it learns of a step function (pipectl.binding.facts) is what
inspect.signature says, is learnt once per function and once per step type, and tells apart
functions that share a code object (closures, lambdas) but differ in defaults; the DAG is built
once per pipeline."""

from __future__ import annotations

import functools
import inspect

import pytest

from pipectl import Graph, Pipeline, PipelineValidationError, StepSpec
from pipectl.binding import _params, facts


def _by_inspect(func):
    sig = inspect.signature(func)
    return tuple(
        (p.name, p.kind, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()
    )


def plain(a, b=1, *args, c, d=2, **kw):
    pass


async def coro(x, /, y, z=3, *, w):
    pass


def posonly_defaults(a, b=2, /, c=3):
    pass


def only_kw(*, a, b=inspect.Parameter.empty):  # a default that reads as "no default"
    pass


def varargs_only(*values):
    pass


def nothing():
    pass


def annotated(a: int, b: str = "x", **kw: object) -> None:
    pass


def _decorate(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _with_signature():
    def f(*args, **kwargs):
        pass

    f.__signature__ = inspect.Signature([inspect.Parameter("only", inspect.Parameter.KEYWORD_ONLY)])
    return f


def _closure(default):
    def step(upstream, limit=default):
        return upstream

    return step


class CallableStep:
    def __call__(self, a, params=None):
        pass


FUNCTIONS = [
    plain,
    coro,
    posonly_defaults,
    only_kw,
    varargs_only,
    nothing,
    annotated,
    _decorate(plain),
    _decorate(coro),
    _with_signature(),
    _closure(5),
    lambda extract, n=1: extract,
    lambda **kw: kw,
    functools.partial(plain, 1),
    CallableStep(),
    CallableStep().__call__,
    print,
    len,
]


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda f: getattr(f, "__name__", repr(f)))
def test_facts_are_what_inspect_signature_says(func):
    try:
        expected = _by_inspect(func)
    except (TypeError, ValueError):
        expected = ()
    assert _params(func) == expected
    f = facts(func)
    assert f.params == expected
    assert f.var_kw == any(kind is inspect.Parameter.VAR_KEYWORD for _, kind, _ in expected)
    assert f.is_async == (func is coro)


def test_closures_sharing_code_keep_their_own_defaults(plugin_manager):
    with_default = _closure(5)

    def without_default(upstream, limit):
        return upstream

    # same code object, different defaults: one binds, one is reported
    no_default = _closure(5)
    no_default.__defaults__ = None
    assert no_default.__code__ is with_default.__code__
    assert facts(with_default).params[1] == ("limit", inspect.Parameter.POSITIONAL_OR_KEYWORD, True)
    assert facts(no_default).params[1] == ("limit", inspect.Parameter.POSITIONAL_OR_KEYWORD, False)

    pipe = Pipeline("closures", plugin_manager=plugin_manager)
    pipe.add_step("upstream", lambda: 1)
    pipe.add_step("fine", with_default, depends_on=["upstream"])
    pipe.add_step("broken", no_default, depends_on=["upstream"])
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    (problem,) = info.value.problems
    assert "step 'broken'" in problem and "parameter 'limit'" in problem


def test_planning_inspects_each_function_and_step_type_once(plugin_manager, monkeypatch):
    calls: list[object] = []
    real = inspect.signature

    def counting(obj, *args, **kwargs):
        calls.append(obj)
        return real(obj, *args, **kwargs)

    @_decorate  # a wrapped function: read through inspect.signature, once
    def shared(**upstream):
        return None

    pipe = Pipeline("many", plugin_manager=plugin_manager)
    pipe.add_step("s0", shared)
    for i in range(1, 200):
        pipe.add_step(f"s{i}", shared, depends_on=[f"s{i - 1}"])
    for i in range(50):  # each with its own function: read from the code object
        pipe.add_step(f"own{i}", _closure(i), inputs={"upstream": "s0"})
    with monkeypatch.context() as patch:
        patch.setattr(inspect, "signature", counting)
        pipe.validate()  # plans, and keeps the plan for the run
    assert calls.count(shared) == 1
    assert len(calls) <= 1 + len(plugin_manager.registries.step_types)
    run = pipe.run_sync()
    assert run.ok
    assert run.steps["own7"].output is None


def test_a_graph_error_names_the_pipeline_not_a_step():
    with pytest.raises(PipelineValidationError) as info:
        Graph("the-pipeline", [StepSpec("a", depends_on=["nope"]), StepSpec("b")])
    assert info.value.pipeline == "the-pipeline"
    assert "step 'a' depends on unknown step 'nope'" in info.value.problems[0]


def test_the_dag_is_built_once_per_pipeline(plugin_manager, monkeypatch):
    import pipectl.pipeline
    import pipectl.planning

    built: list[int] = []

    class Counting(Graph):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pipectl.pipeline, "Graph", Counting)
    monkeypatch.setattr(pipectl.planning, "Graph", Counting)

    def make():
        pipe = Pipeline("once", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1)
        pipe.add_step("b", lambda a: a + 1, depends_on=["a"])
        return pipe

    first = make()
    first.graph  # noqa: B018 - built here (as loading a pipeline file does) ...
    assert first.run_sync().ok  # ... and not again to plan the run
    assert len(built) == 1
    second = make()
    assert second.run_sync().steps["b"].output == 2  # built to plan ...
    assert second.visualize()  # ... and kept
    assert len(built) == 2
    assert second.run_sync(only=["a"]).ok  # a subset: a graph of its own
    assert first.graph.topological_order() == ("a", "b")

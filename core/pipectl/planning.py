"""Planning a run: a pipeline's steps resolved to callables and binders, in topological
order, every problem found at once. Apart from :mod:`pipectl.engine` so that validating a
pipeline (``pipectl validate``, ``Pipeline.validate``) imports neither asyncio nor the engine.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipectl.binding import DEP, REF, Binder, Facts, facts, is_async, make_binder
from pipectl.errors import PipelineValidationError
from pipectl.graph import Graph
from pipectl.model import PipelineSpec, StepSpec

__all__ = ["Node", "Plan", "map_problem", "plan_run", "pool_problems"]


class Node:
    """A step as the engine runs it: its spec, callable, binder and neighbours by index."""

    __slots__ = (
        "binder",
        "dependents",
        "deps",
        "driver_reads",
        "func",
        "index",
        "is_async",
        "spec",
    )

    def __init__(
        self,
        index: int,
        spec: StepSpec,
        func: Callable[..., Any],
        binder: Binder,
        deps: Sequence[int],
        is_async_: bool | None = None,
        dependents: Sequence[int] = (),
    ):
        self.index = index
        self.spec = spec
        self.func = func
        self.is_async = is_async(func) if is_async_ is None else is_async_
        self.binder = binder
        self.deps = deps  # indices of the steps it depends on
        self.dependents = dependents  # indices of the steps that depend on it, ascending
        self.driver_reads = False  # the engine reads its output (see Invocation.driver_reads)


class Plan:
    """A validated pipeline ready to run: nodes in topological order, callables resolved."""

    def __init__(
        self, spec: PipelineSpec, graph: Graph, nodes: list[Node], left_out: tuple[str, ...] = ()
    ):
        self.spec = spec
        self.graph = graph
        self.nodes = nodes
        self.left_out = left_out
        """The steps ``skip`` left out of the plan (they and all downstream of them), in the
        pipeline's order; not those ``only`` did not select."""
        self.mapped: tuple[int, ...] = ()
        """The indices of the mapped steps (``map:``), found once when planning."""
        self.cached = False
        """Whether a step has a cache policy (``cache:``: its output is looked up first)."""
        # what runs of the plan compute once and keep here (see engine.scheduler, engine.cache)
        self.pool_needs: Sequence[tuple[tuple[str, int], ...]] | None = None
        """Each step's pools as (name, weight) pairs; () when none takes one; None: not yet."""
        self.cache_fingerprints: dict[Any, str] | None = None
        """The cached steps' fingerprints, made by the step cache on first use."""


def takes_components(factory: Any) -> bool:
    """Whether a step type's factory takes ``components`` (asked once per step type and plan,
    not per step: inspecting a signature costs more than planning the step)."""
    try:
        return "components" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def pool_problems(sizes: Mapping[str, int], steps: Sequence[StepSpec]) -> list[str]:
    """Steps naming a pool the pipeline does not declare, or weighing more than its size
    (such a step could never start)."""
    import difflib

    from pipectl.options import Problem

    problems: list[str] = []
    for step in steps:
        for pool, weight in step.pools.items():
            size = sizes.get(pool)
            if size is None:
                close = difflib.get_close_matches(pool, sorted(sizes), n=1)
                declared = ", ".join(sorted(sizes)) or "none"
                problems.append(
                    Problem(
                        f"pools.{pool}",
                        f"the pipeline declares no pool {pool!r}",
                        (f"did you mean {close[0]!r}? " if close else "")
                        + f"declare it under the pipeline's pools (declared: {declared})",
                        step=step.name,
                    )
                )
            elif weight > size:
                problems.append(
                    Problem(
                        f"pools.{pool}",
                        f"weight {weight} is more than the size of pool {pool!r} ({size}): "
                        "the step could never start",
                        f"lower the weight to at most {size}, or make the pool bigger",
                        step=step.name,
                    )
                )
    return problems


def map_problem(step: StepSpec, binder: Binder) -> str | None:
    """A mapped step whose ``map`` does not name a parameter bound to an upstream value (by
    name or through ``inputs``): the problem, else None."""
    from pipectl.options import Problem

    for name, kind, _ in binder.plan:
        if name == step.map:
            if kind == DEP or kind == REF:
                return None
            return Problem(
                "map",
                f"parameter {step.map!r} receives the run's {name}, not an upstream value",
                "map one of the parameters bound to an upstream step's output",
                step=step.name,
            )
    bound = [name for name, kind, _ in binder.plan if kind == DEP or kind == REF]
    return Problem(
        "map",
        f"{step.map!r} is not a parameter of the step bound to an upstream value",
        (
            f"map one of: {', '.join(bound)}"
            if bound
            else "bind a parameter to an upstream step (by its name or with inputs) and map it"
        ),
        step=step.name,
    )


def plan_run(
    spec: PipelineSpec,
    step_types: Any,
    only: tuple[str, ...] = (),
    components: Any = None,
    skip: tuple[str, ...] = (),
    graph: Graph | None = None,
) -> Plan:
    """Validate ``spec`` (graph and function signatures) and resolve every step's callable.

    ``only``: the plan holds the steps named and what they depend on, nothing else. ``skip``:
    it leaves out the steps named and everything downstream of them (of what ``only``
    selected, when both are given; the plan's ``left_out`` lists them). ``components`` (the
    plugin manager's registries) goes to step type factories that take a ``components``
    argument, to check the components a step names. Raises :class:`PipelineValidationError`
    listing every problem found (unknown names in ``only`` or ``skip`` among them).
    ``graph``: the :class:`Graph` of ``spec.steps`` when the caller has it (not built again).
    """
    if graph is None:
        graph = Graph(spec.name, spec.steps)
    gone = graph.downstream(skip) if skip else set()
    if only:
        graph = graph.subgraph(only)
    left_out = tuple(n for n in graph.names if n in gone)
    if left_out:
        graph = Graph(spec.name, [s for n, s in graph.steps.items() if n not in gone])
    order = graph.topological_order()
    index_of = {name: i for i, name in enumerate(order)}
    problems: list[str] = []
    nodes: list[Node] = []
    steps, dependencies, dependents = graph.steps, graph.dependencies, graph.dependents
    # per step type: its factory, and whether it takes ``components`` (looked up once)
    factories: dict[str, tuple[Callable[..., Any], bool]] = {}
    last_func: Any = None
    known_facts: Facts = None  # type: ignore[assignment]  # set with last_func
    for i, name in enumerate(order):
        step = steps[name]
        try:
            known = factories.get(step.step_type)
            if known is None:
                factory = step_types.get(step.step_type).factory
                known = factories[step.step_type] = (
                    factory,
                    components is not None and takes_components(factory),
                )
            if known[1]:
                func = known[0](step, components=components)
            else:
                func = known[0](step)
        except Exception as exc:  # noqa: BLE001 - reported as a validation problem
            found = getattr(exc, "problems", None)  # several at once (pipectl.options)
            if found and all(hasattr(p, "in_step") for p in found):
                problems.extend(p.in_step(name) for p in found)
            else:
                problems.append(f"step {name!r}: {exc}")
            continue
        if not callable(func):
            plugin = step_types.get(step.step_type).plugin
            problems.append(
                f"step {name!r}: step type {step.step_type!r} (plugin {plugin!r}) "
                f"built {type(func).__name__}, not a callable"
            )
            continue
        deps = dependencies[name]
        if func is not last_func:  # 10,000 steps of one function: one look-up
            last_func, known_facts = func, facts(func)
        binder = make_binder(step, func, index_of, problems, deps, known_facts)
        if step.map is not None:
            problem = map_problem(step, binder)
            if problem is not None:
                problems.append(problem)
        # tuples (of numbers: the collector stops tracking them), built without a second pass
        if not deps:
            dep_indices: tuple[int, ...] = ()
        elif len(deps) == 1:
            dep_indices = (index_of[deps[0]],)
        else:
            dep_indices = tuple([index_of[d] for d in deps])
        kids = dependents[name]
        if not kids:
            kid_indices: tuple[int, ...] = ()
        elif len(kids) == 1:
            kid_indices = (index_of[kids[0]],)
        else:
            kid_indices = tuple(sorted([index_of[k] for k in kids]))
        nodes.append(Node(i, step, func, binder, dep_indices, known_facts.is_async, kid_indices))
    if spec.pools or any(step.pools for step in steps.values()):
        problems.extend(pool_problems(spec.pools, [steps[name] for name in order]))
    if problems:
        raise PipelineValidationError(spec.name, problems)
    mapped = []
    cached = False
    for node in nodes:
        step = node.spec
        if step.rollback is not None:
            node.driver_reads = True
        if step.cache is not None:  # its output is stored, its inputs hashed: in the driver
            cached = True
            node.driver_reads = True
            for d in node.deps:
                nodes[d].driver_reads = True
        if step.map is not None:  # the engine reads the list it maps over to make the items
            mapped.append(node.index)
            for name, kind, source in node.binder.plan:
                if name == step.map and kind == DEP:
                    nodes[source].driver_reads = True
        if step.when is not None or node.binder.refs:
            exprs = ([step.when] if step.when is not None else []) + list(node.binder.refs)
            for expr in exprs:
                for ref in expr.output_steps:
                    k = index_of.get(ref)
                    if k is not None:
                        nodes[k].driver_reads = True
    plan = Plan(spec, graph, nodes, left_out)
    plan.mapped = tuple(mapped)
    plan.cached = cached
    return plan

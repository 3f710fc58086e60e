"""The DAG of a pipeline: validation, order, levels, and pictures of it (text, Mermaid, dot)."""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from pipectl.errors import PipelineValidationError
from pipectl.model import StepSpec

__all__ = ["Graph", "dot_quote", "mermaid_text", "visualize_pipelines"]


class Graph:
    """A validated DAG of steps. Building one raises :class:`PipelineValidationError` listing
    every problem: duplicate steps, unknown dependencies (with the nearest names), cycles (as
    their path ``a -> b -> c -> a``)."""

    __slots__ = ("name", "steps", "names", "dependencies", "dependents", "_order", "_levels")

    def __init__(self, name: str, steps: Sequence[StepSpec]):
        self.name = name
        problems: list[str] = []
        by_name: dict[str, StepSpec] = {}
        for step in steps:
            if step.name in by_name:
                problems.append(f"duplicate step {step.name!r}: step names must be unique")
                continue
            if not step.name or not isinstance(step.name, str):
                problems.append(f"step name {step.name!r} must be a non-empty string")
                continue
            by_name[step.name] = step
        self.steps = by_name
        self.names: tuple[str, ...] = tuple(by_name)
        dependencies: dict[str, tuple[str, ...]] = {}
        dependents: dict[str, list[str]] = {n: [] for n in by_name}
        self.dependencies = dependencies
        self.dependents = dependents
        for step_name, step in by_name.items():
            deps = step.all_dependencies
            valid = deps
            for dep in deps:
                if dep in by_name and dep != step_name:
                    continue
                if dep == step_name:
                    problems.append(f"step {step_name!r} depends on itself")
                else:
                    close = difflib.get_close_matches(dep, self.names, n=3, cutoff=0.6)
                    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                    problems.append(f"step {step_name!r} depends on unknown step {dep!r}{hint}")
                valid = ()  # filtered below
            if deps and not valid:
                valid = tuple(d for d in deps if d in by_name and d != step_name)
            elif type(valid) is not tuple:
                valid = tuple(valid)
            dependencies[step_name] = valid
            for dep in valid:
                dependents[dep].append(step_name)
        self._order: tuple[str, ...] | None = None
        self._levels: list[list[str]] | None = None
        order = self._kahn()  # over the valid edges, so cycles are reported with the rest
        if len(order) < len(self.names):
            problems.extend(self._cycles(set(self.names) - set(order)))
        else:
            self._order = tuple(order)
        if problems:
            raise PipelineValidationError(name, problems)

    # -- order ----------------------------------------------------------------------------

    def _kahn(self) -> list[str]:
        indegree = {n: len(d) for n, d in self.dependencies.items()}
        queue = deque(n for n in self.names if indegree[n] == 0)
        order: list[str] = []
        while queue:
            node = queue.popleft()
            order.append(node)
            for child in self.dependents[node]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    queue.append(child)
        return order

    def _cycles(self, remaining: set[str]) -> list[str]:
        """Describe each cycle among ``remaining`` (nodes Kahn could not order) as its path."""
        problems: list[str] = []
        done: set[str] = set()
        for start in self.names:
            if start not in remaining or start in done:
                continue
            # walk dependencies inside the remaining set until a node repeats
            path: list[str] = []
            index: dict[str, int] = {}
            node = start
            while node not in index and node not in done:
                index[node] = len(path)
                path.append(node)
                node = next(d for d in self.dependencies[node] if d in remaining)
            if node in index:
                cycle = path[index[node] :]
                cycle.reverse()  # dependency walk goes upstream; show the flow direction
                first = min(range(len(cycle)), key=lambda k: self.names.index(cycle[k]))
                cycle = cycle[first:] + cycle[:first]  # start at the step declared first
                problems.append("cycle: " + " -> ".join([*cycle, cycle[0]]))
            done.update(path)
        return problems

    def topological_order(self) -> tuple[str, ...]:
        """Every step after all it depends on; ties keep the order steps were declared in."""
        assert self._order is not None
        return self._order

    def levels(self) -> list[list[str]]:
        """Steps grouped by the length of the longest dependency path leading to them."""
        if self._levels is None:
            level: dict[str, int] = {}
            for node in self.topological_order():
                deps = self.dependencies[node]
                level[node] = 1 + max(level[d] for d in deps) if deps else 0
            grouped: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
            for node in self.names:
                grouped[level[node]].append(node)
            self._levels = grouped
        return [list(lv) for lv in self._levels]

    # -- reachability ---------------------------------------------------------------------

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """The given steps and everything they depend on, transitively."""
        seen: set[str] = set()
        stack = list(names)
        for n in stack:
            if n not in self.steps:
                raise KeyError(n)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(self.dependencies[node])
        return seen

    def descendants(self, name: str) -> set[str]:
        """Every step downstream of ``name`` (not including it)."""
        seen: set[str] = set()
        stack = list(self.dependents[name])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.dependents[node])
        return seen

    def _check_known(self, names: Sequence[str], where: str) -> None:
        """Raise :class:`PipelineValidationError` naming every unknown step of ``names`` (with
        the nearest names), as given in the argument ``where`` (``only=``, ``skip=``)."""
        unknown = [n for n in names if n not in self.steps]
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, self.names, n=3)
                hints.append(
                    f"{n!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                )
            raise PipelineValidationError(
                self.name, [f"unknown step {h} in {where}" for h in hints]
            )

    def subgraph(self, names: Iterable[str]) -> Graph:
        """The graph of the given steps and what they depend on, nothing else."""
        names = list(names)
        self._check_known(names, "only=")
        keep = self.ancestors(names)
        return Graph(self.name, [s for n, s in self.steps.items() if n in keep])

    def downstream(self, names: Iterable[str]) -> set[str]:
        """The given steps and everything downstream of them (what ``skip=`` leaves out);
        unknown names raise :class:`PipelineValidationError`."""
        names = list(names)
        self._check_known(names, "skip=")
        gone = set(names)
        for n in names:
            gone |= self.descendants(n)
        return gone

    def without(self, names: Iterable[str]) -> Graph:
        """The graph without the given steps and everything downstream of them."""
        gone = self.downstream(names)
        return Graph(self.name, [s for n, s in self.steps.items() if n not in gone])

    # -- pictures -------------------------------------------------------------------------

    def label(self, name: str) -> str:
        """How pictures name step ``name``: a mapped step (``map:``) says over what it maps,
        as its number of items is known only when it runs (``fetch (map: url)``)."""
        step = self.steps.get(name)
        mapped = getattr(step, "map", None)
        return f"{name} (map: {mapped})" if mapped else name

    def visualize(self, after: Sequence[str] = ()) -> str:
        """The levels as text, one step a line, with what each step depends on; ``after``
        names the pipelines this one runs after (shown in the heading)."""
        heading = f"Pipeline: {self.name}" + (f" (after: {', '.join(after)})" if after else "")
        lines = [heading, "=" * 40]
        for i, level in enumerate(self.levels()):
            lines.append(f"Level {i}:")
            for node in level:
                deps = self.dependencies[node]
                suffix = f" <- [{', '.join(deps)}]" if deps else ""
                lines.append(f"  - {self.label(node)}{suffix}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        """A Mermaid flowchart (``flowchart TD``) of the DAG."""
        ids = {n: f"s{i}" for i, n in enumerate(self.names)}
        lines = ["flowchart TD"]
        for n in self.names:
            lines.append(f'    {ids[n]}["{mermaid_text(self.label(n))}"]')
        for n in self.names:
            for d in self.dependencies[n]:
                lines.append(f"    {ids[d]} --> {ids[n]}")
        return "\n".join(lines)

    def to_dot(self) -> str:
        """A Graphviz dot digraph of the DAG."""
        q = dot_quote
        lines = [f"digraph {q(self.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
        for n in self.names:
            label = self.label(n)
            lines.append(f"    {q(n)};" if label == n else f"    {q(n)} [label={q(label)}];")
        for n in self.names:
            for d in self.dependencies[n]:
                lines.append(f"    {q(d)} -> {q(n)};")
        lines.append("}")
        return "\n".join(lines)

    def sinks(self) -> list[str]:
        """The steps nothing depends on, in topological order."""
        return [n for n in self.topological_order() if not self.dependents[n]]

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.steps


# -- pictures of several pipelines ---------------------------------------------------------------


def mermaid_text(text: str) -> str:
    """``text`` made safe inside a quoted Mermaid label (``["..."]``): quotes, ``#`` (which
    starts Mermaid's entity codes), ``&``, ``<``, ``>`` (labels are HTML), backticks (Markdown
    labels) and line breaks become entity codes or spaces, so a name can never end the label
    or the statement, nor be read as markup."""
    out = text.replace("#", "#35;")
    for char, code in (
        ('"', "#quot;"),
        ("&", "#amp;"),
        ("<", "#lt;"),
        (">", "#gt;"),
        ("`", "#96;"),
    ):
        out = out.replace(char, code)
    return " ".join(out.splitlines())


def dot_quote(text: str) -> str:
    """``text`` as a Graphviz quoted string (backslashes, quotes and line breaks escaped)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + out.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def visualize_pipelines(
    graphs: Mapping[str, Graph],
    after: Mapping[str, Sequence[str]] | None = None,
    format: str = "text",
    title: str = "pipelines",
) -> str:
    """One picture of several pipelines (``graphs``, by name, in the order they run) and the
    pipelines each runs after (``after``, by name; names not in ``graphs`` are ignored).

    ``text``: each pipeline's levels under a heading with its name and ``(after: A, B)``.
    ``mermaid``: one ``flowchart`` with a ``subgraph`` per pipeline, titled with its name, and
    an edge from each upstream pipeline's subgraph to its dependent's. ``dot``: one digraph
    (``title``) with a labelled ``cluster_N`` per pipeline and an edge from a last step of the
    upstream pipeline to a first step of its dependent, clipped at the clusters
    (``compound=true``, ``ltail``/``lhead``). Node ids are made unique per pipeline; names
    only ever appear escaped, as labels.
    """
    names = list(graphs)
    ups = {n: [d for d in (after or {}).get(n, ()) if d in graphs and d != n] for n in names}
    if format == "text":
        return "\n\n".join(graphs[n].visualize(ups[n]) for n in names)
    if format == "mermaid":
        return _pipelines_mermaid(graphs, ups)
    if format == "dot":
        return _pipelines_dot(graphs, ups, title)
    raise ValueError(f"unknown format {format!r}: use text, mermaid or dot")


def _pipelines_mermaid(graphs: Mapping[str, Graph], ups: Mapping[str, list[str]]) -> str:
    pid = {n: f"p{i}" for i, n in enumerate(graphs)}
    lines = ["flowchart TD"]
    for name, graph in graphs.items():
        ids = {s: f"{pid[name]}_s{i}" for i, s in enumerate(graph.names)}
        lines.append(f'    subgraph {pid[name]}["{mermaid_text(name)}"]')
        for s in graph.names:
            lines.append(f'        {ids[s]}["{mermaid_text(graph.label(s))}"]')
        for s in graph.names:
            for d in graph.dependencies[s]:
                lines.append(f"        {ids[d]} --> {ids[s]}")
        lines.append("    end")
    for name in graphs:
        for up in ups[name]:
            lines.append(f"    {pid[up]} --> {pid[name]}")
    return "\n".join(lines)


def _pipelines_dot(graphs: Mapping[str, Graph], ups: Mapping[str, list[str]], title: str) -> str:
    q = dot_quote
    lines = [
        f"digraph {q(title)} {{",
        "    compound=true;",
        "    rankdir=LR;",
        "    node [shape=box];",
    ]
    first: dict[str, str] = {}  # by pipeline: a step with no dependencies (edges end there)
    last: dict[str, str] = {}  # a step nothing depends on (edges between pipelines start there)
    for i, (name, graph) in enumerate(graphs.items()):
        ids = {s: f"p{i}_s{k}" for k, s in enumerate(graph.names)}
        lines.append(f"    subgraph cluster_{i} {{")
        lines.append(f"        label={q(name)};")
        for s in graph.names:
            lines.append(f"        {ids[s]} [label={q(graph.label(s))}];")
        if not graph.names:  # an empty cluster is not drawn: a placeholder holds its place
            ids[""] = f"p{i}_empty"
            lines.append(f'        {ids[""]} [label="(no steps)", shape=plaintext];')
        for s in graph.names:
            for d in graph.dependencies[s]:
                lines.append(f"        {ids[d]} -> {ids[s]};")
        lines.append("    }")
        first[name] = ids[graph.levels()[0][0]] if graph.names else ids[""]
        last[name] = ids[graph.sinks()[-1]] if graph.names else ids[""]
    cluster = {n: f"cluster_{i}" for i, n in enumerate(graphs)}
    for name in graphs:
        for up in ups[name]:
            lines.append(
                f"    {last[up]} -> {first[name]} [ltail={cluster[up]}, lhead={cluster[name]}];"
            )
    lines.append("}")
    return "\n".join(lines)

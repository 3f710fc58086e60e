"""A pipeline file's pipelines as model data: each a :class:`LoadedPipeline` (its
:class:`~pipectl.model.PipelineSpec` of :class:`~pipectl.model.StepSpec`, its params and
their declarations, and its :class:`Origin` in the file), with what each depends on.

A file holds one pipeline (``name`` and ``steps`` at the top) or several (``pipelines:``),
sub-pipelines among them. :mod:`pipectl.pipeline` makes :class:`~pipectl.Pipeline` objects of
them (``load_pipelines``); this package does not import it."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipectl.errors import PipectlError
from pipectl.files.errors import PipelineFileError, hint, kind
from pipectl.files.formats import read_pipeline_data
from pipectl.files.interpolate import interpolate, relined
from pipectl.files.loader import Map, Seq
from pipectl.files.params import ParamSpec, declared_params, parse_param, resolve_params
from pipectl.files.paths import absolute, resolve_paths
from pipectl.files.problems import SourceLines
from pipectl.files.steps import check_name, number, step_kwargs, step_names
from pipectl.model import PipelineSpec, StepSpec

if TYPE_CHECKING:
    from pipectl.graph import Graph
    from pipectl.project import Project

__all__ = [
    "MULTI_FIELDS",
    "ONE_OF_MANY",
    "TOP_FIELDS",
    "LoadedPipeline",
    "Origin",
    "read_pipeline",
    "read_pipelines",
]

TOP_FIELDS = {
    "name",
    "connections",
    "description",
    "params",
    "max_concurrent",
    "fail_fast",
    "executor",
    "tracker",
    "pools",
    "story",
    "steps",
}
MULTI_FIELDS = {"connections", "description", "params", "pipelines"}
ONE_OF_MANY = {
    "name",
    "description",
    "depends_on",
    "max_concurrent",
    "fail_fast",
    "executor",
    "tracker",
    "pools",
    "story",
    "steps",
}


class Origin:
    """What only a pipeline file gives a pipeline: the file (``source``), the story written
    after each run of the CLI, the line of each field for messages (``lines``, a
    :class:`~pipectl.files.problems.SourceLines`), and whether another pipeline of the file runs
    it as a sub-pipeline (``nested``), and the secrets of the file's connections (``secrets``:
    each value, and how a file written back refers to it; see
    :mod:`pipectl.files.connections`)."""

    __slots__ = ("lines", "nested", "secrets", "source", "story")

    def __init__(
        self,
        source: str,
        story: str | None,
        lines: Mapping[str, int],
        secrets: Mapping[str, str] | None = None,
    ):
        self.source, self.story, self.lines = source, story, lines
        self.nested = False
        self.secrets: Mapping[str, str] = secrets or {}


class LoadedPipeline:
    """One pipeline of a file as model data: its ``spec`` (a sub-pipeline step's
    ``options["pipeline"]`` is the sub-pipeline's :class:`LoadedPipeline`), its ``params``
    (the declared defaults, overridden by what was given), their declarations
    (``param_specs``), its :class:`Origin`, and its validated :class:`~pipectl.graph.Graph`
    (None when the graph was left to validation)."""

    __slots__ = ("graph", "origin", "param_specs", "params", "spec")

    def __init__(
        self,
        spec: PipelineSpec,
        params: dict[str, Any],
        param_specs: dict[str, ParamSpec],
        origin: Origin,
        graph: Graph | None,
    ):
        self.spec, self.params, self.param_specs = spec, params, param_specs
        self.origin, self.graph = origin, graph

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"LoadedPipeline({self.name!r}, steps={len(self.spec.steps)})"


def read_pipelines(
    path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    plugin_manager: Any = None,
    project: Project | None = None,
    check_graph: bool = True,
) -> tuple[dict[str, LoadedPipeline], dict[str, list[str]]]:
    """Every pipeline of the file at ``path`` by name (a :class:`LoadedPipeline`), and what
    each depends on.

    A file holds one pipeline (``name`` and ``steps`` at the top) or several (``pipelines:``, a
    list of ``name``/``steps``/``depends_on`` mappings sharing the file's ``params``). The
    pipelines come in an order where each follows those it depends on.

    Relative paths in the file (``path`` params' defaults, components' path options,
    ``dead_letter``, ``story``, a ``sqlite:///`` tracker) resolve against the file's folder.
    ``project`` (a :class:`pipectl.project.Project`) gives defaults for the params the file
    declares. ``check_graph=False`` leaves each pipeline's steps' graph (unknown dependencies,
    cycles) to :meth:`~pipectl.Pipeline.validate`, which reports it with every other problem
    (``pipectl validate`` and ``run`` do).
    """
    path = Path(path)
    data = read_pipeline_data(path, plugin_manager)  # pipectl's, or a registered format's
    env = os.environ if env is None else env
    defaults = (project.params, project.root) if project is not None else (None, None)
    folder = str(path.absolute().parent)
    if folder not in sys.path:  # module:function references to modules beside the file
        sys.path.insert(0, folder)
    if "pipelines" not in data:
        pipe = _build(
            path,
            data,
            TOP_FIELDS,
            "",
            params,
            env,
            plugin_manager,
            defaults=defaults,
            check_graph=check_graph,
        )
        return {pipe.name: pipe}, {pipe.name: []}
    for key in data:
        if key not in MULTI_FIELDS:
            raise PipelineFileError(
                path,
                data.lines[key],
                key,
                f"unknown field of a file with "
                f"several pipelines{hint(key, MULTI_FIELDS)} (known: "
                f"{', '.join(sorted(MULTI_FIELDS))}; steps go under each "
                "pipeline)",
            )
    items = data["pipelines"]
    if not isinstance(items, Seq) or not items:  # (every list of the file is a Seq)
        raise PipelineFileError(
            path,
            data.lines["pipelines"],
            "pipelines",
            "expected a list of pipelines (- name: ..., steps: [...])",
        )
    declared = declared_params(path, data)
    values = resolve_params(path, declared, params or {}, env, *defaults)
    connections = None
    if data.get("connections") is not None:  # shared by every pipeline of the file
        from pipectl.files.connections import read_connections

        connections = read_connections(path, data, values, env, plugin_manager)
    pipelines: dict[str, LoadedPipeline] = {}
    depends: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    raw_items: dict[str, tuple[int, Map]] = {}
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name:
            if name in raw_items:
                raise PipelineFileError(
                    path,
                    items.lines[index],
                    f"pipelines[{index}].name",
                    f"duplicate pipeline {name!r} (first at line "
                    f"{items.lines[raw_items[name][0]]})",
                )
            raw_items[name] = (index, item)
    built: dict[tuple[str, str], LoadedPipeline] = {}
    stack: list[str] = []
    nested: set[str] = set()

    def build(index: int, item: Any, overrides: dict[str, Any]) -> LoadedPipeline:
        line = items.lines[index]
        if not isinstance(item, Map):
            raise PipelineFileError(
                path, line, f"pipelines[{index}]", f"a pipeline is a mapping, got {kind(item)}"
            )
        key = (str(item.get("name")), json.dumps(overrides, sort_keys=True, default=repr))
        if key in built:
            return built[key]
        stack.append(key[0])
        try:
            pipe = _build(
                path,
                item,
                ONE_OF_MANY,
                f"pipelines[{index}].",
                None,
                env,
                plugin_manager,
                declared=declared,
                values={**values, **overrides} if overrides else values,
                subpipeline=subpipeline,
                check_graph=check_graph,
                connections=connections,
            )
        finally:
            stack.pop()
        built[key] = pipe
        return pipe

    def subpipeline(name: str, overrides: dict[str, Any], line: int, field: str) -> LoadedPipeline:
        if name not in raw_items:
            raise PipelineFileError(
                path,
                line,
                field,
                f"no pipeline named {name!r} in this "
                f"file{hint(name, raw_items)} (its pipelines: "
                f"{', '.join(raw_items)})",
            )
        if name in stack:
            raise PipelineFileError(
                path,
                line,
                field,
                "sub-pipelines form a cycle: " + " -> ".join((*stack[stack.index(name) :], name)),
            )
        for param, value in overrides.items():
            spec = declared.get(param)
            if spec is None:
                raise PipelineFileError(
                    path,
                    line,
                    f"{field[: -len('pipeline')]}params.{param}",
                    f"the file declares no param {param!r}"
                    f"{hint(param, declared)} (declared: "
                    f"{', '.join(declared) or 'none'})",
                )
            if isinstance(value, str) and spec.type != "str":
                try:
                    overrides[param] = parse_param(spec.type, value)
                except ValueError as exc:
                    raise PipelineFileError(
                        path,
                        line,
                        f"{field[: -len('pipeline')]}params.{param}",
                        f"{exc} (param {param!r} is declared as {spec.type})",
                    ) from None
            if spec.type == "path":
                overrides[param] = absolute(overrides[param], path.absolute().parent)
        nested.add(name)
        index, item = raw_items[name]
        return build(index, item, overrides)

    for index, item in enumerate(items):
        line = items.lines[index]
        pipe = build(index, item, {})
        lines[pipe.name] = line
        pipelines[pipe.name] = pipe
        depends[pipe.name] = step_names(
            path,
            item.lines.get("depends_on", line),
            f"pipelines.{pipe.name}.depends_on",
            item.get("depends_on", []),
        )
    for name, pipe in pipelines.items():
        pipe.origin.nested = name in nested
    from pipectl.graph import Graph

    try:  # the pipelines' own DAG: unknown names and cycles, as for steps
        order = Graph(str(path), [StepSpec(n, depends_on=d) for n, d in depends.items()])
    except PipectlError as exc:
        problems = getattr(exc, "problems", [str(exc)])
        named = re.search(r"step '([^']+)'", problems[0])
        text = "; ".join(p.replace("step ", "pipeline ") for p in problems)
        raise PipelineFileError(
            path, lines.get(named.group(1)) if named else None, "pipelines", text
        ) from None
    ordered = {name: pipelines[name] for name in order.topological_order()}
    return ordered, depends


def read_pipeline(
    path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    plugin_manager: Any = None,
    name: str | None = None,
    project: Project | None = None,
) -> LoadedPipeline:
    """One pipeline of the file at ``path`` (``name`` picks one of several), whose
    ``params`` are the declared defaults, overridden by ``params``.

    Raises :class:`PipelineFileError` for anything wrong in the file, naming line and field.
    """
    pipelines, _ = read_pipelines(
        path, params, env=env, plugin_manager=plugin_manager, project=project
    )
    if name is None:
        if len(pipelines) > 1:
            raise PipelineFileError(
                path,
                None,
                None,
                f"the file holds {len(pipelines)} "
                f"pipelines ({', '.join(pipelines)}): pick one by name",
            )
        return next(iter(pipelines.values()))
    if name not in pipelines:
        raise PipelineFileError(
            path,
            None,
            None,
            f"no pipeline named {name!r}"
            f"{hint(name, pipelines)} (in the file: {', '.join(pipelines)})",
        )
    return pipelines[name]


def _build(
    path: Path,
    data: Map,
    fields: set[str],
    prefix: str,
    params: Mapping[str, Any] | None,
    env: Mapping[str, str],
    plugin_manager: Any,
    declared: dict[str, ParamSpec] | None = None,
    values: dict[str, Any] | None = None,
    subpipeline: Callable[[str, dict[str, Any], int, str], Any] | None = None,
    defaults: tuple[Any, Any] = (None, None),
    check_graph: bool = True,
    connections: Any = None,
) -> LoadedPipeline:
    """The pipeline of ``data`` (the file's top, or one item of its ``pipelines:``), its
    fields checked against ``fields`` (named with ``prefix`` in errors). ``connections``: the
    file's (a :class:`~pipectl.files.connections.FileConnections`), read from ``data`` when
    None and ``data`` is the file's top."""
    for key in data:
        if key == "connections" and prefix:
            raise PipelineFileError(
                path,
                data.lines[key],
                prefix + key,
                "connections go at the top of a file with several pipelines, shared by all "
                "of them (connections: next to pipelines:)",
            )
        if key not in fields:
            raise PipelineFileError(
                path,
                data.lines[key],
                prefix + key,
                f"unknown field{hint(key, fields)} (known: {', '.join(sorted(fields))})",
            )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineFileError(
            path,
            data.lines.get("name", data.line or 1),
            prefix + "name",
            "the pipeline needs a name (a non-empty string)",
        )
    check_name(path, data.lines.get("name", data.line or 1), prefix + "name", name, "pipeline")
    if declared is None:
        declared = declared_params(path, data)
        values = resolve_params(path, declared, params or {}, env, *defaults)
    assert values is not None
    if connections is None and not prefix and data.get("connections") is not None:
        from pipectl.files.connections import read_connections

        connections = read_connections(path, data, values, env, plugin_manager)
    steps = data.get("steps")
    if not isinstance(steps, Seq) or not steps:
        raise PipelineFileError(
            path,
            data.lines.get("steps", data.line or 1),
            prefix + "steps",
            "expected a list of steps (- name: ...), with at least one",
        )
    settings: dict[str, Any] = {}
    if "max_concurrent" in data and data["max_concurrent"] is not None:
        settings["max_concurrent"] = number(
            path,
            data.lines["max_concurrent"],
            prefix + "max_concurrent",
            data["max_concurrent"],
            minimum=1,
            integer=True,
        )
    if data.get("pools") is not None:
        settings["pools"] = _pool_sizes(path, data, prefix)
    if "fail_fast" in data:
        if not isinstance(data["fail_fast"], bool):
            raise PipelineFileError(
                path,
                data.lines["fail_fast"],
                prefix + "fail_fast",
                f"expected true or false, got {data['fail_fast']!r}",
            )
        settings["fail_fast"] = data["fail_fast"]
    for key in ("executor", "tracker", "description", "story"):
        if key in data and data[key] is not None:
            if not isinstance(data[key], str):
                raise PipelineFileError(
                    path, data.lines[key], prefix + key, f"expected a string, got {kind(data[key])}"
                )
            settings[key] = data[key]
    story = settings.pop("story", None)
    if story is not None and not story.lower().endswith((".html", ".md", ".markdown")):
        raise PipelineFileError(
            path,
            data.lines["story"],
            prefix + "story",
            f"{story!r}: the story's file ends in .html or .md "
            "({run_id}, {short_id} and {pipeline} are filled in)",
        )
    folder = path.absolute().parent  # relative paths in the file are relative to it
    if story is not None:
        story = absolute(story, folder)
    if settings.get("tracker", "").startswith("sqlite:///"):
        from pipectl.project import sqlite_url

        settings["tracker"] = sqlite_url(settings["tracker"], folder)
    specs: list[StepSpec] = []
    seen: dict[str, int] = {}
    connection_errors: list[PipelineFileError] = []  # every one, after the steps
    for index, raw in enumerate(steps):
        line = steps.lines[index]
        read = raw
        interpolated = interpolate(path, raw, line, f"{prefix}steps[{index}]", values, env)
        raw = relined(raw, interpolated) if isinstance(raw, Map) else interpolated
        step_name, kwargs = step_kwargs(path, raw, index, line, prefix, subpipeline)
        if step_name in seen:
            raise PipelineFileError(
                path,
                line,
                f"{prefix}steps[{index}].name",
                f"duplicate step {step_name!r} (first at line "
                f"{seen[step_name]}); step names must be unique",
            )
        seen[step_name] = line
        func = kwargs.pop("func", None)
        if kwargs.get("step_type") == "data":
            if _names_connection(kwargs["options"]):
                from pipectl.files.connections import apply_connections

                where = f"{prefix}steps.{step_name}"
                apply_connections(
                    path,
                    kwargs["options"],
                    read,
                    line,
                    where,
                    connections,
                    plugin_manager,
                    connection_errors,
                )
            resolve_paths(kwargs["options"], folder, plugin_manager)
        specs.append(StepSpec(name=step_name, func=func, **kwargs))
    if connection_errors:
        from pipectl.files.connections import ConnectionProblems

        raise ConnectionProblems(connection_errors)
    if settings.get("pools") or any(s.pools for s in specs):
        _check_pools(path, prefix, settings.get("pools", {}), specs, steps)
    spec = PipelineSpec(name=name, steps=tuple(specs), **settings)
    lines = SourceLines({f"steps.{n}": line for n, line in seen.items()}, steps)
    lines.update({key: data.lines[key] for key in ("executor", "tracker") if key in data})
    origin = Origin(str(path), story, lines, connections.secrets if connections else None)
    if not check_graph:  # validate() reports it with every other problem
        return LoadedPipeline(spec, values, declared, origin, None)
    from pipectl.graph import Graph

    try:  # the DAG: duplicate, unknown or cyclic dependencies
        graph = Graph(name, specs)
    except PipectlError as exc:
        problems = getattr(exc, "problems", [str(exc)])
        named = re.search(r"step '([^']+)'", problems[0]) or re.search(r"cycle: (\S+)", problems[0])
        at = seen.get(named.group(1)) if named else None
        raise PipelineFileError(path, at, prefix + "steps", "; ".join(problems)) from None
    return LoadedPipeline(spec, values, declared, origin, graph)


def _pool_sizes(path: Path, data: Map, prefix: str) -> dict[str, int]:
    """A pipeline's ``pools:`` (name: size), each size checked at its line."""
    pools = data["pools"]
    if not isinstance(pools, Map):
        raise PipelineFileError(
            path,
            data.lines["pools"],
            prefix + "pools",
            f"expected a mapping of pool name to size, such as {{db: 2}}, got {kind(pools)}",
        )
    for pool, size in pools.items():
        number(
            path,
            pools.lines.get(pool, data.lines["pools"]),
            f"{prefix}pools.{pool}",
            size,
            minimum=1,
            integer=True,
        )
        if not isinstance(pool, str) or not pool:
            raise PipelineFileError(
                path, pools.lines.get(pool), f"{prefix}pools", f"a pool name is text, got {pool!r}"
            )
    return dict(pools)


def _check_pools(
    path: Path, prefix: str, sizes: Mapping[str, int], specs: list[StepSpec], steps: Seq
) -> None:
    """A step naming a pool the pipeline does not declare, or weighing more than its size:
    the first one, at the line of its ``pool``/``pools`` entry."""
    from pipectl.planning import pool_problems

    problems = pool_problems(sizes, specs)
    if not problems:
        return
    problem: Any = problems[0]
    raw = next((r for r in steps if isinstance(r, Map) and r.get("name") == problem.step), None)
    pool = problem.field.partition(".")[2]
    if raw is None:  # a name filled in by interpolation: the step's own line is not at hand
        key, line = "pools", None
    elif "pool" in raw:
        key, line = "pool", raw.lines["pool"]
    else:
        pools = raw["pools"]
        key, line = f"pools.{pool}", getattr(pools, "lines", {}).get(pool, raw.lines["pools"])
    text = problem.message + (f"; {problem.hint}" if problem.hint else "")
    raise PipelineFileError(path, line, f"{prefix}steps.{problem.step}.{key}", text)


def _names_connection(options: Mapping[str, Any]) -> bool:
    """Whether a data step's extractor or one of its outputs names a ``connection``."""
    extract, load = options.get("extract"), options.get("load")
    return (isinstance(extract, dict) and "connection" in extract) or (
        isinstance(load, list) and any(isinstance(s, dict) and "connection" in s for s in load)
    )

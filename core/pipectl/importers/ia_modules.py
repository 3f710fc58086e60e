"""``pipectl import ia-modules``: a pipeline of the ia_modules JSON design as a pipectl file.

The design (steps with ``id``, ``module``, ``step_class``, ``config`` and ``inputs``; a ``flow``
of ``start_at`` and ``paths``) maps onto pipectl like this:

* a step runs its class unchanged: ``run: module:StepClass``, ``options:`` its ``config``
  (pipectl builds ``StepClass(id, config)`` and calls ``async run(data) -> dict``);
* an input's ``source`` becomes a reference: ``{parameters.N}`` -> ``params.N``,
  ``{steps.ID.output.F}`` (or ``{{ ID.F }}``) -> ``steps.ID.output.F``, and alternatives
  joined by ``|`` stay alternatives: the first whose step ran;
* each path ``from_step -> to_step`` is a dependency; a path's condition becomes the target's
  ``when:`` (``always`` adds none; ``threshold_condition`` and ``expression`` compare a field
  of the source step's output with a value, ``{{ parameters.N }}`` included);
* a step joining branches that may not run gets ``trigger: one_success``;
* a step declaring no ``inputs`` gets what ia_modules hands it: a step with no upstream the
  pipeline input (``inputs`` of every declared param), a step with one upstream that step's
  result itself (``inputs: {"*": upstream}``, the step class's whole ``data``), a join of
  branches of which one runs the result of the one that ran (``"*": steps.a.output |
  steps.b.output``), and a join of steps that all run each one's result by step id (nothing
  written: pipectl's own rule for a step class; merging them could lose equal keys);
* ``parameters`` become declared params (JSON Schema types mapped to pipectl's); one marked
  ``"secret": true`` (or whose schema is ``writeOnly`` or of ``format: password``) is a secret
  param, masked wherever pipectl writes or shows it.

Branches run in parallel (pipectl starts a step as soon as its dependencies end) and only the
branches whose conditions hold run. Loops (a flow with a cycle) have no equivalent in a DAG
and are refused with the cycle named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

from pipectl.components.python_step import WHOLE_INPUT
from pipectl.errors import PipectlError

__all__ = ["ImportError_", "convert", "convert_file", "read_pipeline_file"]


class ImportError_(PipectlError, ValueError):
    """The file is not a pipeline of the ia_modules design that can be converted."""

    def __init__(self, path: str, field: str | None, message: str):
        self.path, self.field, self.message = path, field, message
        super().__init__(f"{path}: {field}: {message}" if field else f"{path}: {message}")


# JSON schema type -> pipectl param type (looked up with whatever a file's "type" holds)
_TYPES: dict[Any, str] = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool",
    "array": "list",
    "object": "json",
}
_OPERATORS = {
    ">=": ">=",
    ">": ">",
    "<=": "<=",
    "<": "<",
    "==": "==",
    "!=": "!=",
    "equals": "==",
    "eq": "==",
    "not_equals": "!=",
    "ne": "!=",
    "greater_than": ">",
    "gt": ">",
    "greater_than_or_equal": ">=",
    "gte": ">=",
    "less_than": "<",
    "lt": "<",
    "less_than_or_equal": "<=",
    "lte": "<=",
    "in": "in",
    "not_in": "not in",
}
_TEMPLATE = re.compile(r"^\s*\{\{?\s*(.*?)\s*\}?\}\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug or "imported"


def _reference(path: str, field: str, text: str, steps: set[str]) -> str:
    """One ``{...}`` source as a pipectl reference."""
    match = _TEMPLATE.match(text)
    if match is None or not text.strip().startswith("{"):
        raise ImportError_(
            path,
            field,
            f"{text!r} is not a reference: expected "
            "{parameters.NAME}, {steps.ID.output.FIELD} or {{ ID.FIELD }}",
        )
    parts = match.group(1).split(".")
    if parts[0] in ("parameters", "params") and len(parts) >= 2:
        return "params." + ".".join(parts[1:])
    if parts[0] == "steps" and len(parts) >= 3 and parts[2] == "output":
        step, rest = parts[1], parts[3:]
    elif parts[0] in steps:  # {{ ID.FIELD }}
        step, rest = parts[0], parts[1:]
    else:
        raise ImportError_(
            path,
            field,
            f"{text!r}: {parts[0]!r} is neither 'parameters', "
            f"'steps' nor a step id (steps: {', '.join(sorted(steps))})",
        )
    if step not in steps:
        raise ImportError_(path, field, f"{text!r} refers to unknown step {step!r}")
    for part in rest:
        if not _NAME.match(part):
            raise ImportError_(path, field, f"{text!r}: field {part!r} is not a plain name")
    return ".".join([f"steps.{step}.output", *rest])


def _source(path: str, field: str, text: Any, steps: set[str]) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ImportError_(path, field, f"expected a source string, got {text!r}")
    return " | ".join(_reference(path, field, alt, steps) for alt in text.split("|"))


def _literal(path: str, field: str, value: Any, steps: set[str]) -> str:
    if isinstance(value, str) and value.strip().startswith("{"):
        return _source(path, field, value, steps)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(path, field, v, steps) for v in value) + "]"
    raise ImportError_(path, field, f"cannot compare with {type(value).__name__} {value!r}")


def _condition(
    path: str, field: str, condition: Any, source_step: str, steps: set[str]
) -> str | None:
    """A path's condition as a ``when`` expression; None for ``always``."""
    if condition is None:
        return None
    if not isinstance(condition, dict):
        raise ImportError_(path, field, f"expected a condition mapping, got {condition!r}")
    kind = condition.get("type", "always")
    if kind == "always":
        return None
    config = condition.get("config") or {}
    if kind in ("threshold_condition", "threshold", "expression", "field_condition"):
        target = config.get("field") or config.get("source")
        if not isinstance(target, str) or not target:
            raise ImportError_(
                path,
                f"{field}.config",
                "needs 'field' (a field of the source step's output) or 'source'",
            )
        if target.startswith("{"):
            left = _source(path, f"{field}.config", target, steps)
        else:
            head, _, rest = target.partition(".")
            if head in steps and rest:  # "review.approved": a field of that step's output
                left = f"steps.{head}.output.{rest}"
            else:
                left = f"steps.{source_step}.output.{target}"
        op = _OPERATORS.get(str(config.get("operator", "==")).strip().lower())
        if op is None:
            raise ImportError_(
                path,
                f"{field}.config.operator",
                f"unknown operator {config.get('operator')!r} (known: {', '.join(_OPERATORS)})",
            )
        right = _literal(path, f"{field}.config.value", config.get("value"), steps)
        return f"{left} {op} {right}"
    raise ImportError_(
        path,
        f"{field}.type",
        f"condition type {kind!r} cannot be converted "
        "(known: always, threshold_condition, expression)",
    )


def _params(path: str, raw: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if raw is None:
        return params
    if isinstance(raw, dict):  # {name: default}
        for name, default in raw.items():
            kind = {bool: "bool", int: "int", float: "float", list: "list", dict: "json"}.get(
                type(default), "str"
            )
            params[str(name)] = {"type": kind, "default": default}
        return params
    if not isinstance(raw, list):
        raise ImportError_(path, "parameters", "expected a list of {name, schema, required}")
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ImportError_(path, f"parameters[{i}]", "a parameter needs a 'name'")
        schema: dict[str, Any] = item.get("schema") or {}
        declared: dict[str, Any] = {"type": _TYPES.get(schema.get("type"), "json")}
        if "default" in item:
            declared["default"] = item["default"]
        elif "default" in schema:
            declared["default"] = schema["default"]
        elif item.get("required"):
            declared["required"] = True
        else:
            declared["default"] = None
        if item.get("description"):
            declared["description"] = str(item["description"])
        if item.get("secret") or schema.get("writeOnly") or schema.get("format") == "password":
            declared["secret"] = True  # masked wherever pipectl writes or shows it
        params[item["name"]] = declared
    return params


def convert(data: Any, path: str = "<pipeline>") -> dict[str, Any]:
    """The pipectl pipeline file (as data) of an ia_modules pipeline (as data)."""
    if not isinstance(data, dict):
        raise ImportError_(path, None, "expected a JSON object with 'steps' and 'flow'")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ImportError_(path, "steps", "expected a non-empty list of steps")
    ids: list[str] = []
    for i, step in enumerate(raw_steps):
        if not isinstance(step, dict):
            raise ImportError_(path, f"steps[{i}]", "a step is an object")
        for key in ("id", "module", "step_class"):
            if not isinstance(step.get(key), str) or not step[key]:
                raise ImportError_(path, f"steps[{i}].{key}", f"every step needs {key!r}")
        if step["id"] in ids:
            raise ImportError_(path, f"steps[{i}].id", f"duplicate step id {step['id']!r}")
        ids.append(step["id"])
    known = set(ids)

    flow = data.get("flow") or {}
    paths = flow.get("paths", flow.get("transitions", []))
    if not isinstance(paths, list):
        raise ImportError_(path, "flow.paths", "expected a list of {from_step, to_step}")
    incoming: dict[str, list[tuple[str, str | None]]] = {i: [] for i in ids}
    for n, edge in enumerate(paths):
        field = f"flow.paths[{n}]"
        if not isinstance(edge, dict):
            raise ImportError_(path, field, "a path is an object {from_step, to_step}")
        src, dst = edge.get("from_step", edge.get("from")), edge.get("to_step", edge.get("to"))
        for end, value in (("from_step", src), ("to_step", dst)):
            if value not in known:
                raise ImportError_(
                    path, f"{field}.{end}", f"unknown step {value!r} (steps: {', '.join(ids)})"
                )
        src, dst = cast(str, src), cast(str, dst)  # both step ids now
        incoming[dst].append(
            (src, _condition(path, f"{field}.condition", edge.get("condition"), src, known))
        )
    start = flow.get("start_at")
    if start is not None and start not in known:
        raise ImportError_(path, "flow.start_at", f"unknown step {start!r}")
    _check_acyclic(path, ids, incoming)

    conditional: set[str] = set()  # steps that may not run: a condition on them or upstream
    for step_id in _topological(ids, incoming):
        edges = incoming[step_id]
        if any(cond is not None for _, cond in edges) or (
            edges and all(src in conditional for src, _ in edges)
        ):
            conditional.add(step_id)

    params = _params(path, data.get("parameters"))
    steps_out = []
    for i, step in enumerate(raw_steps):
        step_id = step["id"]
        item: dict[str, Any] = {"name": step_id}
        if step.get("name") and step["name"] != step_id:
            item["description"] = str(step["name"])
        item["run"] = f"{step['module']}:{step['step_class']}"
        if step.get("config"):
            item["options"] = step["config"]
        deps = list(dict.fromkeys(src for src, _ in incoming[step_id]))
        if deps:
            item["depends_on"] = deps
        inputs = step.get("inputs") or []
        if isinstance(inputs, dict):
            inputs = [{"name": k, "source": v} for k, v in inputs.items()]
        mapped: dict[str, str] = {}
        for n, entry in enumerate(inputs):
            field = f"steps[{i}].inputs[{n}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ImportError_(path, field, "an input needs a 'name' and a 'source'")
            mapped[entry["name"]] = _source(path, f"{field}.source", entry.get("source"), known)
        if not mapped:
            mapped = _implicit_inputs(deps, conditional, params)
        if mapped:
            item["inputs"] = mapped
        conditions = [cond for _, cond in incoming[step_id]]
        if conditions and all(c is not None for c in conditions):
            item["when"] = (
                conditions[0]
                if len(conditions) == 1
                else " or ".join(f"({c})" for c in dict.fromkeys(conditions))
            )
        joins_branches = len(deps) > 1 and any(d in conditional for d in deps)
        if joins_branches or any("|" in source for source in mapped.values()):
            item["trigger"] = "one_success"
        steps_out.append(item)

    out: dict[str, Any] = {"name": _slug(str(data.get("name") or path))}
    description = data.get("description") or data.get("name")
    if description:
        out["description"] = str(description)
    if params:
        out["params"] = params
    out["steps"] = steps_out
    return out


def _implicit_inputs(
    deps: list[str], conditional: set[str], params: dict[str, Any]
) -> dict[str, str]:
    """The inputs of a step that declares none, as ia_modules hands it its data: the pipeline
    input (every declared param by name) to a step with no upstream, the upstream's result
    itself (the ``*`` input) to a step with one, and to a join of branches that may not run
    the result of the one that ran (``a | b``: the first that did). A join of steps that all
    run gets nothing written: each upstream's result by step id, nothing lost."""
    if not deps:
        return {name: f"params.{name}" for name in params}
    if len(deps) == 1:
        return {WHOLE_INPUT: deps[0]}
    if all(dep in conditional for dep in deps):
        return {WHOLE_INPUT: " | ".join(f"steps.{dep}.output" for dep in deps)}
    return {}


def _topological(ids: list[str], incoming: dict[str, list[tuple[str, Any]]]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    pending = list(ids)
    while pending:
        rest = []
        for step_id in pending:
            if all(src in done for src, _ in incoming[step_id]):
                order.append(step_id)
                done.add(step_id)
            else:
                rest.append(step_id)
        pending = rest
    return order


def _check_acyclic(path: str, ids: list[str], incoming: dict[str, list[tuple[str, Any]]]) -> None:
    from pipectl.graph import Graph
    from pipectl.model import StepSpec

    try:
        Graph(path, [StepSpec(i, depends_on=[src for src, _ in incoming[i]]) for i in ids])
    except PipectlError as exc:
        problems = "; ".join(getattr(exc, "problems", [str(exc)]))
        raise ImportError_(
            path,
            "flow",
            f"{problems}: pipectl pipelines are DAGs, so a flow with a loop cannot be imported",
        ) from None


def convert_file(path: str | Path) -> str:
    """The pipectl pipeline file (YAML text) of the ia_modules pipeline at ``path``."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(str(path), None, f"cannot read the file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportError_(str(path), None, f"line {exc.lineno}: not JSON: {exc.msg}") from None
    converted = convert(data, str(path))
    header = (
        f"# Imported from the ia_modules pipeline {path.name} by `pipectl import "
        "ia-modules`.\n# Step classes run unchanged: built with (id, config), "
        "`async run(data) -> dict`.\n"
        "# A step that declares no inputs gets its data as in ia_modules: with no upstream, "
        "the\n# pipeline input (its params); with one, that step's result itself "
        "(`'*': STEP`: the\n# whole data); joining branches of which one runs, the result "
        "of the one that ran;\n# joining steps that all run, each one's result by step id.\n"
    )
    return header + yaml.safe_dump(converted, sort_keys=False, allow_unicode=True, width=100)


def read_pipeline_file(path: Path, data: Any) -> dict[str, Any]:
    """The pipectl pipeline of an ia_modules pipeline file read by pipectl (``data``, with
    lines): the ``ia-modules`` pipeline-file format. A problem is a
    :class:`~pipectl.files.PipelineFileError` at the line of the field."""
    from pipectl.files import PipelineFileError

    try:
        return convert(data, str(path))
    except ImportError_ as exc:
        raise PipelineFileError(path, _line_of(data, exc.field), exc.field, exc.message) from None


def _line_of(data: Any, field: str | None) -> int | None:
    """The line of ``field`` (``steps[0].module``, ``flow.paths[2].to_step``) in the file's
    data, or of the nearest enclosing part of it that has one."""
    line = getattr(data, "line", None) or None
    node = data
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field or ""):
        lines = getattr(node, "lines", None)
        try:
            if name:
                line = lines[name] if lines is not None and name in lines else line
                node = node[name]
            else:
                line = lines[int(index)] if lines is not None else line
                node = node[int(index)]
        except (KeyError, IndexError, TypeError):
            break
    return line

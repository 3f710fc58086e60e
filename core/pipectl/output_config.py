"""``output_config``: option overrides for the outputs of data steps, for one run.

``Pipeline.execute(PipelineRunConfig(output_config={...}))`` (and ``Pipeline.with_output_config
({...})``, a copy of the pipeline to run) take a mapping from an output's name to the options to
override, for that run only::

    {"jsonl#1": {"path": "out/today.jsonl"}, "warehouse": {"table": "staging"}}

**An output's name** is the one its data step reports it under (``result.outputs``, the run's
errors): the ``name`` key of an output given as a ``{"type": ..., ...}`` mapping, else
``TYPE#INDEX`` (``"jsonl#1"``: the type and the output's position in the step's list); for an
output object, its ``name`` attribute, else its class name in lower case ``#INDEX``
(``"csvoutput#0"``). Where only one output of a step has a given type (or class), the name
without ``#INDEX`` (``"jsonl"``) names it too. A pipeline with several data steps may write
``STEP.NAME``; a name that matches outputs of two steps must.

**How an override applies:** to an output given as a mapping, the overrides are merged into
its options before it is built (``type`` and ``name`` cannot be overridden); to an output
object, through its ``with_options(**overrides)`` method, which returns a new output (the
object in the pipeline stays as it was). pipectl's csv, jsonl and sqlite outputs have it. A key
that names no output, an option the output does not take, or an object without
``with_options`` raises :class:`ValueError` saying which output and what to do, before
anything runs: an override is never ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pipectl.model import StepSpec

__all__ = ["apply_output_config", "output_names"]

_FIXED = ("type", "name")  # what designates a mapping's component: not an option to override


def output_names(load: Sequence[Any]) -> list[list[str]]:
    """For each output of a data step's ``load`` list, the names that designate it: its
    reported name first, then the name without ``#INDEX`` when no other output shares it."""
    from pipectl.data import output_name

    reported = [output_name(spec, spec, i) for i, spec in enumerate(load)]
    suffixes = [f"#{i}" for i in range(len(reported))]
    bases = [n.removesuffix(s) for n, s in zip(reported, suffixes, strict=True)]
    names = []
    for i, name in enumerate(reported):
        base = bases[i]
        unique = base != name and bases.count(base) == 1 and base not in reported
        names.append([name, base] if unique else [name])
    return names


def apply_output_config(
    steps: Sequence[StepSpec], output_config: Mapping[str, Any], registries: Any = None
) -> list[StepSpec]:
    """``steps`` with the overrides of ``output_config`` applied to their data steps' outputs
    (new specs; the given ones are unchanged). Raises :class:`ValueError` for a key naming no
    output (or two), an override that is not a mapping, or one that cannot be applied."""
    if not isinstance(output_config, Mapping):
        raise ValueError(
            f"output_config must be a mapping of output name to options, got "
            f"{type(output_config).__name__}"
        )
    data = [(i, s) for i, s in enumerate(steps) if s.step_type == "data" and s.options.get("load")]
    loads = {i: list(s.options["load"]) for i, s in data}
    known: dict[str, list[tuple[int, int]]] = {}  # a name -> (step index, output index)s
    listed = []  # the reported names, for messages
    for i, step in data:
        for j, names in enumerate(output_names(loads[i])):
            listed.append(names[0] if len(data) == 1 else f"{step.name}.{names[0]}")
            for name in names:
                for key in (name, f"{step.name}.{name}"):
                    known.setdefault(key, []).append((i, j))
    changed: set[int] = set()
    for key, overrides in output_config.items():
        where = known.get(key, [])
        if not where:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            raise ValueError(
                f"output_config names no output {key!r}"
                + (f": did you mean {close[0]!r}?" if close else "")
                + f" (the outputs: {', '.join(listed) or 'none, the pipeline has no data step'})"
            )
        if len(where) > 1:
            raise ValueError(
                f"output_config key {key!r} names outputs of several data steps "
                f"({', '.join(steps[i].name for i, _ in where)}): write STEP.{key}"
            )
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"output_config[{key!r}] must be a mapping of options, "
                f"got {type(overrides).__name__}"
            )
        i, j = where[0]
        loads[i][j] = _override(key, loads[i][j], dict(overrides), registries)
        changed.add(i)
    out = list(steps)
    for i in changed:
        out[i] = attrs.evolve(steps[i], options={**steps[i].options, "load": loads[i]})
    return out


def _override(key: str, spec: Any, overrides: dict[str, Any], registries: Any) -> Any:
    """One output with ``overrides`` applied: a new mapping, or a new object."""
    what = f"output_config[{key!r}]"
    if isinstance(spec, Mapping):
        fixed = sorted(set(_FIXED) & set(overrides))
        if fixed:
            raise ValueError(f"{what}: {', '.join(fixed)} cannot be overridden, only options")
        if registries is not None and "type" in spec:
            from pipectl.options import schema_of

            schema = schema_of(registries.outputs.get(spec["type"]))
            if schema is not None:
                merged = {k: v for k, v in {**spec, **overrides}.items() if k not in _FIXED}
                problems = [p for p in schema.check(merged, deep=False) if p.field in overrides]
                if problems:
                    raise ValueError(f"{what}: output {spec['type']!r}: " + "; ".join(problems))
        return {**spec, **overrides}
    with_options = getattr(spec, "with_options", None)
    if not callable(with_options):
        raise ValueError(
            f"{what}: the output is a {type(spec).__name__} object, which takes no overrides: "
            "give it a with_options(**overrides) method returning a new output, or give the "
            "output as a {'type': ..., **options} mapping"
        )
    try:
        return with_options(**overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {type(spec).__name__}: {exc}") from exc

"""A pipeline file's steps: each step's mapping checked field by field (``file:line: field``
in every error) and turned into the arguments of a :class:`~pipectl.model.StepSpec`: a
function or step class imported by ``module:function``, a data step's options, a sub-pipeline
(built by the caller), a plugin step type's options. The fields, their readers and the
StepSpec arguments they set are declared in :mod:`pipectl.files.fields` (and each step type's
``FILE_FIELDS``); the tables below are derived from them once, at import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, hint, kind
from pipectl.files.fields import (
    FIELDS,
    KIND_FIELDS,
    UNSET,
    check_name,
    number,
    read_ref,
    step_names,
    type_fields,
)
from pipectl.files.loader import Map

__all__ = [
    "DATA_FIELDS",
    "STEP_FIELDS",
    "TYPE_FIELDS",
    "check_name",
    "number",
    "step_names",
    "step_kwargs",
]

# Derived once from the declaration (pipectl.files.fields and each step type's FILE_FIELDS).
#: the fields of the step types whose fields sit at the top of a step, by step type
TYPE_FIELDS = type_fields()
_DATA = TYPE_FIELDS["data"]
_SUBPIPELINE = TYPE_FIELDS["pipeline"]
#: the fields of a data step (any of them makes the step one)
DATA_FIELDS = frozenset(f.name for f in _DATA)
#: every field a step may have
STEP_FIELDS = frozenset(
    f.name for f in (*FIELDS, *KIND_FIELDS, *(f for t in TYPE_FIELDS.values() for f in t))
)
#: (field, StepSpec argument, reader) of the fields every step has but its name, in order
_READ = tuple((f.name, f.sets, f.read) for f in FIELDS if f.name != "name")
#: (field, option, reader) of a data step's fields, the ones it needs, a sub-pipeline's fields
_READ_DATA = tuple((f.name, f.sets, f.read) for f in _DATA)
_DATA_REQUIRED = tuple(f.name for f in _DATA if f.required)
_READ_SUBPIPELINE = tuple((f.name, f.read) for f in _SUBPIPELINE)
_RUN = next(f for f in KIND_FIELDS if f.name == "run")


def step_kwargs(
    path: Path,
    raw: Map,
    index: int,
    line: int,
    prefix: str = "",
    subpipeline: Callable[[str, dict[str, Any], int, str], Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The name of step number ``index`` (its mapping ``raw``, interpolated, at ``line``) and
    the arguments of its :class:`~pipectl.model.StepSpec` (``func`` among them).
    ``subpipeline(name, params, line, field)`` builds the pipeline a ``pipeline:`` step names
    (None: the file holds one pipeline, which has no sub-pipelines)."""
    if not isinstance(raw, dict):
        raise PipelineFileError(
            path,
            line,
            f"{prefix}steps[{index}]",
            f"a step is a mapping with at least 'name', got {kind(raw)}",
        )
    for key in raw:
        if key not in STEP_FIELDS:
            raise PipelineFileError(
                path,
                raw.lines[key],
                f"{prefix}steps[{index}].{key}",
                f"unknown step field{hint(key, STEP_FIELDS)}",
            )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineFileError(
            path,
            raw.lines.get("name", line),
            f"{prefix}steps[{index}].name",
            f"every step needs a name (a non-empty string), got {name!r}",
        )
    check_name(path, raw.lines.get("name", line), f"{prefix}steps[{index}].name", name, "step")
    where = f"{prefix}steps.{name}"

    def at(key: str) -> int:
        return raw.lines.get(key, line)

    if "pool" in raw and "pools" in raw:
        raise PipelineFileError(
            path,
            at("pools"),
            f"{where}.pools",
            "a step has 'pool' (one pool, weight 1) or 'pools' (weights), not both",
        )
    kwargs: dict[str, Any] = {}
    for key, target, read in _READ:
        if key in raw:
            value = raw[key] if read is None else read(path, at(key), f"{where}.{key}", raw[key])
            if value is not UNSET:
                kwargs[target] = value
    data = [k for k in raw if k in DATA_FIELDS]
    kinds = [k for k in ("run", "type", "pipeline") if k in raw] + (
        ["extract/load"] if data else []
    )
    if len(kinds) > 1:
        raise PipelineFileError(
            path,
            line,
            where,
            f"a step has one of 'run' (a function or "
            f"step class), 'extract'/'load' (a data step), 'pipeline' (a "
            f"sub-pipeline) or 'type' (a plugin step type), not "
            f"{' and '.join(kinds)}",
        )
    if "params" in raw and "pipeline" not in raw:
        raise PipelineFileError(
            path,
            at("params"),
            f"{where}.params",
            "'params' go with 'pipeline' (a sub-pipeline's params); a "
            "step function takes the run's params as a 'params' argument",
        )
    if "run" in raw:
        kwargs[_RUN.sets] = read_ref(path, at("run"), f"{where}.run", raw["run"])
        if "options" in raw:
            if not isinstance(kwargs["func"], type):
                raise PipelineFileError(
                    path,
                    at("options"),
                    f"{where}.options",
                    "'options' go with a step class (run: module:Class) "
                    "or a plugin step 'type', not a function",
                )
            if not isinstance(raw["options"], dict):
                raise PipelineFileError(
                    path,
                    at("options"),
                    f"{where}.options",
                    f"expected a mapping, got {kind(raw['options'])}",
                )
            kwargs["options"] = dict(raw["options"])
    elif "pipeline" in raw:
        given = {
            key: raw[key] if read is None else read(path, at(key), f"{where}.{key}", raw[key])
            for key, read in _READ_SUBPIPELINE
            if key in raw
        }
        if subpipeline is None:
            raise PipelineFileError(
                path,
                at("pipeline"),
                f"{where}.pipeline",
                "a sub-pipeline is another pipeline of the same file: "
                "write the file with several pipelines (pipelines: "
                "[- name: ..., steps: [...]])",
            )
        child = subpipeline(
            given["pipeline"], given.get("params", {}), at("pipeline"), f"{where}.pipeline"
        )
        kwargs["step_type"] = "pipeline"
        kwargs["options"] = {"pipeline": child, "params": {}}
    elif data:
        for required in _DATA_REQUIRED:
            if required not in raw:
                raise PipelineFileError(
                    path, line, f"{where}.{required}", f"a data step needs '{required}'"
                )
        options = {
            option: raw[key] if read is None else read(path, at(key), f"{where}.{key}", raw[key])
            for key, option, read in _READ_DATA
            if key in raw
        }
        kwargs["step_type"] = "data"
        kwargs["options"] = options
    elif "type" in raw:
        kwargs["step_type"] = raw["type"]
        kwargs["options"] = dict(raw.get("options") or {})
    else:
        raise PipelineFileError(
            path,
            line,
            where,
            "the step does nothing: give it 'run: "
            "module:function', 'extract' and 'load', 'pipeline' or a "
            "'type'",
        )
    if "options" in raw and "type" not in raw and "run" not in raw:
        raise PipelineFileError(
            path,
            at("options"),
            f"{where}.options",
            "'options' go with a step class (run: module:Class) or a plugin step 'type'",
        )
    return name, kwargs

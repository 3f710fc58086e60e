"""The fields of a pipeline file's step, declared once: for each YAML field its name, the
:class:`~pipectl.model.StepSpec` attribute (or step type option) it sets, its JSON Schema, a
one-line description, how the loader reads it and how ``to_yaml`` writes it back.

:data:`FIELDS` holds the fields every step has (``name``, ``description``, ``depends_on``,
the retries, ...), in the order the loader reads them (the first wrong one is reported) and
``to_yaml`` writes them; :data:`KIND_FIELDS` the fields that say what a step is (``run``,
``type``, ``options``), read by :func:`pipectl.files.steps.step_kwargs` itself. A step type
whose fields sit at the top of a step declares them in its own module as ``FILE_FIELDS``
(the data step's ``extract``, ``load``, ...: :mod:`pipectl.components.data_step`; a
sub-pipeline's ``pipeline`` and ``params``: :mod:`pipectl.components.pipeline_step_fields`), found
through :data:`TYPE_MODULES` by :func:`type_fields`.

From these, :mod:`pipectl.files.steps` derives the known fields (its "unknown step field"
check) and the YAML -> ``StepSpec`` mapping, :mod:`pipectl.files.writer` the reverse,
:func:`step_schema` the ``$defs.step`` of ``schema/pipeline.schema.json`` (a test checks the
shipped file; ``python -m pipectl.docgen --schema`` rewrites it) and
:mod:`pipectl.docgen` the "Step fields" table of docs/components.md.

A reader is called as ``read(path, line, field, value)`` (``field`` is the path printed in
errors, such as ``steps.load.retries``) and returns the value to set, or :data:`UNSET` to
leave the default; it raises :class:`~pipectl.files.errors.PipelineFileError`. A writer is
called as ``write(value, where)`` (``where`` names the step in errors: ``step 'load'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pipectl.files.errors import MAX_NAME, PipelineFileError, hint, kind

__all__ = [
    "FIELDS",
    "KIND_FIELDS",
    "REF_PATTERN",
    "TRIGGERS",
    "TYPE_MODULES",
    "UNSET",
    "NOTHING",
    "StepField",
    "all_fields",
    "check_name",
    "number",
    "read_ref",
    "step_names",
    "step_schema",
    "type_fields",
]

Reader = Callable[[Path, int, str, Any], Any]
Writer = Callable[[Any, str], Any]


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: returned by a reader: the field leaves the attribute's default (a ``timeout: null``)
UNSET: Any = _Marker("UNSET")
#: a field's ``default`` when it has none of its own (a StepSpec attribute's is used)
NOTHING: Any = _Marker("NOTHING")


class StepField(NamedTuple):
    """One field of a step in a pipeline file."""

    name: str
    """The key in the file."""
    sets: str
    """The :class:`~pipectl.model.StepSpec` argument it sets; for a step type's field, the
    key of the step's ``options``."""
    schema: Mapping[str, Any]
    """Its JSON Schema (without the description)."""
    description: str
    """One line, for the JSON Schema and docs/components.md."""
    read: Reader | None = None
    """How the loader reads it (None: the value as it is)."""
    write: Writer | None = None
    """How ``to_yaml`` writes the value back (None: as it is)."""
    default: Any = NOTHING
    """Left out of a written file when the value is this (NOTHING: the StepSpec default)."""
    required: bool = False
    """A step of its type needs it."""


#: ``module:name``, as the JSON Schema checks a reference
REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
TRIGGERS = ("all_success", "all_done", "none_failed", "one_success")

#: the step types whose fields sit at the top of a step: their module's ``FILE_FIELDS``
TYPE_MODULES = {
    "data": "pipectl.components.data_step",
    "pipeline": "pipectl.components.pipeline_step_fields",
}


# ----------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------


def number(
    path: Path,
    line: int,
    field: str,
    value: Any,
    *,
    minimum: float = 0,
    strict: bool = False,
    integer: bool = False,
) -> Any:
    """``value`` checked to be a number (an integer) of at least ``minimum`` (more, when
    ``strict``)."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or value < minimum or (strict and value == minimum):
        what = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise PipelineFileError(path, line, field, f"expected {what} {bound}, got {value!r}")
    return value


def _integer(path: Path, line: int, field: str, value: Any) -> Any:
    return number(path, line, field, value, integer=True)


def _number(path: Path, line: int, field: str, value: Any) -> Any:
    return number(path, line, field, value)


def _fraction(path: Path, line: int, field: str, value: Any) -> Any:
    jitter = number(path, line, field, value)
    if jitter > 1:
        raise PipelineFileError(path, line, field, f"a fraction between 0 and 1, got {jitter!r}")
    return jitter


def _timeout(path: Path, line: int, field: str, value: Any) -> Any:
    return UNSET if value is None else number(path, line, field, value, strict=True)


def _boolean(path: Path, line: int, field: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise PipelineFileError(path, line, field, f"expected true or false, got {value!r}")
    return value


def _text(path: Path, line: int, field: str, value: Any) -> Any:
    return str(value)


def read_ref(path: Path, line: int, field: str, ref: Any) -> Any:
    """The function (or class) a ``module:function`` reference names, imported."""
    if not isinstance(ref, str) or ":" not in ref:
        raise PipelineFileError(path, line, field, f"expected 'module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineFileError(
            path,
            line,
            field,
            f"cannot import module {module_name!r}: {exc} (is it installed, or on PYTHONPATH?)",
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module broke at import
        raise PipelineFileError(
            path, line, field, f"importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise PipelineFileError(
                path, line, field, f"{module_name!r} has no {part!r}{hint(part, names)}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise PipelineFileError(
            path, line, field, f"{ref!r} is a {type(obj).__name__}, not a function"
        )
    return obj


def _exception_types(path: Path, line: int, field: str, value: Any) -> tuple[type, ...]:
    import builtins

    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        raise PipelineFileError(path, line, field, "expected an exception name or a list of them")
    out = []
    for name in names:
        exc = getattr(builtins, name, None) if isinstance(name, str) and ":" not in name else None
        if exc is None and isinstance(name, str) and ":" in name:
            exc = read_ref(path, line, field, name)
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            known = [n for n in dir(builtins) if n.endswith(("Error", "Exception"))]
            raise PipelineFileError(
                path,
                line,
                field,
                f"{name!r} is not an exception class"
                f"{hint(str(name), known)} (a builtin name such as "
                "ConnectionError, or 'module:ClassName')",
            )
        out.append(exc)
    return tuple(out)


def step_names(path: Path, line: int, field: str, value: Any) -> list[str]:
    """A ``depends_on``: one name, or a list of names."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise PipelineFileError(
        path, line, field, f"expected a step name or a list of step names, got {kind(value)}"
    )


def _expression(path: Path, line: int, field: str, text: Any, parse: Callable[[Any], Any]) -> Any:
    from pipectl.expr import ExpressionError

    if not isinstance(text, str):
        raise PipelineFileError(
            path,
            line,
            field,
            f"expected an expression (text) such as \"params.mode == 'full'\", got {kind(text)}",
        )
    try:
        return parse(text)
    except ExpressionError as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise PipelineFileError(path, line, field, f"{shown!r}: {exc}") from None


def _inputs(path: Path, line: int, field: str, inputs: Any) -> Any:
    from pipectl.expr import parse_input

    if not isinstance(inputs, dict):
        raise PipelineFileError(
            path,
            line,
            field,
            "expected {parameter: step name or reference such as steps.NAME.output.FIELD}",
        )
    lines = getattr(inputs, "lines", {})
    return {
        k: _expression(path, lines.get(k, line), f"{field}.{k}", v, parse_input)
        for k, v in inputs.items()
    }


def _condition(path: Path, line: int, field: str, value: Any) -> Any:
    from pipectl.expr import parse

    return _expression(path, line, field, value, parse)


def _trigger(path: Path, line: int, field: str, value: Any) -> Any:
    if value not in TRIGGERS:
        raise PipelineFileError(
            path,
            line,
            field,
            f"one of {', '.join(TRIGGERS)}, got {value!r}{hint(str(value), TRIGGERS)}",
        )
    return value


def _resources(path: Path, line: int, field: str, resources: Any) -> Any:
    if resources is None:
        return UNSET
    from pipectl.model import parse_resources

    if not isinstance(resources, dict):
        raise PipelineFileError(
            path,
            line,
            field,
            "expected a mapping of resource name to amount, such as {GPU: 1, memory: 4GB}",
        )
    lines = getattr(resources, "lines", {})
    for resource, amount in resources.items():
        try:
            parse_resources({resource: amount})
        except (TypeError, ValueError) as exc:
            raise PipelineFileError(
                path,
                lines.get(resource, line),
                f"{field}.{resource}",
                str(exc).partition(": ")[2] or str(exc),
            ) from None
    return dict(resources)


def _pool(path: Path, line: int, field: str, pool: Any) -> Any:
    if pool is None:
        return UNSET
    if not isinstance(pool, str) or not pool:
        raise PipelineFileError(
            path, line, field, f"expected the name of one of the pipeline's pools, got {kind(pool)}"
        )
    return {pool: 1}


def _pools(path: Path, line: int, field: str, pools: Any) -> Any:
    if pools is None:
        return UNSET
    if not isinstance(pools, dict):
        raise PipelineFileError(
            path,
            line,
            field,
            f"expected a mapping of pool name to weight, such as {{db: 1, api: 2}}, got "
            f"{kind(pools)}",
        )
    lines = getattr(pools, "lines", {})
    for pool, weight in pools.items():
        number(path, lines.get(pool, line), f"{field}.{pool}", weight, minimum=1, integer=True)
    return dict(pools)


def _cache(path: Path, line: int, field: str, value: Any) -> Any:
    """``cache: true`` (or false), or ``cache: {expires: 1h, key: module:function}``."""
    from pipectl.model import Cache

    if value is None or value is False:
        return UNSET
    if value is True:
        return Cache()
    if not isinstance(value, dict):
        raise PipelineFileError(
            path,
            line,
            field,
            f"expected true, false or {{expires: 1h, key: module:function}}, got {kind(value)}",
        )
    lines = getattr(value, "lines", {})
    for name in value:
        if name not in ("expires", "key"):
            raise PipelineFileError(
                path,
                lines.get(name, line),
                f"{field}.{name}",
                f"unknown field{hint(str(name), ('expires', 'key'))} (cache takes expires and key)",
            )
    expires = value.get("expires")
    if expires is not None:
        from pipectl.tracking.retention import parse_duration

        try:
            seconds = parse_duration(expires)
        except (TypeError, ValueError) as exc:
            raise PipelineFileError(
                path, lines.get("expires", line), f"{field}.expires", str(exc)
            ) from None
        if seconds <= 0:
            raise PipelineFileError(
                path,
                lines.get("expires", line),
                f"{field}.expires",
                f"a time to live above 0, such as 1h or 7d, got {expires!r}",
            )
        expires = seconds
    key = value.get("key")
    if key is not None:
        key = read_ref(path, lines.get("key", line), f"{field}.key", key)
    return Cache(expires=expires, key=key)


def _write_cache(value: Any, where: str) -> Any:
    if value.expires is None and value.key is None:
        return True
    out: dict[str, Any] = {}
    if value.expires is not None:
        seconds = value.expires
        out["expires"] = int(seconds) if float(seconds).is_integer() else seconds
    if value.key is not None:
        out["key"] = write_ref(value.key, f"{where} cache.key")
    return out


def _map(path: Path, line: int, field: str, value: Any) -> Any:
    if value is None:
        return UNSET
    if not isinstance(value, str) or not value.isidentifier():
        raise PipelineFileError(
            path,
            line,
            field,
            "expected the name of one of the step's parameters (bound to an upstream step's "
            f"list) to run the step once per item of, got {kind(value)}",
        )
    return value


def check_name(path: Path, line: int, field: str, name: str, what: str) -> None:
    """A step's or a pipeline's name is printed and names files (dead letters, stories)."""
    if (
        name.isprintable()
        and "/" not in name
        and "\\" not in name
        and len(name) <= MAX_NAME
        and name not in (".", "..")
    ):
        return
    bad = [c for c in name if not c.isprintable() or c in "/\\"]
    why = (
        f"{len(name):,} characters"
        if len(name) > MAX_NAME
        else f"it has {bad[0]!r}"
        if bad
        else "it is a path"
    )
    raise PipelineFileError(
        path,
        line,
        field,
        f"{name[:40]!r}: not a usable {what} name ({why}):"
        f" a name is at most {MAX_NAME} printable characters (no control, "
        "bidi or zero-width ones), without '/' or '\\' (it is printed, and "
        "names files such as dead letters)",
    )


# ----------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------


def write_ref(value: Any, where: str) -> str:
    """A function or class as ``module:name`` (it must import back)."""
    from pipectl.files.writer import reference

    return reference(value, where)


def _write_names(value: Any, where: str) -> Any:
    return list(value)


def _write_inputs(value: Any, where: str) -> Any:
    return {k: v if isinstance(v, str) else v.text for k, v in value.items()}


def _write_condition(value: Any, where: str) -> Any:
    return value.text


def _write_trigger(value: Any, where: str) -> Any:
    return value.value


def _write_exceptions(value: Any, where: str) -> Any:
    import builtins

    names: list[str] = []
    for exc in value:
        name: str = exc.__name__
        names.append(name if getattr(builtins, name, None) is exc else write_ref(exc, where))
    return names


def _write_mapping(value: Any, where: str) -> Any:
    return dict(value)


def _one_pool(value: Any) -> bool:
    return len(value) == 1 and next(iter(value.values())) == 1


def _write_pool(value: Any, where: str) -> Any:
    return next(iter(value)) if _one_pool(value) else UNSET


def _write_pools(value: Any, where: str) -> Any:
    return UNSET if _one_pool(value) else dict(value)


def _at(writer: Writer, field: str) -> Writer:
    """``writer`` naming ``field`` after the step in its errors (``step 'a' rollback``)."""

    def write(value: Any, where: str) -> Any:
        return writer(value, f"{where} {field}")

    return write


# ----------------------------------------------------------------------------------------
# The fields every step has
# ----------------------------------------------------------------------------------------

_NAMES: dict[str, Any] = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
}

#: the fields every step has, in the order they are read (and written)
FIELDS: tuple[StepField, ...] = (
    StepField(
        "name",
        "name",
        {"type": "string", "minLength": 1},
        "Unique name of the step (at most 200 printable characters, no '/').",
    ),
    StepField(
        "description",
        "description",
        {"type": "string"},
        "What the step does, shown by pipectl graph and in stories.",
        _text,
    ),
    StepField(
        "depends_on",
        "depends_on",
        _NAMES,
        "The steps it runs after: a name or a list of names.",
        step_names,
        _write_names,
    ),
    StepField(
        "inputs",
        "inputs",
        {"type": "object", "additionalProperties": {"type": "string"}},
        "{parameter: source}: a step's name (its whole output), or a reference: "
        "steps.NAME.output.FIELD, params.NAME, or alternatives joined by '|' (the first whose "
        "step succeeded).",
        _inputs,
        _write_inputs,
    ),
    StepField(
        "when",
        "when",
        {"type": "string", "minLength": 1},
        "A condition: the step runs only when it holds, else it is SKIPPED. References "
        "(params.NAME, steps.NAME.output.FIELD, steps.NAME.status), literals, == != < <= > >= "
        "in, not in, and, or, not. Not Python: nothing is evaluated.",
        _condition,
        _write_condition,
    ),
    StepField(
        "retries",
        "retries",
        {"type": "integer", "minimum": 0},
        "How many times a failed attempt is tried again.",
        _integer,
    ),
    StepField(
        "retry_delay",
        "retry_delay",
        {"type": "number", "minimum": 0},
        "Seconds to wait before the first retry.",
        _number,
    ),
    StepField(
        "retry_backoff",
        "retry_backoff",
        {"type": "number", "minimum": 0},
        "What the delay is multiplied by after each retry.",
        _number,
    ),
    StepField(
        "backoff_cap",
        "retry_max_delay",
        {"type": "number", "minimum": 0},
        "The longest delay between two attempts, in seconds.",
        _number,
    ),
    StepField(
        "retry_jitter",
        "retry_jitter",
        {"type": "number", "minimum": 0, "maximum": 1},
        "The delay is cut by a random fraction of at most this (0 to 1).",
        _fraction,
    ),
    StepField(
        "retry_on",
        "retry_on",
        {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "Retry only on these exceptions: builtin exception names or module:Class.",
        _exception_types,
        _at(_write_exceptions, "retry_on"),
    ),
    StepField(
        "timeout",
        "timeout",
        {"type": ["number", "null"], "exclusiveMinimum": 0},
        "Seconds an attempt may take; a slower one is cancelled and counts as failed.",
        _timeout,
    ),
    StepField(
        "allow_failure",
        "allow_failure",
        {"type": "boolean"},
        "true: the step's failure does not fail the run nor skip its dependents.",
        _boolean,
    ),
    StepField(
        "store_output",
        "store_output",
        {"type": "boolean"},
        "false: the step's output is never written to the tracker's result store (its row and "
        "output summary are still recorded); a resume that needs the output runs the step "
        "again.",
        _boolean,
    ),
    StepField(
        "trigger",
        "trigger",
        {"enum": list(TRIGGERS)},
        "When the step runs once its dependencies ended: all succeeded (default), whatever they "
        "did, none failed (branches skipped by a condition are fine), or none failed and at "
        "least one succeeded.",
        _trigger,
        _write_trigger,
    ),
    StepField(
        "rollback",
        "rollback",
        {"type": "string", "pattern": REF_PATTERN},
        "A function (module:name) run with pipectl run --rollback when a later step fails.",
        read_ref,
        _at(write_ref, "rollback"),
    ),
    StepField(
        "resources",
        "resources",
        {
            "type": "object",
            "additionalProperties": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0},
                    {
                        "type": "string",
                        "pattern": r"^\s*[0-9]*\.?[0-9]+(e[0-9]+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$",
                    },
                ]
            },
        },
        "What the step needs of the machine it runs on, for executors that place steps "
        "(pipectl-dask: dask worker resources). A number, or a size such as 4GB.",
        _resources,
        _write_mapping,
    ),
    StepField(
        "cache",
        "cache",
        {
            "oneOf": [
                {"type": "boolean"},
                {
                    "type": "object",
                    "properties": {
                        "expires": {"type": ["string", "number"]},
                        "key": {"type": "string", "pattern": REF_PATTERN},
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "Take the step's output from an earlier run when its code, inputs and params are the "
        "same (true, or {expires: 1h, key: module:function}); pipectl run --no-cache or "
        "--refresh STEP run it anyway.",
        _cache,
        _write_cache,
    ),
    StepField(
        "pool",
        "pools",
        {"type": "string", "minLength": 1},
        "A resource pool of the pipeline (its pools:) the step takes while it runs, weight 1: "
        "never more steps in a pool at once than its size.",
        _pool,
        _write_pool,
    ),
    StepField(
        "pools",
        "pools",
        {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "Resource pools the step takes while it runs, with a weight each ({db: 1, api: 2}): "
        "all of them at once, or it waits (not with pool).",
        _pools,
        _write_pools,
    ),
    StepField(
        "map",
        "map",
        {"type": "string", "pattern": r"^[A-Za-z_]\w*$"},
        "Run the step once per item of the list one of its parameters receives from upstream "
        "(name the parameter): items NAME[0], NAME[1], ... each with its own attempts and "
        "status; the step's output is the list of their outputs, in order.",
        _map,
    ),
)

#: the fields that say what a step is, read by ``step_kwargs`` (with the step types' fields)
KIND_FIELDS: tuple[StepField, ...] = (
    StepField(
        "run",
        "func",
        {"type": "string", "pattern": REF_PATTERN},
        "A Python function or step class, module:name (sync or async).",
        read_ref,
        write_ref,
    ),
    StepField(
        "type",
        "step_type",
        {"type": "string"},
        "A step type registered by a plugin.",
    ),
    StepField(
        "options",
        "options",
        {"type": "object"},
        "Options of a plugin step type, or the config a step class (run: module:Class) is "
        "built with.",
        write=_write_mapping,
    ),
)


def type_fields() -> dict[str, tuple[StepField, ...]]:
    """The fields of each step type of :data:`TYPE_MODULES`, from its module's
    ``FILE_FIELDS``."""
    found: dict[str, tuple[StepField, ...]] = {}
    for step_type, module in TYPE_MODULES.items():
        found[step_type] = tuple(importlib.import_module(module).FILE_FIELDS)
    return found


def all_fields() -> tuple[StepField, ...]:
    """Every field a step may have: :data:`FIELDS`, :data:`KIND_FIELDS`, then each step
    type's."""
    return (*FIELDS, *KIND_FIELDS, *(f for fields in type_fields().values() for f in fields))


def step_schema() -> dict[str, Any]:
    """The JSON Schema of a step (``$defs.step`` of ``schema/pipeline.schema.json``)."""
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {f.name: {**f.schema, "description": f.description} for f in all_fields()},
    }

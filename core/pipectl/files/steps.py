"""A pipeline file's steps: each step's mapping checked field by field (``file:line: field``
in every error) and turned into the arguments of a :class:`~pipectl.model.StepSpec`: a
function or step class imported by ``module:function``, a data step's options, a sub-pipeline
(built by the caller), a plugin step type's options."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipectl.files.errors import MAX_NAME, PipelineFileError, hint, kind
from pipectl.files.loader import Map

__all__ = ["DATA_FIELDS", "STEP_FIELDS", "check_name", "number", "step_names", "step_kwargs"]

DATA_FIELDS = {
    "extract",
    "transform",
    "load",
    "batch_size",
    "buffer_size",
    "on_bad_record",
    "dead_letter",
    "max_bad_records",
}
STEP_FIELDS = {
    "name",
    "run",
    "type",
    "depends_on",
    "inputs",
    "retries",
    "retry_delay",
    "retry_backoff",
    "backoff_cap",
    "retry_jitter",
    "retry_on",
    "timeout",
    "allow_failure",
    "trigger",
    "rollback",
    "options",
    "description",
    "when",
    "pipeline",
    "params",
    "resources",
    "store_output",
    *DATA_FIELDS,
}
_TRIGGERS = ("all_success", "all_done", "none_failed", "one_success")


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


def _import_ref(path: Path, line: int, field: str, ref: Any) -> Any:
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
            exc = _import_ref(path, line, field, name)
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

    kwargs: dict[str, Any] = {}
    if "depends_on" in raw:
        kwargs["depends_on"] = step_names(
            path, at("depends_on"), f"{where}.depends_on", raw["depends_on"]
        )
    if "inputs" in raw:
        from pipectl.expr import parse_input

        inputs = raw["inputs"]
        if not isinstance(inputs, dict):
            raise PipelineFileError(
                path,
                at("inputs"),
                f"{where}.inputs",
                "expected {parameter: step name or reference such as steps.NAME.output.FIELD}",
            )
        lines = getattr(inputs, "lines", {})
        kwargs["inputs"] = {
            k: _expression(path, lines.get(k, at("inputs")), f"{where}.inputs.{k}", v, parse_input)
            for k, v in inputs.items()
        }
    if "when" in raw:
        from pipectl.expr import parse

        kwargs["when"] = _expression(path, at("when"), f"{where}.when", raw["when"], parse)
    if "retries" in raw:
        kwargs["retries"] = number(
            path, at("retries"), f"{where}.retries", raw["retries"], integer=True
        )
    for key, target in (
        ("retry_delay", "retry_delay"),
        ("retry_backoff", "retry_backoff"),
        ("backoff_cap", "retry_max_delay"),
    ):
        if key in raw:
            kwargs[target] = number(path, at(key), f"{where}.{key}", raw[key])
    if "retry_jitter" in raw:
        jitter = number(path, at("retry_jitter"), f"{where}.retry_jitter", raw["retry_jitter"])
        if jitter > 1:
            raise PipelineFileError(
                path,
                at("retry_jitter"),
                f"{where}.retry_jitter",
                f"a fraction between 0 and 1, got {jitter!r}",
            )
        kwargs["retry_jitter"] = jitter
    if "retry_on" in raw:
        kwargs["retry_on"] = _exception_types(
            path, at("retry_on"), f"{where}.retry_on", raw["retry_on"]
        )
    if "timeout" in raw and raw["timeout"] is not None:
        kwargs["timeout"] = number(
            path, at("timeout"), f"{where}.timeout", raw["timeout"], strict=True
        )
    if "allow_failure" in raw:
        if not isinstance(raw["allow_failure"], bool):
            raise PipelineFileError(
                path,
                at("allow_failure"),
                f"{where}.allow_failure",
                f"expected true or false, got {raw['allow_failure']!r}",
            )
        kwargs["allow_failure"] = raw["allow_failure"]
    if "store_output" in raw:
        if not isinstance(raw["store_output"], bool):
            raise PipelineFileError(
                path,
                at("store_output"),
                f"{where}.store_output",
                f"expected true or false, got {raw['store_output']!r}",
            )
        kwargs["store_output"] = raw["store_output"]
    if "trigger" in raw:
        if raw["trigger"] not in _TRIGGERS:
            raise PipelineFileError(
                path,
                at("trigger"),
                f"{where}.trigger",
                f"one of {', '.join(_TRIGGERS)}, got {raw['trigger']!r}"
                f"{hint(str(raw['trigger']), _TRIGGERS)}",
            )
        kwargs["trigger"] = raw["trigger"]
    if "rollback" in raw:
        kwargs["rollback"] = _import_ref(path, at("rollback"), f"{where}.rollback", raw["rollback"])
    if "description" in raw:
        kwargs["description"] = str(raw["description"])
    if raw.get("resources") is not None:
        from pipectl.model import parse_resources

        resources = raw["resources"]
        if not isinstance(resources, dict):
            raise PipelineFileError(
                path,
                at("resources"),
                f"{where}.resources",
                "expected a mapping of resource name to amount, such as {GPU: 1, memory: 4GB}",
            )
        lines = getattr(resources, "lines", {})
        for resource, amount in resources.items():
            try:
                parse_resources({resource: amount})
            except (TypeError, ValueError) as exc:
                raise PipelineFileError(
                    path,
                    lines.get(resource, at("resources")),
                    f"{where}.resources.{resource}",
                    str(exc).partition(": ")[2] or str(exc),
                ) from None
        kwargs["resources"] = dict(resources)
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
        kwargs["func"] = _import_ref(path, at("run"), f"{where}.run", raw["run"])
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
        target = raw["pipeline"]
        if not isinstance(target, str) or not target:
            raise PipelineFileError(
                path,
                at("pipeline"),
                f"{where}.pipeline",
                f"expected the name of a pipeline of this file, got {kind(target)}",
            )
        overrides = raw.get("params") or {}
        if not isinstance(overrides, dict):
            raise PipelineFileError(
                path,
                at("params"),
                f"{where}.params",
                f"expected {{param: value}}, got {kind(overrides)}",
            )
        if subpipeline is None:
            raise PipelineFileError(
                path,
                at("pipeline"),
                f"{where}.pipeline",
                "a sub-pipeline is another pipeline of the same file: "
                "write the file with several pipelines (pipelines: "
                "[- name: ..., steps: [...]])",
            )
        child = subpipeline(target, dict(overrides), at("pipeline"), f"{where}.pipeline")
        kwargs["step_type"] = "pipeline"
        kwargs["options"] = {"pipeline": child, "params": {}}
    elif data:
        for required in ("extract", "load"):
            if required not in raw:
                raise PipelineFileError(
                    path, line, f"{where}.{required}", f"a data step needs '{required}'"
                )
        options = {"extract": raw["extract"], "load": raw["load"]}
        if "transform" in raw:
            transforms = raw["transform"]
            transforms = [transforms] if isinstance(transforms, (str, dict)) else transforms
            options["transforms"] = [
                _import_ref(path, at("transform"), f"{where}.transform", t)
                if isinstance(t, str)
                else t
                for t in transforms
            ]
        for key in ("batch_size", "buffer_size", "on_bad_record", "dead_letter", "max_bad_records"):
            if key in raw:
                options[key] = raw[key]
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

"""The step type ``data``: an extractor streamed into outputs (transforms between them),
registered by the built-in plugin ``data`` (:mod:`pipectl.builtins.data_step`) and imported when
a pipeline is planned. The streaming itself is :func:`pipectl.data.run_data_step`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipectl.data_options import BAD_RECORD_MODES, DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_SIZE
from pipectl.files.fields import UNSET, StepField, read_ref

if TYPE_CHECKING:
    from pipectl.data import Transform
    from pipectl.model import StepSpec
    from pipectl.options import Problem
    from pipectl.registry import Registries

__all__ = [
    "DATA_STEP_OPTIONS",
    "FILE_FIELDS",
    "check_component",
    "data_step",
    "import_ref",
    "make_transform",
    "shared_files",
]


def _read_transforms(path: Path, line: int, field: str, value: Any) -> Any:
    """A pipeline file's ``transform``: one or a list, each ``module:function`` (imported
    now) or ``{function: ..., per: record|batch}``."""
    transforms = [value] if isinstance(value, (str, dict)) else value
    return [read_ref(path, line, field, t) if isinstance(t, str) else t for t in transforms]


def _write_transforms(value: Any, where: str) -> Any:
    from pipectl.files.writer import reference

    transforms: list[Any] = []
    for t in value or ():
        if isinstance(t, Mapping):  # {function: "module:function", per: ...} as read
            transforms.append(dict(t))
            continue
        func, per = (t.func, t.per) if hasattr(t, "per") else (t, "record")
        ref = t if isinstance(t, str) else reference(func, f"{where} transform")
        transforms.append(ref if per == "record" else {"function": ref, "per": per})
    return transforms or UNSET


def _write_components(key: str) -> Callable[[Any, str], Any]:
    def write(value: Any, where: str) -> Any:
        values = value if key == "load" else [value]
        if not all(isinstance(v, Mapping) for v in values):
            raise ValueError(
                f"{where}: {key} must be given as {{type: ..., ...}} "
                "mappings to be written to a pipeline file"
            )
        return [dict(v) for v in values] if key == "load" else dict(value)

    return write


#: the fields of a data step in a pipeline file (any of them makes a step a data step), each
#: setting the option of the same name (``transform``: ``transforms``), in the order they are
#: read and written (:mod:`pipectl.files.fields`)
FILE_FIELDS = (
    StepField(
        "extract",
        "extract",
        {"$ref": "#/$defs/component"},
        "The extractor: {type: NAME, ...its options} (docs/components.md).",
        write=_write_components("extract"),
        required=True,
    ),
    StepField(
        "load",
        "load",
        {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/component"}},
        "The outputs, each {type: NAME, ...its options}; each gets every record.",
        write=_write_components("load"),
        required=True,
    ),
    StepField(
        "transform",
        "transforms",
        {
            "oneOf": [
                {"$ref": "#/$defs/transform"},
                {"type": "array", "items": {"$ref": "#/$defs/transform"}},
            ]
        },
        "Functions applied between them: module:function (per record), or {function: "
        "module:function, per: batch}; one or a list.",
        _read_transforms,
        _write_transforms,
    ),
    StepField(
        "batch_size",
        "batch_size",
        {"type": "integer", "minimum": 1},
        f"Records per batch (default {DEFAULT_BATCH_SIZE:,}).",
    ),
    StepField(
        "buffer_size",
        "buffer_size",
        {"type": "integer", "minimum": 1},
        f"Batches each output's buffer holds before the extractor waits (default "
        f"{DEFAULT_BUFFER_SIZE}).",
    ),
    StepField(
        "on_bad_record",
        "on_bad_record",
        {"enum": list(BAD_RECORD_MODES)},
        "What a record an output or a transform rejects does: fail the step (default), be "
        "skipped, or go to the dead letter file.",
        default="fail",
    ),
    StepField(
        "dead_letter",
        "dead_letter",
        {"type": "string"},
        "The JSON Lines file bad records go to with on_bad_record: dead_letter (default: "
        "dead_letters/STEP.jsonl under the project's .pipectl/).",
    ),
    StepField(
        "max_bad_records",
        "max_bad_records",
        {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"},
            ]
        },
        "The most bad records the step may set aside: a count (100) or a percentage of the "
        "source's records ('5%'). More fail the step and commit nothing; rejecting every record "
        "always fails.",
    ),
)

#: the options a data step takes
DATA_STEP_OPTIONS = frozenset(f.sets for f in FILE_FIELDS)


def import_ref(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (``attribute`` may be dotted)."""
    import importlib

    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"{ref!r} is not a 'module:function' reference")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def make_transform(spec: Any) -> Transform:
    """A :class:`pipectl.data.Transform` from a callable, a ``"module:function"`` reference or a
    mapping (``function``, ``per``)."""
    from pipectl.data import Transform

    if isinstance(spec, Transform):
        return spec
    if callable(spec):
        return Transform(spec)
    if isinstance(spec, str):
        return Transform(import_ref(spec))
    if isinstance(spec, dict):
        func = spec.get("function")
        func = import_ref(func) if isinstance(func, str) else func
        if not callable(func):
            raise ValueError(
                f"a transform needs a 'function' (callable or 'module:function'), got {spec!r}"
            )
        return Transform(func, per=spec.get("per", "record"))
    raise TypeError(f"a transform is a callable, 'module:function' or a mapping, got {spec!r}")


def check_component(
    kind: str, field: str, spec: Any, components: Registries | None
) -> list[Problem]:
    """The problems of one component given as a mapping: its ``type`` (registered?) and its
    options against the schema the component declared (:mod:`pipectl.options`)."""
    from pipectl.errors import UnknownComponentError
    from pipectl.options import Problem, schema_of

    if not isinstance(spec, dict):
        return []  # an object built in Python: nothing to check here
    if "type" not in spec:
        return [
            Problem(
                f"{field}.type",
                f"a {kind[:-1]} given as a mapping needs a 'type'",
                f"the keys given: {', '.join(map(str, spec)) or 'none'}",
            )
        ]
    if components is None:
        return []
    try:
        component = components.of(kind).get(spec["type"])
    except UnknownComponentError as exc:
        return [Problem(f"{field}.type", str(exc))]
    try:
        schema = schema_of(component)
    except Exception as exc:  # noqa: BLE001 - the plugin's declaration is broken
        return [
            Problem(
                field,
                f"{kind[:-1]} {spec['type']!r} (plugin {component.plugin!r}) "
                f"declares its options as {component.options!r}, which cannot be "
                f"read: {type(exc).__name__}: {exc}",
            )
        ]
    if schema is None:
        return []
    options = {k: v for k, v in spec.items() if k not in ("type", "name")}  # name: the step's
    if kind == "extractors" and "batch_size" not in schema.options:
        options.pop("batch_size", None)  # the data step's batch size, for extractors taking it
    what = f"{kind[:-1]} {spec['type']!r} (plugin {component.plugin!r})"
    return [
        Problem(f"{field}.{p.field}" if p.field else field, f"{what}: {p.message}", p.hint)
        for p in schema.check(options)
    ]


def shared_files(load: list[Any], components: Registries | None) -> list[Problem]:
    """Outputs of one step that would write the same place: the same file (and, for outputs
    with a ``table``, the same table of it) -- each would replace or interleave with the other's
    load. Outputs on one SQLite file with different tables are fine."""
    from pipectl.options import Problem, schema_of

    seen: dict[tuple[Any, ...], int] = {}
    problems = []
    for i, spec in enumerate(load):
        if not isinstance(spec, dict) or components is None:
            continue
        name: Any = spec.get("type")  # missing: get() fails, check_component reports it
        try:
            schema = schema_of(components.of("outputs").get(name))
        except Exception:  # noqa: BLE001 - reported by check_component
            continue
        if schema is None:
            continue
        for option in schema.path_options:
            where = spec.get(option)
            if not isinstance(where, str) or where in ("", "-"):
                continue
            import os

            key = (os.path.normcase(os.path.abspath(where)), spec.get("table"))
            if key in seen:
                what = f"table {spec['table']!r} of " if spec.get("table") is not None else ""
                problems.append(
                    Problem(
                        f"load[{i}].{option}",
                        f"writes {what}{where!r}, as load[{seen[key]}] does",
                        "two outputs of one step cannot share a file (or a table): give each its "
                        "own",
                    )
                )
            else:
                seen[key] = i
    return problems


def data_step(step: StepSpec, components: Registries | None = None) -> Callable[..., Any]:
    """Validate a data step's options and return the coroutine function that runs it. Every
    problem is reported at once (a :class:`pipectl.options.ProblemsError`)."""
    from pipectl.data_options import parse_max_bad_records
    from pipectl.options import Problem, ProblemsError

    problems: list[Any] = []
    options = dict(step.options)
    for name in sorted(set(options) - DATA_STEP_OPTIONS):
        import difflib

        close = difflib.get_close_matches(name, sorted(DATA_STEP_OPTIONS), n=1)
        problems.append(
            Problem(
                name,
                "unknown data step option",
                (f"did you mean {close[0]!r}? " if close else "")
                + f"(known: {', '.join(sorted(DATA_STEP_OPTIONS))})",
            )
        )
    extract = options.get("extract")
    if extract is None:
        problems.append(Problem("extract", "a data step needs 'extract' (an extractor)"))
    load = options.get("load")
    if not load:
        problems.append(Problem("load", "a data step needs 'load': one or more outputs"))
    load = list(load) if isinstance(load, (list, tuple)) else [load] if load else []
    mode = options.get("on_bad_record", "fail")
    if mode not in BAD_RECORD_MODES:
        problems.append(
            Problem("on_bad_record", f"must be one of {', '.join(BAD_RECORD_MODES)}, got {mode!r}")
        )
    transforms = []
    for i, spec in enumerate(options.get("transforms") or ()):
        try:
            transforms.append(make_transform(spec))
        except Exception as exc:  # noqa: BLE001 - an import or a shape: the step's problem
            problems.append(Problem(f"transforms[{i}]", str(exc)))
    sizes = {}
    for key, default in (("batch_size", DEFAULT_BATCH_SIZE), ("buffer_size", DEFAULT_BUFFER_SIZE)):
        value = options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(Problem(key, f"must be a whole number, at least 1, got {value!r}"))
            value = default
        sizes[key] = value
    batch_size, buffer_size = sizes["batch_size"], sizes["buffer_size"]
    dead_letter = options.get("dead_letter")
    max_bad = options.get("max_bad_records")
    try:
        parse_max_bad_records(max_bad)  # a bad value is an error of the file, before a run
    except (TypeError, ValueError) as exc:
        problems.append(Problem("max_bad_records", str(exc)))
    if extract is not None:
        problems.extend(check_component("extractors", "extract", extract, components))
    for i, spec in enumerate(load):
        problems.extend(check_component("outputs", f"load[{i}]", spec, components))
    problems.extend(shared_files(load, components))
    if problems:
        raise ProblemsError(problems)
    takes_batch_size = True
    if isinstance(extract, dict) and components is not None:
        from pipectl.options import schema_of

        schema = schema_of(components.of("extractors").get(extract["type"]))
        takes_batch_size = schema is None or schema.open or "batch_size" in schema.options

    async def run_data(ctx: Any) -> Any:
        from pipectl.data import output_name, resolve, run_data_step

        registries = ctx.components
        extract_spec = extract
        if (
            isinstance(extract_spec, dict) and "batch_size" not in extract_spec and takes_batch_size
        ):  # only to an extractor whose options have it
            extract_spec = {**extract_spec, "batch_size": batch_size}
        extractor = resolve("extractors", extract_spec, registries)
        previous = ctx.state.get("extractor_state", {}).get(step.name)
        outputs = []
        for i, spec in enumerate(load):
            component = resolve("outputs", spec, registries)
            outputs.append((output_name(spec, component, i), component))
        committed = ctx.state.setdefault(("data-committed", step.name), set())
        result = await run_data_step(
            step=step.name,
            extractor=extractor,
            outputs=outputs,
            transforms=transforms,
            params=ctx.params,
            on_bad_record=mode,
            dead_letter=dead_letter,
            buffer_size=buffer_size,
            committed=committed,
            logger=ctx.logger,
            max_bad_records=max_bad,
            pipeline=ctx.pipeline_id,
            run_id=ctx.run_id,
            load_run=ctx.state.get("load_run"),
            state=previous,
            state_explicit=bool(ctx.state.get("extractor_state_explicit")),
            new_extractor=lambda: resolve("extractors", extract_spec, registries),
        )
        if result.state is not None:
            ctx.state.setdefault("extractor_state", {})[step.name] = result.state
        return result

    return run_data

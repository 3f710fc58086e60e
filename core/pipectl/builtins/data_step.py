"""Built-in plugin ``data``: the step type that streams an extractor into outputs."""

from __future__ import annotations

from typing import Any, Callable

from pipectl.hookspecs import hookimpl

_OPTIONS = {"extract", "transforms", "load", "batch_size", "buffer_size", "on_bad_record",
            "dead_letter", "max_bad_records"}


def _import(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"{ref!r} is not a 'module:function' reference")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _transform(spec: Any) -> Any:
    from pipectl.data import Transform

    if isinstance(spec, Transform):
        return spec
    if callable(spec):
        return Transform(spec)
    if isinstance(spec, str):
        return Transform(_import(spec))
    if isinstance(spec, dict):
        func = spec.get("function")
        func = _import(func) if isinstance(func, str) else func
        if not callable(func):
            raise ValueError(f"a transform needs a 'function' (callable or 'module:function'), "
                             f"got {spec!r}")
        return Transform(func, per=spec.get("per", "record"))
    raise TypeError(f"a transform is a callable, 'module:function' or a mapping, got {spec!r}")


def _check_named(kind: str, spec: Any, components: Any) -> None:
    """A component named in a mapping must be registered (checked before anything runs)."""
    if isinstance(spec, dict) and "type" in spec:
        components.of(kind).get(spec["type"])  # raises UnknownComponentError with suggestions
    elif isinstance(spec, dict):
        raise ValueError(f"a {kind[:-1]} given as a mapping needs a 'type' key, got keys "
                         f"{sorted(spec)}")


def data_step(step: Any, components: Any = None) -> Callable[..., Any]:
    """Validate a data step's options and return the coroutine function that runs it."""
    from pipectl.data import (
        BAD_RECORD_MODES,
        DEFAULT_BATCH_SIZE,
        DEFAULT_BUFFER_SIZE,
        parse_max_bad_records,
    )

    options = dict(step.options)
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"unknown data step option(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(_OPTIONS))}")
    extract = options.get("extract")
    if extract is None:
        raise ValueError("a data step needs 'extract' (an extractor)")
    load = options.get("load")
    if not load:
        raise ValueError("a data step needs 'load': one or more outputs")
    load = list(load) if isinstance(load, (list, tuple)) else [load]
    mode = options.get("on_bad_record", "fail")
    if mode not in BAD_RECORD_MODES:
        raise ValueError(f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}, got {mode!r}")
    transforms = [_transform(t) for t in options.get("transforms") or ()]
    batch_size = int(options.get("batch_size", DEFAULT_BATCH_SIZE))
    buffer_size = int(options.get("buffer_size", DEFAULT_BUFFER_SIZE))
    if batch_size < 1 or buffer_size < 1:
        raise ValueError("batch_size and buffer_size must be at least 1")
    dead_letter = options.get("dead_letter")
    max_bad = options.get("max_bad_records")
    parse_max_bad_records(max_bad)  # a bad value is an error of the file, before anything runs
    if components is not None:
        _check_named("extractors", extract, components)
        for spec in load:
            _check_named("outputs", spec, components)

    async def run_data(ctx: Any) -> Any:
        from pipectl.data import output_name, resolve, run_data_step

        registries = ctx.components
        extract_spec = extract
        if isinstance(extract_spec, dict) and "batch_size" not in extract_spec:
            extract_spec = {**extract_spec, "batch_size": batch_size}
        extractor = resolve("extractors", extract_spec, registries)
        previous = ctx.state.get("extractor_state", {}).get(step.name)
        outputs = []
        for i, spec in enumerate(load):
            component = resolve("outputs", spec, registries)
            outputs.append((output_name(spec, component, i), component))
        committed = ctx.state.setdefault(("data-committed", step.name), set())
        result = await run_data_step(
            step=step.name, extractor=extractor, outputs=outputs, transforms=transforms,
            params=ctx.params, on_bad_record=mode, dead_letter=dead_letter,
            buffer_size=buffer_size, committed=committed, logger=ctx.logger,
            max_bad_records=max_bad, pipeline=ctx.pipeline_id, run_id=ctx.run_id,
            load_run=ctx.state.get("load_run"), state=previous,
            state_explicit=bool(ctx.state.get("extractor_state_explicit")),
            new_extractor=lambda: resolve("extractors", extract_spec, registries),
        )
        if result.state is not None:
            ctx.state.setdefault("extractor_state", {})[step.name] = result.state
        return result

    return run_data


@hookimpl(trylast=True)
def pipectl_register_step_types(register):
    register("data", data_step)

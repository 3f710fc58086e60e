"""Writing a pipeline as a pipeline file (``Pipeline.to_yaml``): its steps by ``module:name``
references, its params' declarations, secrets written back as ``${params.NAME}``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pipectl.files.params import ParamSpec

if TYPE_CHECKING:
    from pipectl.model import PipelineSpec

__all__ = ["Definition", "dump_pipeline", "reference", "to_yaml"]


class Definition(Protocol):
    """What is written of a pipeline (a :class:`~pipectl.Pipeline`)."""

    @property
    def spec(self) -> PipelineSpec: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def param_specs(self) -> Mapping[str, ParamSpec]: ...


def to_yaml(pipe: Definition, path: str | os.PathLike[str] | None = None) -> str:
    """The pipeline file (YAML) of ``pipe``, written to ``path`` when given. Every step
    function must be importable by name (``module:function``)."""
    import yaml

    text: str = yaml.safe_dump(dump_pipeline(pipe), sort_keys=False, allow_unicode=True)
    if path is not None:
        from pathlib import Path

        Path(path).write_text(text, encoding="utf-8")
    return text


def reference(obj: Any, what: str) -> str:
    """``module:qualname`` for ``obj``, checked to import back to the same object."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(
            f"{what}: {obj!r} cannot be written to a pipeline file; define it at "
            "the top level of a module, so that 'module:function' finds it"
        )
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj:
        raise ValueError(f"{what}: {module}:{qualname} does not import back to {obj!r}")
    return f"{module}:{qualname}"


def dump_pipeline(pipe: Definition) -> dict[str, Any]:
    """The pipeline file (as data) of ``pipe``; every callable must be importable by name."""
    import builtins

    from pipectl.model import StepSpec

    spec = pipe.spec
    defaults = StepSpec("x")
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    params = _dump_params(pipe)
    if params:
        out["params"] = params
    for key, default in (
        ("max_concurrent", None),
        ("fail_fast", False),
        ("executor", "local"),
        ("tracker", None),
    ):
        if getattr(spec, key) != default:
            out[key] = getattr(spec, key)
    steps = []
    for step in spec.steps:
        where = f"step {step.name!r}"
        item: dict[str, Any] = {"name": step.name}
        if step.description:
            item["description"] = step.description
        if step.step_type == "python":
            item["run"] = reference(step.func, where)
            if step.options:
                item["options"] = dict(step.options)
        elif step.step_type == "pipeline":
            raise ValueError(
                f"{where}: a sub-pipeline step cannot be written to a file of one "
                "pipeline; write a file of several pipelines by hand"
            )
        elif step.step_type == "data":
            options = dict(step.options)
            for key in ("extract", "load"):
                values = options[key] if key == "load" else [options[key]]
                if not all(isinstance(v, Mapping) for v in values):
                    raise ValueError(
                        f"{where}: {key} must be given as {{type: ..., ...}} "
                        "mappings to be written to a pipeline file"
                    )
            item["extract"] = dict(options["extract"])
            item["load"] = [dict(v) for v in options["load"]]
            transforms: list[Any] = []
            for t in options.get("transforms") or ():
                if isinstance(t, Mapping):  # {function: "module:function", per: ...} as read
                    transforms.append(dict(t))
                    continue
                func, per = (t.func, t.per) if hasattr(t, "per") else (t, "record")
                ref = t if isinstance(t, str) else reference(func, f"{where} transform")
                transforms.append(ref if per == "record" else {"function": ref, "per": per})
            if transforms:
                item["transform"] = transforms
            for key in (
                "batch_size",
                "buffer_size",
                "on_bad_record",
                "dead_letter",
                "max_bad_records",
            ):
                if key in options and not (key == "on_bad_record" and options[key] == "fail"):
                    item[key] = options[key]
        else:
            item["type"] = step.step_type
            if step.options:
                item["options"] = dict(step.options)
        if step.depends_on:
            item["depends_on"] = list(step.depends_on)
        if step.inputs:
            item["inputs"] = {
                k: v if isinstance(v, str) else v.text for k, v in step.inputs.items()
            }
        if step.when is not None:
            item["when"] = step.when.text
        for key, target in (
            ("retries", "retries"),
            ("retry_delay", "retry_delay"),
            ("retry_backoff", "retry_backoff"),
            ("retry_max_delay", "backoff_cap"),
            ("retry_jitter", "retry_jitter"),
            ("timeout", "timeout"),
            ("allow_failure", "allow_failure"),
        ):
            if getattr(step, key) != getattr(defaults, key):
                item[target] = getattr(step, key)
        if step.trigger != defaults.trigger:
            item["trigger"] = step.trigger.value
        if step.retry_on:
            item["retry_on"] = [
                e.__name__
                if getattr(builtins, e.__name__, None) is e
                else reference(e, f"{where} retry_on")
                for e in step.retry_on
            ]
        if step.rollback is not None:
            item["rollback"] = reference(step.rollback, f"{where} rollback")
        if step.resources:
            item["resources"] = dict(step.resources)
        if not step.store_output:
            item["store_output"] = False
        steps.append(item)
    out["steps"] = _secrets_as_references(steps, pipe)
    written: dict[str, Any] = _plain(out)
    return written


def _declarations(pipe: Definition) -> dict[str, ParamSpec]:
    """The params of ``pipe``: those declared (a file's ``params:``, ``Pipeline.param``), then
    those only set in ``pipe.params``, typed by their value as ``Pipeline.param`` types them."""
    declared = dict(getattr(pipe, "param_specs", None) or {})
    for name, value in (getattr(pipe, "params", None) or {}).items():
        if name not in declared:
            type_name = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(
                type(value), "json"
            )
            declared[name] = ParamSpec(name, type_name, value, False, False, "")
    return declared


def _dump_params(pipe: Definition) -> dict[str, Any]:
    """The ``params:`` of the file written for ``pipe``: each param's type, default (also a
    null one: without it, loading the file back would make the param required), required,
    secret and description, so that the file loads back with the same params. A secret's value
    is never written: a secret with a value as its default is written as required (give it
    again); one whose default reads the environment (``${env.NAME}``) keeps that default."""
    out = {}
    for name, p in _declarations(pipe).items():
        decl: dict[str, Any] = {"type": p.type}
        secret_value = p.secret and p.default is not None and not p.from_env
        if p.required or secret_value:
            decl["required"] = True
        else:
            decl["default"] = p.default
        if p.secret:
            decl["secret"] = True
        if p.description:
            decl["description"] = p.description
        out[name] = decl
    return out


def _secrets_as_references(value: Any, pipe: Definition) -> Any:
    """``value`` (the steps written for ``pipe``) with the value of each secret param in its
    strings (a file's ``${params.token}`` was filled in when the file was loaded) written back
    as ``${params.NAME}``, so that the file never holds a secret and loads back the same."""
    params = getattr(pipe, "params", None) or {}
    secrets = sorted(
        (
            (str(params[n]), n)
            for n, p in _declarations(pipe).items()
            if p.secret and params.get(n) is not None and len(str(params[n])) >= 3
        ),
        key=lambda item: len(item[0]),
        reverse=True,
    )
    if not secrets:
        return value

    def swap(item: Any) -> Any:
        if isinstance(item, str):
            for secret, name in secrets:
                if secret in item:
                    item = item.replace(secret, f"${{params.{name}}}")
            return item
        if isinstance(item, dict):
            return {k: swap(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [swap(v) for v in item]
        return item

    return swap(value)


def _plain(value: Any) -> Any:
    """``value`` with the loader's mapping and list types (which carry line numbers) turned into
    plain ones, which ``yaml.safe_dump`` writes."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""Writing a pipeline as a pipeline file (``Pipeline.to_yaml``): its steps by ``module:name``
references, its params' declarations, secrets written back as ``${params.NAME}``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pipectl.files.fields import FIELDS, KIND_FIELDS, UNSET, StepField
from pipectl.files.params import ParamSpec

if TYPE_CHECKING:
    from pipectl.model import PipelineSpec, StepSpec

_KIND = {f.name: f for f in KIND_FIELDS}

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
        ("pools", {}),
    ):
        if getattr(spec, key) != default:
            out[key] = getattr(spec, key)
    steps = [_dump_step(step, defaults) for step in spec.steps]
    connection_secrets = getattr(pipe, "file_secrets", None)
    if connection_secrets:  # a connection's password, token or header: its ${env.NAME}, or ***
        from pipectl.files.connections import masked

        steps = masked(steps, connection_secrets, written=True)
    out["steps"] = _secrets_as_references(steps, pipe)
    written: dict[str, Any] = _plain(out)
    return written


def _written(field: StepField, value: Any, where: str) -> Any:
    return value if field.write is None else field.write(value, where)


def _dump_step(step: StepSpec, defaults: StepSpec) -> dict[str, Any]:
    """A step as its mapping in a file: the fields of :mod:`pipectl.files.fields` (those
    every step has, and its kind's) whose value is not the default."""
    from pipectl.files.steps import TYPE_FIELDS

    where = f"step {step.name!r}"
    kind: dict[str, Any] = {}
    if step.step_type == "python":
        kind["run"] = _written(_KIND["run"], step.func, where)
        if step.options:
            kind["options"] = _written(_KIND["options"], step.options, where)
    elif step.step_type in TYPE_FIELDS:
        if step.step_type == "pipeline":
            raise ValueError(
                f"{where}: a sub-pipeline step cannot be written to a file of one "
                "pipeline; write a file of several pipelines by hand"
            )
        options = step.options
        for field in TYPE_FIELDS[step.step_type]:
            if field.sets in options and options[field.sets] != field.default:
                written = _written(field, options[field.sets], where)
                if written is not UNSET:
                    kind[field.name] = written
    else:
        kind["type"] = step.step_type
        if step.options:
            kind["options"] = _written(_KIND["options"], step.options, where)
    head: dict[str, Any] = {}
    item: dict[str, Any] = {}
    for field in FIELDS:
        value = getattr(step, field.sets)
        if field.name == "name" or value != getattr(defaults, field.sets):
            written = _written(field, value, where)
            if written is not UNSET:
                (head if field.name in ("name", "description") else item)[field.name] = written
    return {**head, **kind, **item}


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

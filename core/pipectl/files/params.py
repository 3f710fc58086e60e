"""A pipeline file's params: their declarations (:class:`ParamSpec`, the types of
:data:`PARAM_TYPES`, ``path`` among them), ``-p key=value`` texts parsed by type, and the values
a run takes (declared defaults, ``${env.NAME}`` in them, a project's defaults, given values)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, hint, kind
from pipectl.files.interpolate import REF, interpolate
from pipectl.files.loader import Map, Seq
from pipectl.files.paths import absolute

__all__ = [
    "PARAM_TYPES",
    "ParamSpec",
    "check_param_value",
    "declared_params",
    "parse_param",
    "resolve_params",
]

PARAM_TYPES = ("str", "path", "int", "float", "bool", "list", "json")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def parse_param(type_name: str, text: str) -> Any:
    """A ``-p key=value`` string as the declared type; ValueError says what was expected."""
    if type_name in ("str", "path"):
        return text
    if type_name == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if type_name == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if type_name == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if type_name == "list":
        if text.lstrip().startswith("["):  # a JSON list: [1, 2] or [{"id": 1}]
            try:
                value = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ValueError(f"expected a JSON list ({_json_problem(exc)}) or a,b,c") from None
            if not isinstance(value, list):
                raise ValueError(f"expected a JSON list or a,b,c, got {text!r}")
            return value
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"expected JSON ({_json_problem(exc)})") from None


def _json_problem(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"


def check_param_value(type_name: str, value: Any) -> bool:
    """Whether ``value`` (given as data, not as text) is of the param type ``type_name``."""
    checks: dict[str, Callable[[Any], bool]] = {
        "str": lambda v: isinstance(v, str),
        "path": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "json": lambda v: True,
    }
    return checks[type_name](value)


class ParamSpec:
    """A declared param: its type (one of :data:`PARAM_TYPES`), default, whether it is required
    and secret, and its description."""

    __slots__ = ("default", "description", "line", "name", "required", "secret", "type")

    def __init__(
        self,
        name: str,
        type: str,
        default: Any,
        required: bool,
        secret: bool,
        description: str,
        line: int | None = None,
    ):
        self.name, self.type, self.default = name, type, default
        self.required, self.secret, self.description = required, secret, description
        self.line = line  # of the default, for the errors of a ``${env.NAME}`` in it

    @property
    def from_env(self) -> bool:
        """The default names environment variables (``${env.NAME}``), read when it is used."""
        return isinstance(self.default, str) and "${" in self.default


_PARAM_FIELDS = {"type", "default", "secret", "description", "required"}


def declared_params(path: Path, data: Map) -> dict[str, ParamSpec]:
    """The ``params:`` of ``data`` (a file, or its top with several pipelines), checked."""
    raw = data.get("params")
    if raw is None:
        return {}
    if not isinstance(raw, Map):  # (every mapping of the file is a Map)
        raise PipelineFileError(
            path,
            data.lines["params"],
            "params",
            f"expected a mapping of param names, got {kind(raw)}",
        )
    out = {}
    for name, decl in raw.items():
        line = raw.lines[name]
        if not isinstance(decl, Map):  # shorthand: name: default
            type_name = {bool: "bool", int: "int", float: "float", list: "list", Seq: "list"}.get(
                type(decl), "str" if isinstance(decl, str) else "json"
            )
            if isinstance(decl, str) and "${" in decl:
                _check_env_default(path, line, f"params.{name}", decl)
            out[name] = ParamSpec(name, type_name, decl, False, False, "", line)
            continue
        for key in decl:
            if key not in _PARAM_FIELDS:
                raise PipelineFileError(
                    path,
                    decl.lines[key],
                    f"params.{name}.{key}",
                    f"unknown field{hint(key, _PARAM_FIELDS)} (known: "
                    f"{', '.join(sorted(_PARAM_FIELDS))})",
                )
        type_name = decl.get("type", "str")
        if type_name not in PARAM_TYPES:
            raise PipelineFileError(
                path,
                decl.lines.get("type", line),
                f"params.{name}.type",
                f"unknown type {type_name!r}{hint(str(type_name), PARAM_TYPES)}"
                f" (one of {', '.join(PARAM_TYPES)})",
            )
        required = bool(decl.get("required", "default" not in decl))
        default = decl.get("default")
        default_line = decl.lines.get("default", line)
        if isinstance(default, str) and "${" in default:  # read from the environment when used
            _check_env_default(path, default_line, f"params.{name}.default", default)
        elif (
            "default" in decl and default is not None and not check_param_value(type_name, default)
        ):
            raise PipelineFileError(
                path, default_line, f"params.{name}.default", f"{default!r} is not a {type_name}"
            )
        out[name] = ParamSpec(
            name,
            type_name,
            default,
            required,
            bool(decl.get("secret")),
            str(decl.get("description", "")),
            default_line,
        )
    return out


def _check_env_default(path: Path, line: int, field: str, text: str) -> None:
    """A default may name environment variables (``${env.NAME}``, ``${env.NAME:-default}``),
    nothing else: params are not set yet when defaults are read."""
    for match in REF.finditer(text):
        if match.group(1) == "params":
            raise PipelineFileError(
                path,
                line,
                field,
                f"{match.group(0)}: a param's default "
                "can take ${env.NAME} or ${env.NAME:-default}, not another "
                "param",
            )
    if "${" in REF.sub("", text):
        raise PipelineFileError(
            path,
            line,
            field,
            f"{text!r}: only ${{env.NAME}} and "
            "${env.NAME:-default} can be substituted in a default",
        )


def _env_default(path: Path, spec: ParamSpec, env: Mapping[str, str]) -> Any:
    """The default of ``spec`` with its ``${env.NAME}`` read, typed by its declaration."""
    field = f"params.{spec.name}.default"
    text = spec.default
    for match in REF.finditer(text):
        if match.group(2) not in env and match.group(3) is None:
            shown = "" if spec.secret else f" (its default is {text!r})"
            unset, fallback = (
                f"${{env.{match.group(2)}}} is not set",
                f"or a default ${{env.{match.group(2)}:-...}}{shown}",
            )
            raise PipelineFileError(
                path,
                spec.line,
                field,
                f"{unset}: set it, pass params={{{spec.name!r}: ...}}, {fallback}",
                cli=(field, f"{unset}: set it, give -p {spec.name}=VALUE, {fallback}"),
            )
    value = interpolate(path, text, spec.line or 0, field, {}, env)
    if isinstance(value, str) and spec.type != "str":
        try:
            value = parse_param(spec.type, value)
        except ValueError as exc:
            what = "the value" if spec.secret else repr(value)
            raise PipelineFileError(
                path,
                spec.line,
                field,
                f"{what} read from the environment "
                f"is not a valid {spec.type}" + ("" if spec.secret else f": {exc}"),
            ) from None
    return value


def resolve_params(
    path: Path,
    declared: dict[str, ParamSpec],
    given: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    defaults_base: Path | None = None,
) -> dict[str, Any]:
    """Declared defaults (``${env.NAME}`` in them read from ``env``, the process's environment
    by default), overridden by ``defaults`` (a project's ``[params]``, for the params the file
    declares), overridden by ``given`` (strings from ``-p`` are parsed by type). A secret
    param's value is never part of an error message.

    A ``path`` param's relative value is made absolute: a declared default against the file's
    folder, a project default against ``defaults_base`` (the project's root), a given value
    against the working directory (where the command was typed)."""
    values = {}
    for name, value in given.items():
        spec = declared.get(name)
        # the field: how a Python caller gave it (params={...}), how the CLI did (-p NAME=...)
        given_as, cli_field = f"params[{name!r}]", f"-p {name}"
        if spec is None:
            problem = (
                f"the pipeline declares no param {name!r}{hint(name, declared)} "
                f"(declared: {', '.join(declared) or 'none'})"
            )
            raise PipelineFileError(path, None, given_as, problem, cli=(cli_field, problem))
        if isinstance(value, str) and spec.type != "str":
            try:
                value = parse_param(spec.type, value)
            except ValueError as exc:
                why = f"the value given is not a {spec.type}" if spec.secret else str(exc)
                problem = f"{why} (param {name!r} is declared as {spec.type})"
                raise PipelineFileError(
                    path, None, given_as, problem, cli=(cli_field, problem)
                ) from None
        values[name] = absolute(value, Path.cwd()) if spec.type == "path" else value
    for name, value in (defaults or {}).items():
        spec = declared.get(name)
        if spec is None or name in values:
            continue  # a project's params serve every pipeline: each takes those it declares
        if isinstance(value, str) and spec.type != "str":
            try:
                value = parse_param(spec.type, value)
            except ValueError as exc:
                raise PipelineFileError(
                    path,
                    None,
                    f"params.{name}",
                    f"the project's default is not a {spec.type}: {exc}",
                ) from None
        elif not check_param_value(spec.type, value):
            raise PipelineFileError(
                path,
                None,
                f"params.{name}",
                f"the project's default "
                f"{'(secret)' if spec.secret else repr(value)} is not a "
                f"{spec.type}",
            )
        values[name] = (
            absolute(value, defaults_base or path.parent) if spec.type == "path" else value
        )
    for name, spec in declared.items():
        if name not in values:
            if spec.required:
                raise PipelineFileError(
                    path,
                    None,
                    f"params.{name}",
                    f"is required: pass it in params={{{name!r}: ...}}",
                    cli=(f"params.{name}", f"is required: give it with -p {name}=VALUE"),
                )
            value = (
                _env_default(path, spec, os.environ if env is None else env)
                if spec.from_env
                else spec.default
            )
            values[name] = absolute(value, path.absolute().parent) if spec.type == "path" else value
    return values

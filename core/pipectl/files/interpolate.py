"""``${...}`` substitution in a pipeline file's values: ``${params.NAME}``, ``${env.NAME}`` and
``${env.NAME:-default}``, plain substitutions (nothing is evaluated). A value that is one
reference keeps the param's type; a reference inside a text is written into it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, hint
from pipectl.files.loader import Map

__all__ = ["REF", "interpolate", "relined"]

REF = re.compile(r"\$\{(params|env)\.([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(
    path: Path, value: Any, line: int, field: str, params: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    """``value`` (a file's value at ``line``, named ``field`` in errors) with its ``${...}``
    filled in from ``params`` and ``env``, at every depth; a value without any is itself."""
    if isinstance(value, str) and "${" in value:

        def lookup(match: re.Match[str]) -> Any:
            scope, name, default = match.groups()
            if scope == "params":
                if name not in params:
                    raise PipelineFileError(
                        path,
                        line,
                        field,
                        f"${{params.{name}}}: no such "
                        f"param{hint(name, params)}; declare it under params",
                    )
                return params[name]
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise PipelineFileError(
                path,
                line,
                field,
                f"${{env.{name}}} is not set; set it, or give a default: ${{env.{name}:-default}}",
            )

        whole = REF.fullmatch(value)
        if whole:
            return lookup(whole)  # keeps the param's type
        if "${" in REF.sub("", value):
            raise PipelineFileError(
                path,
                line,
                field,
                f"{value!r}: only ${{params.NAME}}, "
                "${env.NAME} and ${env.NAME:-default} can be substituted",
            )
        return REF.sub(lambda m: str(lookup(m)), value)
    if isinstance(value, dict):
        lines = getattr(value, "lines", {})
        # a plain value (most of a file) is itself: no call, no field name built for it
        return {
            k: v
            if v.__class__ in _PLAIN and (v.__class__ is not str or "${" not in v)
            else interpolate(path, v, lines.get(k, line), f"{field}.{k}", params, env)
            for k, v in value.items()
        }
    if isinstance(value, list):
        lines = getattr(value, "lines", [])
        return [
            v
            if v.__class__ in _PLAIN and (v.__class__ is not str or "${" not in v)
            else interpolate(
                path, v, lines[i] if i < len(lines) else line, f"{field}[{i}]", params, env
            )
            for i, v in enumerate(value)
        ]
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})  # values interpolate returns as given


def relined(original: Map, value: dict[str, Any]) -> Map:
    """``value`` (an interpolated copy of ``original``) with ``original``'s line numbers."""
    out = Map(
        {
            k: relined(original[k], v)
            if isinstance(original.get(k), Map) and isinstance(v, dict)
            else v
            for k, v in value.items()
        }
    )
    out.line, out.lines = original.line, original.lines
    return out

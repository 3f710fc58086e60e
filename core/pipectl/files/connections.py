"""A pipeline file's ``connections:``: named, typed connections (:mod:`pipectl.connections`)
declared once, at the top of the file, and named by components (``connection: NAME``).

:func:`read_connections` checks the declarations (every problem at once, each with file:line
and a hint) and builds each connection; :func:`apply_connections` gives a data step's
extractor and outputs what their connection gives them (``path``, ``dsn``, ``url`` and
``headers``...), so that the components never see ``connection``. The connections' secrets
(passwords, a DSN's password, tokens, header values, and what the environment filled into
them) are collected as :attr:`FileConnections.secrets`: a run masks them as it masks secret
params' values (``RunConfig.secret_values``), and a file written back refers to them.

Imported by the loader only for a file that declares connections or names one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, hint
from pipectl.files.interpolate import REF, interpolate
from pipectl.files.loader import Map, Seq
from pipectl.files.paths import absolute

__all__ = [
    "ConnectionProblems",
    "FileConnections",
    "apply_connections",
    "masked",
    "masked_options",
    "read_connections",
]

MIN_SECRET = 3  # shorter values are not masked (as secret params' are not)


class ConnectionProblems(PipelineFileError):
    """Every problem of a file's connections (``errors``: one :class:`PipelineFileError`
    each); its own text is the first's, with how many more there are."""

    def __init__(self, errors: list[PipelineFileError]):
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        super().__init__(first.path, first.line, first.field, first.message + more)
        self.errors = errors


class FileConnections:
    """The connections of a file: each by name (its type's name, the built connection, the
    line it is declared at), and the secrets of all of them (``secrets``: each secret value
    and how a file written back refers to it: its ``${env.NAME}`` reference, else ``***``)."""

    __slots__ = ("by_name", "secrets")

    def __init__(self) -> None:
        self.by_name: dict[str, tuple[str, Any, int]] = {}
        self.secrets: dict[str, str] = {}


def _what(value: Any) -> str:
    """What ``value`` is, never what it says (a connection's text may be a password)."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing" if value is None else f"a {type(value).__name__}"


def read_connections(
    path: Path,
    data: Map,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    plugin_manager: Any,
) -> FileConnections:
    """The ``connections:`` of ``data`` (a file's top), checked and built; raises
    :class:`ConnectionProblems` with every problem found."""
    from pipectl.connections import connection_types
    from pipectl.options import Schema

    out = FileConnections()
    raw = data.get("connections")
    if raw is None:
        return out
    if not isinstance(raw, Map):
        raise PipelineFileError(
            path,
            data.lines["connections"],
            "connections",
            f"expected a mapping of connection names, got {_what(raw)} "
            "(connections: {warehouse: {type: postgres, host: ..., ...}})",
        )
    types = connection_types(plugin_manager)
    known = ", ".join(sorted(types))
    errors: list[PipelineFileError] = []
    folder = path.absolute().parent
    for name, decl in raw.items():
        line = raw.lines[name]
        where = f"connections.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            errors.append(
                PipelineFileError(
                    path,
                    line,
                    "connections",
                    f"{str(name)[:40]!r}: a connection's name is a word of letters, digits "
                    "and '_' (components name it: connection: NAME)",
                )
            )
            continue
        if not isinstance(decl, Map):
            errors.append(
                PipelineFileError(
                    path,
                    line,
                    where,
                    f"a connection is a mapping with its type and fields, got {_what(decl)} "
                    f"(write {name}: {{type: TYPE, ...}}; types: {known})",
                )
            )
            continue
        type_name = decl.get("type")
        if type_name is None:
            errors.append(
                PipelineFileError(
                    path, line, f"{where}.type", f"a connection needs a type (one of {known})"
                )
            )
            continue
        if not isinstance(type_name, str) or type_name not in types:
            shown = repr(type_name) if isinstance(type_name, str) else _what(type_name)
            errors.append(
                PipelineFileError(
                    path,
                    decl.lines.get("type", line),
                    f"{where}.type",
                    f"unknown connection type {shown[:60]}"
                    f"{hint(str(type_name), types)} (known: {known})",
                )
            )
            continue
        kind = types[type_name]
        try:
            declared = kind.declared
        except Exception as exc:  # noqa: BLE001 - a plugin's declaration that does not import
            errors.append(
                PipelineFileError(
                    path,
                    decl.lines.get("type", line),
                    f"{where}.type",
                    f"connection type {type_name!r} (plugin {kind.plugin!r}) cannot be "
                    f"loaded: {type(exc).__name__}: {exc}",
                )
            )
            continue
        secret_fields = set(declared.secret_fields)
        try:
            filled = interpolate(path, decl, line, where, values, env)
        except PipelineFileError as exc:
            errors.append(exc)
            continue
        fields = {k: v for k, v in filled.items() if k != "type"}
        schema = Schema(declared)
        found = schema.check(fields, deep=False)
        if not found:
            found = declared.check_fields(fields)
        if found:
            for problem in found:
                message, extra = problem.message, problem.hint
                if problem.field in secret_fields and ", got " in message:
                    message = message.split(", got ")[0] + ", got " + _what(fields[problem.field])
                if message == "unknown option":
                    message = f"unknown field of a {type_name} connection"
                    extra = extra.replace("(options:", "(fields:")
                text = message + (extra if extra.startswith(" ") else f"; {extra}" if extra else "")
                field = f"{where}.{problem.field}" if problem.field else where
                errors.append(
                    PipelineFileError(path, decl.lines.get(problem.field, line), field, text)
                )
            continue
        for option in schema.path_options:
            if isinstance(fields.get(option), str):
                fields[option] = absolute(fields[option], folder)
        secrets = _secrets_of(decl, secret_fields, values, env)
        try:
            connection = kind.factory(**fields)
            secrets.update({s: "***" for s in connection.secrets() if s not in secrets})
        except (TypeError, ValueError) as exc:
            text = masked(str(exc), secrets)
            for value in (fields.get(f) for f in secret_fields):
                if isinstance(value, str) and len(value) >= MIN_SECRET:
                    text = text.replace(value, "***")
            errors.append(PipelineFileError(path, line, where, text))
            continue
        out.by_name[name] = (type_name, connection, line)
        out.secrets.update({s: written for s, written in secrets.items() if len(s) >= MIN_SECRET})
    if errors:
        raise ConnectionProblems(errors)
    return out


def _secrets_of(
    decl: Map, secret_fields: set[str], values: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, str]:
    """The secret values of one declaration, each with how a written file refers to it: a
    secret field's whole value (written as it is in the file when that holds a ``${...}``
    reference, else ``***``), and each value the environment or a param filled into it."""
    out: dict[str, str] = {}
    for field in secret_fields:
        raw = decl.get(field)
        texts = list(raw.values()) if isinstance(raw, dict) else [raw]
        for text in texts:
            if not isinstance(text, str):
                continue
            if "${" not in text:
                out[text] = "***"
                continue
            for match in REF.finditer(text):
                scope, name, default = match.groups()
                value: Any = env.get(name, default) if scope == "env" else values.get(name)
                if value is not None:
                    out.setdefault(str(value), match.group(0))
            filled = REF.sub(lambda m: _filled(m, values, env), text)
            out[filled] = text
    return out


def _filled(match: Any, values: Mapping[str, Any], env: Mapping[str, str]) -> str:
    scope, name, default = match.groups()
    if scope == "env":
        return str(env.get(name, default or ""))
    return str(values.get(name, ""))


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiouh" else f"a {word}"


def _component_kind(key: str) -> tuple[str, str]:
    return ("extractors", "extractor") if key == "extract" else ("outputs", "output")


def apply_connections(
    path: Path,
    options: dict[str, Any],
    raw_step: Any,
    line: int,
    where: str,
    connections: FileConnections | None,
    plugin_manager: Any,
    errors: list[PipelineFileError],
) -> None:
    """A data step's ``options`` with each component that names a ``connection`` given what
    the connection gives it (``connection`` removed); each problem appended to ``errors``
    (the line of its ``connection:`` key, or of the option it clashes with). ``raw_step``:
    the step's mapping as read (for its lines)."""
    raw_extract = raw_step.get("extract") if isinstance(raw_step, Map) else None
    raw_load = raw_step.get("load") if isinstance(raw_step, Map) else None
    extract = options.get("extract")
    if isinstance(extract, dict) and "connection" in extract:
        options["extract"] = _applied(
            path,
            extract,
            raw_extract,
            line,
            f"{where}.extract",
            "extract",
            connections,
            plugin_manager,
            errors,
        )
    load = options.get("load")
    if isinstance(load, list):
        for index, spec in enumerate(load):
            if isinstance(spec, dict) and "connection" in spec:
                raw, at = None, line
                if isinstance(raw_load, Seq) and index < len(raw_load):
                    raw = raw_load[index]
                    at = raw_load.lines[index] if index < len(raw_load.lines) else line
                load[index] = _applied(
                    path,
                    spec,
                    raw,
                    at,
                    f"{where}.load[{index}]",
                    "load",
                    connections,
                    plugin_manager,
                    errors,
                )


def _applied(
    path: Path,
    spec: dict[str, Any],
    raw: Any,
    line: int,
    field: str,
    key: str,
    connections: FileConnections | None,
    plugin_manager: Any,
    errors: list[PipelineFileError],
) -> dict[str, Any]:
    lines = raw.lines if isinstance(raw, Map) else {}
    at = lines.get("connection", line)
    name = spec["connection"]
    component = spec.get("type")
    kind, what = _component_kind(key)
    shown = f"the {component} {what}" if isinstance(component, str) else f"the {what}"
    declared = connections.by_name if connections is not None else {}
    if not isinstance(name, str):
        errors.append(
            PipelineFileError(
                path,
                at,
                f"{field}.connection",
                f"expected the name of a connection, got {_what(name)}; declare the "
                "connection under 'connections:' at the top of the file and give its name",
            )
        )
        return spec
    if name not in declared:
        listed = (
            f"{hint(name, declared)} (declared: {', '.join(declared)})"
            if declared
            else f": the file declares no connections (declare it at the top of the file: "
            f"connections: {{{name[:60]}: {{type: ..., ...}}}})"
        )
        errors.append(
            PipelineFileError(
                path, at, f"{field}.connection", f"no connection named {name[:60]!r}{listed}"
            )
        )
        return spec
    type_name, connection, declared_at = declared[name]
    serves = type(connection).serves
    if serves and component not in serves:
        errors.append(
            PipelineFileError(
                path,
                at,
                f"{field}.connection",
                f"connection {name!r} (line {declared_at}) is {_a(type_name)} connection, for "
                f"{' and '.join(serves)} components, not {shown}",
            )
        )
        return spec
    own = {k: v for k, v in spec.items() if k not in ("type", "name", "connection")}
    if not serves and isinstance(component, str):
        missing = _missing_options(kind, component, type(connection).joins, plugin_manager)
        if missing:
            errors.append(
                PipelineFileError(
                    path,
                    at,
                    f"{field}.connection",
                    f"connection {name!r} is {_a(type_name)} connection, which gives a "
                    f"component its {' and '.join(missing)}; {shown} has no such option",
                )
            )
            return spec
    clashes = [k for k in type(connection).replaces if k in own]
    if clashes:
        for option in clashes:
            errors.append(
                PipelineFileError(
                    path,
                    lines.get(option, at),
                    f"{field}.{option}",
                    f"'connection' and '{option}' are both given: the {type_name} connection "
                    f"{name!r} gives {shown} its {' and '.join(type(connection).replaces[:1])}; "
                    f"drop one of them",
                )
            )
        return spec
    try:
        given = connection.options(own)
    except (ValueError, TypeError) as exc:
        errors.append(
            PipelineFileError(
                path,
                at,
                f"{field}.connection",
                f"connection {name!r}: {masked(str(exc), connections.secrets if connections else {})}",
            )
        )
        return spec
    out = {k: v for k, v in spec.items() if k != "connection"}
    out.update(given)
    return out


def _missing_options(
    kind: str, component: str, wanted: tuple[str, ...], plugin_manager: Any
) -> list[str]:
    """The options of ``wanted`` that the component type ``component`` does not declare
    (none when it is unknown, declares nothing or takes any option: validation says)."""
    from pipectl.options import schema_of

    if plugin_manager is None:
        from pipectl.plugins import default_plugin_manager

        plugin_manager = default_plugin_manager()
    registry = plugin_manager.registries.of(kind)
    if component not in registry:
        return []
    try:
        schema = schema_of(registry.get(component))
    except Exception:  # noqa: BLE001 - validation reports a broken declaration
        return []
    if schema is None or schema.open:
        return []
    return [option for option in wanted if option not in schema.options]


def masked(value: Any, secrets: Mapping[str, str], written: bool = False) -> Any:
    """``value`` (options, at any depth) with each secret value in its strings replaced: by
    ``***``, or (``written``) by how a file refers to it (``secrets[value]``)."""
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= MIN_SECRET and secret in value:
                value = value.replace(secret, secrets[secret] if written else "***")
        return value
    if isinstance(value, dict):
        return {k: masked(v, secrets, written) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v, secrets, written) for v in value]
    return value


def masked_options(step: Any, secrets: Mapping[str, str]) -> Any:
    """``step`` (a :class:`~pipectl.model.StepSpec`) with the secrets in its options masked."""
    import attrs

    options = masked(dict(step.options), secrets)
    return step if options == step.options else attrs.evolve(step, options=options)


def json_schema(plugin_manager: Any = None) -> dict[str, Any]:
    """The JSON Schema of a file's ``connections:``: each connection's fields chosen by its
    ``type`` (the built-in types, and with ``plugin_manager`` the plugins' too)."""
    from pipectl.connections import connection_types
    from pipectl.options import Schema

    types = connection_types(plugin_manager)
    rules = []
    for name, kind in types.items():
        body = Schema(kind.declared).json_schema()
        body["properties"] = {"type": {"const": name}, **body["properties"]}
        rules.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": body,
            }
        )
    return {
        "type": "object",
        "description": "Named connections components give as connection: NAME (see the "
        "guide's Connections); secrets from ${env.NAME}.",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": sorted(types)}},
            "allOf": rules,
        },
    }

"""Pipeline files: YAML (or JSON, a subset of YAML) turned into a :class:`~pipectl.Pipeline`.

Every problem is a :class:`PipelineFileError` naming the file, the line and the field, and what
would be right ("did you mean" where a name is close). Loading is safe (``yaml.SafeLoader``),
duplicate keys are rejected, and nothing in the file is evaluated: ``${params.NAME}``,
``${env.NAME}`` and ``${env.NAME:-default}`` are plain substitutions.

A file::

    name: orders
    description: clean the orders and load them
    params:
      source: {type: str, default: data/orders.csv}
      limit: {type: int, default: 100}
      token: {type: str, secret: true, default: ""}
    max_concurrent: 4
    steps:
      - name: extract
        run: my_module:extract          # a Python function, sync or async
        retries: 3
        retry_delay: 1.5
        timeout: 30
      - name: load
        depends_on: [extract]
        extract: {type: csv, path: "${params.source}"}
        transform: [my_module:clean_record]
        load:
          - {type: jsonl, path: out/orders.jsonl}
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipectl.errors import PipectlError

__all__ = ["PipelineFileError", "load_pipeline", "load_pipelines", "parse_param"]


class PipelineFileError(PipectlError, ValueError):
    """A pipeline file (or a ``-p`` value) is wrong: ``path:line: field: message`` (or
    ``path:line:column: message``), one line: control characters from the file are escaped and
    a very long text is cut in the middle.

    An error about a param says how a Python caller gives one (``params={'day': ...}``);
    ``cli`` (a field and a message) is how the command line says it (``-p day=VALUE``), which
    ``cli_text`` holds (the error's text otherwise)."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, field: str | None,
                 message: str, column: int | None = None, *,
                 cli: tuple[str | None, str] | None = None):
        field = _printable(field, 100) if field else field
        message = _printable(message, 1000)
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{self.path}:{line}" if line else self.path
        where += f":{column}" if line and column else ""
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.cli_text = str(self)
        if cli is not None:
            cli_field, cli_message = _printable(cli[0], 100) if cli[0] else None, \
                _printable(cli[1], 1000)
            self.cli_text = (f"{where}: {cli_field}: {cli_message}" if cli_field
                             else f"{where}: {cli_message}")


def _printable(text: str, width: int) -> str:
    """``text`` for a one-line message: the middle of a very long text cut, and what is not
    printable (control, bidi and zero-width characters, ...) escaped."""
    if len(text) > width:
        text = f"{text[:width * 2 // 3]} ... {text[-width // 3:]}"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Limits of what a pipeline file can make pipectl do (each refused with file:line):
MAX_FILE_BYTES = 10_000_000  # the default size limit; PIPECTL_MAX_FILE_BYTES sets another
MAX_NESTING = 100  # levels of mappings and lists, aliases expanded
MAX_ALIASED = 1_000_000  # characters (and nodes) that aliases (*name) repeat, in all
MAX_NAME = 200  # characters of a step's or a pipeline's name


class _Map(dict):
    """A mapping from the file, with the line of each key."""

    line: int = 0
    lines: dict[str, int]


class _Seq(list):
    """A sequence from the file, with the line of each item."""

    line: int = 0
    lines: list[int]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a moment (as it was, after): loading a file of
    thousands of steps makes hundreds of thousands of objects, none garbage, and the collector
    would walk every live object of the process several times over while they are made (a
    third of ``pipectl validate``'s time). What the file can make is bounded (the file's
    size, :data:`MAX_ALIASED`), so memory is too."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")  # what flattening changes


def _loader(path: str) -> Any:
    import yaml

    # libyaml's parser when PyYAML has it (the wheels do): several times faster; same rules
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    build = base.construct_object
    # a plain string (most of a file) is its node's value: built here, not through PyYAML's
    # dispatch (the pure-Python loader checks them for lone surrogates: not there)
    fast_str = "tag:yaml.org,2002:str" if base is not yaml.SafeLoader else None
    # PyYAML's resolve, for a scalar, without rebuilding its list of patterns at each of the
    # file's thousands of scalars: the patterns by first character, gathered once; other
    # nodes as PyYAML resolves them
    patterns = base.yaml_implicit_resolvers
    anywhere = tuple(patterns.get(None, ()))
    by_first = {first: tuple(found) + anywhere for first, found in patterns.items()
                if first is not None}
    scalar_node = yaml.ScalarNode

    class Loader(base):  # type: ignore[misc,valid-type]
        """Counts as it builds: an alias (``*name``) is the anchored node itself, so a few
        lines can stand for billions of values ("billion laughs"); each use of one adds the
        anchored value's expanded size, bounded by :data:`MAX_ALIASED`, and the nesting, with
        aliases expanded, by :data:`MAX_NESTING`, before anything walks the values."""

        def __init__(self, stream: str):
            super().__init__(stream)
            self.depth = self.repeated = 0
            self.line = 1  # of the key or item being built, for the messages
            self.measured: dict[Any, tuple[int, int]] = {}
            self.flattening: set[Any] = set()

        if fast_str and not base.yaml_path_resolvers:
            def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
                if kind is not scalar_node:
                    return base.resolve(self, kind, value, implicit)
                if implicit[0]:  # plain: true, 12, 1.5, null, 2026-01-01 ... or a string
                    for tag, regexp in by_first.get(value[:1], anywhere):
                        if regexp.match(value):
                            return tag
                return fast_str

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            if node in self.constructed_objects:  # used again: an alias, or a merge (<<)
                size, height = _measure(node, self.measured)
                self.repeated += size
                self.check_repeated(self.line)
                self.check_depth(self.depth + height, self.line)
                return self.constructed_objects[node]
            if isinstance(node.value, str):  # a scalar
                if node.tag == fast_str:
                    self.constructed_objects[node] = value = node.value
                    return value
                return build(self, node, True)
            self.depth += 1
            self.check_depth(self.depth, node.start_mark.line + 1)
            try:  # deep: every value built now, under the counts (!!set and !!omap too)
                return build(self, node, True)
            finally:
                self.depth -= 1

        def flatten_mapping(self, node: Any) -> None:
            """Merge keys (``<<: *name`` or ``<<: [*a, *b]``) copy the pairs of mappings into
            this one: counted like aliases before PyYAML copies them."""
            for key_node, _ in node.value:
                if key_node.tag in _MERGE_TAGS:
                    break
            else:  # no merge (<<) and no value key (=): nothing to flatten (most mappings)
                return None
            if node in self.flattening:  # a cycle of merges: PyYAML's own flattening ends it
                return super().flatten_mapping(node)
            self.flattening.add(node)
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    sources = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                               else [value_node])
                    merged = [n for n in sources if isinstance(n, yaml.MappingNode)]
                    for each in {id(n): n for n in merged}.values():
                        self.flatten_mapping(each)
                    self.repeated += sum(len(n.value) for n in merged)
                    self.check_repeated(key_node.start_mark.line + 1)
            super().flatten_mapping(node)
            self.flattening.discard(node)

        def check_repeated(self, line: int) -> None:
            if self.repeated > MAX_ALIASED:
                raise PipelineFileError(path, line, None, f"aliases (*name) and merges (<<) "
                                        f"repeat more than {MAX_ALIASED:,} characters of values "
                                        "in all (each use copies the whole anchored value): "
                                        "refused as an alias bomb; write the values out, or use "
                                        "fewer aliases")

        def check_depth(self, depth: int, line: int) -> None:
            if depth > MAX_NESTING:
                raise PipelineFileError(path, line, None, f"mappings and lists nested more "
                                        f"than {MAX_NESTING} levels deep (aliases expanded); "
                                        "a pipeline file does not need that many")

        if base is yaml.SafeLoader:  # libyaml refuses a lone surrogate's escape itself
            def construct_scalar(self, node: Any) -> Any:
                value = super().construct_scalar(node)
                if node.style == '"' and not value.isprintable() and \
                        any("\ud800" <= c <= "\udfff" for c in value):
                    raise PipelineFileError(path, node.start_mark.line + 1, None, "a \\u "
                                            "escape of a lone surrogate (D800-DFFF) is not a "
                                            "character; write the character, or its \\U escape")
                return value

    def construct_map(loader: Any, node: Any) -> _Map:
        out = _Map()
        out.line = node.start_mark.line + 1
        out.lines = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise PipelineFileError(path, line, str(key),
                                        "keys must be strings (quote it: \"...\")")
            if key in out.lines:
                raise PipelineFileError(path, line, key, f"duplicate key (first at line "
                                        f"{out.lines[key]}); each key may appear once")
            out.lines[key] = loader.line = line
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    def construct_seq(loader: Any, node: Any) -> _Seq:
        out = _Seq()
        for child in node.value:
            if child not in loader.constructed_objects:  # an alias keeps the line it is on
                loader.line = child.start_mark.line + 1
            out.append(loader.construct_object(child, deep=True))
        out.line = node.start_mark.line + 1
        out.lines = [child.start_mark.line + 1 for child in node.value]
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_seq)
    return Loader


# what YAML does not allow in a file (UTF-8 text has no surrogates), refused with file:line
_NOT_YAML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
         (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))


def _measure(node: Any, measured: dict[Any, tuple[int, int]]) -> tuple[int, int]:
    """The size of ``node`` with its aliases expanded (characters of its scalars, plus one a
    node) and its height (levels of mappings and lists), remembered by node."""
    found = measured.get(node)
    if found is None:
        if isinstance(node.value, str):
            found = (len(node.value) + 1, 0)
        else:  # a list of nodes, or of (key, value) pairs
            parts = [_measure(child, measured) for item in node.value
                     for child in (item if isinstance(item, tuple) else (item,))]
            found = (1 + sum(size for size, _ in parts),
                     1 + max((height for _, height in parts), default=0))
        measured[node] = found
    return found


def _max_file_bytes(path: Path) -> int:
    text = os.environ.get("PIPECTL_MAX_FILE_BYTES", "").strip()
    if not text:
        return MAX_FILE_BYTES
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise PipelineFileError(path, None, "PIPECTL_MAX_FILE_BYTES", f"expected a number of "
                                f"bytes such as 50000000, got {text!r}")
    return int(text)


def _position(raw: bytes, offset: int) -> tuple[int, int]:
    """The line and the column (in characters) of byte ``offset``, both from 1."""
    start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[start:offset].decode("utf-8", "replace")) + 1


def _read(path: Path) -> Any:
    import yaml

    if not path.exists():
        raise PipelineFileError(path, None, None, "no such file")
    if path.is_dir():
        raise PipelineFileError(path, None, None, "is a directory, not a pipeline file")
    limit = _max_file_bytes(path)
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            raw = stream.read(limit + 1) if size <= limit else b""
    except OSError as exc:
        raise PipelineFileError(path, None, None, f"cannot be read: {exc.strerror or exc}") \
            from None
    if size > limit or len(raw) > limit:
        shown = f"{size:,} bytes" if size > limit else f"more than {limit:,} bytes"
        raise PipelineFileError(path, None, None, f"the file is {shown}, over the limit of "
                                f"{limit:,} bytes for a pipeline file; if it really is one, set "
                                "PIPECTL_MAX_FILE_BYTES to a larger number of bytes")
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            raise PipelineFileError(path, 1, None, f"the file is {encoding} text (it starts "
                                    f"with a {encoding} byte-order mark); a pipeline file is "
                                    "UTF-8: save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, column = _position(raw, nul)
        raise PipelineFileError(path, line, None, "is a binary file, not a YAML or JSON file "
                                "(a NUL byte here; if it is UTF-16 or UTF-32 text, save it as "
                                "UTF-8)", column)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start)
        raise PipelineFileError(path, line, None, f"is not UTF-8 text: byte "
                                f"{raw[exc.start]:#04x} here ({exc.reason}); save the file as "
                                "UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)", column) from None
    bad = _NOT_YAML.search(text)
    if bad:
        line, column = _position(raw, len(text[:bad.start()].encode("utf-8")))
        raise PipelineFileError(path, line, None, f"the character U+{ord(bad.group()):04X} "
                                f"({bad.group()!r}) is not allowed in YAML; in a double-quoted "
                                "string write it as an escape (\"\\x1b\")", column)
    if not text.strip():
        raise PipelineFileError(path, 1, None, "the file is empty; a pipeline file is a mapping "
                                "with at least 'name' and 'steps'")
    try:
        with gc_paused():
            data = yaml.load(text, Loader=_loader(str(path)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        lines = text.splitlines()
        here = lines[line - 1] if line and line <= len(lines) else ""
        hint = ""
        if "\t" in here or "'\\t'" in problem:
            hint = "; YAML does not allow tabs for indentation: use spaces"
        raise PipelineFileError(path, line, None, f"invalid YAML: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(path, None, None, f"invalid YAML: {exc}") from None
    except RecursionError:  # PyYAML without libyaml composes nested values recursively
        raise PipelineFileError(path, None, None, f"mappings and lists nested more than "
                                f"{MAX_NESTING} levels deep") from None
    if not isinstance(data, dict):
        raise PipelineFileError(path, 1, None, f"a pipeline file is a mapping (name: ..., "
                                f"steps: [...]), not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "empty"
    return f"{type(value).__name__} {value!r}"


def _hint(name: str, known: Any) -> str:
    if len(name) > MAX_NAME:  # not a typo; and difflib's cost grows with the length
        return ""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- params ------------------------------------------------------------------------------------

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
                raise ValueError(f"expected a JSON list ({_json_problem(exc)}) or a,b,c") \
                    from None
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


def _check_param_value(type_name: str, value: Any) -> bool:
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
    __slots__ = ("default", "description", "line", "name", "required", "secret", "type")

    def __init__(self, name: str, type: str, default: Any, required: bool, secret: bool,
                 description: str, line: int | None = None):
        self.name, self.type, self.default = name, type, default
        self.required, self.secret, self.description = required, secret, description
        self.line = line  # of the default, for the errors of a ``${env.NAME}`` in it

    @property
    def from_env(self) -> bool:
        """The default names environment variables (``${env.NAME}``), read when it is used."""
        return isinstance(self.default, str) and "${" in self.default


_PARAM_FIELDS = {"type", "default", "secret", "description", "required"}


def _params(path: Path, data: _Map) -> dict[str, ParamSpec]:
    raw = data.get("params")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PipelineFileError(path, data.lines["params"], "params",
                                f"expected a mapping of param names, got {_kind(raw)}")
    out = {}
    for name, decl in raw.items():
        line = raw.lines[name]
        if not isinstance(decl, dict):  # shorthand: name: default
            type_name = {bool: "bool", int: "int", float: "float", list: "list",
                         _Seq: "list"}.get(type(decl), "str" if isinstance(decl, str) else "json")
            if isinstance(decl, str) and "${" in decl:
                _check_env_default(path, line, f"params.{name}", decl)
            out[name] = ParamSpec(name, type_name, decl, False, False, "", line)
            continue
        for key in decl:
            if key not in _PARAM_FIELDS:
                raise PipelineFileError(path, decl.lines[key], f"params.{name}.{key}",
                                        f"unknown field{_hint(key, _PARAM_FIELDS)} (known: "
                                        f"{', '.join(sorted(_PARAM_FIELDS))})")
        type_name = decl.get("type", "str")
        if type_name not in PARAM_TYPES:
            raise PipelineFileError(path, decl.lines.get("type", line), f"params.{name}.type",
                                    f"unknown type {type_name!r}{_hint(str(type_name), PARAM_TYPES)}"
                                    f" (one of {', '.join(PARAM_TYPES)})")
        required = bool(decl.get("required", "default" not in decl))
        default = decl.get("default")
        default_line = decl.lines.get("default", line)
        if isinstance(default, str) and "${" in default:  # read from the environment when used
            _check_env_default(path, default_line, f"params.{name}.default", default)
        elif "default" in decl and default is not None and \
                not _check_param_value(type_name, default):
            raise PipelineFileError(path, default_line, f"params.{name}.default",
                                    f"{default!r} is not a {type_name}")
        out[name] = ParamSpec(name, type_name, default, required, bool(decl.get("secret")),
                              str(decl.get("description", "")), default_line)
    return out


def _check_env_default(path: Path, line: int, field: str, text: str) -> None:
    """A default may name environment variables (``${env.NAME}``, ``${env.NAME:-default}``),
    nothing else: params are not set yet when defaults are read."""
    for match in _REF.finditer(text):
        if match.group(1) == "params":
            raise PipelineFileError(path, line, field, f"{match.group(0)}: a param's default "
                                    "can take ${env.NAME} or ${env.NAME:-default}, not another "
                                    "param")
    if "${" in _REF.sub("", text):
        raise PipelineFileError(path, line, field, f"{text!r}: only ${{env.NAME}} and "
                                "${env.NAME:-default} can be substituted in a default")


def _env_default(path: Path, spec: ParamSpec, env: Mapping[str, str]) -> Any:
    """The default of ``spec`` with its ``${env.NAME}`` read, typed by its declaration."""
    field = f"params.{spec.name}.default"
    text = spec.default
    for match in _REF.finditer(text):
        if match.group(2) not in env and match.group(3) is None:
            shown = "" if spec.secret else f" (its default is {text!r})"
            unset, fallback = f"${{env.{match.group(2)}}} is not set", \
                f"or a default ${{env.{match.group(2)}:-...}}{shown}"
            raise PipelineFileError(
                path, spec.line, field,
                f"{unset}: set it, pass params={{{spec.name!r}: ...}}, {fallback}",
                cli=(field, f"{unset}: set it, give -p {spec.name}=VALUE, {fallback}"))
    value = _interpolate(path, text, spec.line or 0, field, {}, env)
    if isinstance(value, str) and spec.type != "str":
        try:
            value = parse_param(spec.type, value)
        except ValueError as exc:
            what = "the value" if spec.secret else repr(value)
            raise PipelineFileError(path, spec.line, field, f"{what} read from the environment "
                                    f"is not a valid {spec.type}"
                                    + ("" if spec.secret else f": {exc}")) from None
    return value


def resolve_params(path: Path, declared: dict[str, ParamSpec],
                   given: Mapping[str, Any], env: Mapping[str, str] | None = None,
                   defaults: Mapping[str, Any] | None = None,
                   defaults_base: Path | None = None) -> dict[str, Any]:
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
            problem = (f"the pipeline declares no param {name!r}{_hint(name, declared)} "
                       f"(declared: {', '.join(declared) or 'none'})")
            raise PipelineFileError(path, None, given_as, problem, cli=(cli_field, problem))
        if isinstance(value, str) and spec.type != "str":
            try:
                value = parse_param(spec.type, value)
            except ValueError as exc:
                why = f"the value given is not a {spec.type}" if spec.secret else str(exc)
                problem = f"{why} (param {name!r} is declared as {spec.type})"
                raise PipelineFileError(path, None, given_as, problem,
                                        cli=(cli_field, problem)) from None
        values[name] = _absolute(value, Path.cwd()) if spec.type == "path" else value
    for name, value in (defaults or {}).items():
        spec = declared.get(name)
        if spec is None or name in values:
            continue  # a project's params serve every pipeline: each takes those it declares
        if isinstance(value, str) and spec.type != "str":
            try:
                value = parse_param(spec.type, value)
            except ValueError as exc:
                raise PipelineFileError(path, None, f"params.{name}", f"the project's default "
                                        f"is not a {spec.type}: {exc}") from None
        elif not _check_param_value(spec.type, value):
            raise PipelineFileError(path, None, f"params.{name}", f"the project's default "
                                    f"{'(secret)' if spec.secret else repr(value)} is not a "
                                    f"{spec.type}")
        values[name] = (_absolute(value, defaults_base or path.parent) if spec.type == "path"
                        else value)
    for name, spec in declared.items():
        if name not in values:
            if spec.required:
                raise PipelineFileError(path, None, f"params.{name}", f"is required: pass it "
                                        f"in params={{{name!r}: ...}}",
                                        cli=(f"params.{name}", f"is required: give it with "
                                                               f"-p {name}=VALUE"))
            value = (_env_default(path, spec, os.environ if env is None else env)
                     if spec.from_env else spec.default)
            values[name] = (_absolute(value, path.absolute().parent) if spec.type == "path"
                            else value)
    return values


def _absolute(value: Any, base: Path) -> Any:
    """A path (``~`` expanded) made absolute against ``base``; other values as they are."""
    if not isinstance(value, str) or not value:
        return value
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.normpath(base / expanded)


_REF = re.compile(r"\$\{(params|env)\.([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(path: Path, value: Any, line: int, field: str, params: Mapping[str, Any],
                 env: Mapping[str, str]) -> Any:
    if isinstance(value, str) and "${" in value:
        def lookup(match: re.Match[str]) -> Any:
            scope, name, default = match.groups()
            if scope == "params":
                if name not in params:
                    raise PipelineFileError(path, line, field, f"${{params.{name}}}: no such "
                                            f"param{_hint(name, params)}; declare it under params")
                return params[name]
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise PipelineFileError(path, line, field, f"${{env.{name}}} is not set; set it, or "
                                    f"give a default: ${{env.{name}:-default}}")

        whole = _REF.fullmatch(value)
        if whole:
            return lookup(whole)  # keeps the param's type
        if "${" in _REF.sub("", value):
            raise PipelineFileError(path, line, field, f"{value!r}: only ${{params.NAME}}, "
                                    "${env.NAME} and ${env.NAME:-default} can be substituted")
        return _REF.sub(lambda m: str(lookup(m)), value)
    if isinstance(value, dict):
        lines = getattr(value, "lines", {})
        # a plain value (most of a file) is itself: no call, no field name built for it
        return {k: v if v.__class__ in _PLAIN and (v.__class__ is not str or "${" not in v)
                else _interpolate(path, v, lines.get(k, line), f"{field}.{k}", params, env)
                for k, v in value.items()}
    if isinstance(value, list):
        lines = getattr(value, "lines", [])
        return [v if v.__class__ in _PLAIN and (v.__class__ is not str or "${" not in v)
                else _interpolate(path, v, lines[i] if i < len(lines) else line,
                                  f"{field}[{i}]", params, env) for i, v in enumerate(value)]
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})  # values _interpolate returns as given


# -- steps -------------------------------------------------------------------------------------

_DATA_FIELDS = {"extract", "transform", "load", "batch_size", "buffer_size", "on_bad_record",
                "dead_letter", "max_bad_records"}
_STEP_FIELDS = {"name", "run", "type", "depends_on", "inputs", "retries", "retry_delay",
                "retry_backoff", "backoff_cap", "retry_jitter", "retry_on", "timeout",
                "allow_failure", "trigger", "rollback", "options", "description", "when",
                "pipeline", "params", "resources", "store_output", *_DATA_FIELDS}
_TRIGGERS = ("all_success", "all_done", "none_failed", "one_success")
_TOP_FIELDS = {"name", "description", "params", "max_concurrent", "fail_fast", "executor",
               "tracker", "story", "steps"}


def _number(path: Path, line: int, field: str, value: Any, *, minimum: float = 0,
            strict: bool = False, integer: bool = False) -> Any:
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
        raise PipelineFileError(path, line, field, f"cannot import module {module_name!r}: "
                                f"{exc} (is it installed, or on PYTHONPATH?)") from None
    except Exception as exc:  # noqa: BLE001 - the user's module broke at import
        raise PipelineFileError(path, line, field, f"importing {module_name!r} raised "
                                f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise PipelineFileError(path, line, field, f"{module_name!r} has no {part!r}"
                                    f"{_hint(part, names)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PipelineFileError(path, line, field, f"{ref!r} is a {type(obj).__name__}, "
                                "not a function")
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
            raise PipelineFileError(path, line, field, f"{name!r} is not an exception class"
                                    f"{_hint(str(name), known)} (a builtin name such as "
                                    "ConnectionError, or 'module:ClassName')")
        out.append(exc)
    return tuple(out)


def _names(path: Path, line: int, field: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise PipelineFileError(path, line, field, f"expected a step name or a list of step names, "
                            f"got {_kind(value)}")


def _expression(path: Path, line: int, field: str, text: Any, parse: Callable[[Any], Any]) -> Any:
    from pipectl.expr import ExpressionError

    if not isinstance(text, str):
        raise PipelineFileError(path, line, field, f"expected an expression (text) such as "
                                f"\"params.mode == 'full'\", got {_kind(text)}")
    try:
        return parse(text)
    except ExpressionError as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise PipelineFileError(path, line, field, f"{shown!r}: {exc}") from None


def _check_name(path: Path, line: int, field: str, name: str, what: str) -> None:
    """A step's or a pipeline's name is printed and names files (dead letters, stories)."""
    if (name.isprintable() and "/" not in name and "\\" not in name and len(name) <= MAX_NAME
            and name not in (".", "..")):
        return
    bad = [c for c in name if not c.isprintable() or c in "/\\"]
    why = (f"{len(name):,} characters" if len(name) > MAX_NAME else
           f"it has {bad[0]!r}" if bad else "it is a path")
    raise PipelineFileError(path, line, field, f"{name[:40]!r}: not a usable {what} name ({why}):"
                            f" a name is at most {MAX_NAME} printable characters (no control, "
                            "bidi or zero-width ones), without '/' or '\\' (it is printed, and "
                            "names files such as dead letters)")


def _step_kwargs(path: Path, raw: _Map, index: int, line: int, prefix: str = "",
                 subpipeline: Callable[[str, dict[str, Any], int, str], Any] | None = None
                 ) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise PipelineFileError(path, line, f"{prefix}steps[{index}]", f"a step is a mapping "
                                f"with at least 'name', got {_kind(raw)}")
    for key in raw:
        if key not in _STEP_FIELDS:
            raise PipelineFileError(path, raw.lines[key], f"{prefix}steps[{index}].{key}",
                                    f"unknown step field{_hint(key, _STEP_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineFileError(path, raw.lines.get("name", line), f"{prefix}steps[{index}].name",
                                f"every step needs a name (a non-empty string), got {name!r}")
    _check_name(path, raw.lines.get("name", line), f"{prefix}steps[{index}].name", name, "step")
    where = f"{prefix}steps.{name}"

    def at(key: str) -> int:
        return raw.lines.get(key, line)

    kwargs: dict[str, Any] = {}
    if "depends_on" in raw:
        kwargs["depends_on"] = _names(path, at("depends_on"), f"{where}.depends_on",
                                      raw["depends_on"])
    if "inputs" in raw:
        from pipectl.expr import parse_input

        inputs = raw["inputs"]
        if not isinstance(inputs, dict):
            raise PipelineFileError(path, at("inputs"), f"{where}.inputs", "expected {parameter: "
                                    "step name or reference such as steps.NAME.output.FIELD}")
        lines = getattr(inputs, "lines", {})
        kwargs["inputs"] = {
            k: _expression(path, lines.get(k, at("inputs")), f"{where}.inputs.{k}", v,
                           parse_input) for k, v in inputs.items()}
    if "when" in raw:
        from pipectl.expr import parse

        kwargs["when"] = _expression(path, at("when"), f"{where}.when", raw["when"], parse)
    if "retries" in raw:
        kwargs["retries"] = _number(path, at("retries"), f"{where}.retries", raw["retries"],
                                    integer=True)
    for key, target in (("retry_delay", "retry_delay"), ("retry_backoff", "retry_backoff"),
                        ("backoff_cap", "retry_max_delay")):
        if key in raw:
            kwargs[target] = _number(path, at(key), f"{where}.{key}", raw[key])
    if "retry_jitter" in raw:
        jitter = _number(path, at("retry_jitter"), f"{where}.retry_jitter", raw["retry_jitter"])
        if jitter > 1:
            raise PipelineFileError(path, at("retry_jitter"), f"{where}.retry_jitter",
                                    f"a fraction between 0 and 1, got {jitter!r}")
        kwargs["retry_jitter"] = jitter
    if "retry_on" in raw:
        kwargs["retry_on"] = _exception_types(path, at("retry_on"), f"{where}.retry_on",
                                              raw["retry_on"])
    if "timeout" in raw and raw["timeout"] is not None:
        kwargs["timeout"] = _number(path, at("timeout"), f"{where}.timeout", raw["timeout"],
                                    strict=True)
    if "allow_failure" in raw:
        if not isinstance(raw["allow_failure"], bool):
            raise PipelineFileError(path, at("allow_failure"), f"{where}.allow_failure",
                                    f"expected true or false, got {raw['allow_failure']!r}")
        kwargs["allow_failure"] = raw["allow_failure"]
    if "store_output" in raw:
        if not isinstance(raw["store_output"], bool):
            raise PipelineFileError(path, at("store_output"), f"{where}.store_output",
                                    f"expected true or false, got {raw['store_output']!r}")
        kwargs["store_output"] = raw["store_output"]
    if "trigger" in raw:
        if raw["trigger"] not in _TRIGGERS:
            raise PipelineFileError(path, at("trigger"), f"{where}.trigger",
                                    f"one of {', '.join(_TRIGGERS)}, got {raw['trigger']!r}"
                                    f"{_hint(str(raw['trigger']), _TRIGGERS)}")
        kwargs["trigger"] = raw["trigger"]
    if "rollback" in raw:
        kwargs["rollback"] = _import_ref(path, at("rollback"), f"{where}.rollback",
                                         raw["rollback"])
    if "description" in raw:
        kwargs["description"] = str(raw["description"])
    if raw.get("resources") is not None:
        from pipectl.model import _resources

        resources = raw["resources"]
        if not isinstance(resources, dict):
            raise PipelineFileError(path, at("resources"), f"{where}.resources",
                                    "expected a mapping of resource name to amount, such as "
                                    "{GPU: 1, memory: 4GB}")
        lines = getattr(resources, "lines", {})
        for resource, amount in resources.items():
            try:
                _resources({resource: amount})
            except (TypeError, ValueError) as exc:
                raise PipelineFileError(path, lines.get(resource, at("resources")),
                                        f"{where}.resources.{resource}",
                                        str(exc).partition(": ")[2] or str(exc)) from None
        kwargs["resources"] = dict(resources)
    data = [k for k in raw if k in _DATA_FIELDS]
    kinds = [k for k in ("run", "type", "pipeline") if k in raw] + (["extract/load"] if data
                                                                     else [])
    if len(kinds) > 1:
        raise PipelineFileError(path, line, where, f"a step has one of 'run' (a function or "
                                f"step class), 'extract'/'load' (a data step), 'pipeline' (a "
                                f"sub-pipeline) or 'type' (a plugin step type), not "
                                f"{' and '.join(kinds)}")
    if "params" in raw and "pipeline" not in raw:
        raise PipelineFileError(path, at("params"), f"{where}.params",
                                "'params' go with 'pipeline' (a sub-pipeline's params); a "
                                "step function takes the run's params as a 'params' argument")
    if "run" in raw:
        kwargs["func"] = _import_ref(path, at("run"), f"{where}.run", raw["run"])
        if "options" in raw:
            if not isinstance(kwargs["func"], type):
                raise PipelineFileError(path, at("options"), f"{where}.options",
                                        "'options' go with a step class (run: module:Class) "
                                        "or a plugin step 'type', not a function")
            if not isinstance(raw["options"], dict):
                raise PipelineFileError(path, at("options"), f"{where}.options",
                                        f"expected a mapping, got {_kind(raw['options'])}")
            kwargs["options"] = dict(raw["options"])
    elif "pipeline" in raw:
        target = raw["pipeline"]
        if not isinstance(target, str) or not target:
            raise PipelineFileError(path, at("pipeline"), f"{where}.pipeline",
                                    f"expected the name of a pipeline of this file, got "
                                    f"{_kind(target)}")
        overrides = raw.get("params") or {}
        if not isinstance(overrides, dict):
            raise PipelineFileError(path, at("params"), f"{where}.params",
                                    f"expected {{param: value}}, got {_kind(overrides)}")
        if subpipeline is None:
            raise PipelineFileError(path, at("pipeline"), f"{where}.pipeline",
                                    "a sub-pipeline is another pipeline of the same file: "
                                    "write the file with several pipelines (pipelines: "
                                    "[- name: ..., steps: [...]])")
        child = subpipeline(target, dict(overrides), at("pipeline"), f"{where}.pipeline")
        kwargs["step_type"] = "pipeline"
        kwargs["options"] = {"pipeline": child, "params": {}}
    elif data:
        for required in ("extract", "load"):
            if required not in raw:
                raise PipelineFileError(path, line, f"{where}.{required}",
                                        f"a data step needs '{required}'")
        options = {"extract": raw["extract"], "load": raw["load"]}
        if "transform" in raw:
            transforms = raw["transform"]
            transforms = [transforms] if isinstance(transforms, (str, dict)) else transforms
            options["transforms"] = [
                _import_ref(path, at("transform"), f"{where}.transform", t)
                if isinstance(t, str) else t for t in transforms]
        for key in ("batch_size", "buffer_size", "on_bad_record", "dead_letter",
                        "max_bad_records"):
            if key in raw:
                options[key] = raw[key]
        kwargs["step_type"] = "data"
        kwargs["options"] = options
    elif "type" in raw:
        kwargs["step_type"] = raw["type"]
        kwargs["options"] = dict(raw.get("options") or {})
    else:
        raise PipelineFileError(path, line, where, "the step does nothing: give it 'run: "
                                "module:function', 'extract' and 'load', 'pipeline' or a "
                                "'type'")
    if "options" in raw and "type" not in raw and "run" not in raw:
        raise PipelineFileError(path, at("options"), f"{where}.options",
                                "'options' go with a step class (run: module:Class) or a "
                                "plugin step 'type'")
    return name, kwargs


_MULTI_FIELDS = {"description", "params", "pipelines"}
_ONE_OF_MANY = {"name", "description", "depends_on", "max_concurrent", "fail_fast", "executor",
                "tracker", "story", "steps"}


def load_pipelines(path: str | os.PathLike[str], params: Mapping[str, Any] | None = None,
                   *, env: Mapping[str, str] | None = None, plugin_manager: Any = None,
                   project: Any = None, check_graph: bool = True
                   ) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Every pipeline of the file at ``path`` by name, and what each depends on.

    A file holds one pipeline (``name`` and ``steps`` at the top) or several (``pipelines:``, a
    list of ``name``/``steps``/``depends_on`` mappings sharing the file's ``params``). The
    pipelines come in an order where each follows those it depends on.

    Relative paths in the file (``path`` params' defaults, components' path options,
    ``dead_letter``, ``story``, a ``sqlite:///`` tracker) resolve against the file's folder.
    ``project`` (a :class:`pipectl.project.Project`) gives defaults for the params the file
    declares. ``check_graph=False`` leaves each pipeline's steps' graph (unknown dependencies,
    cycles) to :meth:`~pipectl.Pipeline.validate`, which reports it with every other problem
    (``pipectl validate`` and ``run`` do).
    """
    path = Path(path)
    data = _read(path)
    env = os.environ if env is None else env
    defaults = (project.params, project.root) if project is not None else (None, None)
    folder = str(path.absolute().parent)
    if folder not in sys.path:  # module:function references to modules beside the file
        sys.path.insert(0, folder)
    if "pipelines" not in data:
        pipe = _build(path, data, _TOP_FIELDS, "", params, env, plugin_manager,
                      defaults=defaults, check_graph=check_graph)
        return {pipe.name: pipe}, {pipe.name: []}
    for key in data:
        if key not in _MULTI_FIELDS:
            raise PipelineFileError(path, data.lines[key], key, f"unknown field of a file with "
                                    f"several pipelines{_hint(key, _MULTI_FIELDS)} (known: "
                                    f"{', '.join(sorted(_MULTI_FIELDS))}; steps go under each "
                                    "pipeline)")
    items = data["pipelines"]
    if not isinstance(items, list) or not items:
        raise PipelineFileError(path, data.lines["pipelines"], "pipelines",
                                "expected a list of pipelines (- name: ..., steps: [...])")
    declared = _params(path, data)
    values = resolve_params(path, declared, params or {}, env, *defaults)
    pipelines: dict[str, Any] = {}
    depends: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    raw_items: dict[str, tuple[int, _Map]] = {}
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name:
            if name in raw_items:
                raise PipelineFileError(path, items.lines[index], f"pipelines[{index}].name",
                                        f"duplicate pipeline {name!r} (first at line "
                                        f"{items.lines[raw_items[name][0]]})")
            raw_items[name] = (index, item)
    built: dict[tuple[str, str], Any] = {}
    stack: list[str] = []
    nested: set[str] = set()

    def build(index: int, item: Any, overrides: dict[str, Any]) -> Any:
        line = items.lines[index]
        if not isinstance(item, dict):
            raise PipelineFileError(path, line, f"pipelines[{index}]",
                                    f"a pipeline is a mapping, got {_kind(item)}")
        key = (str(item.get("name")), json.dumps(overrides, sort_keys=True, default=repr))
        if key in built:
            return built[key]
        stack.append(key[0])
        try:
            pipe = _build(path, item, _ONE_OF_MANY, f"pipelines[{index}].", None, env,
                          plugin_manager, declared=declared,
                          values={**values, **overrides} if overrides else values,
                          subpipeline=subpipeline, check_graph=check_graph)
        finally:
            stack.pop()
        built[key] = pipe
        return pipe

    def subpipeline(name: str, overrides: dict[str, Any], line: int, field: str) -> Any:
        if name not in raw_items:
            raise PipelineFileError(path, line, field, f"no pipeline named {name!r} in this "
                                    f"file{_hint(name, raw_items)} (its pipelines: "
                                    f"{', '.join(raw_items)})")
        if name in stack:
            raise PipelineFileError(path, line, field, "sub-pipelines form a cycle: "
                                    + " -> ".join((*stack[stack.index(name):], name)))
        for param, value in overrides.items():
            spec = declared.get(param)
            if spec is None:
                raise PipelineFileError(path, line, f"{field[:-len('pipeline')]}params.{param}",
                                        f"the file declares no param {param!r}"
                                        f"{_hint(param, declared)} (declared: "
                                        f"{', '.join(declared) or 'none'})")
            if isinstance(value, str) and spec.type != "str":
                try:
                    overrides[param] = parse_param(spec.type, value)
                except ValueError as exc:
                    raise PipelineFileError(path, line, f"{field[:-len('pipeline')]}params."
                                            f"{param}", f"{exc} (param {param!r} is declared "
                                            f"as {spec.type})") from None
            if spec.type == "path":
                overrides[param] = _absolute(overrides[param], path.absolute().parent)
        nested.add(name)
        index, item = raw_items[name]
        return build(index, item, overrides)

    for index, item in enumerate(items):
        line = items.lines[index]
        pipe = build(index, item, {})
        lines[pipe.name] = line
        pipelines[pipe.name] = pipe
        depends[pipe.name] = _names(path, item.lines.get("depends_on", line),
                                    f"pipelines.{pipe.name}.depends_on",
                                    item.get("depends_on", []))
    for name, pipe in pipelines.items():
        pipe.nested = name in nested
    from pipectl.graph import Graph
    from pipectl.model import StepSpec

    try:  # the pipelines' own DAG: unknown names and cycles, as for steps
        order = Graph(str(path), [StepSpec(n, depends_on=d) for n, d in depends.items()])
    except PipectlError as exc:
        problems = getattr(exc, "problems", [str(exc)])
        named = re.search(r"step '([^']+)'", problems[0])
        text = "; ".join(p.replace("step ", "pipeline ") for p in problems)
        raise PipelineFileError(path, lines.get(named.group(1)) if named else None,
                                "pipelines", text) from None
    ordered = {name: pipelines[name] for name in order.topological_order()}
    return ordered, depends


def load_pipeline(path: str | os.PathLike[str], params: Mapping[str, Any] | None = None,
                  *, env: Mapping[str, str] | None = None, plugin_manager: Any = None,
                  name: str | None = None, project: Any = None) -> Any:
    """Load one pipeline from the file at ``path`` (``name`` picks one of several): a
    :class:`~pipectl.Pipeline` whose ``params`` (the declared defaults, overridden by
    ``params``) are ready for :meth:`~pipectl.Pipeline.run`.

    Raises :class:`PipelineFileError` for anything wrong in the file, naming line and field.
    """
    pipelines, _ = load_pipelines(path, params, env=env, plugin_manager=plugin_manager,
                                  project=project)
    if name is None:
        if len(pipelines) > 1:
            raise PipelineFileError(path, None, None, f"the file holds {len(pipelines)} "
                                    f"pipelines ({', '.join(pipelines)}): pick one by name")
        return next(iter(pipelines.values()))
    if name not in pipelines:
        raise PipelineFileError(path, None, None, f"no pipeline named {name!r}"
                                f"{_hint(name, pipelines)} (in the file: {', '.join(pipelines)})")
    return pipelines[name]


def _build(path: Path, data: _Map, fields: set[str], prefix: str,
           params: Mapping[str, Any] | None, env: Mapping[str, str], plugin_manager: Any,
           declared: dict[str, ParamSpec] | None = None,
           values: dict[str, Any] | None = None,
           subpipeline: Callable[[str, dict[str, Any], int, str], Any] | None = None,
           defaults: tuple[Any, Any] = (None, None), check_graph: bool = True) -> Any:
    from pipectl.pipeline import Pipeline

    for key in data:
        if key not in fields:
            raise PipelineFileError(path, data.lines[key], prefix + key,
                                    f"unknown field{_hint(key, fields)} (known: "
                                    f"{', '.join(sorted(fields))})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineFileError(path, data.lines.get("name", data.line or 1), prefix + "name",
                                "the pipeline needs a name (a non-empty string)")
    _check_name(path, data.lines.get("name", data.line or 1), prefix + "name", name, "pipeline")
    if declared is None:
        declared = _params(path, data)
        values = resolve_params(path, declared, params or {}, env, *defaults)
    assert values is not None
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise PipelineFileError(path, data.lines.get("steps", data.line or 1), prefix + "steps",
                                "expected a list of steps (- name: ...), with at least one")
    settings: dict[str, Any] = {}
    if "max_concurrent" in data and data["max_concurrent"] is not None:
        settings["max_concurrent"] = _number(path, data.lines["max_concurrent"],
                                             prefix + "max_concurrent", data["max_concurrent"],
                                             minimum=1, integer=True)
    if "fail_fast" in data:
        if not isinstance(data["fail_fast"], bool):
            raise PipelineFileError(path, data.lines["fail_fast"], prefix + "fail_fast",
                                    f"expected true or false, got {data['fail_fast']!r}")
        settings["fail_fast"] = data["fail_fast"]
    for key in ("executor", "tracker", "description", "story"):
        if key in data and data[key] is not None:
            if not isinstance(data[key], str):
                raise PipelineFileError(path, data.lines[key], prefix + key,
                                        f"expected a string, got {_kind(data[key])}")
            settings[key] = data[key]
    story = settings.pop("story", None)
    if story is not None and not story.lower().endswith((".html", ".md", ".markdown")):
        raise PipelineFileError(path, data.lines["story"], prefix + "story",
                                f"{story!r}: the story's file ends in .html or .md "
                                "({run_id}, {short_id} and {pipeline} are filled in)")
    folder = path.absolute().parent  # relative paths in the file are relative to it
    if story is not None:
        story = _absolute(story, folder)
    if settings.get("tracker", "").startswith("sqlite:///"):
        from pipectl.project import _sqlite_url

        settings["tracker"] = _sqlite_url(settings["tracker"], folder)
    pipe = Pipeline(name, plugin_manager=plugin_manager, **settings)
    seen: dict[str, int] = {}
    for index, raw in enumerate(steps):
        line = steps.lines[index]
        interpolated = _interpolate(path, raw, line, f"{prefix}steps[{index}]", values, env)
        raw = _relined(raw, interpolated) if isinstance(raw, _Map) else interpolated
        step_name, kwargs = _step_kwargs(path, raw, index, line, prefix, subpipeline)
        if step_name in seen:
            raise PipelineFileError(path, line, f"{prefix}steps[{index}].name",
                                    f"duplicate step {step_name!r} (first at line "
                                    f"{seen[step_name]}); step names must be unique")
        seen[step_name] = line
        func = kwargs.pop("func", None)
        if kwargs.get("step_type") == "data":
            _resolve_paths(kwargs["options"], folder, plugin_manager)
        pipe.add_step(step_name, func, **kwargs)
    pipe.params = values
    pipe.param_specs = declared
    pipe.source = str(path)
    pipe.story = story
    lines = _SourceLines({f"steps.{n}": line for n, line in seen.items()}, steps)
    lines.update({key: data.lines[key] for key in ("executor", "tracker") if key in data})
    pipe.source_lines = lines
    if not check_graph:  # validate() reports it with every other problem
        return pipe
    try:
        pipe.graph  # noqa: B018 - validates the DAG: duplicate, unknown or cyclic dependencies
    except PipectlError as exc:
        problems = getattr(exc, "problems", [str(exc)])
        named = re.search(r"step '([^']+)'", problems[0]) or re.search(r"cycle: (\S+)", problems[0])
        line = seen.get(named.group(1)) if named else None
        raise PipelineFileError(path, line, prefix + "steps", "; ".join(problems)) from None
    return pipe


_MAX_SOURCE_LINES = 100_000  # lines remembered per pipeline: a file is bounded anyway
_MAX_SOURCE_DEPTH = 8


class _SourceLines(dict):
    """``steps.NAME[.field]`` -> its line in the file. The lines of the steps' fields are
    recorded at the first look-up: only a problem to report needs them, and a valid file of
    thousands of steps has none."""

    def __init__(self, lines: dict[str, int], steps: list[Any]):
        super().__init__(lines)
        self._steps: list[Any] | None = steps

    def _fill(self) -> None:
        steps, self._steps = self._steps, None
        if steps is None:
            return
        budget = [_MAX_SOURCE_LINES]
        for raw in steps:
            if isinstance(raw, _Map) and isinstance(raw.get("name"), str):
                _record_lines(raw, f"steps.{raw['name']}", self, budget, 0)

    def __getitem__(self, key: str) -> int:
        self._fill()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __eq__(self, other: object) -> bool:
        self._fill()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._fill()
        return super().__repr__()

    def keys(self) -> Any:
        self._fill()
        return super().keys()

    def values(self) -> Any:
        self._fill()
        return super().values()

    def items(self) -> Any:
        self._fill()
        return super().items()

    def copy(self) -> dict[str, int]:
        self._fill()
        return dict(super().items())


def _record_lines(node: Any, field: str, lines: dict[str, int], budget: list[int],
                  depth: int) -> None:
    """The line of every key and item under a step (``steps.load.load[0].table``), so that a
    problem found later (validation) names the line of the field it is about."""
    if depth > _MAX_SOURCE_DEPTH:
        return
    if isinstance(node, _Map):
        for key, value in node.items():
            if budget[0] <= 0:
                return
            budget[0] -= 1
            name = f"{field}.{key}"
            lines.setdefault(name, node.lines.get(key, node.line or 0))
            _record_lines(value, name, lines, budget, depth + 1)
    elif isinstance(node, _Seq):
        for i, value in enumerate(node):
            if budget[0] <= 0:
                return
            budget[0] -= 1
            name = f"{field}[{i}]"
            if i < len(node.lines):
                lines.setdefault(name, node.lines[i])
            _record_lines(value, name, lines, budget, depth + 1)


def _resolve_paths(options: dict[str, Any], folder: Path, plugin_manager: Any) -> None:
    """A data step's relative paths made absolute against the pipeline file's ``folder``: its
    ``dead_letter``, and the options each component declares as a
    :data:`~pipectl.options.FilePath` (``path`` for the built-in files and sqlite components)."""
    if isinstance(options.get("dead_letter"), str):
        options["dead_letter"] = _absolute(options["dead_letter"], folder)
    pm = None
    for kind, key in (("extractors", "extract"), ("outputs", "load")):
        specs = options.get(key)
        for spec in specs if isinstance(specs, list) else [specs]:
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                continue
            relative = [k for k, v in spec.items() if isinstance(v, str) and v
                        and v != "-" and "://" not in v  # stdin, a URL
                        and not os.path.isabs(os.path.expanduser(v))]
            if not relative:
                continue
            if pm is None:
                from pipectl.plugins import default_plugin_manager

                pm = plugin_manager or default_plugin_manager()
            registry = pm.registries.of(kind)
            if spec["type"] not in registry:
                continue  # validation names the unknown component
            from pipectl.options import schema_of

            try:
                schema = schema_of(registry.get(spec["type"]))
            except Exception:  # noqa: BLE001 - validation reports a declaration that is broken
                schema = None
            names = schema.path_options if schema is not None else ()
            for option in names:
                if option in relative:
                    spec[option] = _absolute(spec[option], folder)


_PROBLEM_FIELD = (("no extractor named", "extract"), ("no output named", "load"),
                  ("extract", "extract"), ("load", "load"), ("transform", "transform"),
                  ("parameter", "run"), ("inputs", "inputs"))


def locate(pipe: Any, exc: PipectlError) -> str:
    """A validation error of a pipeline loaded from a file, one problem per line, each as
    ``file:line: field: problem`` (the line of the field it is about, else of its step)."""
    problems = getattr(exc, "problems", None)
    lines = getattr(pipe, "source_lines", None)
    if not problems or not lines or not pipe.source:
        return str(exc)
    return "\n".join(locate_problem(pipe, problem) for problem in problems)


_YAML_KEYS = {"transforms": "transform"}  # a data step's option named otherwise in a file


def locate_problem(pipe: Any, problem: str) -> str:
    """One problem of ``pipe`` (loaded from a file) as ``file:line: field: message``."""
    lines = pipe.source_lines
    step = getattr(problem, "step", None)
    if step is not None:  # a structured problem (pipectl.options.Problem)
        head, _, rest = problem.field.partition(".")
        key, bracket, tail = head.partition("[")
        head = _YAML_KEYS.get(key, key) + bracket + tail
        field = f"steps.{step}" + (f".{head}" if head else "") + (f".{rest}" if rest else "")
        text = problem.message + (f"; {problem.hint}" if problem.hint else "")
    else:
        match = re.match(r"step '([^']+)': (.*)", problem, re.S)
        graph = re.match(r"step '([^']+)' (depends on .*|.*cycle.*)", problem, re.S)
        if match:
            step, text = match.groups()
            field = f"steps.{step}"
            for fragment, key in _PROBLEM_FIELD:
                if fragment in text and f"{field}.{key}" in lines:
                    field = f"{field}.{key}"
                    break
        elif graph:
            step, text = graph.group(1), problem
            field = f"steps.{step}"
            for key in ("depends_on", "inputs", "when"):
                if f"{field}.{key}" in lines:
                    field = f"{field}.{key}"
                    break
        elif problem.startswith(("executor: ", "tracker: ")):
            field, _, text = problem.partition(": ")
        else:
            return f"{pipe.source}: {problem}"
    line = None
    probe = field
    while probe and line is None:
        line = lines.get(probe)
        cut = max(probe.rfind("."), probe.rfind("["))
        probe = probe[:cut] if cut > 0 else ""
    return (f"{pipe.source}:{line}: {field}: {text}" if line else
            f"{pipe.source}: {field}: {text}")


def _relined(original: _Map, value: dict) -> _Map:
    """``value`` (an interpolated copy of ``original``) with ``original``'s line numbers."""
    out = _Map({k: _relined(original[k], v)
                if isinstance(original.get(k), _Map) and isinstance(v, dict) else v
                for k, v in value.items()})
    out.line, out.lines = original.line, original.lines
    return out


# -- writing -----------------------------------------------------------------------------------


def reference(obj: Any, what: str) -> str:
    """``module:qualname`` for ``obj``, checked to import back to the same object."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(f"{what}: {obj!r} cannot be written to a pipeline file; define it at "
                         "the top level of a module, so that 'module:function' finds it")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj:
        raise ValueError(f"{what}: {module}:{qualname} does not import back to {obj!r}")
    return f"{module}:{qualname}"


def dump_pipeline(pipe: Any) -> dict[str, Any]:
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
    for key, default in (("max_concurrent", None), ("fail_fast", False), ("executor", "local"),
                         ("tracker", None)):
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
            raise ValueError(f"{where}: a sub-pipeline step cannot be written to a file of one "
                             "pipeline; write a file of several pipelines by hand")
        elif step.step_type == "data":
            options = dict(step.options)
            for key in ("extract", "load"):
                values = options[key] if key == "load" else [options[key]]
                if not all(isinstance(v, Mapping) for v in values):
                    raise ValueError(f"{where}: {key} must be given as {{type: ..., ...}} "
                                     "mappings to be written to a pipeline file")
            item["extract"] = dict(options["extract"])
            item["load"] = [dict(v) for v in options["load"]]
            transforms = []
            for t in options.get("transforms") or ():
                if isinstance(t, Mapping):  # {function: "module:function", per: ...} as read
                    transforms.append(dict(t))
                    continue
                func, per = (t.func, t.per) if hasattr(t, "per") else (t, "record")
                ref = t if isinstance(t, str) else reference(func, f"{where} transform")
                transforms.append(ref if per == "record" else {"function": ref, "per": per})
            if transforms:
                item["transform"] = transforms
            for key in ("batch_size", "buffer_size", "on_bad_record", "dead_letter",
                        "max_bad_records"):
                if key in options and not (key == "on_bad_record" and options[key] == "fail"):
                    item[key] = options[key]
        else:
            item["type"] = step.step_type
            if step.options:
                item["options"] = dict(step.options)
        if step.depends_on:
            item["depends_on"] = list(step.depends_on)
        if step.inputs:
            item["inputs"] = {k: v if isinstance(v, str) else v.text
                              for k, v in step.inputs.items()}
        if step.when is not None:
            item["when"] = step.when.text
        for key, target in (("retries", "retries"), ("retry_delay", "retry_delay"),
                            ("retry_backoff", "retry_backoff"), ("retry_max_delay", "backoff_cap"),
                            ("retry_jitter", "retry_jitter"), ("timeout", "timeout"),
                            ("allow_failure", "allow_failure")):
            if getattr(step, key) != getattr(defaults, key):
                item[target] = getattr(step, key)
        if step.trigger != defaults.trigger:
            item["trigger"] = step.trigger.value
        if step.retry_on:
            item["retry_on"] = [e.__name__ if getattr(builtins, e.__name__, None) is e
                                else reference(e, f"{where} retry_on") for e in step.retry_on]
        if step.rollback is not None:
            item["rollback"] = reference(step.rollback, f"{where} rollback")
        if step.resources:
            item["resources"] = dict(step.resources)
        if not step.store_output:
            item["store_output"] = False
        steps.append(item)
    out["steps"] = _secrets_as_references(steps, pipe)
    return _plain(out)


def _declarations(pipe: Any) -> dict[str, ParamSpec]:
    """The params of ``pipe``: those declared (a file's ``params:``, ``Pipeline.param``), then
    those only set in ``pipe.params``, typed by their value as ``Pipeline.param`` types them."""
    declared = dict(getattr(pipe, "param_specs", None) or {})
    for name, value in (getattr(pipe, "params", None) or {}).items():
        if name not in declared:
            type_name = {bool: "bool", int: "int", float: "float", str: "str",
                         list: "list"}.get(type(value), "json")
            declared[name] = ParamSpec(name, type_name, value, False, False, "")
    return declared


def _dump_params(pipe: Any) -> dict[str, Any]:
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


def _secrets_as_references(value: Any, pipe: Any) -> Any:
    """``value`` (the steps written for ``pipe``) with the value of each secret param in its
    strings (a file's ``${params.token}`` was filled in when the file was loaded) written back
    as ``${params.NAME}``, so that the file never holds a secret and loads back the same."""
    params = getattr(pipe, "params", None) or {}
    secrets = sorted(((str(params[n]), n) for n, p in _declarations(pipe).items()
                      if p.secret and params.get(n) is not None and len(str(params[n])) >= 3),
                     key=lambda item: len(item[0]), reverse=True)
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

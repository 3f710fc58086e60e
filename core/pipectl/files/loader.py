"""Reading a pipeline file: the bytes bounded and checked (size, encoding, characters), the
YAML (or JSON, a subset of YAML) loaded safely into mappings and lists that remember the line
of each key and item (:class:`Map`, :class:`Seq`), aliases and nesting bounded.

Loading is safe (``yaml.SafeLoader``, libyaml's when PyYAML has it), duplicate keys are
rejected, and nothing in the file is evaluated."""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, kind

__all__ = ["MAX_ALIASED", "MAX_FILE_BYTES", "MAX_NESTING", "Map", "Seq", "gc_paused", "read_file"]

# Limits of what a pipeline file can make pipectl do (each refused with file:line):
MAX_FILE_BYTES = 10_000_000  # the default size limit; PIPECTL_MAX_FILE_BYTES sets another
MAX_NESTING = 100  # levels of mappings and lists, aliases expanded
MAX_ALIASED = 1_000_000  # characters (and nodes) that aliases (*name) repeat, in all


class Map(dict[str, Any]):
    """A mapping from the file, with the line of each key."""

    line: int = 0
    lines: dict[str, int]


class Seq(list[Any]):
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
    """The loader class for the file at ``path`` (named in its errors)."""
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
    by_first = {
        first: tuple(found) + anywhere for first, found in patterns.items() if first is not None
    }
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
                super().flatten_mapping(node)
                return None
            self.flattening.add(node)
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    sources = (
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    merged = [n for n in sources if isinstance(n, yaml.MappingNode)]
                    for each in {id(n): n for n in merged}.values():
                        self.flatten_mapping(each)
                    self.repeated += sum(len(n.value) for n in merged)
                    self.check_repeated(key_node.start_mark.line + 1)
            super().flatten_mapping(node)
            self.flattening.discard(node)

        def check_repeated(self, line: int) -> None:
            if self.repeated > MAX_ALIASED:
                raise PipelineFileError(
                    path,
                    line,
                    None,
                    f"aliases (*name) and merges (<<) "
                    f"repeat more than {MAX_ALIASED:,} characters of values "
                    "in all (each use copies the whole anchored value): "
                    "refused as an alias bomb; write the values out, or use "
                    "fewer aliases",
                )

        def check_depth(self, depth: int, line: int) -> None:
            if depth > MAX_NESTING:
                raise PipelineFileError(
                    path,
                    line,
                    None,
                    f"mappings and lists nested more "
                    f"than {MAX_NESTING} levels deep (aliases expanded); "
                    "a pipeline file does not need that many",
                )

        if base is yaml.SafeLoader:  # libyaml refuses a lone surrogate's escape itself

            def construct_scalar(self, node: Any) -> Any:
                value = super().construct_scalar(node)
                if (
                    node.style == '"'
                    and not value.isprintable()
                    and any("\ud800" <= c <= "\udfff" for c in value)
                ):
                    raise PipelineFileError(
                        path,
                        node.start_mark.line + 1,
                        None,
                        "a \\u "
                        "escape of a lone surrogate (D800-DFFF) is not a "
                        "character; write the character, or its \\U escape",
                    )
                return value

    def construct_map(loader: Any, node: Any) -> Map:
        out = Map()
        out.line = node.start_mark.line + 1
        out.lines = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise PipelineFileError(
                    path, line, str(key), 'keys must be strings (quote it: "...")'
                )
            if key in out.lines:
                raise PipelineFileError(
                    path,
                    line,
                    key,
                    f"duplicate key (first at line {out.lines[key]}); each key may appear once",
                )
            out.lines[key] = loader.line = line
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    def construct_seq(loader: Any, node: Any) -> Seq:
        out = Seq()
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
_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"),
    (b"\xff\xfe", "UTF-16"),
)


def _measure(node: Any, measured: dict[Any, tuple[int, int]]) -> tuple[int, int]:
    """The size of ``node`` with its aliases expanded (characters of its scalars, plus one a
    node) and its height (levels of mappings and lists), remembered by node."""
    found = measured.get(node)
    if found is None:
        if isinstance(node.value, str):
            found = (len(node.value) + 1, 0)
        else:  # a list of nodes, or of (key, value) pairs
            parts = [
                _measure(child, measured)
                for item in node.value
                for child in (item if isinstance(item, tuple) else (item,))
            ]
            found = (
                1 + sum(size for size, _ in parts),
                1 + max((height for _, height in parts), default=0),
            )
        measured[node] = found
    return found


def _max_file_bytes(path: Path) -> int:
    text = os.environ.get("PIPECTL_MAX_FILE_BYTES", "").strip()
    if not text:
        return MAX_FILE_BYTES
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise PipelineFileError(
            path,
            None,
            "PIPECTL_MAX_FILE_BYTES",
            f"expected a number of bytes such as 50000000, got {text!r}",
        )
    return int(text)


def _position(raw: bytes, offset: int) -> tuple[int, int]:
    """The line and the column (in characters) of byte ``offset``, both from 1."""
    start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[start:offset].decode("utf-8", "replace")) + 1


def read_file(path: Path) -> Map:
    """The file at ``path`` as a :class:`Map` (every problem a :class:`PipelineFileError`:
    missing, too big, not UTF-8 text, not YAML, not a mapping); its values not checked."""
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
        raise PipelineFileError(
            path, None, None, f"cannot be read: {exc.strerror or exc}"
        ) from None
    if size > limit or len(raw) > limit:
        shown = f"{size:,} bytes" if size > limit else f"more than {limit:,} bytes"
        raise PipelineFileError(
            path,
            None,
            None,
            f"the file is {shown}, over the limit of "
            f"{limit:,} bytes for a pipeline file; if it really is one, set "
            "PIPECTL_MAX_FILE_BYTES to a larger number of bytes",
        )
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            raise PipelineFileError(
                path,
                1,
                None,
                f"the file is {encoding} text (it starts "
                f"with a {encoding} byte-order mark); a pipeline file is "
                "UTF-8: save it as UTF-8",
            )
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, column = _position(raw, nul)
        raise PipelineFileError(
            path,
            line,
            None,
            "is a binary file, not a YAML or JSON file "
            "(a NUL byte here; if it is UTF-16 or UTF-32 text, save it as "
            "UTF-8)",
            column,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start)
        raise PipelineFileError(
            path,
            line,
            None,
            f"is not UTF-8 text: byte "
            f"{raw[exc.start]:#04x} here ({exc.reason}); save the file as "
            "UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)",
            column,
        ) from None
    bad = _NOT_YAML.search(text)
    if bad:
        line, column = _position(raw, len(text[: bad.start()].encode("utf-8")))
        raise PipelineFileError(
            path,
            line,
            None,
            f"the character U+{ord(bad.group()):04X} "
            f"({bad.group()!r}) is not allowed in YAML; in a double-quoted "
            'string write it as an escape ("\\x1b")',
            column,
        )
    if not text.strip():
        raise PipelineFileError(
            path,
            1,
            None,
            "the file is empty; a pipeline file is a mapping with at least 'name' and 'steps'",
        )
    try:
        with gc_paused():
            data = yaml.load(text, Loader=_loader(str(path)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        lines = text.splitlines()
        here = lines[at - 1] if at and at <= len(lines) else ""
        hint = ""
        if "\t" in here or "'\\t'" in problem:
            hint = "; YAML does not allow tabs for indentation: use spaces"
        raise PipelineFileError(path, at, None, f"invalid YAML: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(path, None, None, f"invalid YAML: {exc}") from None
    except RecursionError:  # PyYAML without libyaml composes nested values recursively
        raise PipelineFileError(
            path, None, None, f"mappings and lists nested more than {MAX_NESTING} levels deep"
        ) from None
    if not isinstance(data, Map):  # (the loader builds every mapping as a Map)
        raise PipelineFileError(
            path,
            1,
            None,
            f"a pipeline file is a mapping (name: ..., steps: [...]), not {kind(data)}",
        )
    return data

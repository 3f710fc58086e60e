"""The ``csv``, ``jsonl`` and ``python`` extractors and the ``jsonl`` and ``csv`` outputs
(registered by the built-in plugin ``files``, :mod:`pipectl.builtins.files`).

Extractors
----------
``csv``
    ``path`` (a file, a glob pattern such as ``data/*.csv`` read in sorted order, or ``"-"`` for
    standard input), ``batch_size`` (10,000), ``delimiter`` (``","``), ``encoding``
    (``"utf-8"``; a leading byte-order mark is dropped from the first header name), ``header``
    (``True``: the first line names the columns), ``columns`` (a list of names: with a header,
    renames its columns by position and must have as many; without one, names the columns and is
    required), ``types`` (``{column: "int" | "float" | "bool" | "str"}``, by the names after
    ``columns``; an empty value of a typed column becomes ``None``; ``bool`` takes true/false,
    1/0, yes/no, t/f, y/n in any case; untyped values are strings). A path containing ``*``,
    ``?`` or ``[`` is a glob pattern (``**`` recursive). Files ending in ``.gz`` are
    decompressed on the fly. Every file of a glob has its own header.
    A row with the wrong number of fields, a value that does not convert and a row the csv
    module cannot parse are bad records (``ctx.bad_record``) at ``"path:line"``, the physical line
    where the row starts (the header is line 1). Blank lines are skipped. A header with a
    duplicate name, a typed column the file does not have, or a ``columns`` list of the wrong
    length is an error of the whole file (``ValueError``), not a bad record.
``incremental`` (both file extractors)
    ``{column: id, initial: 0}`` reads only the records whose ``column`` is greater than the
    cursor (the previous run's, else ``initial``; without it the first run reads everything),
    for files that only grow. After a complete read, ``state`` is ``{"cursor": the greatest
    value read}``; the data step commits it with the records in each output's load marker
    (:mod:`pipectl.loads`), so the next run starts where the committed records end. Records
    without the column are left out. Type the column (``types: {id: int}``) so that values
    compare as numbers.
``jsonl``
    ``path`` (file, glob or ``"-"``), ``batch_size``, ``encoding``; ``.gz`` decompressed. Each
    non-blank line is one JSON object; a line that is not valid JSON, or JSON that is not an
    object, is a bad record at ``"path:line"``.
``python``
    ``function`` (a callable, or ``"module:function"`` imported on first use), ``args`` (keyword
    arguments). The function returns or yields records (dicts) and/or batches (lists of dicts),
    re-batched to ``batch_size``. A sync function or generator gives a sync ``batches``; an
    ``async def`` function or async generator gives an async generator ``batches``. An item that
    is neither a record nor a batch of records is a bad record at
    ``"python module:function record N"`` (N counts the items the function gave, from 1).

Outputs
-------
Both are transactional (``guarantee = "transactional"``): ``open`` creates a temporary file
``.{basename}.pipectl-{pid}-{random}.tmp`` next to ``path`` (creating missing directories, and
removing the temporary files of pipectl processes that died), ``write`` appends to it,
``commit`` flushes, fsyncs and renames it over ``path`` with ``os.replace`` (an existing file's
permission bits are kept), ``abort`` and ``close`` delete it. A reader of ``path`` sees the old
file or the complete new one, never a partial one. ``mode`` is ``"replace"`` (the only mode: the
file is the output of this run). The load's marker (:mod:`pipectl.loads`) is written to
``.{basename}.pipectl-load`` just before the rename and names the file's inode, so it tells
which load the file at ``path`` holds whatever instant the process died.

``jsonl``
    ``path``, ``encoding`` (``"utf-8"``), ``compress`` (default: ``path`` ends in ``.gz``). One
    compact JSON object per line (``ensure_ascii=False``, separators ``,`` and ``:``); dates,
    times and datetimes are written in ISO format, ``Decimal`` and ``UUID`` as strings, any other
    non-JSON value fails the write.
``csv``
    ``path``, ``columns`` (default: the keys of the first record written), ``delimiter``
    (``","``), ``encoding``, ``compress``. A header line first (also when no record is written,
    if the columns are known). Keys not in ``columns`` are ignored; a missing key is an empty
    field, as is ``None``.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any, Literal

from pipectl.options import FilePath, rebuilt

DEFAULT_BATCH_SIZE = 10_000
STDIN = "-"
STDIN_NAME = "<stdin>"


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"batch_size must be a positive integer, got {value!r}")
    return value


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _expand(path: str) -> list[str]:
    """The files ``path`` names: itself, stdin, or the sorted matches of a glob pattern."""
    if path == STDIN:
        return [STDIN]
    if _is_glob(path):
        import glob

        matches = sorted(p for p in glob.glob(path, recursive=True) if not os.path.isdir(p))
        if not matches:
            raise FileNotFoundError(f"no file matches {path!r}")
        return matches
    return [path]


class _StdinText:
    """Standard input as text in the requested encoding, left open afterwards."""

    def __init__(self, encoding: str, newline: str | None):
        self.encoding = encoding
        self.newline = newline
        self._wrapper: io.TextIOWrapper | None = None

    def __enter__(self) -> Any:
        stdin = sys.stdin
        buffer = getattr(stdin, "buffer", None)
        if buffer is None:  # a text stream without bytes underneath (tests, embedding)
            return stdin
        self._wrapper = io.TextIOWrapper(buffer, encoding=self.encoding, newline=self.newline)
        return self._wrapper

    def __exit__(self, *exc: Any) -> None:
        if self._wrapper is not None:
            self._wrapper.detach()  # never close the process's stdin
            self._wrapper = None


def _open_text(path: str, encoding: str, newline: str | None) -> Any:
    if path == STDIN:
        return _StdinText(encoding, newline)
    if path.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return open(path, encoding=encoding, newline=newline)


def _display(path: str) -> str:
    return STDIN_NAME if path == STDIN else path


# ---------------------------------------------------------------------------------------------
# csv extractor
# ---------------------------------------------------------------------------------------------

_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
_BOOLS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}


def _to_bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    try:
        return _BOOLS[value.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"not a boolean: {value!r}") from None


_CONVERTERS: dict[str, Callable[[Any], Any] | None] = {
    "int": int,
    "float": float,
    "bool": _to_bool,
    "str": None,
}


def _physical_lines(row: list[str]) -> int:
    """How many line breaks the fields of ``row`` contain (quoted multi-line fields)."""
    breaks = 0
    for field in row:
        if "\n" in field or "\r" in field:
            breaks += field.count("\n") + field.count("\r") - field.count("\r\n")
    return breaks


def _csv_text(row: list[Any], delimiter: str) -> str:
    """``row`` as the CSV line it was read from (quoting normalised), for dead letters."""
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerow(row)
    return buf.getvalue()[:-2]


class _FileExtractor:
    """What the file extractors share: the files of ``path`` read in turn by ``_read(path,
    ctx)`` (batches of at most ``batch_size``), a file's last short batch topped up from the
    next file."""

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """What the options' types cannot say (``pipectl validate``): building one opens
        nothing, so it is built and thrown away."""
        cls(**options)

    kind = "file"
    path: str
    batch_size: int
    _column: str | None = None  # the cursor column of ``incremental``
    _cursor: Any = None

    def describe(self) -> str:
        return f"{self.kind} {self.path}"

    def _incremental(self, incremental: Any) -> None:
        if incremental is None:
            return
        if (
            not isinstance(incremental, dict)
            or not isinstance(incremental.get("column"), str)
            or set(incremental) - {"column", "initial"}
        ):
            raise ValueError(
                f"incremental must be {{column: NAME, initial: VALUE}} (initial "
                f"optional), got {incremental!r}"
            )
        self._column = incremental["column"]
        self._cursor = incremental.get("initial")

    @property
    def state(self) -> dict[str, Any] | None:
        """With ``incremental``: ``{"cursor": the greatest value read}`` after a complete read."""
        return None if self._column is None else {"cursor": self._cursor}

    def set_state(self, state: Any) -> None:
        """Read only records after the cursor of ``state`` (ignored without ``incremental``)."""
        if self._column is None or state is None:
            return
        if not isinstance(state, dict) or "cursor" not in state:
            raise ValueError(
                f"{self.kind} extractor state must be {{'cursor': value}}, got {state!r}"
            )
        self._cursor = state["cursor"]

    def _read(self, path: str, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        raise NotImplementedError

    def batches(self, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        if self._column is None:
            return self._batches(ctx)
        return self._after_cursor(ctx, self._column)

    def _after_cursor(self, ctx: Any, column: str) -> Iterator[list[dict[str, Any]]]:
        """The records whose cursor ``column`` is greater than the cursor; the cursor moves on
        to the greatest value read once the last batch is read."""
        cursor = self._cursor
        greatest = cursor
        for batch in self._batches(ctx):
            try:
                if cursor is not None:
                    batch = [r for r in batch if r.get(column) is not None and r[column] > cursor]
                else:
                    batch = [r for r in batch if r.get(column) is not None]
                top = max((r[column] for r in batch), default=None)
            except TypeError as exc:
                raise ValueError(
                    f"{self.describe()}: incremental column {column!r} holds values "
                    f"that cannot be compared with the cursor {cursor!r} ({exc}); "
                    f"give it a type with types: {{{column}: int}}"
                ) from None
            if top is not None and (greatest is None or top > greatest):
                greatest = top
            if batch:
                yield batch
        self._cursor = greatest

    def _batches(self, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        size = self.batch_size
        pending: list[dict[str, Any]] = []
        for path in _expand(self.path):
            for batch in self._read(path, ctx):
                if len(batch) == size and not pending:
                    yield batch
                    continue
                pending.extend(batch)  # the last, short batch of a file: top it up
                while len(pending) >= size:
                    yield pending[:size]
                    pending = pending[size:]
        if pending:
            yield pending


class CsvExtractor(_FileExtractor):
    """Reads CSV files: one record per row, keyed by the header's names.

    ``path``
        A file, a glob pattern (``data/*.csv``, read in sorted order; ``**`` recursive) or
        ``"-"`` for standard input; ``.gz`` files are decompressed on the fly.
    ``delimiter``
        The one character between fields.
    ``encoding``
        The files' encoding (a leading byte-order mark is dropped).
    ``header``
        Whether the first line names the columns.
    ``columns``
        Names for the columns, by position: with a header, renames them (as many as it has);
        without one, names them (required then).
    ``types``
        ``{column: "int" | "float" | "bool" | "str"}``: values converted (an empty value of a
        typed column becomes null); untyped values are strings.
    ``incremental``
        ``{column: NAME, initial: VALUE}``: read only records whose column is greater than the
        cursor the last committed load left (type the column so values compare as numbers).
    """

    kind = "csv"

    def __init__(
        self,
        path: FilePath,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        delimiter: str = ",",
        encoding: str = "utf-8",
        header: bool = True,
        columns: Iterable[str] | None = None,
        types: dict[str, str] | None = None,
        incremental: dict[str, Any] | None = None,
    ):
        self.path = os.fspath(path)
        self.batch_size = _batch_size(batch_size)
        self._incremental(incremental)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
        self.delimiter = delimiter
        self.encoding = encoding
        self.header = bool(header)
        self.columns = None if columns is None else [str(c) for c in columns]
        if not self.header and not self.columns:
            raise ValueError("a csv file without a header (header=False) needs columns=[...]")
        self.types: dict[str, Callable[[Any], Any]] = {}
        for column, type_name in (types or {}).items():
            if type_name not in _CONVERTERS:
                raise ValueError(
                    f"types[{column!r}] must be one of {', '.join(_CONVERTERS)}, got {type_name!r}"
                )
            converter = _CONVERTERS[type_name]
            if converter is not None:
                self.types[column] = converter

    # -- one file ------------------------------------------------------------------------------

    def _columns(self, reader: Any, name: str) -> list[str] | None:
        if self.header:
            header = next(reader, None)
            while header == []:  # blank lines before the header
                header = next(reader, None)
            if header is None:
                return None  # empty file
            if header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            if self.columns is not None:
                if len(self.columns) != len(header):
                    raise ValueError(
                        f"{name}: the header has {len(header)} columns {header!r}, "
                        f"columns= lists {len(self.columns)}"
                    )
                header = list(self.columns)
        else:
            header = list(self.columns or ())
        duplicates = sorted({c for c in header if header.count(c) > 1})
        if duplicates:
            raise ValueError(
                f"{name}: duplicate column names {duplicates!r} (rename them with columns=[...])"
            )
        missing = [c for c in self.types if c not in header]
        if missing:
            raise ValueError(
                f"{name}: types= names columns the file does not have: {missing!r} "
                f"(columns: {header!r})"
            )
        return header

    def _read(self, path: str, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        name = _display(path)
        size = self.batch_size
        delimiter = self.delimiter
        converters = list(self.types.items())
        with _open_text(path, self.encoding, "") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = self._columns(reader, name)
            if header is None:
                return
            n = len(header)
            batch: list[dict[str, Any]] = []
            append = batch.append
            record: dict[str, Any] | None
            while True:
                try:
                    for row in reader:
                        if len(row) == n:
                            record = dict(zip(header, row))
                            if converters:
                                try:
                                    for column, convert in converters:
                                        record[column] = convert(record[column])
                                except Exception:  # noqa: BLE001 - the slow path says what
                                    record = self._convert_slowly(
                                        row, header, ctx, name, reader.line_num
                                    )
                                    if record is None:
                                        continue
                            append(record)
                            if len(batch) == size:
                                yield batch
                                batch = []
                                append = batch.append
                        elif row:
                            line = reader.line_num - _physical_lines(row)
                            ctx.bad_record(
                                _csv_text(row, delimiter),
                                f"expected {n} fields, got {len(row)}",
                                f"{name}:{line}",
                            )
                    break
                except csv.Error as exc:
                    ctx.bad_record(None, f"unparsable csv: {exc}", f"{name}:{reader.line_num}")
            if batch:
                yield batch

    def _convert_slowly(
        self, row: list[str], header: list[str], ctx: Any, name: str, line_num: int
    ) -> dict[str, Any] | None:
        """Convert one row value by value: empty values become None, a bad one is reported."""
        record: dict[str, Any] = dict(zip(header, row))
        for column, convert in self.types.items():
            value = record[column]
            if value == "" or value is None:
                record[column] = None
                continue
            try:
                record[column] = convert(value)
            except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad record
                type_name = next(k for k, v in _CONVERTERS.items() if v is convert)
                line = line_num - _physical_lines(row)
                ctx.bad_record(
                    _csv_text(row, self.delimiter),
                    f"column {column!r}: cannot convert {value!r} to {type_name} "
                    f"({type(exc).__name__})",
                    f"{name}:{line}",
                )
                return None
        return record


# ---------------------------------------------------------------------------------------------
# jsonl extractor
# ---------------------------------------------------------------------------------------------


class JsonlExtractor(_FileExtractor):
    """Reads JSON Lines files: each non-blank line is one JSON object, one record.

    ``path``
        A file, a glob pattern or ``"-"`` for standard input; ``.gz`` decompressed.
    ``encoding``
        The files' encoding.
    ``incremental``
        ``{column: NAME, initial: VALUE}``: read only records whose column is greater than the
        cursor the last committed load left.
    """

    kind = "jsonl"

    def __init__(
        self,
        path: FilePath,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        encoding: str = "utf-8",
        incremental: dict[str, Any] | None = None,
    ):
        self.path = os.fspath(path)
        self.batch_size = _batch_size(batch_size)
        self.encoding = encoding
        self._incremental(incremental)

    def _read(self, path: str, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        import json

        loads = json.loads
        name = _display(path)
        size = self.batch_size
        first_line = 1
        with _open_text(path, self.encoding, None) as f:
            while True:
                lines = list(islice(f, size))
                if not lines:
                    return
                try:
                    batch = list(map(loads, lines))
                    if {*map(type, batch)} != {dict}:
                        raise TypeError
                except Exception:  # noqa: BLE001 - blank lines or bad records: line by line
                    batch = self._parse_slowly(lines, first_line, ctx, name, loads)
                first_line += len(lines)
                if batch:
                    yield batch

    @staticmethod
    def _parse_slowly(
        lines: list[str], first_line: int, ctx: Any, name: str, loads: Callable[[str], Any]
    ) -> list[dict[str, Any]]:
        batch = []
        for number, line in enumerate(lines, first_line):
            if not line.strip():
                continue
            try:
                value = loads(line)
            except ValueError as exc:  # JSONDecodeError
                ctx.bad_record(line.rstrip("\r\n"), f"invalid JSON: {exc}", f"{name}:{number}")
                continue
            if type(value) is not dict:
                ctx.bad_record(
                    line.rstrip("\r\n"),
                    f"expected a JSON object, got {type(value).__name__}",
                    f"{name}:{number}",
                )
                continue
            batch.append(value)
        return batch


# ---------------------------------------------------------------------------------------------
# python extractor
# ---------------------------------------------------------------------------------------------


def _import_function(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function must be a callable or 'module:function', got {spec!r}")
    import importlib

    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise TypeError(f"{spec!r} is not callable ({type(obj).__name__})")
    return obj


class PythonExtractor:
    """Records from a Python function: what it returns or yields, records (dicts) and/or
    batches (lists of dicts), re-batched to ``batch_size``.

    ``function``
        A callable, or ``"module:function"`` imported on first use; ``async def`` works too.
    ``args``
        Keyword arguments it is called with.

    ``batches`` is looked up on use: it is a sync generator method, or an async generator method
    when the function is ``async def`` (a coroutine or async generator function).
    """

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """What the options' types cannot say (``pipectl validate``): building one opens
        nothing, so it is built and thrown away."""
        cls(**options)

    def __init__(
        self,
        function: Callable[..., Any] | str,
        *,
        args: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if not callable(function) and not isinstance(function, str):
            raise TypeError(
                f"function must be a callable or 'module:function', got {type(function).__name__}"
            )
        if isinstance(function, str):  # imported on first use; its shape is checked now
            module_name, sep, attr = function.partition(":")
            if not sep or not module_name or not attr:
                raise ValueError(
                    f"function must be a callable or 'module:function', got {function!r}"
                )
        self.function = function
        self.args = dict(args or {})
        self.batch_size = _batch_size(batch_size)
        self._resolved: Callable[..., Any] | None = None if isinstance(function, str) else function
        self._is_async: bool | None = None

    @property
    def label(self) -> str:
        if isinstance(self.function, str):
            return self.function
        module = getattr(self.function, "__module__", None)
        name = getattr(self.function, "__qualname__", None) or type(self.function).__name__
        return f"{module}:{name}" if module else name

    def describe(self) -> str:
        return f"python {self.label}"

    def _resolve(self) -> tuple[Callable[..., Any], bool]:
        if self._resolved is None:
            self._resolved = _import_function(str(self.function))
        if self._is_async is None:
            import inspect

            fn = self._resolved
            call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
            self._is_async = (
                inspect.isasyncgenfunction(fn)
                or inspect.iscoroutinefunction(fn)
                or (
                    not inspect.isroutine(fn)
                    and not inspect.isclass(fn)
                    and (inspect.isasyncgenfunction(call) or inspect.iscoroutinefunction(call))
                )
            )
        return self._resolved, self._is_async

    @property
    def batches(self) -> Callable[[Any], Any]:
        """``self._sync_batches`` or ``self._async_batches``, by the function's kind."""
        _, is_async = self._resolve()
        return self._async_batches if is_async else self._sync_batches

    # -- the two drivers --------------------------------------------------------------------

    def _sync_batches(self, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        fn, _ = self._resolve()
        result = fn(**self.args)
        if hasattr(result, "__aiter__") or hasattr(result, "__await__"):
            if hasattr(result, "__await__") and hasattr(result, "close"):
                result.close()  # no "never awaited" warning
            raise TypeError(
                f"{self.label} returned an async {type(result).__name__} but is not "
                "declared async; make it an 'async def' function or generator"
            )
        try:
            yield from self._rebatch(self._items(result), ctx)
        finally:
            close = getattr(result, "close", None)  # a generator stopped early: finalize it now
            if close is not None and hasattr(result, "__next__"):
                close()

    async def _async_batches(self, ctx: Any) -> Any:
        fn, _ = self._resolve()
        result = fn(**self.args)
        if hasattr(result, "__await__"):
            result = await result
        if not hasattr(result, "__aiter__"):
            for full in self._rebatch(self._items(result), ctx):
                yield full
            return
        size = self.batch_size
        batch: list[dict[str, Any]] = []
        number = 0
        try:
            async for item in result:
                number += 1
                if type(item) is dict:
                    batch.append(item)
                    if len(batch) >= size:
                        yield batch
                        batch = []
                    continue
                batch, ready = self._absorb(item, number, batch, ctx)
                for full in ready:
                    yield full
        finally:
            aclose = getattr(result, "aclose", None)  # stopped early: finalize it now
            if aclose is not None:
                await aclose()
        if batch:
            yield batch

    @staticmethod
    def _items(result: Any) -> Iterable[Any]:
        if result is None:
            return ()
        if isinstance(result, dict):
            return (result,)
        items: Iterable[Any] = result  # what the function returned: records or batches
        return items

    def _rebatch(self, items: Iterable[Any], ctx: Any) -> Iterator[list[dict[str, Any]]]:
        size = self.batch_size
        batch: list[dict[str, Any]] = []
        append = batch.append
        for number, item in enumerate(items, 1):
            if type(item) is dict:
                append(item)
                if len(batch) >= size:
                    yield batch
                    batch = []
                    append = batch.append
                continue
            batch, ready = self._absorb(item, number, batch, ctx)
            append = batch.append
            yield from ready
        if batch:
            yield batch

    def _absorb(
        self, item: Any, number: int, batch: list[dict[str, Any]], ctx: Any
    ) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        """Add an item that is not a plain dict: a batch, another mapping, or a bad record.

        Returns the pending batch (possibly a new list) and the full batches to yield.
        """
        from collections.abc import Mapping

        size = self.batch_size
        position = f"{self.describe()} record {number}"  # like the other extractors' positions
        if isinstance(item, Mapping):
            batch.append(dict(item))
        elif isinstance(item, (list, tuple)):
            if {*map(type, item)} - {dict}:
                records = []
                for record in item:
                    if type(record) is dict:
                        records.append(record)
                    elif isinstance(record, Mapping):
                        records.append(dict(record))
                    else:
                        ctx.bad_record(
                            record,
                            f"expected a record (dict) in the batch, got {type(record).__name__}",
                            position,
                        )
                item = records
            if not batch and type(item) is list and len(item) == size:
                return batch, [item]
            batch.extend(item)
        else:
            ctx.bad_record(
                item,
                f"expected a record (dict) or a batch (list of dicts), got {type(item).__name__}",
                position,
            )
            return batch, []
        ready = []
        while len(batch) >= size:
            ready.append(batch[:size])
            batch = batch[size:]
        return batch, ready


# ---------------------------------------------------------------------------------------------
# transactional file outputs
# ---------------------------------------------------------------------------------------------


def _fsync_dir(directory: str) -> None:
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows: directories cannot be opened
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _AtomicFileOutput:
    """A file written to a temporary sibling and renamed into place on commit.

    Subclasses implement ``_encode_batch(batch) -> bytes`` and may implement
    ``_before_commit() -> bytes`` (what to write last, e.g. a header no record triggered).
    """

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """What the options' types cannot say (``pipectl validate``): building one opens
        nothing, so it is built and thrown away."""
        cls(**options)

    guarantee = "transactional"
    kind = "file"

    def __init__(
        self,
        path: FilePath,
        *,
        encoding: str = "utf-8",
        compress: bool | None = None,
        mode: Literal["replace"] = "replace",
    ):
        if mode != "replace":
            raise ValueError(
                f"mode must be 'replace' (the file is this run's output), got {mode!r}"
            )
        self._given: dict[str, Any] = {  # for with_options
            "path": path,
            "encoding": encoding,
            "compress": compress,
            "mode": mode,
        }
        self.path = os.fspath(path)
        if not self.path or self.path == STDIN:
            raise ValueError(f"path must be a file path, got {path!r}")
        self.encoding = encoding
        "".encode(encoding)  # an unknown encoding fails here, not at the first write
        self.compress = self.path.lower().endswith(".gz") if compress is None else bool(compress)
        self.mode = mode
        self._tmp: str | None = None
        self._raw: Any = None
        self._gz: Any = None
        self._out: Any = None
        self._load: Any = None

    def describe(self) -> str:
        return f"{self.kind} {self.path}"

    def with_options(self, **overrides: Any) -> Any:
        """A new output like this one, with ``overrides`` over the options it was built with
        (``output_config``); this one is unchanged."""
        return rebuilt(self, self._given, overrides)

    # -- load markers (pipectl.loads): a marker beside the file, valid for the renamed file --

    def _marker(self) -> Any:
        from pipectl.loads import FileMarker

        return FileMarker(os.path.abspath(self.path))

    def loaded(self, load: Any) -> Any:
        """The marker of ``load`` if the file at ``path`` is the one that load committed."""
        return self._marker().find(load)

    def last_load(self, load: Any) -> Any:
        """The marker of the load that wrote the file at ``path``, if it was this step's."""
        return self._marker().last(load)

    @property
    def temp_path(self) -> str | None:
        """The temporary file of the open attempt, if any."""
        return self._tmp

    def open(self, ctx: Any) -> None:
        from pipectl.loads import remove_stale_temp_files, temp_prefix

        self._discard()
        self._load = getattr(ctx, "load", None)
        target = os.path.abspath(self.path)
        directory, base = os.path.split(target)
        os.makedirs(directory, exist_ok=True)
        remove_stale_temp_files(target)  # left by pipectl processes that died mid-write
        prefix = temp_prefix(target)
        while True:
            tmp = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}.tmp")
            try:
                # 0o666 minus the umask, as open() would create the file
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
                )
            except FileExistsError:
                continue
            break
        self._tmp = tmp
        try:
            self._raw = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException:
            os.close(fd)
            raise
        try:
            mode = os.stat(target).st_mode & 0o7777
        except OSError:
            pass
        else:
            os.chmod(tmp, mode)  # replacing a file keeps its permissions
        if self.compress:
            import gzip

            self._gz = gzip.GzipFile(filename=base, mode="wb", fileobj=self._raw)
        self._out = self._gz if self._gz is not None else self._raw
        self._reset()

    def write(self, batch: list[dict[str, Any]]) -> None:
        if self._out is None:
            raise RuntimeError(f"{self.describe()}: write() before open() or after commit/abort")
        if batch:
            self._out.write(self._encode_batch(batch))

    def commit(self) -> None:
        if self._out is None or self._tmp is None:
            raise RuntimeError(f"{self.describe()}: commit() before open() or after commit/abort")
        tail = self._before_commit()
        if tail:
            self._out.write(tail)
        if self._gz is not None:
            self._gz.close()  # writes the gzip trailer, leaves the raw file open
            self._gz = None
        raw, self._raw, self._out = self._raw, None, None
        try:
            raw.flush()
            os.fsync(raw.fileno())
        finally:
            raw.close()
        if self._load is not None:  # the marker first: it is valid only once the rename is done
            self._marker().prepare(self._tmp, self._load.marker(), keep=False)
        from pipectl import faults

        faults.reach("output.mid-commit")
        os.replace(self._tmp, self.path)
        self._tmp = None
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        self._discard()

    def close(self) -> None:
        self._discard()  # after commit there is nothing left; otherwise this is an abort

    def _discard(self) -> None:
        gz, raw, tmp = self._gz, self._raw, self._tmp
        self._gz = self._raw = self._out = self._tmp = None
        for handle in (gz, raw):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001 - the file is deleted anyway
                    pass
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    # -- for subclasses ----------------------------------------------------------------------

    def _reset(self) -> None:
        """Called at each open()."""

    def _encode_batch(self, batch: list[dict[str, Any]]) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def _before_commit(self) -> bytes:
        return b""


def _json_default(value: Any) -> Any:
    import datetime
    import decimal
    import uuid

    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_encoders() -> tuple[Any, Callable[[Any], str]]:
    """(the C encoder, or None; ``JSONEncoder.encode``) for compact, non-ASCII-escaping JSON.

    ``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder for every call, which is
    about half the cost of encoding a small record; the C encoder built once, as ``json``
    itself builds it, halves the time of a batch. Without circular-reference markers (a shared
    markers dict keeps stale entries after a failed encode): a circular record fails with
    ``RecursionError`` instead of ``ValueError``.
    """
    import json
    from json import encoder as json_encoder

    encode = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), default=_json_default
    ).encode
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python implementation)
        return None, encode
    try:
        c_encode = make(
            None, _json_default, json_encoder.encode_basestring, None, ":", ",", False, False, True
        )
        if "".join(c_encode({"a": [1, 1.5, None, "é"]}, 0)) != '{"a":[1,1.5,null,"é"]}':
            return None, encode
    except Exception:  # noqa: BLE001 - a changed private signature: use the public path
        return None, encode
    return c_encode, encode


class JsonlOutput(_AtomicFileOutput):
    """Writes JSON Lines: one compact JSON object per line, replacing the file atomically.

    ``path``
        The file (missing folders are created); a reader sees the old file or the whole new one.
    ``encoding``
        The file's encoding.
    ``compress``
        gzip the file (default: when ``path`` ends in ``.gz``).
    ``mode``
        ``"replace"``, the only mode: the file is this run's output.
    """

    kind = "jsonl"

    def __init__(
        self,
        path: FilePath,
        *,
        encoding: str = "utf-8",
        compress: bool | None = None,
        mode: Literal["replace"] = "replace",
    ):
        super().__init__(path, encoding=encoding, compress=compress, mode=mode)
        self._c_encode, self._encode = _json_encoders()

    def _encode_batch(self, batch: list[dict[str, Any]]) -> bytes:
        c_encode = self._c_encode
        if c_encode is not None:
            join = "".join
            lines = [join(c_encode(record, 0)) for record in batch]
        else:
            lines = list(map(self._encode, batch))
        lines.append("")  # the last line's newline
        return "\n".join(lines).encode(self.encoding)


class CsvOutput(_AtomicFileOutput):
    """Writes CSV with a header line, replacing the file atomically.

    ``path``
        The file (missing folders are created); a reader sees the old file or the whole new one.
    ``columns``
        The columns, in order (default: the keys of the first record written).
    ``delimiter``
        The one character between fields.
    ``encoding``
        The file's encoding.
    ``compress``
        gzip the file (default: when ``path`` ends in ``.gz``).
    ``mode``
        ``"replace"``, the only mode: the file is this run's output.
    """

    kind = "csv"

    def __init__(
        self,
        path: FilePath,
        *,
        columns: Iterable[str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        compress: bool | None = None,
        mode: Literal["replace"] = "replace",
    ):
        super().__init__(path, encoding=encoding, compress=compress, mode=mode)
        self._given.update(columns=columns, delimiter=delimiter)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be a single character, got {delimiter!r}")
        self.delimiter = delimiter
        self.columns = None if columns is None else [str(c) for c in columns]
        if self.columns is not None and not self.columns:
            raise ValueError("columns must name at least one column")
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=delimiter, lineterminator="\r\n")
        self._cols: list[str] | None = None
        self._get: Callable[[dict[str, Any]], Any] | None = None
        self._header_written = False

    def _reset(self) -> None:
        self._cols = self.columns
        self._get = None
        self._header_written = False

    def _take(self) -> bytes:
        data = self._buffer.getvalue().encode(self.encoding)
        self._buffer.seek(0)
        self._buffer.truncate()
        return data

    def _write_header(self, columns: list[str]) -> None:
        self._writer.writerow(columns)
        self._header_written = True

    def _encode_batch(self, batch: list[dict[str, Any]]) -> bytes:
        if self._cols is None:
            self._cols = list(batch[0])
        cols = self._cols
        if not self._header_written:
            self._write_header([str(c) for c in cols])
        if self._get is None:
            self._get = itemgetter(*cols) if len(cols) > 1 else (lambda r, c=cols[0]: (r[c],))
        mark = self._buffer.tell()
        try:
            self._writer.writerows(map(self._get, batch))
        except KeyError:  # a record without some column: those fields are empty
            self._buffer.seek(mark)
            self._buffer.truncate()
            self._writer.writerows([tuple(map(r.get, cols)) for r in batch])
        return self._take()

    def _before_commit(self) -> bytes:
        if not self._header_written and self._cols:
            self._write_header([str(c) for c in self._cols])
            return self._take()
        return b""


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

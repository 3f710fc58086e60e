"""The ``sqlite`` output (built-in plugin ``sqlite``), one SQLite transaction per attempt.

Options
-------
``path``
    The database file (missing directories are created).
``table``
    The table to write. Any name works: table and column names are always quoted as SQL
    identifiers, never pasted into SQL.
``columns``
    Optional ``{name: SQL type}``, e.g. ``{"id": "INTEGER", "name": "TEXT"}``. A missing table is
    created with them; an existing table must have them, and then only these columns are
    written (the others keep their defaults). Without ``columns``, an existing table's columns
    are all written, and a missing table is created at the first write from the keys of the
    first batch (in order of appearance), typed by their first non-``None`` value: ``int`` and
    ``bool`` ``INTEGER``, ``float`` ``REAL``, ``bytes`` ``BLOB``, anything else ``TEXT``.
    Types are SQL type names (``VARCHAR(20)``, ``NUMERIC(10, 2)``, ``INTEGER NOT NULL``), checked
    so that they cannot inject SQL.
``key``
    Optional column name or list of names. Rows are upserted on it (``INSERT ... ON CONFLICT
    (key) DO UPDATE SET`` every other written column), so a re-run converges: ``guarantee`` is
    ``"idempotent"``, else ``"transactional"``. A table created by this output gets
    ``UNIQUE (key)`` and ``NOT NULL`` key columns (a record without its key fails the write); an
    existing table needs a primary key or a unique index on exactly those columns.
``mode``
    ``"append"`` (default) adds to the table; ``"replace"`` deletes its rows first, in the same
    transaction, so readers see the old rows or the new ones.
``timeout``
    Seconds to wait for another writer's lock (30).

Records: a key that is not a written column is ignored; a written column missing from a record
is ``NULL``. Values are bound as parameters (``int``, ``float``, ``str``, ``bytes``, ``None``;
``bool`` as 0/1).

Lifecycle: ``open`` connects (WAL journal, ``synchronous=NORMAL``), starts ``BEGIN IMMEDIATE``,
creates the table if it can and applies ``mode``; ``write`` is one ``executemany`` per batch;
``commit`` writes the load's marker and commits; ``abort`` rolls back (a table created by the
attempt disappears with it); ``close`` rolls back anything uncommitted and disconnects, in any
state. The connection may be used from a different thread at each call (never from two at once).

Load markers (:mod:`pipectl.loads`): ``commit`` inserts a row into the table
``_pipectl_loads`` of the same database, in the same transaction as the records: the pipeline,
the run, the step and the output name (its primary key, so the same load can never commit
twice), the number of records and the extractor's cursor. ``loaded`` and ``last_load`` read it.

Several outputs on one database file (of one data step, or of steps running at once in one
process): the first to open holds the write lock for its attempt, as above; the others write
their records to a temporary table of their own connection (which takes no lock on the file)
and move them into the table in one short transaction at ``commit``, so none waits for another
to finish before it can write, and each still commits its records and marker atomically.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, Literal, cast

from pipectl.options import FilePath, rebuilt

#: the table of load markers, in each database the output writes
LOADS_TABLE = "_pipectl_loads"

_LOADS_DDL = (
    f'CREATE TABLE IF NOT EXISTS "{LOADS_TABLE}" ('
    "pipeline TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT NOT NULL, "
    "output TEXT NOT NULL, target TEXT, records INTEGER NOT NULL, state TEXT, "
    "committed_by TEXT NOT NULL, committed_at TEXT NOT NULL, "
    "PRIMARY KEY (pipeline, run_id, step, output))"
)

#: the database files whose write lock a SqliteOutput of this process holds now
_locked_files: dict[str, int] = {}
_locked_guard = threading.Lock()


#: An SQL type name: words, then optional (n) or (n, m). Compiled on first use (re caches it).
_SQL_TYPE = (
    r"^[A-Za-z][A-Za-z0-9_]*(?: +[A-Za-z][A-Za-z0-9_]*)*"
    r"(?: *\( *[+-]?\d+ *(?:, *[+-]?\d+ *)?\))?$"
)


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier: in double quotes, embedded double quotes doubled."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an SQL identifier must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"an SQL identifier cannot contain NUL: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _check_type(column: str, sql_type: Any) -> str:
    import re

    if not isinstance(sql_type, str) or (
        sql_type.strip() and not re.match(_SQL_TYPE, sql_type.strip())
    ):
        raise ValueError(
            f"columns[{column!r}]: {sql_type!r} is not an SQL type name "
            "(like INTEGER, TEXT, REAL, BLOB, VARCHAR(20), NUMERIC(10, 2))"
        )
    return sql_type.strip()


def _infer_type(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "BLOB"
    return "TEXT"


class SqliteOutput:
    """Writes records to an SQLite table, in one transaction per attempt; upserts on ``key``
    (see the module docstring for the lifecycle and load markers)."""

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """What the options' types cannot say (``pipectl validate``): building one opens
        nothing, so it is built and thrown away."""
        cls(**options)

    def __init__(
        self,
        path: FilePath,
        table: str,
        *,
        columns: dict[str, str] | None = None,
        key: str | Iterable[str] | None = None,
        mode: Literal["append", "replace"] = "append",
        timeout: float = 30.0,
    ):
        given = {"path": path, "table": table, "columns": columns, "key": key}
        self._given: dict[str, Any] = {**given, "mode": mode, "timeout": timeout}
        self.path = os.fspath(path)
        quote_identifier(table)
        self.table = table
        if mode not in ("append", "replace"):
            raise ValueError(f"mode must be 'append' or 'replace', got {mode!r}")
        self.mode = mode
        if columns is not None:
            if not isinstance(columns, dict) or not columns:
                raise ValueError("columns must be a non-empty dict {name: SQL type}")
            columns = {str(c): _check_type(c, t) for c, t in columns.items()}
            for c in columns:
                quote_identifier(c)
        self.columns: dict[str, str] | None = columns
        if key is None:
            self.key: list[str] = []
        elif isinstance(key, str):
            self.key = [key]
        else:
            self.key = [str(k) for k in key]
            if not self.key:
                raise ValueError("key must name at least one column")
        if len(set(self.key)) != len(self.key):
            raise ValueError(f"key names a column twice: {self.key!r}")
        for k in self.key:
            quote_identifier(k)
        if self.columns is not None and self.key:
            missing = [k for k in self.key if k not in self.columns]
            if missing:
                raise ValueError(
                    f"key column(s) {missing!r} are not in columns {list(self.columns)!r}"
                )
        self.guarantee = "idempotent" if self.key else "transactional"
        self.timeout = timeout
        self._conn: Any = None
        self._insert: str | None = None
        self._cols: list[str] | None = None
        self._get: Callable[[dict[str, Any]], Any] | None = None
        self._load: Any = None
        self._locked: str | None = None  # the file whose write lock this attempt holds
        self._staging: list[str] | None = None  # columns of the temporary table, when staging
        self._create_at_commit: dict[str, str] | None = None

    def describe(self) -> str:
        return f"sqlite {self.path} table {self.table}"

    def with_options(self, **overrides: Any) -> Any:
        """A new output like this one, with ``overrides`` over the options it was built with
        (``output_config``); this one is unchanged."""
        return rebuilt(self, self._given, overrides)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, ctx: Any) -> None:
        import sqlite3

        self.close()
        if self.path != ":memory:" and not self.path.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
        self._load = getattr(ctx, "load", None)
        self._conn = conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.timeout, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        if not self._take_lock():
            self._open_staging()
            return
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_LOADS_DDL)
        existing = self._table_columns()
        if existing:
            written = self._written(existing)
            if self.mode == "replace":
                conn.execute(f"DELETE FROM {quote_identifier(self.table)}")
            self._prepare(written)
        elif self.columns is not None:
            self._create(self.columns)
        # else: created from the first batch

    def write(self, batch: list[dict[str, Any]]) -> None:
        if self._conn is None:
            raise RuntimeError(f"{self.describe()}: write() before open() or after close()")
        if not batch:
            return
        if self._insert is None:
            columns = self._columns_of(batch)
            if self._staging is not None:  # the table is created at commit, under the lock
                self._create_at_commit = columns
                self._stage(list(columns))
            else:
                self._create(columns)
        # set with _insert (above or by an earlier write)
        get = cast("Callable[[dict[str, Any]], Any]", self._get)
        try:
            rows = list(map(get, batch))
        except KeyError:  # a record without some column: NULL there
            cols = cast("list[str]", self._cols)
            rows = [tuple(map(r.get, cols)) for r in batch]
        self._conn.executemany(self._insert, rows)

    def commit(self) -> None:
        if self._conn is None:
            raise RuntimeError(f"{self.describe()}: commit() before open() or after close()")
        from pipectl import faults

        if self._staging is not None:
            self._merge_staged()
        if self._load is not None:
            self._insert_marker(self._load.marker())
        faults.reach("output.mid-commit")
        self._conn.execute("COMMIT")
        self._release_lock()

    def abort(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - closing the connection rolls back too
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._insert = self._cols = self._get = None
        self._staging = self._create_at_commit = None
        self._release_lock()
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - close() must work in any state
            pass
        finally:
            conn.close()

    # -- load markers ----------------------------------------------------------------------------

    def loaded(self, load: Any) -> Any:
        """The marker of ``load`` in this database, if it committed."""
        rows = self._markers("pipeline = ? AND run_id = ? AND step = ? AND output = ?", load.key)
        return rows[0] if rows else None

    def last_load(self, load: Any) -> Any:
        """The latest marker of this pipeline, step and output in this database."""
        rows = self._markers(
            "pipeline = ? AND step = ? AND output = ? ORDER BY rowid DESC LIMIT 1",
            (load.pipeline, load.step, load.output),
        )
        return rows[0] if rows else None

    def _markers(self, where: str, params: tuple[Any, ...]) -> list[Any]:
        import json
        import sqlite3

        from pipectl.loads import LoadMarker

        try:
            rows = self._conn.execute(
                "SELECT pipeline, run_id, step, output, records, state, committed_by, "
                f'committed_at FROM "{LOADS_TABLE}" WHERE {where}',
                params,
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [
            LoadMarker(p, r, st, o, n, json.loads(state) if state else None, by, at)
            for p, r, st, o, n, state, by, at in rows
        ]

    def _insert_marker(self, marker: Any) -> None:
        import json
        import sqlite3

        conn = self._conn
        conn.execute(_LOADS_DDL)
        try:
            conn.execute(
                f'INSERT INTO "{LOADS_TABLE}" (pipeline, run_id, step, output, target, records, '
                "state, committed_by, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    marker.pipeline,
                    marker.run_id,
                    marker.step,
                    marker.output,
                    self.table,
                    marker.records,
                    None
                    if marker.state is None
                    else json.dumps(marker.state, sort_keys=True, default=str),
                    marker.committed_by,
                    marker.committed_at,
                ),
            )
        except sqlite3.IntegrityError:
            other = self.loaded(self._load)
            raise RuntimeError(
                f"{self.describe()}: the load of step {marker.step!r} into output "
                f"{marker.output!r} of run {marker.run_id} was already committed"
                + (f" by run {other.committed_by}" if other else "")
                + " (another process resumed the same run?); nothing was written twice"
            ) from None

    # -- several outputs on one file -------------------------------------------------------------

    def _file_key(self) -> str | None:
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        return os.path.realpath(self.path)

    def _take_lock(self) -> bool:
        """True if this attempt may hold the file's write lock (no other output of this
        process holds it); it is then counted as held until commit or close."""
        key = self._file_key()
        if key is None:
            return True
        with _locked_guard:
            if _locked_files.get(key):
                return False
            _locked_files[key] = 1
        self._locked = key
        return True

    def _release_lock(self) -> None:
        key, self._locked = self._locked, None
        if key is not None:
            with _locked_guard:
                _locked_files.pop(key, None)

    def _open_staging(self) -> None:
        """Open without the write lock: records go to a temporary table until commit."""
        self._staging = []
        existing = self._table_columns()
        if existing:
            written = self._written(existing)
            self._stage(written)
        elif self.columns is not None:
            self._create_at_commit = dict(self.columns)
            self._stage(list(self.columns))
        # else: staged from the first batch

    def _stage(self, cols: list[str]) -> None:
        quoted = ", ".join(quote_identifier(c) for c in cols)
        self._conn.execute('DROP TABLE IF EXISTS temp."pipectl_staging"')
        self._conn.execute(f'CREATE TEMP TABLE "pipectl_staging" ({quoted})')
        self._staging = cols
        self._insert = (
            f'INSERT INTO temp."pipectl_staging" ({quoted}) VALUES ({", ".join("?" * len(cols))})'
        )
        self._cols = cols
        self._get = itemgetter(*cols) if len(cols) > 1 else (lambda r, c=cols[0]: (r[c],))

    def _merge_staged(self) -> None:
        """Under the write lock, in one transaction: create, replace, move the staged rows."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        if self._create_at_commit is not None and not self._table_columns():
            staged = self._staging
            self._create(self._create_at_commit)
            self._staging = staged
        elif self.mode == "replace":
            conn.execute(f"DELETE FROM {quote_identifier(self.table)}")
        cols = self._staging or []
        if cols:
            quoted = [quote_identifier(c) for c in cols]
            names = ", ".join(quoted)
            sql = (
                f"INSERT INTO {quote_identifier(self.table)} ({names}) SELECT {names} "
                'FROM temp."pipectl_staging" WHERE true ORDER BY rowid'
            )
            if self.key:
                target = ", ".join(quote_identifier(k) for k in self.key)
                updates = [f"{q} = excluded.{q}" for c, q in zip(cols, quoted) if c not in self.key]
                sql += (
                    f" ON CONFLICT ({target}) DO UPDATE SET {', '.join(updates)}"
                    if updates
                    else f" ON CONFLICT ({target}) DO NOTHING"
                )
            conn.execute(sql)
        conn.execute('DROP TABLE IF EXISTS temp."pipectl_staging"')

    # -- schema ----------------------------------------------------------------------------------

    def _table_columns(self) -> list[str]:
        rows = self._conn.execute("SELECT name FROM pragma_table_info(?)", (self.table,))
        return [r[0] for r in rows]

    def _written(self, existing: list[str]) -> list[str]:
        """The columns written to an existing table with ``existing`` columns, checked: they
        exist, and the key is among them with a unique index on it."""
        written = list(self.columns) if self.columns is not None else existing
        unknown = [c for c in written if c not in existing]
        if unknown:
            raise ValueError(
                f"table {self.table!r} has no column(s) {unknown!r} (its columns: {existing!r})"
            )
        if self.key:
            missing = [k for k in self.key if k not in written]
            if missing:
                raise ValueError(
                    f"key column(s) {missing!r} are not written to table {self.table!r}"
                )
            self._check_unique_key()
        return written

    def _check_unique_key(self) -> None:
        conn = self._conn
        wanted = set(self.key)
        pk = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0", (self.table,)
            )
        ]
        if set(pk) == wanted:
            return
        indexes = conn.execute(
            'SELECT name FROM pragma_index_list(?) WHERE "unique" AND NOT partial', (self.table,)
        ).fetchall()
        for (index,) in indexes:
            cols = [r[0] for r in conn.execute("SELECT name FROM pragma_index_info(?)", (index,))]
            if set(cols) == wanted and len(cols) == len(wanted):
                return
        raise ValueError(
            f"table {self.table!r} has no primary key or unique index on exactly {self.key!r}, "
            "which an upsert on key= needs (CREATE UNIQUE INDEX ... ON the table (those columns))"
        )

    def _columns_of(self, batch: list[dict[str, Any]]) -> dict[str, str]:
        from itertools import chain

        names = list(dict.fromkeys(chain.from_iterable(batch)))  # non-str keys fail when quoted
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(
                f"key column(s) {missing!r} are not in the records (their keys: {names!r})"
            )
        types = {}
        for name in names:
            value = None
            for record in batch:
                value = record.get(name)
                if value is not None:
                    break
            types[name] = _infer_type(value)
        return types

    def _create(self, columns: dict[str, str]) -> None:
        parts = []
        for name, sql_type in columns.items():
            part = f"{quote_identifier(name)} {sql_type}".rstrip()
            if name in self.key and "NOT NULL" not in sql_type.upper():
                part += " NOT NULL"
            parts.append(part)
        if self.key:
            # UNIQUE rather than PRIMARY KEY: a single INTEGER PRIMARY KEY column is the rowid,
            # which turns a NULL key into a new row id instead of refusing it
            parts.append(f"UNIQUE ({', '.join(map(quote_identifier, self.key))})")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.table)} ({', '.join(parts)})"
        )
        self._prepare(list(columns))

    def _prepare(self, cols: list[str]) -> None:
        quoted = [quote_identifier(c) for c in cols]
        sql = (
            f"INSERT INTO {quote_identifier(self.table)} ({', '.join(quoted)}) "
            f"VALUES ({', '.join('?' * len(cols))})"
        )
        if self.key:
            target = ", ".join(quote_identifier(k) for k in self.key)
            updates = [f"{q} = excluded.{q}" for c, q in zip(cols, quoted) if c not in self.key]
            sql += (
                f" ON CONFLICT ({target}) DO UPDATE SET {', '.join(updates)}"
                if updates
                else f" ON CONFLICT ({target}) DO NOTHING"
            )
        self._insert = sql
        self._cols = cols
        if len(cols) > 1:
            self._get = itemgetter(*cols)
        else:
            only = cols[0]
            self._get = lambda r: (r[only],)

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
``commit`` commits; ``abort`` rolls back (a table created by the attempt disappears with it);
``close`` rolls back anything uncommitted and disconnects, in any state. The connection may be
used from a different thread at each call (never from two at once).
"""

from __future__ import annotations

import os
from operator import itemgetter
from typing import Any, Callable, Iterable


#: An SQL type name: words, then optional (n) or (n, m). Compiled on first use (re caches it).
_SQL_TYPE = (r"^[A-Za-z][A-Za-z0-9_]*(?: +[A-Za-z][A-Za-z0-9_]*)*"
             r"(?: *\( *[+-]?\d+ *(?:, *[+-]?\d+ *)?\))?$")


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier: in double quotes, embedded double quotes doubled."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an SQL identifier must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"an SQL identifier cannot contain NUL: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _check_type(column: str, sql_type: Any) -> str:
    import re

    if not isinstance(sql_type, str) or (sql_type.strip()
                                         and not re.match(_SQL_TYPE, sql_type.strip())):
        raise ValueError(f"columns[{column!r}]: {sql_type!r} is not an SQL type name "
                         "(like INTEGER, TEXT, REAL, BLOB, VARCHAR(20), NUMERIC(10, 2))")
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
    """Writes records to an SQLite table (see the module docstring for the options)."""

    def __init__(
        self,
        path: str,
        table: str,
        *,
        columns: dict[str, str] | None = None,
        key: str | Iterable[str] | None = None,
        mode: str = "append",
        timeout: float = 30.0,
    ):
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
                raise ValueError(f"key column(s) {missing!r} are not in columns "
                                 f"{list(self.columns)!r}")
        self.guarantee = "idempotent" if self.key else "transactional"
        self.timeout = timeout
        self._conn: Any = None
        self._insert: str | None = None
        self._cols: list[str] | None = None
        self._get: Callable[[dict[str, Any]], Any] | None = None

    def describe(self) -> str:
        return f"sqlite {self.path} table {self.table}"

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, ctx: Any) -> None:
        import sqlite3

        self.close()
        if self.path != ":memory:" and not self.path.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
        self._conn = conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout,
                                            check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        existing = self._table_columns()
        if existing:
            written = list(self.columns) if self.columns is not None else existing
            unknown = [c for c in written if c not in existing]
            if unknown:
                raise ValueError(f"table {self.table!r} has no column(s) {unknown!r} "
                                 f"(its columns: {existing!r})")
            if self.key:
                missing = [k for k in self.key if k not in written]
                if missing:
                    raise ValueError(f"key column(s) {missing!r} are not written to table "
                                     f"{self.table!r}")
                self._check_unique_key()
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
            self._create(self._columns_of(batch))
        get = self._get
        try:
            rows = list(map(get, batch))
        except KeyError:  # a record without some column: NULL there
            cols = self._cols
            rows = [tuple(map(r.get, cols)) for r in batch]
        self._conn.executemany(self._insert, rows)

    def commit(self) -> None:
        if self._conn is None:
            raise RuntimeError(f"{self.describe()}: commit() before open() or after close()")
        self._conn.execute("COMMIT")

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
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - close() must work in any state
            pass
        finally:
            conn.close()

    # -- schema ----------------------------------------------------------------------------------

    def _table_columns(self) -> list[str]:
        rows = self._conn.execute("SELECT name FROM pragma_table_info(?)", (self.table,))
        return [r[0] for r in rows]

    def _check_unique_key(self) -> None:
        conn = self._conn
        wanted = set(self.key)
        pk = [r[0] for r in conn.execute(
            "SELECT name FROM pragma_table_info(?) WHERE pk > 0", (self.table,))]
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
            raise ValueError(f"key column(s) {missing!r} are not in the records "
                             f"(their keys: {names!r})")
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
        sql = (f"INSERT INTO {quote_identifier(self.table)} ({', '.join(quoted)}) "
               f"VALUES ({', '.join('?' * len(cols))})")
        if self.key:
            target = ", ".join(quote_identifier(k) for k in self.key)
            updates = [f"{q} = excluded.{q}" for c, q in zip(cols, quoted) if c not in self.key]
            sql += (f" ON CONFLICT ({target}) DO UPDATE SET {', '.join(updates)}" if updates
                    else f" ON CONFLICT ({target}) DO NOTHING")
        self._insert = sql
        self._cols = cols
        if len(cols) > 1:
            self._get = itemgetter(*cols)
        else:
            only = cols[0]
            self._get = lambda r: (r[only],)

"""The ``postgres`` output: bulk loads with ``COPY``, one PostgreSQL transaction per attempt.

Options
-------
``dsn`` or ``dsn_env``
    The connection string, or the name of an environment variable holding it (keeps the
    password out of pipeline files). It is never shown: messages say ``user@host:port/dbname``.
``table``, ``schema``
    The table to write, in ``schema`` (default: the connection's ``current_schema()``, the first
    existing schema of its ``search_path``). Any name works: names are always quoted as SQL
    identifiers (:class:`psycopg.sql.Identifier`), never pasted into SQL.
``columns``
    Optional ``{name: SQL type}``, e.g. ``{"id": "bigint", "name": "text"}``. A missing table is
    created with them; an existing table must have them, and then only these columns are
    written (the others get their defaults). Without ``columns``, an existing table's columns
    are all written, and a missing table is created at the first write from the keys of the
    first batch (in order of appearance), typed by their first non-``None`` value: ``bool``
    ``boolean``, ``int`` ``bigint``, ``float`` ``double precision``, ``Decimal`` ``numeric``,
    ``bytes`` ``bytea``, ``dict`` and ``list`` ``jsonb``, ``datetime`` ``timestamptz`` (naive:
    ``timestamp``), ``date`` ``date``, ``time`` ``time``, ``UUID`` ``uuid``, anything else
    ``text``. Types are SQL type names (``varchar(20)``, ``numeric(10, 2)``, ``text[]``,
    ``timestamp(3) with time zone``, ``bigint NOT NULL``), checked so that they cannot inject SQL.
``key``
    Optional column name or list of names. A table this output creates gets ``PRIMARY KEY
    (key)``. ``mode: upsert`` needs it, and an existing table then needs a primary key or a
    unique index on exactly those columns.
``mode``
    ``"append"`` (the default without ``key``) copies the records into the table.
    ``"replace"`` copies them into a temporary staging table; at commit, in the same
    transaction, the table's rows are deleted and the staged ones inserted: other sessions see
    the old rows or the new ones, never a mix or an empty table, and are never blocked by it.
    ``"upsert"`` (the default with ``key``) copies into a staging table; at commit its rows are
    merged with ``INSERT ... ON CONFLICT (key) DO UPDATE`` every other written column, the last
    record of each key winning (within a batch and across the whole load), so a re-run
    converges: ``guarantee`` is ``"idempotent"``, else ``"transactional"``.
``create``
    ``True`` (default): create a missing table as above. ``False``: a missing table is an error.

Records: a key that is not a written column is ignored; a written column missing from a record
is ``NULL``. Values go through COPY in text format, converted by psycopg from their Python
type (``int``, ``float``, ``Decimal``, ``str``, ``bool``, ``bytes``, dates and times, ``UUID``,
lists as arrays) and parsed by the server as the column's type, so a ``"42"`` string loads
into a ``bigint`` column. Into ``json``/``jsonb`` columns, every value but ``None`` and ``str``
is written as JSON; a ``str`` is taken to be JSON text already, as psycopg does.

Lifecycle: ``open`` connects and starts the transaction, creates the table if it can, and the
staging table of ``replace`` and ``upsert`` (``ON COMMIT DROP``); ``write`` streams the
batch into one ``COPY`` that lasts the whole attempt (so a value the server rejects may be
reported at a later batch or at ``commit``); ``commit`` ends the ``COPY``, runs the merge of
``replace``/``upsert`` and commits; ``abort`` rolls back (a table created by the attempt
disappears with it); ``close`` closes the connection, in any
state, rolling back anything uncommitted. A failure anywhere (a value the column's type
rejects, a duplicate key, a lost connection) leaves the table exactly as it was. ``open``
cleans up after itself when it fails. Calls may come from different threads, one at a time.

Load markers (:mod:`pipectl.loads`): ``commit`` inserts a row into ``_pipectl_loads`` (in the
schema of the table, created on first use) in the same transaction as the records: pipeline,
run, step and output name (its primary key: the same load can never commit twice, even from two
processes at once), the number of records and the extractor's cursor (``jsonb``). ``loaded``
and ``last_load`` read it, so a resumed run skips a load this database already holds and the
next run of an incremental extractor starts from the cursor committed with the records.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipectl_postgres.connection import Target, check_identifier

MODES = ("append", "replace", "upsert")

#: One word of a type name, optionally schema-qualified, with optional (n) or (n, m) and [].
_TYPE_WORD = (
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?"
    r"(?: *\( *[+-]?\d+ *(?:, *[+-]?\d+ *)?\))?(?: *\[ *\d* *\])*"
)
SQL_TYPE = re.compile(rf"^{_TYPE_WORD}(?: +{_TYPE_WORD})*$")

#: The temporary table ``replace`` and ``upsert`` copy into (one per connection at a time).
STAGING = "pipectl_staging"

#: The table of load markers, in the schema of each table the output writes.
LOADS_TABLE = "_pipectl_loads"


def check_type(column: str, sql_type: Any) -> str:
    """``sql_type`` stripped, if it is an SQL type name; else a ValueError naming ``column``."""
    if not isinstance(sql_type, str) or not SQL_TYPE.match(sql_type.strip()):
        raise ValueError(
            f"columns[{column!r}]: {sql_type!r} is not an SQL type name (like "
            "bigint, text, double precision, numeric(10, 2), varchar(20), jsonb, "
            "text[], timestamp with time zone)"
        )
    return sql_type.strip()


def infer_type(value: Any) -> str:
    """The column type of a table created from a batch whose first non-None value is ``value``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, Decimal):
        return "numeric"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytea"
    if isinstance(value, (dict, list)):
        return "jsonb"
    if isinstance(value, datetime):  # before date: a datetime is a date
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    if isinstance(value, UUID):
        return "uuid"
    return "text"


def _as_json(value: Any) -> Any:
    """A value for a json/jsonb column: JSON text (``str``) and ``None`` as they are."""
    return value if value is None or isinstance(value, str) else Jsonb(value)


class PostgresOutput:
    """Writes records to a PostgreSQL table (see the module docstring for the options)."""

    def __init__(
        self,
        *,
        table: str,
        dsn: str | None = None,
        dsn_env: str | None = None,
        schema: str | None = None,
        columns: dict[str, str] | None = None,
        key: str | Iterable[str] | None = None,
        mode: str | None = None,
        create: bool = True,
    ):
        self.table = check_identifier(table, "table")
        self.schema = None if schema is None else check_identifier(schema, "schema")
        self._target = Target("postgres output", dsn, dsn_env)
        if columns is not None:
            if not isinstance(columns, dict) or not columns:
                raise ValueError("columns must be a non-empty mapping {name: SQL type}")
            columns = {
                check_identifier(c, "a column name"): check_type(c, t) for c, t in columns.items()
            }
        self.columns: dict[str, str] | None = columns
        keys = [key] if isinstance(key, str) else list(key or ())
        if key is not None and not keys:
            raise ValueError("key must name at least one column")
        for k in keys:
            check_identifier(k, "a key column")
        if len(set(keys)) != len(keys):
            raise ValueError(f"key names a column twice: {keys!r}")
        if columns is not None:
            missing = [k for k in keys if k not in columns]
            if missing:
                raise ValueError(f"key column(s) {missing!r} are not in columns {list(columns)!r}")
        self.key: list[str] = keys
        mode = mode if mode is not None else ("upsert" if keys else "append")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "upsert" and not keys:
            raise ValueError("mode 'upsert' needs key: the column(s) that identify a row")
        self.mode = mode
        if not isinstance(create, bool):
            raise TypeError(f"create must be true or false, got {create!r}")
        self.create = create
        self.guarantee = "idempotent" if mode == "upsert" else "transactional"
        self._conn: psycopg.Connection[Any] | None = None
        self._load: Any = None
        self._reset()

    def _reset(self) -> None:
        """Forget the attempt's table state (kept from open to close)."""
        self._schema: str | None = None  # the schema actually written (current_schema() if None)
        self._copy: sql.Composed | None = None  # COPY ... FROM STDIN, once the columns are known
        self._copying: Any = None  # (cursor, copy manager, copy) while the attempt's COPY runs
        self._merge: list[sql.Composed] = []  # statements run at commit (replace, upsert)
        self._cols: list[str] = []
        self._row: Callable[[dict[str, Any]], Any] | None = None
        self._json: list[int] = []  # positions of json/jsonb columns in a row

    def describe(self) -> str:
        name = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"postgres {self._target.display} table {name}"

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, ctx: Any) -> None:
        self.close()
        self._load = getattr(ctx, "load", None)
        self._conn = self._target.connect()  # the first statement starts the transaction
        try:
            self._open()
        except BaseException:
            self.close()  # the runner closes only outputs that opened
            raise

    def write(self, batch: list[dict[str, Any]]) -> None:
        conn = self._db("write")
        if not batch:
            return
        if self._copy is None:
            self._create(self._columns_of(batch))
        get = self._row
        try:
            rows = list(map(get, batch))
        except KeyError:  # a record without some column: NULL there
            cols = self._cols
            rows = [tuple(map(r.get, cols)) for r in batch]
        if self._json:
            json_at = set(self._json)
            rows = [
                tuple(_as_json(v) if i in json_at else v for i, v in enumerate(row)) for row in rows
            ]
        if self._copying is None:  # one COPY for the whole attempt, ended by commit()
            cursor = conn.cursor()
            manager = cursor.copy(self._copy)
            self._copying = (cursor, manager, manager.__enter__())
        write_row = self._copying[2].write_row
        for row in rows:
            write_row(row)

    def commit(self) -> None:
        conn = self._db("commit")
        self._end_copy(None)
        for statement in self._merge:
            conn.execute(statement)
        if self._load is not None:
            self._insert_marker(self._load.marker())
        from pipectl import faults

        faults.reach("output.mid-commit")
        conn.commit()

    # -- load markers ----------------------------------------------------------------------------

    def loaded(self, load: Any) -> Any:
        """The marker of ``load`` in this database, if it committed."""
        rows = self._markers(
            sql.SQL("pipeline = %s AND run_id = %s AND step = %s AND output = %s"), load.key
        )
        return rows[0] if rows else None

    def last_load(self, load: Any) -> Any:
        """The latest marker of this pipeline, step and output in this database."""
        rows = self._markers(
            sql.SQL("pipeline = %s AND step = %s AND output = %s ORDER BY seq DESC LIMIT 1"),
            (load.pipeline, load.step, load.output),
        )
        return rows[0] if rows else None

    def _loads_table(self) -> sql.Identifier:
        return sql.Identifier(self._schema or "public", LOADS_TABLE)

    def _markers(self, where: sql.Composable, params: tuple) -> list[Any]:
        from pipectl.loads import LoadMarker

        conn = self._db("open")
        exists = conn.execute(
            "SELECT to_regclass(%s)",
            (sql.Identifier(self._schema or "public", LOADS_TABLE).as_string(conn),),
        ).fetchone()
        if not exists or exists[0] is None:
            return []
        rows = conn.execute(
            sql.SQL(
                "SELECT pipeline, run_id, step, output, records, state, committed_by, "
                "committed_at::text FROM {} WHERE {}"
            ).format(self._loads_table(), where),
            params,
        ).fetchall()
        return [LoadMarker(*row) for row in rows]

    def _insert_marker(self, marker: Any) -> None:
        conn = self._db("commit")
        table = self._loads_table()
        # one creator at a time: CREATE TABLE IF NOT EXISTS alone can race in PostgreSQL
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOADS_TABLE,))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, run_id text NOT NULL, "
                "step text NOT NULL, output text NOT NULL, target text, records bigint NOT NULL, "
                "state jsonb, committed_by text NOT NULL, committed_at timestamptz NOT NULL "
                "DEFAULT now(), seq bigint GENERATED ALWAYS AS IDENTITY, "
                "PRIMARY KEY (pipeline, run_id, step, output))"
            ).format(table)
        )
        try:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (pipeline, run_id, step, output, target, records, state, "
                    "committed_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(table),
                (
                    marker.pipeline,
                    marker.run_id,
                    marker.step,
                    marker.output,
                    self._display_name(),
                    marker.records,
                    None if marker.state is None else Jsonb(marker.state),
                    marker.committed_by,
                ),
            )
        except psycopg.errors.UniqueViolation:
            raise RuntimeError(
                f"{self.describe()}: the load of step {marker.step!r} into output "
                f"{marker.output!r} of run {marker.run_id} was already committed (another "
                "process resumed the same run?); nothing was written twice"
            ) from None

    def _end_copy(self, error: BaseException | None) -> None:
        """Finish the attempt's COPY (or, with ``error``, tell the server to drop it)."""
        copying, self._copying = self._copying, None
        if copying is None:
            return
        cursor, manager, _ = copying
        try:
            if error is None:
                manager.__exit__(None, None, None)
            else:
                manager.__exit__(type(error), error, error.__traceback__)
        finally:
            cursor.close()

    def abort(self) -> None:
        conn = self._conn
        if self._copying is not None:
            try:
                self._end_copy(RuntimeError("the attempt was aborted"))
            except Exception:  # any error: rolled back below in any case
                self._copying = None
        if conn is not None and not conn.closed:
            # a broken connection: closing it discards the transaction
            with contextlib.suppress(psycopg.Error):
                conn.rollback()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._reset()
        if conn is not None:
            conn.close()  # the server rolls back what was not committed

    def _db(self, call: str) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise RuntimeError(f"{self.describe()}: {call}() before open() or after close()")
        return self._conn

    # -- schema ----------------------------------------------------------------------------------

    def _open(self) -> None:
        schema = self.schema
        if schema is None:
            row = self._db("open").execute("SELECT current_schema()").fetchone()
            schema = row[0] if row else None
            if schema is None:
                raise ValueError(
                    f"{self.describe()}: no schema to write to (no schema of the "
                    "search_path exists); set the option schema"
                )
        self._schema = schema
        existing = self._table_columns()
        if existing is not None:
            written = list(self.columns) if self.columns is not None else list(existing)
            if not written:
                raise ValueError(f"table {self._display_name()} has no column to write")
            unknown = [c for c in written if c not in existing]
            if unknown:
                raise ValueError(
                    f"table {self._display_name()} has no column(s) {unknown!r} "
                    f"(its columns: {list(existing)!r})"
                )
            missing = [k for k in self.key if k not in written]
            if missing:
                raise ValueError(
                    f"key column(s) {missing!r} are not written to table "
                    f"{self._display_name()} (written: {written!r})"
                )
            if self.mode == "upsert":
                self._check_unique_key()
            self._prepare({c: existing[c] for c in written})
        elif not self.create:
            raise ValueError(f"table {self._display_name()} does not exist (and create is false)")
        elif self.columns is not None:
            self._create(self.columns)
        # else: created from the first batch

    def _display_name(self) -> str:
        return f"{self._schema}.{self.table}"

    def _table_columns(self) -> dict[str, str] | None:
        """``{column: type}`` of the table in the order of its columns (generated ones left
        out), or None if there is no such table."""
        rows = (
            self._db("open")
            .execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
                "  AND NOT a.attisdropped AND a.attgenerated = ''"
                " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
                " ORDER BY a.attnum",
                (self._schema, self.table),
            )
            .fetchall()
        )
        if not rows:
            return None
        return {name: sql_type for name, sql_type in rows if name is not None}

    def _check_unique_key(self) -> None:
        """An upsert's ``ON CONFLICT (key)`` needs a unique, immediate, non-partial index on
        exactly the key columns (a primary key is one)."""
        rows = (
            self._db("open")
            .execute(
                "SELECT array_agg(a.attname::text ORDER BY a.attname)"
                " FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
                " WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indimmediate"
                "  AND i.indpred IS NULL AND i.indexprs IS NULL"
                " GROUP BY i.indexrelid",
                (self._schema, self.table),
            )
            .fetchall()
        )
        if sorted(self.key) not in [cols for (cols,) in rows]:
            raise ValueError(
                f"table {self._display_name()} has no primary key or unique index on exactly "
                f"{self.key!r}, which an upsert on key needs (CREATE UNIQUE INDEX ... ON the "
                "table (those columns))"
            )

    def _columns_of(self, batch: list[dict[str, Any]]) -> dict[str, str]:
        """Column types inferred from the first batch, for a table created at the first write."""
        names = list(dict.fromkeys(chain.from_iterable(batch)))
        for name in names:
            check_identifier(name, "a column name (a record key)")
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(
                f"key column(s) {missing!r} are not in the records (their keys: {names!r})"
            )
        types = {}
        for name in names:
            value = next((v for v in (r.get(name) for r in batch) if v is not None), None)
            types[name] = infer_type(value)
        return types

    def _create(self, columns: dict[str, str]) -> None:
        parts = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type))
            for name, sql_type in columns.items()
        ]
        if self.key:
            parts.append(
                sql.SQL("PRIMARY KEY ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, self.key))
                )
            )
        self._db("write").execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                sql.Identifier(self._schema, self.table), sql.SQL(", ").join(parts)
            )
        )
        created = self._table_columns() or {}
        self._prepare({c: created[c] for c in columns})  # the server's spelling of the types

    def _prepare(self, types: dict[str, str]) -> None:
        """Build the COPY (and the merge at commit) for the written columns and their types."""
        conn = self._db("open")
        cols = list(types)
        table = sql.Identifier(self._schema, self.table)
        names = sql.SQL(", ").join(map(sql.Identifier, cols))
        self._cols = cols
        self._row = itemgetter(*cols) if len(cols) > 1 else (lambda r, c=cols[0]: (r[c],))
        self._json = [
            i
            for i, c in enumerate(cols)
            if types[c].split("(")[0].strip().lower() in ("json", "jsonb")
        ]
        if self.mode == "append":
            self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)
            return
        staging = sql.Identifier("pg_temp", STAGING)
        defs = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items()]
        if self.mode == "replace":
            conn.execute(
                sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    sql.Identifier(STAGING), sql.SQL(", ").join(defs)
                )
            )
            self._merge = [
                sql.SQL("DELETE FROM {}").format(table),
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                    table, names, names, staging
                ),
            ]
        else:  # upsert: the last record of each key wins, so number them as they come
            ordinal = "pipectl_ordinal"
            while ordinal in types:
                ordinal += "_"
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} ({}, {} bigint GENERATED ALWAYS AS IDENTITY)"
                    " ON COMMIT DROP"
                ).format(sql.Identifier(STAGING), sql.SQL(", ").join(defs), sql.Identifier(ordinal))
            )
            keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
            updates = [
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in cols
                if c not in self.key
            ]
            action = (
                sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates))
                if updates
                else sql.SQL("DO NOTHING")
            )
            self._merge = [
                sql.SQL(
                    "INSERT INTO {table} ({names}) SELECT DISTINCT ON ({keys}) {names}"
                    " FROM {staging}"
                    " ORDER BY {keys}, {ordinal} DESC ON CONFLICT ({keys}) {action}"
                ).format(
                    table=table,
                    names=names,
                    keys=keys,
                    staging=staging,
                    ordinal=sql.Identifier(ordinal),
                    action=action,
                )
            ]
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)

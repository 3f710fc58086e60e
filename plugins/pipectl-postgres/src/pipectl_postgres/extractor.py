"""The ``postgres`` extractor: a query or a table streamed through a server-side cursor.

Options
-------
``dsn`` or ``dsn_env``
    The connection string, or the name of an environment variable holding it. It is never
    shown: messages say ``user@host:port/dbname``.
``query``
    The SQL to run (one ``SELECT``, or anything a cursor can be declared for). Placeholders are
    psycopg's named ones, ``%(name)s``, filled from ``params``: values are sent to the server
    apart from the SQL, never formatted into it. When there are ``params`` or an
    ``incremental`` cursor, a literal ``%`` in the query is written ``%%``.
``table``, ``schema``, ``columns``
    Instead of ``query``: every row of ``table`` (in ``schema``, default the ``search_path``),
    all its columns or the list ``columns``. Names are quoted as SQL identifiers.
``params``
    ``{name: value}`` for the placeholders of ``query``.
``batch_size``
    Rows per batch (10,000): each batch is one ``FETCH`` from the server-side cursor, so memory
    holds one batch at a time whatever the size of the result.
``incremental``
    ``{column: updated_at, initial: "2026-01-01T00:00:00Z"}`` reads only rows whose ``column``
    is greater than the cursor: the previous run's ``state``, else ``initial`` (optional;
    without it the first run reads everything), in ascending order of ``column``. With
    ``table`` the condition is added to the ``SELECT``; a ``query`` is wrapped: ``SELECT * FROM
    (query) AS src WHERE column > cursor ORDER BY column``, so the query must return ``column``.
    After a complete run, ``state`` is ``{"cursor": the greatest value read}`` (the previous
    cursor if no row came), JSON-ready: datetimes, dates and times in ISO format, ``Decimal``
    and ``UUID`` as strings, which the server casts back to the column's type. ``set_state``
    takes it before the next run. The comparison is strict: a row committed later with a value
    equal to the cursor is not read, so prefer a column that only grows (a sequence, or a
    timestamp set by the database at commit).

Records are dicts of the values as psycopg returns them: ``int``, ``float``, ``Decimal`` for
``numeric``, ``str``, ``bool``, ``bytes`` for ``bytea``, ``datetime``/``date``/``time``/
``timedelta``, ``UUID``, ``dict``/``list`` for ``json``/``jsonb``, lists for arrays. Nothing is
converted: outputs that need other types (the built-in ``sqlite`` output does not take
``Decimal``) get a transform; the ``jsonl`` output writes them all.

The query runs in a read-only transaction of its own connection (``application_name``
``pipectl-postgres``), closed when the extraction ends, fails or is abandoned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row

from pipectl_postgres.connection import Target, check_identifier

DEFAULT_BATCH_SIZE = 10_000

#: The name of the cursor's placeholder added by ``incremental`` (not available to ``params``).
CURSOR_PARAM = "pipectl_cursor"

_INCREMENTAL_KEYS = ("column", "initial")


def jsonable(value: Any) -> Any:
    """A cursor value as JSON can hold it and the server can cast back."""
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    return value


class PostgresExtractor:
    """Streams the rows of a query or a table (see the module docstring for the options)."""

    def __init__(
        self,
        *,
        dsn: str | None = None,
        dsn_env: str | None = None,
        query: str | None = None,
        table: str | None = None,
        schema: str | None = None,
        columns: list[str] | None = None,
        params: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        incremental: Mapping[str, Any] | None = None,
    ):
        self._target = Target("postgres extractor", dsn, dsn_env)
        if (query is None) == (table is None):
            raise ValueError("postgres extractor: give one of query (SQL text) or table")
        if query is not None:
            if not isinstance(query, str) or not query.strip(" \t\r\n;"):
                raise ValueError(f"query must be SQL text, got {query!r}")
            if schema is not None or columns is not None:
                raise ValueError(
                    "schema and columns go with table; with query, name them in the SQL"
                )
            query = query.strip().rstrip(";").rstrip()  # so that it can be wrapped
        else:
            check_identifier(table, "table")
            if schema is not None:
                check_identifier(schema, "schema")
            if columns is not None:
                if not isinstance(columns, list) or not columns:
                    raise ValueError(
                        f"columns must be a non-empty list of column names, got {columns!r}"
                    )
                for c in columns:
                    check_identifier(c, "a column name")
            if params is not None:
                raise ValueError("params go with query (a table has no placeholders)")
        self.query, self.table, self.schema, self.columns = query, table, schema, columns
        if params is not None and not isinstance(params, Mapping):
            raise ValueError(f"params must be a mapping {{name: value}}, got {params!r}")
        self.params = dict(params or {})
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self._column: str | None = None  # the incremental column
        self._cursor: Any = None  # the value rows must exceed (JSON-ready), None: read all
        if incremental is not None:
            self._configure_incremental(incremental)

    def _configure_incremental(self, incremental: Mapping[str, Any]) -> None:
        if not isinstance(incremental, Mapping):
            raise TypeError(
                f"incremental must be a mapping {{column: ..., initial: ...}}, got {incremental!r}"
            )
        unknown = [k for k in incremental if k not in _INCREMENTAL_KEYS]
        if unknown:
            raise ValueError(f"incremental: unknown key(s) {unknown!r} (known: column, initial)")
        if "column" not in incremental:
            raise ValueError(
                "incremental needs column: the column whose greatest value is the cursor"
            )
        column = check_identifier(incremental["column"], "incremental column")
        if self.columns is not None and column not in self.columns:
            raise ValueError(f"incremental column {column!r} is not in columns {self.columns!r}")
        if CURSOR_PARAM in self.params:
            raise ValueError(
                f"params: {CURSOR_PARAM!r} is the incremental cursor's placeholder; "
                "use another name"
            )
        self._column = column
        self._cursor = jsonable(incremental.get("initial"))

    def describe(self) -> str:
        if self.table is not None:
            name = f"{self.schema}.{self.table}" if self.schema else self.table
            return f"postgres {self._target.display} table {name}"
        assert self.query is not None
        text = " ".join(self.query.split())
        if len(text) > 60:
            text = text[:57] + "..."
        return f"postgres {self._target.display} query {text!r}"

    # -- incremental state -----------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any] | None:
        """``{"cursor": value}`` with ``incremental`` (after a complete run, the greatest value
        read), else None."""
        return None if self._column is None else {"cursor": self._cursor}

    def set_state(self, state: Mapping[str, Any] | None) -> None:
        """Start after the cursor of a previous run's ``state`` (ignored without
        ``incremental``)."""
        if self._column is None or state is None:
            return
        if not isinstance(state, Mapping) or "cursor" not in state:
            raise ValueError(f"postgres extractor state must be {{'cursor': value}}, got {state!r}")
        self._cursor = jsonable(state["cursor"])

    # -- reading ---------------------------------------------------------------------------------

    def _statement(self) -> tuple[sql.Composable, dict[str, Any] | None]:
        """The SQL to declare the cursor for, and its parameters."""
        params = dict(self.params)
        if self.table is not None:
            fields = (
                sql.SQL(", ").join(map(sql.Identifier, self.columns))
                if self.columns
                else sql.SQL("*")
            )
            source = (
                sql.Identifier(self.schema, self.table)
                if self.schema
                else sql.Identifier(self.table)
            )
            select = sql.SQL("SELECT {} FROM {}").format(fields, source)
        else:
            assert self.query is not None
            select = sql.SQL(self.query)
            if self._column is not None:
                select = sql.SQL("SELECT * FROM ({}) AS src").format(select)
        if self._column is not None:
            column = sql.Identifier(self._column)
            if self._cursor is not None:
                select = sql.SQL("{} WHERE {} > {}").format(
                    select, column, sql.Placeholder(CURSOR_PARAM)
                )
                params[CURSOR_PARAM] = self._cursor
            select = sql.SQL("{} ORDER BY {}").format(select, column)
        return select, params or None

    def batches(self, ctx: Any) -> Iterator[list[dict[str, Any]]]:
        """The rows in batches of ``batch_size``; with ``incremental``, ``state`` moves on to
        the greatest value read once the last batch has been read."""
        statement, params = self._statement()
        column, greatest = self._column, None
        with self._target.connect(row_factory=dict_row) as conn:
            conn.read_only = True
            with conn.cursor(name="pipectl_postgres") as cur:
                cur.execute(statement, params)
                while batch := cur.fetchmany(self.batch_size):
                    if column is not None:
                        top = max(
                            (v for v in (r[column] for r in batch) if v is not None), default=None
                        )
                        if top is not None and (greatest is None or top > greatest):
                            greatest = top
                    yield batch
        if greatest is not None:
            self._cursor = jsonable(greatest)

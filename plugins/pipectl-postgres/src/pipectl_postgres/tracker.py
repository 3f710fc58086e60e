"""The ``postgresql`` run tracker: pipectl's run records in a PostgreSQL database.

The tables, their migrations, the writer thread and every query are pipectl's own
(:class:`pipectl.tracking.SQLTracker`, the same as the built-in SQLite tracker's); this module
gives its :class:`~pipectl.tracking.SQLDialect`, :class:`PostgresDialect`: where to connect, in
which schema, how migrations are serialized, and what is worth retrying.

URL: a libpq URL (``postgresql://user@host:5432/dbname?sslmode=require``; ``postgres://`` and
``postgresql+psycopg://`` are taken too) with one parameter of pipectl's own, ``schema``: the
schema of the tables, ``pipectl`` by default (:data:`DEFAULT_SCHEMA`), created by the first
run when missing. It is taken out of the URL before libpq sees it (libpq refuses parameters it
does not know) and every session of the tracker sets ``search_path`` to it alone.

Migrations run under a transaction-level advisory lock (:data:`MIGRATION_LOCK`), so that any
number of processes can open the tracker at once on an empty database: one creates the schema
and the tables, the others wait for it and find them.

A statement or a commit that fails for a reason worth retrying (a serialization failure, a
deadlock, a connection the server or the network closed) starts its transaction over: on a
new connection if the old one is lost, replaying the statements of the transaction so far,
for up to :data:`RETRY_SECONDS`. The tracker's writes are upserts, so a transaction replayed
after a commit whose answer was lost writes the same rows again.

Outputs kept for resume go to a :class:`~pipectl.tracking.ResultStore` in the local folder
``$PIPECTL_HOME/results`` (``.pipectl/results`` in the working directory without the
variable), authenticated with the key beside it, ``$PIPECTL_HOME/result-store.key`` (the same
home's key as for any tracker): a resume reads them from the machine and home it runs in.

The URL's password never appears in :attr:`PostgresTracker.display` (nor in ``url``), in
messages or in errors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from pipectl.tracking import SQLDialect, SQLTracker, TrackerError
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pipectl_postgres.connection import Target

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATION_LOCK",
    "RETRY_SECONDS",
    "PostgresDialect",
    "PostgresTracker",
    "parse_url",
]

#: The schema of the tables when the URL names none.
DEFAULT_SCHEMA = "pipectl"

#: The key of the advisory lock every migration transaction takes first (the first 8 bytes of
#: sha256("pipectl tracker migrations"), signed), in any database and schema.
MIGRATION_LOCK = -1946455394781358021

#: How long a failed transaction is started over, from its first failure, before the error is
#: reported (the tracker's writer then keeps the rows and tries again later; what it could not
#: write by the end of the run is spooled: see :meth:`pipectl.tracking.SQLTracker.close`).
RETRY_SECONDS = 20.0

#: ``application_name`` of the tracker's sessions, unless the URL sets one.
APPLICATION_NAME = "pipectl-tracker"

#: SQLSTATEs worth starting a transaction over for: serialization failure, deadlock, and the
#: server shutting down or restarting (the other connection errors, class 08 or none at all,
#: are recognized in :meth:`PostgresDialect.is_transient`).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})

MAX_IDENTIFIER_BYTES = 63  # longer names are cut by the server: a schema it would not find


class _WriterNoise(logging.Filter):
    """psycopg logs a warning when a lost connection cuts a batch of statements short, besides
    raising the error; in the tracker's writer thread the error is handled (the rows are kept
    and tried again), so the warning would only be noise on the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            threading.current_thread().name == "pipectl-tracker"
            and record.getMessage().startswith("error ignored terminating")
        )


logging.getLogger("psycopg").addFilter(_WriterNoise())


def _strip_password(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, _, hosts = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{user}@{hosts}" if user else hosts


def _url(netloc: str, path: str, query: list[str]) -> str:
    # not urlunsplit: it drops the "//" of an empty host (postgresql:///db: the local socket)
    return f"postgresql://{netloc}{path}" + (f"?{'&'.join(query)}" if query else "")


def parse_url(url: str) -> tuple[str, str, str, frozenset[str]]:
    """(the libpq URL to connect with, the schema, the URL without password, the password as
    written and decoded: the strings never to show).

    Raises :class:`TrackerError` for a URL that is not a PostgreSQL one, or a bad ``schema``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise TrackerError(f"tracker {url!r} is not a URL: postgresql://user@host:5432/dbname")
    scheme, rest = url.split("://", 1)
    if scheme.split("+", 1)[0].lower() not in ("postgresql", "postgres"):
        raise TrackerError(f"tracker URL scheme {scheme!r} is not postgresql")
    try:
        parts = urlsplit("postgresql://" + rest)
        password = parts.password or ""
    except ValueError as exc:
        shown = "postgresql://" + _strip_password(rest.split("/", 1)[0])
        raise TrackerError(f"tracker {shown}...: not a valid URL: {exc}") from None
    keep, schemas = [], []
    for item in parts.query.split("&") if parts.query else []:
        key, _, value = item.partition("=")
        if unquote(key) == "schema":
            schemas.append(unquote(value))
        elif item:
            keep.append(item)
    shown_query = [q for q in keep if unquote(q.partition("=")[0]) != "password"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    netloc = _strip_password(parts.netloc)
    display = _url(netloc, parts.path, [*shown_query, f"schema={schema}"])
    if len(schemas) > 1:
        raise TrackerError(f"tracker {display}: the URL gives schema more than once")
    if not schema or "\x00" in schema:
        raise TrackerError(f"tracker {display}: schema must be a non-empty name without NUL")
    if len(schema.encode()) > MAX_IDENTIFIER_BYTES:
        raise TrackerError(
            f"tracker {display}: schema {schema!r} is longer than PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES} bytes for a name"
        )
    dsn = _url(parts.netloc, parts.path, keep)
    return dsn, schema, display, frozenset({password, unquote(password)} - {""})


class PostgresDialect(SQLDialect):
    """PostgreSQL for :class:`~pipectl.tracking.SQLTracker`: sessions in READ COMMITTED with
    ``search_path`` the tracker's schema alone, replayed on a new session when a transaction
    fails for a reason worth retrying (:class:`_Connection`); migrations serialized by the
    advisory lock :data:`MIGRATION_LOCK`, which also creates the schema; errors masked.

    ``url``: as :class:`PostgresTracker` takes it. Raises :class:`TrackerError` for a URL
    that is not a valid PostgreSQL one (never quoting its password).
    """

    placeholder = "%s"

    def __init__(self, url: str):
        dsn, self.schema, shown, hidden = parse_url(url)
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:  # libpq's reason, without the password
            reason = str(exc)
            for secret in hidden:
                reason = reason.replace(secret, "***")
            raise TrackerError(f"tracker {shown}: not a valid PostgreSQL URL: {reason}") from None
        self.display = shown  # the URL without password, with the schema
        self._target = Target("postgresql tracker", dsn, None)
        self._connect_options = (
            {} if "application_name" in params else {"application_name": APPLICATION_NAME}
        )

    def mask(self, text: str) -> str:
        """``text`` with the URL's password replaced, should a message quote it."""
        return self._target.mask(text)

    # connections

    def connect(self, stopping: threading.Event) -> _Connection:
        return _Connection(self, stopping)

    def open_session(self) -> psycopg.Connection[Any]:
        """A new session: read committed, ``search_path`` the tracker's schema alone."""
        try:
            conn = self._target.connect(**self._connect_options)
        except ConnectionError as exc:
            raise TrackerError(str(exc)) from None
        try:
            # the upserts and the migration lock are written for READ COMMITTED, whatever the
            # server's default_transaction_isolation
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def begin_write(self, conn: Any) -> None:
        """Nothing to do: psycopg begins a transaction with the first statement."""

    def is_transient(self, exc: BaseException) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        if exc.sqlstate in RETRY_SQLSTATES:
            return True
        # a lost connection: SQLSTATE class 08 from the server, or none (the client saw the
        # socket close)
        return isinstance(exc, psycopg.OperationalError) and (
            exc.sqlstate is None or exc.sqlstate.startswith("08")
        )

    # schema

    @contextmanager
    def migration(self, conn: Any) -> Iterator[None]:
        """The migration's transaction first takes :data:`MIGRATION_LOCK` and creates the
        schema when missing: processes starting together migrate one after the other (the
        later ones find nothing to do); its commit releases the lock. The transaction is not
        replayed on another session when it fails: the tracker runs all of it again (it
        reads, then decides)."""
        conn.replay = False
        try:
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
            if cur.fetchone() is None:  # checked first: CREATE needs a right it may not need
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            yield
        finally:
            conn.replay = True

    # errors

    def reason(self, exc: BaseException) -> str:
        """The first line of the psycopg error behind ``exc`` (masked), if there is one."""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, psycopg.Error):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return self.mask(super().reason(exc))
        text = (str(cause).strip().splitlines() or [""])[0]
        return self.mask(f"{type(cause).__name__}: {text}")

    def raise_error(self, exc: BaseException, action: str) -> None:
        if not isinstance(exc, psycopg.Error):
            return
        doing = ": cannot create or upgrade its tables" if action == "migrate" else ""
        raise TrackerError(
            f"tracker {self.display}{doing}: {type(exc).__name__}: {self.mask(str(exc))}"
        ) from exc


class PostgresTracker(SQLTracker):
    """Run tracking in PostgreSQL, in the tables of :data:`pipectl.tracking.MIGRATIONS`: a
    :class:`~pipectl.tracking.SQLTracker` with a :class:`PostgresDialect`.

    ``url``: ``postgresql://user[:password]@host[:port]/dbname[?param=value&...]``, where the
    parameters are libpq's (``sslmode``, ``connect_timeout``, ...) plus ``schema`` (default
    :data:`DEFAULT_SCHEMA`). Prefer ``~/.pgpass`` or ``PGPASSWORD`` to a password in the URL.
    ``results``: the folder of the result store (default ``$PIPECTL_HOME/results``, else
    ``.pipectl/results``).
    """

    dialect: PostgresDialect

    def __init__(self, url: str, results: str | os.PathLike[str] | None = None):
        dialect = PostgresDialect(url)
        if results is None:
            results = Path(os.environ.get("PIPECTL_HOME") or ".pipectl") / "results"
        # self.url and self.display: the URL without password
        super().__init__(dialect, url=dialect.display, results=results)

    @property
    def schema(self) -> str:
        """The schema of the tables."""
        return self.dialect.schema


class _Connection:
    """The DB-API calls :class:`SQLTracker` makes, on a psycopg session that is opened when
    first used and opened again when lost; a transaction that fails for a reason worth
    retrying is started over with the statements it ran so far (unless ``replay`` is off),
    until the tracker closes (``stopping``)."""

    def __init__(self, dialect: PostgresDialect, stopping: threading.Event):
        self.dialect = dialect
        self.stopping = stopping
        self.replay = True
        self._conn: psycopg.Connection[Any] | None = None
        self._done: list[tuple[str, Any, Any]] = []  # the statements of this transaction
        self._in_transaction = False
        self._connected = False  # once: a failure to connect again is worth retrying

    def _session(self) -> psycopg.Connection[Any]:
        """The session; a new one at the start of a transaction when there is none or it was
        lost (a failure to connect is a TrackerError)."""
        if self._conn is None or (self._conn.closed and not self._in_transaction):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self.dialect.open_session()
            self._connected = True
        return self._conn

    def _worth_retrying(self, exc: BaseException) -> bool:
        if isinstance(exc, TrackerError):  # cannot connect: yet, if it could before
            return self._connected
        return self.dialect.is_transient(exc)

    def cursor(self) -> _Cursor:
        return _Cursor(self)

    def _call(self, method: str, query: Any, params: Any) -> Any:
        cur = self._session().cursor()
        self._in_transaction = True
        getattr(cur, method)(query, params)
        return cur

    def run(self, method: str, query: Any, params: Any) -> Any:
        """Run one statement (``execute`` or ``executemany``); the cursor it ran on."""
        if method == "executemany":
            params = list(params)
        if self.replay:
            self._done.append((method, query, params))
        try:
            return self._call(method, query, params)
        except (psycopg.Error, TrackerError) as exc:
            if not self.replay or not self._worth_retrying(exc):
                raise
            return self._start_over(exc)

    def _start_over(self, exc: BaseException, commit: bool = False) -> Any:
        """Roll back, reconnect if need be, and run the transaction's statements again (and
        commit with ``commit``) until it works, :data:`RETRY_SECONDS` have passed, or the
        tracker is closing (its writer keeps the rows and spools them)."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.05
        dialect, stopping = self.dialect, self.stopping
        while True:
            if time.monotonic() + delay > deadline:
                raise TrackerError(
                    f"tracker {dialect.display}: gave up after {RETRY_SECONDS:.0f} s of "
                    f"retries: {type(exc).__name__}: {dialect.mask(str(exc))}"
                ) from exc
            self._discard()
            if stopping.wait(delay):
                raise TrackerError(f"tracker {dialect.display}: {dialect.reason(exc)}") from exc
            delay = min(delay * 2, 2.0)
            try:
                cur = None
                for method, query, params in self._done:
                    cur = self._call(method, query, params)
                if commit:
                    self._session().commit()
                    self._end()
                return cur
            except (psycopg.Error, TrackerError) as again:
                if not self._worth_retrying(again):
                    raise
                exc = again

    def _discard(self) -> None:
        """Roll back what the session did, closing it when it cannot (the server discards an
        ended session's transaction); a new one is opened by the next statement."""
        conn = self._conn
        self._in_transaction = False
        if conn is not None and not conn.closed:
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()

    def _end(self) -> None:
        self._done = []
        self._in_transaction = False

    def commit(self) -> None:
        conn = self._conn
        try:
            if conn is not None and self._in_transaction:
                try:
                    conn.commit()
                except psycopg.Error as exc:
                    if not self.replay or not self._done or not self.dialect.is_transient(exc):
                        raise
                    self._start_over(exc, commit=True)
        finally:
            self._end()

    def rollback(self) -> None:
        self._discard()
        self._end()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._end()
        if conn is not None:
            conn.close()


class _Cursor:
    """A cursor whose statements go through :meth:`_Connection.run` (and so may be run again
    on another session): results are read from the last cursor a statement ran on."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        self._cur: Any = None

    def execute(self, query: Any, params: Any = None) -> _Cursor:
        self._cur = self._conn.run("execute", query, params)
        return self

    def executemany(self, query: Any, params_seq: Any) -> None:
        self._cur = self._conn.run("executemany", query, params_seq)

    @property
    def description(self) -> Any:
        return self._cur.description if self._cur is not None else None

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

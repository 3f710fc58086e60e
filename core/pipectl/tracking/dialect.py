"""What one SQL database does its own way (:class:`SQLDialect`), and the helpers the SQL
tracker's modules run statements through (:func:`dialect_sql`, :func:`retrying`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pipectl.tracking.errors import TrackerError

__all__ = ["SQLDialect", "dialect_sql", "retrying"]

_T = TypeVar("_T")


class SQLDialect:
    """What one SQL database does its own way, for :class:`SQLTracker`: the tables, the
    statements, the writer thread, spooling and the reads are the tracker's, the same for
    every database; a dialect says how to connect, how a write transaction starts, which
    errors are worth trying again, and how a failure reads. :class:`SqliteDialect` is the
    built-in one; pipectl-postgres has ``PostgresDialect``.

    The statements are plain SQL with ``?`` placeholders (rewritten to :attr:`placeholder`)
    and ``INSERT ... ON CONFLICT (key) DO UPDATE`` / ``DO NOTHING`` upserts (SQLite 3.24+,
    PostgreSQL 9.5+); the column types (``TEXT``, ``BIGINT``, ``DOUBLE PRECISION``) read the
    same in both, and JSON is kept as ``TEXT``.
    """

    placeholder: str = "?"
    """The driver's parameter marker (DB-API ``paramstyle`` ``qmark`` ``?``, or ``format``
    ``%s``)."""

    display: str = ""
    """Where the tracker writes, for messages: never with a password."""

    read_only: bool = False
    """The database can be read but not written (set by :meth:`connect`): the tracker then
    checks the schema instead of migrating it, and refuses to delete runs."""

    @property
    def identity(self) -> str:
        """The database, named the same way by every process (the absolute path of a file,
        the URL without password): the spool files of rows the database did not take are
        named by its hash, so that the next command opening the same database writes them."""
        return self.display

    def connect(self, stopping: threading.Event) -> Any:
        """A new connection: an object with the DB-API ``cursor()`` (``execute``,
        ``executemany``, ``fetchone``, ``fetchall``, ``description``), ``commit()``,
        ``rollback()`` and ``close()``. ``stopping`` is set when the tracker closes: a
        connection that retries by itself gives up then. A database that cannot be opened
        for a reason not worth retrying raises :class:`TrackerError`."""
        raise NotImplementedError

    def begin_write(self, conn: Any) -> None:
        """Start a write transaction on ``conn``, taking the write lock now when the database
        has one (SQLite: ``BEGIN IMMEDIATE``, so that two writers never deadlock upgrading a
        read lock). Nothing by default: a DB-API driver begins a transaction with the first
        statement."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth trying the whole transaction again for (a lock, a busy
        database, a serialization failure, a deadlock, a lost connection); False: the error is
        permanent and reported."""
        return False

    @contextmanager
    def migration(self, conn: Any) -> Iterator[None]:
        """Around the migration transaction, after :meth:`begin_write`: a dialect whose write
        transaction does not serialize migrations takes a lock here that does (PostgreSQL:
        an advisory lock), and creates what the tables live in (a schema). Its commit ends
        the migration. Nothing by default."""
        yield

    def reason(self, exc: BaseException) -> str:
        """One line saying why a database call failed, for the tracker's problems (never a
        password)."""
        text = (str(exc).strip().splitlines() or [""])[0]
        prefix = f"tracker {self.display}: "
        if text.startswith(prefix):
            text = text[len(prefix) :]
        if not isinstance(exc, TrackerError):
            text = f"{type(exc).__name__}: {text}"
        return text[:300]

    def raise_error(self, exc: BaseException, action: str) -> None:
        """Raise the :class:`TrackerError` that says what ``exc``, the driver's error, means,
        while the tracker was doing ``action`` (``"migrate"``: creating or upgrading the
        tables; ``"read"``: a query); return to let ``exc`` go on as it is. Nothing by
        default."""


def dialect_sql(dialect: SQLDialect, text: str) -> str:
    """``text`` with its ``?`` placeholders written as ``dialect`` wants them."""
    placeholder = dialect.placeholder
    return text.replace("?", placeholder) if placeholder != "?" else text


def retrying(dialect: SQLDialect, action: Callable[[], _T], attempts: int = 50) -> _T:
    """``action()``, tried again (up to ``attempts`` times, with a short growing pause) while
    it fails with an error the dialect says is transient."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if not dialect.is_transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(0.01 * (attempt + 1), 0.25))
    raise AssertionError("unreachable")  # pragma: no cover

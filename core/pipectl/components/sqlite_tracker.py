"""The built-in ``sqlite`` run tracker: :class:`SqliteTracker`, a
:class:`~pipectl.tracking.SQLTracker` on one SQLite file with :class:`SqliteDialect`
(registered by :mod:`pipectl.builtins.sqlite`). ``sqlite3`` is imported on the first
connection."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pipectl.tracking.dialect import SQLDialect
from pipectl.tracking.errors import TrackerError
from pipectl.tracking.sql import SQLTracker

__all__ = ["SqliteDialect", "SqliteTracker"]


class SqliteDialect(SQLDialect):
    """SQLite, one file (WAL journal): :class:`SqliteTracker`'s dialect. A write transaction
    is ``BEGIN IMMEDIATE`` (the write lock at once), a locked or busy database is worth
    retrying, and a file that cannot be written (the file or its folder) is opened read-only
    (``immutable``: no journal, no lock files). Any ``sqlite3.Error`` the tracker meets
    becomes a :class:`TrackerError` naming the file."""

    placeholder = "?"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.display = str(self.path)
        self.read_only = False  # set by each connection: see connect

    @property
    def identity(self) -> str:
        return str(self.path.absolute())

    def connect(self, stopping: threading.Event) -> Any:
        """A connection; a read-only one when the file or its folder cannot be written. A
        file that is not a database, or cannot be opened, is a :class:`TrackerError`."""
        import sqlite3

        self.read_only = self.path.exists() and not (
            os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        )
        conn = None
        try:
            if self.read_only:
                conn = sqlite3.connect(
                    f"{self.path.absolute().as_uri()}?immutable=1",
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                )
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            else:
                conn = sqlite3.connect(
                    self.path, timeout=30.0, check_same_thread=False, isolation_level=None
                )
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if self.is_transient(exc):
                raise
            raise TrackerError(self._file_error(exc)) from None
        return _AutoBegin(conn)

    def begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later

    def is_transient(self, exc: BaseException) -> bool:
        import sqlite3

        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        )

    def raise_error(self, exc: BaseException, action: str) -> None:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            raise TrackerError(self._file_error(exc)) from None

    def _file_error(self, exc: BaseException) -> str:
        hint = " (is it a pipectl tracker?)" if "not a database" in str(exc) else ""
        return f"tracker {self.path}: {exc}{hint}"


class SqliteTracker(SQLTracker):
    """The built-in tracker: one SQLite file (WAL journal), shared by every ``pipectl run`` on
    the machine that points at it. URL: ``sqlite:///relative/path.db`` or
    ``sqlite:////absolute/path.db``; outputs for resume go to ``results/`` beside the file.
    A :class:`SQLTracker` with a :class:`SqliteDialect`."""

    dialect: SqliteDialect

    def __init__(self, url: str) -> None:
        # sqlite:///relative/file.db and sqlite:////absolute/file.db, as SQLAlchemy has them
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise TrackerError(
                f"tracker URL {url!r} names no file: sqlite:///relative/file.db "
                "or sqlite:////absolute/file.db"
            )
        dialect = SqliteDialect(path)
        try:
            dialect.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackerError(
                f"tracker {url}: cannot create {dialect.path.parent}: {exc}"
            ) from None
        super().__init__(dialect, url=url, results=dialect.path.parent / "results")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self.dialect.path

    @property
    def read_only(self) -> bool:
        """Whether the last connection found the file (or its folder) not writable."""
        return self.dialect.read_only


class _AutoBegin:
    """An autocommit sqlite3 connection behind the DB-API calls the tracker makes: ``commit``
    and ``rollback`` end the explicit transaction :meth:`SqliteDialect.begin_write` opened."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, *args: Any) -> Any:
        return self.conn.execute(*args)

    def cursor(self) -> Any:
        return self.conn.cursor()

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

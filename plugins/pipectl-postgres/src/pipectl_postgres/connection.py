"""Where the components connect: the DSN from ``dsn`` or ``dsn_env``, never shown with its password.

A DSN is a URL (``postgresql://user:password@host:5432/dbname?sslmode=require``) or a libpq
key/value string (``host=... port=... dbname=... user=...``); libpq's environment variables
(``PGHOST``, ``PGPASSWORD``, ``PGSSLMODE``...) and ``~/.pgpass`` fill in what it leaves out.
Messages and ``describe()`` show :attr:`Target.display`, ``user@host:port/dbname``, and every
error that could quote the password has it replaced by ``***``.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

#: Seconds to wait for a connection when the DSN sets no ``connect_timeout`` (libpq waits forever).
CONNECT_TIMEOUT = 10

#: ``application_name`` given to the server when the DSN sets none (shown in pg_stat_activity).
APPLICATION_NAME = "pipectl-postgres"


def check_identifier(value: Any, what: str) -> str:
    """``value`` if it can be an SQL identifier (a non-empty string without NUL), else ValueError.

    Identifiers are always passed to psycopg as :class:`psycopg.sql.Identifier` (quoted), so
    any other name is safe, however odd.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{what} cannot contain a NUL character: {value!r}")
    return value


class Target:
    """A PostgreSQL server and database to connect to, from ``dsn`` or the variable ``dsn_env``.

    ``owner`` (``"postgres output"``, ``"postgres extractor"``) starts every message.
    """

    def __init__(self, owner: str, dsn: str | None, dsn_env: str | None):
        self.owner = owner
        if (dsn is None) == (dsn_env is None):
            raise ValueError(
                f"{owner}: give one of dsn (a connection string) or dsn_env (the "
                "name of an environment variable holding it)"
            )
        if dsn_env is not None:
            check_identifier(dsn_env, f"{owner}: dsn_env")
            dsn = os.environ.get(dsn_env)
            if dsn is None:
                raise ValueError(
                    f"{owner}: environment variable {dsn_env!r} (dsn_env) is not "
                    "set; it should hold the connection string"
                )
            source = f"the variable {dsn_env!r} (dsn_env)"
        else:
            source = "dsn"
        if not isinstance(dsn, str):
            raise TypeError(f"{owner}: dsn must be a connection string, got {type(dsn).__name__}")
        try:
            self._params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:  # its message may quote the DSN: not shown
            raise ValueError(
                f"{owner}: {source} is not a valid PostgreSQL connection string "
                "(postgresql://user@host:port/dbname or 'host=... dbname=...')"
            ) from None
        self._dsn = dsn

    @property
    def display(self) -> str:
        """``user@host:port/dbname``, from the DSN and libpq's environment variables."""
        p, env = self._params, os.environ
        user = p.get("user") or env.get("PGUSER")
        host = p.get("host") or p.get("hostaddr") or env.get("PGHOST") or "(default host)"
        port = p.get("port") or env.get("PGPORT") or "5432"
        dbname = p.get("dbname") or env.get("PGDATABASE") or user or "(default database)"
        return f"{user + '@' if user else ''}{host}:{port}/{dbname}"

    def mask(self, text: str) -> str:
        """``text`` with the DSN and its password replaced, should a message quote them."""
        text = text.replace(self._dsn, self.display)
        password = self._params.get("password")
        return text.replace(password, "***") if password else text

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection (``kwargs`` go to :func:`psycopg.connect`); if the server cannot be
        reached or refuses us, a :class:`ConnectionError` naming host, port and database."""
        for name, default in (
            ("connect_timeout", CONNECT_TIMEOUT),
            ("application_name", APPLICATION_NAME),
        ):
            if name not in self._params:
                kwargs.setdefault(name, default)
        try:
            return psycopg.connect(self._dsn, **kwargs)
        except psycopg.OperationalError as exc:
            reason = " ".join(self.mask(str(exc)).split())
            # from None: the original exception's text is the unmasked one
            raise ConnectionError(
                f"{self.owner}: cannot connect to {self.display}: {reason}"
            ) from None

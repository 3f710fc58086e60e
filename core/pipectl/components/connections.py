"""The built-in connection types (:mod:`pipectl.connections`): ``sqlite``, ``postgres``,
``directory`` and ``http``, each declaring its fields by its constructor's signature.

Imported only when a pipeline file declares ``connections:``."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipectl.connections import Connection
from pipectl.options import FilePath, Problem

__all__ = [
    "DirectoryConnection",
    "HttpConnection",
    "PostgresConnection",
    "SqliteConnection",
    "dsn_password",
]


class SqliteConnection(Connection):
    """An SQLite database file: gives a ``sqlite`` component its ``path``.

    ``path``
        The database file, relative to the pipeline file's folder.
    """

    serves = ("sqlite",)
    replaces = ("path",)

    def __init__(self, *, path: FilePath):
        self.path = path

    def options(self, component: Mapping[str, Any]) -> dict[str, Any]:
        return {"path": self.path}

    def describe(self) -> str:
        return f"sqlite {self.path}"


class DirectoryConnection(Connection):
    """A folder: a component's relative ``path`` is joined to it (any component with a file
    ``path`` option: ``csv``, ``jsonl``...); a component without ``path`` gets the folder.

    ``path``
        The folder, relative to the pipeline file's folder.
    """

    joins = ("path",)

    def __init__(self, *, path: FilePath):
        self.path = path

    def options(self, component: Mapping[str, Any]) -> dict[str, Any]:
        given = component.get("path")
        if given is None:
            return {"path": self.path}
        if not isinstance(given, str) or not given:
            raise ValueError("path: expected a path relative to the directory")
        if given == "-" or os.path.isabs(os.path.expanduser(given)) or "://" in given:
            raise ValueError(
                f"path {given!r} is not relative: with a directory connection, give the "
                "path inside the directory (or drop 'connection')"
            )
        return {"path": os.path.normpath(os.path.join(self.path, given))}

    def describe(self) -> str:
        return f"directory {self.path}"


_KEY_VALUE_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def dsn_password(dsn: str) -> str | None:
    """The password a PostgreSQL connection string holds (a URL's ``user:password@``, or a
    ``password=...`` of a key/value string), else None."""
    if "://" in dsn:
        try:
            password = urllib.parse.urlsplit(dsn).password
        except ValueError:
            password = None
        if password is None:  # maybe ?password=... in the query
            found = urllib.parse.parse_qs(dsn.partition("?")[2]).get("password")
            return found[0] if found else None
        return urllib.parse.unquote(password)
    match = _KEY_VALUE_PASSWORD.search(dsn)
    if match is None:
        return None
    value = match.group(1)
    if value.startswith("'"):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


class PostgresConnection(Connection):
    """A PostgreSQL database: gives a ``postgres`` component its ``dsn``, built from the
    fields (``host``, ``port``, ``database``, ``user``, ``password``) or given whole (``dsn``).
    The password (and a DSN's) is secret: shown as ``***`` wherever the DSN is shown.

    ``host``
        The server's host name or address (required without ``dsn``).
    ``port``
        The server's port (default 5432).
    ``database``
        The database's name (required without ``dsn``).
    ``user``
        The user to connect as (default: libpq's, ``PGUSER`` or the system user).
    ``password``
        The user's password: write ``${env.NAME}``, so it stays out of the file (secret).
    ``dsn``
        A whole connection string instead of the fields (secret: its password is masked).
    ``options``
        Further connection parameters, such as ``{sslmode: require, connect_timeout: 5}``.
    """

    serves = ("postgres",)
    replaces = ("dsn", "dsn_env")
    secret_fields = ("password", "dsn")

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | str | None = None,
        database: str | None = None,
        user: str | None = None,
        password: str | None = None,
        dsn: str | None = None,
        options: dict[str, str | int] | None = None,
    ):
        self.host, self.port, self.database = host, port, database
        self.user, self.password, self.dsn = user, password, dsn
        self.extra = dict(options or {})

    @classmethod
    def check_fields(cls, values: Mapping[str, Any]) -> list[Problem]:
        if "dsn" in values:
            both = [k for k in ("host", "port", "database", "user", "password") if k in values]
            return [
                Problem(
                    k,
                    "give 'dsn' or the fields (host, port, database, user, password), not both",
                )
                for k in both[:1]
            ]
        problems = [
            Problem(k, "is required (or give a whole 'dsn')", f"give it: {k}: <a string>")
            for k in ("host", "database")
            if not values.get(k)
        ]
        port = values.get("port")
        if port is not None and not re.fullmatch(r"\d{1,5}", str(port)):
            problems.append(Problem("port", f"expected a port number, got {port!r}"))
        return problems

    @property
    def url(self) -> str:
        """The connection string components get (the password in it)."""
        if self.dsn is not None:
            return self.dsn
        quote = urllib.parse.quote
        auth = ""
        if self.user is not None or self.password is not None:
            auth = quote(self.user or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = str(self.host)
        if ":" in host and not host.startswith("["):  # an IPv6 address
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        query = urllib.parse.urlencode({k: str(v) for k, v in self.extra.items()})
        database = quote(str(self.database), safe="")
        return f"postgresql://{auth}{host}{port}/{database}" + (f"?{query}" if query else "")

    def options(self, component: Mapping[str, Any]) -> dict[str, Any]:
        return {"dsn": self.url}

    def secrets(self) -> tuple[str, ...]:
        out = []
        password = self.password if self.dsn is None else dsn_password(self.dsn)
        if password:
            out.append(password)
            quoted = urllib.parse.quote(password, safe="")
            if quoted != password:
                out.append(quoted)  # as it is written in the DSN
        return tuple(out)

    def describe(self) -> str:
        url = self.url
        for secret in sorted(self.secrets(), key=len, reverse=True):
            url = url.replace(secret, "***")
        return url


class HttpConnection(Connection):
    """An HTTP API: an ``http`` extractor's ``url`` is joined to ``base_url`` (a relative one,
    or none: the base itself), and the connection's headers are merged under its own
    ``headers``. Header values and the token are secret.

    ``base_url``
        The API's root, ``https://api.example.com/v1``.
    ``headers``
        Headers sent with every request, ``{Authorization: "Bearer ${env.API_TOKEN}"}``
        (their values are secret).
    ``token``
        A bearer token: sends ``Authorization: Bearer TOKEN`` (secret).
    """

    serves = ("http",)
    joins = ("url", "headers")
    secret_fields = ("headers", "token")

    def __init__(
        self,
        *,
        base_url: str,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ):
        self.base_url, self.headers, self.token = base_url, dict(headers or {}), token

    @classmethod
    def check_fields(cls, values: Mapping[str, Any]) -> list[Problem]:
        base = values.get("base_url", "")
        try:
            parts = urllib.parse.urlsplit(base)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            return [Problem("base_url", "expected an http:// or https:// URL")]
        if parts.username is not None or parts.password is not None:
            return [
                Problem(
                    "base_url",
                    "must not hold credentials (user:password@); give 'token' or 'headers'",
                )
            ]
        return []

    def options(self, component: Mapping[str, Any]) -> dict[str, Any]:
        url = component.get("url")
        if url is None:
            joined = self.base_url
        elif not isinstance(url, str):
            raise ValueError("url: expected a path relative to the connection's base_url")
        elif urllib.parse.urlsplit(url).scheme:
            raise ValueError(
                f"url {url!r} is a whole URL: with an http connection, give the path "
                "relative to its base_url (or drop 'connection')"
            )
        else:
            joined = self.base_url.rstrip("/") + "/" + url.lstrip("/") if url else self.base_url
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        own = component.get("headers")
        if isinstance(own, Mapping):
            headers.update(own)
        elif own is not None:
            raise ValueError("headers: expected a mapping of header names to strings")
        return {"url": joined, **({"headers": headers} if headers else {})}

    def secrets(self) -> tuple[str, ...]:
        out = list(super().secrets())
        if self.token is not None:
            out.append(f"Bearer {self.token}")
        return tuple(out)

    def describe(self) -> str:
        return f"http {self.base_url}"

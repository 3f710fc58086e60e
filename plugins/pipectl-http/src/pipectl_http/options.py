"""Checking the ``http`` extractor's options, and the ``auth`` and ``incremental`` settings.

Every check raises ``ValueError`` with a message that names the option, what it got and what
would be right (with a "did you mean" for a misspelt name).
"""

from __future__ import annotations

import base64
import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipectl_http.errors import HttpExtractorError

WHAT = "http extractor"
SCALARS = (str, int, float, bool)


def unknown_names(what: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise for the first name of ``given`` that is not in ``known``, suggesting a close one."""
    known = sorted(known)
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{what}: unknown option {name!r}{hint} (known: {', '.join(known)})")


def text(name: str, value: Any, *, empty_ok: bool = False) -> str:
    """``value`` if it is a string (non-empty unless ``empty_ok``)."""
    if not isinstance(value, str) or (not value and not empty_ok):
        raise ValueError(
            f"{WHAT}: {name} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}"
        )
    return value


def integer(name: str, value: Any, *, minimum: int) -> int:
    """``value`` if it is an integer of at least ``minimum`` (booleans are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{WHAT}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def number(name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a float if it is a number > 0 (``positive``) or >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{WHAT}: {name} must be a number {bound} (seconds or per second), got {value!r}"
        )
    return float(value)


def mapping(name: str, value: Any) -> dict[str, Any]:
    """``value`` as a dict if it is a mapping with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{WHAT}: {name} must be a mapping with string keys, got {value!r}")
    return dict(value)


def query_params(value: Any) -> dict[str, Any]:
    """The ``params`` option: names to a scalar or a list of scalars (a repeated parameter)."""
    params = mapping("params", value)
    for key, item in params.items():
        items = item if isinstance(item, list) else [item]
        if not items or not all(isinstance(i, SCALARS) for i in items):
            raise ValueError(
                f"{WHAT}: params[{key!r}] must be a string, number, boolean or a "
                f"non-empty list of them, got {item!r}"
            )
    return params


def headers(value: Any) -> dict[str, str]:
    """The ``headers`` option: names to string values."""
    out = mapping("headers", value)
    for key, item in out.items():
        if not isinstance(item, str):
            raise ValueError(f"{WHAT}: headers[{key!r}] must be a string, got {item!r}")
    return out


def dotted(name: str, value: Any, *, empty_ok: bool = False) -> tuple[str, ...]:
    """A dotted path such as ``data.items`` as its keys; ``""`` (if ``empty_ok``) is ``()``."""
    path = text(name, value, empty_ok=empty_ok)
    keys = tuple(path.split(".")) if path else ()
    if any(not key for key in keys):
        raise ValueError(
            f"{WHAT}: {name} {path!r} has an empty key; write keys separated by "
            "single dots, like 'data.items'"
        )
    return keys


def env_name(name: str, value: Any) -> str:
    """The name of an environment variable (never its value)."""
    text(name, value)
    if "=" in value or "\0" in value:
        raise ValueError(
            f"{WHAT}: {name} must be the name of an environment variable, got {value!r}"
        )
    return value


# -- auth ------------------------------------------------------------------------------------

AUTH_FIELDS = {
    "bearer": ("token_env",),
    "basic": ("username", "password_env"),
    "api_key": ("key_env", "header", "param"),
}
DEFAULT_API_KEY_HEADER = "X-API-Key"


class Credentials:
    """What one run sends to authenticate: headers, query params, and the secret strings that
    must never be shown. Its repr shows nothing of them."""

    __slots__ = ("headers", "params", "secrets")

    def __init__(
        self,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        secrets: Iterable[str] = (),
    ):
        self.headers = headers or {}
        self.params = params or {}
        self.secrets = tuple(secrets)

    def __repr__(self) -> str:
        return (
            f"<Credentials headers={sorted(self.headers)} params={sorted(self.params)} "
            "(values hidden)>"
        )


@dataclass(frozen=True)
class Auth:
    """The ``auth`` option: which scheme, and the environment variable holding the secret."""

    type: str
    env: str
    env_option: str
    username: str | None = None
    header: str | None = None
    param: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Auth:
        spec = mapping("auth", value)
        kind = spec.pop("type", None)
        if kind not in AUTH_FIELDS:
            raise ValueError(
                f"{WHAT}: auth.type must be one of {', '.join(AUTH_FIELDS)}, got {kind!r}"
            )
        unknown_names(f"{WHAT}: auth (type {kind})", spec, AUTH_FIELDS[kind])
        if kind == "bearer":
            return cls(kind, env_name("auth.token_env", spec.get("token_env")), "token_env")
        if kind == "basic":
            username = text("auth.username", spec.get("username"))
            if ":" in username:
                raise ValueError(f"{WHAT}: auth.username cannot contain ':' (basic auth)")
            return cls(
                kind,
                env_name("auth.password_env", spec.get("password_env")),
                "password_env",
                username=username,
            )
        if "header" in spec and "param" in spec:
            raise ValueError(f"{WHAT}: auth (type api_key) takes 'header' or 'param', not both")
        header = param = None
        if "param" in spec:
            param = text("auth.param", spec["param"])
        else:
            header = text("auth.header", spec.get("header", DEFAULT_API_KEY_HEADER))
        return cls(
            kind,
            env_name("auth.key_env", spec.get("key_env")),
            "key_env",
            header=header,
            param=param,
        )

    def credentials(self) -> Credentials:
        """Read the secret from the environment now; a missing variable is an error naming it."""
        secret = os.environ.get(self.env)
        if not secret:
            raise HttpExtractorError(
                f"{WHAT}: the environment variable {self.env!r} (auth.{self.env_option}, "
                f"{self.type} auth) is not set or is empty"
            )
        if self.type == "bearer":
            return Credentials(headers={"Authorization": f"Bearer {secret}"}, secrets=[secret])
        if self.type == "basic":
            encoded = base64.b64encode(f"{self.username}:{secret}".encode()).decode("ascii")
            return Credentials(
                headers={"Authorization": f"Basic {encoded}"}, secrets=[secret, encoded]
            )
        if self.param is not None:
            return Credentials(params={self.param: secret}, secrets=[secret])
        return Credentials(
            headers={self.header or DEFAULT_API_KEY_HEADER: secret}, secrets=[secret]
        )

    def describe(self) -> str:
        where = f" {self.header}" if self.header else f" ?{self.param}" if self.param else ""
        return f"{self.type}{where} from ${self.env}"


# -- incremental -----------------------------------------------------------------------------

INCREMENTAL_FIELDS = ("param", "field", "initial")


@dataclass(frozen=True)
class Incremental:
    """The ``incremental`` option: the query param that carries the cursor, the record field
    whose largest value becomes the next cursor, and the cursor of the first run."""

    param: str
    field: tuple[str, ...]
    initial: str | int | float | None = None

    @classmethod
    def parse(cls, value: Any) -> Incremental:
        spec = mapping("incremental", value)
        unknown_names(f"{WHAT}: incremental", spec, INCREMENTAL_FIELDS)
        for required in ("param", "field"):
            if required not in spec:
                raise ValueError(
                    f"{WHAT}: incremental needs '{required}' (e.g. {{param: "
                    "updated_since, field: updated_at, initial: '2020-01-01'}})"
                )
        initial = spec.get("initial")
        if initial is not None and (
            isinstance(initial, bool) or not isinstance(initial, (str, int, float))
        ):
            raise ValueError(
                f"{WHAT}: incremental.initial must be a string or a number, got {initial!r}"
            )
        return cls(
            text("incremental.param", spec["param"]),
            dotted("incremental.field", spec["field"]),
            initial,
        )

    @property
    def field_name(self) -> str:
        return ".".join(self.field)

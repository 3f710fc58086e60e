"""The UI's safety rules, as ASGI middleware and a check made before the server starts.

- :func:`is_loopback`: ``pipectl ui`` binds a loopback address unless a token is given.
- :class:`TokenGate`: with a token, every request carries it: ``Authorization: Bearer TOKEN``,
  or the cookie that ``?token=TOKEN`` sets once (``HttpOnly``, ``SameSite=Strict``; the URL is
  then redirected to itself without the token, so it stays out of the history and of
  ``Referer`` headers; the cookie holds a digest of the token). Without a token (loopback
  only), a request must name the host as a loopback name (``Host: 127.0.0.1:PORT``,
  ``localhost:PORT``, ``[::1]:PORT``): a page of another site that a DNS rebinding points at
  127.0.0.1 does not get an answer.
- :class:`Csrf`: actions (``--allow-actions``) are POSTs of forms that carry a token, an HMAC
  (with a random secret of the server's) of a random session the browser holds in a cookie
  (``HttpOnly``, ``SameSite=Strict``); :func:`cross_site` refuses a request whose ``Origin``
  or ``Sec-Fetch-Site`` says another site sent it.
- :class:`SecurityHeaders`: a strict Content-Security-Policy (scripts, styles, images and
  connections from the UI itself only; no inline script or style, no frames, no plugins), no
  MIME sniffing, no ``Referer``, no caching of pages and API answers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "COOKIE",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "Csrf",
    "SecurityHeaders",
    "TokenGate",
    "cross_site",
    "is_loopback",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "pipectl_ui_token"
#: the cookie of the browser's session, which a form's CSRF token is made from
CSRF_COOKIE = "pipectl_ui_session"
#: the hidden field of an action's form that holds the CSRF token
CSRF_FIELD = "csrf"
_SESSION = re.compile(r"[A-Za-z0-9_-]{32,64}")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is a loopback address only: a name counts when
    every address it resolves to is a loopback one."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses
    )


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers") or ()}


def _host_name(value: str) -> str:
    """The name of a ``Host`` header (without its port)."""
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _refuse(send: Send, status: int, message: str, *, api: bool) -> None:
    if api:
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        kind = b"application/json"
    else:
        body = f"{status}: {message}\n".encode()
        kind = b"text/plain; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="pipectl ui"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenGate:
    """Lets a request through when it carries ``token`` (or, without a token, when it names
    a loopback host): see the module's doc."""

    def __init__(self, app: ASGIApp, token: str | None, extra_hosts: tuple[str, ...] = ()):
        self.app = app
        self.token = token
        #: the cookie holds a digest of the token, not the token (any characters, kept out)
        self.cookie_value = hashlib.sha256(token.encode()).hexdigest() if token else ""
        self.hosts = {h.lower() for h in (*_LOOPBACK_NAMES, *extra_hosts)}

    def _carries(self, scope: Scope) -> bool:
        assert self.token is not None
        headers = _headers(scope)
        expected = self.token.encode()
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), expected):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode(), self.cookie_value.encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api/")
        if self.token is None:
            host = _headers(scope).get(b"host", b"").decode("latin-1").lower()
            if _host_name(host) not in self.hosts:
                await _refuse(
                    send, 403, "unknown Host: open the address pipectl ui printed", api=api
                )
                return
            await self.app(scope, receive, send)
            return
        if self._carries(scope):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and hmac.compare_digest(given[-1].encode(), self.token.encode()):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            path = scope.get("raw_path") or scope["path"].encode("utf-8")
            location = path + (b"?" + rest.encode("latin-1") if rest else b"")
            cookie = f"{COOKIE}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location),
                        (b"set-cookie", cookie.encode("latin-1")),
                        (b"cache-control", b"no-store"),
                        (b"referrer-policy", b"no-referrer"),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _refuse(
            send,
            401,
            "a token is needed: send Authorization: Bearer TOKEN, or open the UI once with "
            "?token=TOKEN (the token of pipectl ui --token or PIPECTL_UI_TOKEN)",
            api=api,
        )


class Csrf:
    """The CSRF tokens of a server: ``secret`` is random, made when the server starts (a
    token of a server is no token of another, nor of the same one once restarted). A form's
    token is the HMAC-SHA256 of the browser's session (a random value in the cookie
    :data:`CSRF_COOKIE`): a page of another site can neither read the token (the same-origin
    policy; DNS rebinding is refused by :class:`TokenGate`) nor make the browser send the
    cookie (``SameSite=Strict``)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def valid_session(session: str | None) -> bool:
        return bool(session) and _SESSION.fullmatch(str(session)) is not None

    def token(self, session: str) -> str:
        """The token of the forms of ``session``."""
        message = b"pipectl-ui-csrf\0" + session.encode("ascii")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def check(self, session: str | None, token: str | None) -> bool:
        """Whether ``token`` is the token of ``session`` (compared in constant time)."""
        if not self.valid_session(session) or not token:
            return False
        assert session is not None
        return hmac.compare_digest(self.token(session).encode(), token.encode("utf-8", "replace"))

    @staticmethod
    def cookie(session: str) -> str:
        """The ``Set-Cookie`` value that gives the browser ``session``."""
        return f"{CSRF_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"


def cross_site(headers: Mapping[str, str]) -> str | None:
    """Why a POST is refused as sent by another site; None when nothing says so.

    ``Sec-Fetch-Site`` (set by the browser, which no page can forge), when present, must be
    ``same-origin``. Without it (an older browser, a script), ``Origin``, when present, must
    name the request's ``Host``. (A browser sends ``Origin: null`` with the forms of a page
    served with ``Referrer-Policy: no-referrer``, as the UI's are: that is why
    ``Sec-Fetch-Site`` decides first.)"""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.strip().lower() != "same-origin":
            return f"Sec-Fetch-Site: {fetch_site}: the form was not sent by a page of this UI"
        return None
    origin = headers.get("origin")
    if origin is not None:
        host = (headers.get("host") or "").strip().lower()
        try:
            given = urlsplit(origin.strip()).netloc.lower()
        except ValueError:
            given = ""
        if not given or given != host:
            return f"Origin: {origin}: the form was not sent by a page of this UI"
    return None


class SecurityHeaders:
    """Adds the security headers to every response (see the module's doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                if not static:
                    extra.append((b"cache-control", b"no-store"))
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

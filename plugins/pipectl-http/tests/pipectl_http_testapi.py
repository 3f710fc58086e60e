"""A real JSON API for the tests: an HTTP server on 127.0.0.1 (ephemeral port), in a thread.

It serves a dataset of records in every pagination style, and on demand fails every k-th
request with 503, answers 429 with ``Retry-After`` when requests come too fast, delays its
answers, checks credentials (echoing what it got, to prove it is redacted), returns broken JSON
or a chosen status, and filters by ``updated_since``. It records every request it saw (time,
path, query, headers) and the largest number of requests it was serving at once.

:class:`RawServer` is a bare HTTP server on a socket, for the answers a body in memory cannot
give: bodies made on the fly (endless, gigabytes, one byte at a time, held back halfway).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

N_RECORDS = 237


def make_record(i: int) -> dict[str, Any]:
    stamp = datetime(2024, 1, 1) + timedelta(hours=i)
    return {"id": i, "name": f"item-{i}", "updated_at": stamp.isoformat() + "Z"}


@dataclass
class Seen:
    """One request the server received."""

    number: int
    monotonic: float
    wall: float
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


Reply = tuple[int, dict[str, str], Any]


@dataclass
class ApiServer:
    """The API's data, behaviour switches and what it saw."""

    base: str = ""
    records: list[dict[str, Any]] = field(
        default_factory=lambda: [make_record(i) for i in range(N_RECORDS)]
    )
    fail_every: int | None = None
    """Answer 503 to every k-th request."""
    rate_limit: float | None = None
    """Answer 429 to a request less than 1/rate_limit s after the last one served."""
    retry_after: str = "0.05"
    delay: float = 0.0
    """Seconds to wait before answering."""
    require_headers: dict[str, str] = field(default_factory=dict)
    require_query: dict[str, str] = field(default_factory=dict)
    script: dict[int, Reply] = field(default_factory=dict)
    """Canned replies by request number (from 1), before anything else."""
    requests: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    throttled: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _last_served: float | None = None

    def url(self, path: str) -> str:
        return self.base + path

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    # -- answering ----------------------------------------------------------------------------

    def reply(self, seen: Seen) -> Reply:
        if seen.number in self.script:
            return self.script[seen.number]
        for name, expected in self.require_headers.items():
            got = seen.headers.get(name.lower())
            if got != expected:
                return 401, {}, {"error": f"bad credentials: {name} was {got!r}"}
        for name, expected in self.require_query.items():
            got = seen.query.get(name)
            if got != expected:
                return 401, {}, {"error": f"bad credentials: {name} was {got!r}"}
        if self.fail_every and seen.number % self.fail_every == 0:
            self.failed += 1
            return 503, {}, {"error": "try again"}
        if self.rate_limit:
            with self.lock:
                now = time.monotonic()
                if self._last_served is not None and now - self._last_served < 1 / self.rate_limit:
                    self.throttled += 1
                    return 429, {"Retry-After": self.retry_after}, {"error": "slow down"}
                self._last_served = now
        return self.route(seen.path, seen.query, seen.body)

    def route(self, path: str, q: dict[str, str], body: Any = None) -> Reply:
        rows = self.records
        if "updated_since" in q:
            rows = [r for r in rows if r["updated_at"] > q["updated_since"]]
        if path == "/search":  # POST {"min_id": n}
            return 200, {}, {"hits": [r for r in rows if r["id"] >= body["min_id"]]}
        if path == "/list":
            return 200, {}, rows
        if path == "/wrapped":
            return 200, {}, {"data": {"items": rows}, "meta": {"count": len(rows)}}
        if path == "/pages":
            size = int(q.get("per_page", 10))
            start = (int(q.get("page", 1)) - 1) * size
            return 200, {}, {"data": rows[start : start + size], "total": len(rows)}
        if path == "/offsets":
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 25))
            return 200, {}, {"results": rows[offset : offset + limit], "count": len(rows)}
        if path == "/cursor":
            start = int(q.get("cursor", "c0")[1:])
            end = start + 10
            return (
                200,
                {},
                {
                    "items": rows[start:end],
                    "meta": {"next": f"c{end}" if end < len(rows) else None},
                },
            )
        if path == "/links":
            page, size = int(q.get("page", 1)), int(q.get("per_page", 10))
            headers = {}
            if page * size < len(rows):
                following = urlencode({**q, "page": page + 1})
                headers["Link"] = f'</links?{following}>; rel="next", </links?page=1>; rel="first"'
            return 200, headers, rows[(page - 1) * size : page * size]
        if path == "/malformed":
            return 200, {}, b'{"data": [{"id": 1}, {"id": 2'
        if path == "/mixed":
            return 200, {}, [{"id": 1}, 5, {"id": 2}]
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return code, {}, {"error": f"status {code} on purpose"}
        return 404, {}, {"error": f"no route {path}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        api: ApiServer = self.server.api
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with api.lock:
            seen = Seen(
                len(api.requests) + 1,
                time.monotonic(),
                time.time(),
                parts.path,
                dict(parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            api.requests.append(seen)
            api.in_flight += 1
            api.max_in_flight = max(api.max_in_flight, api.in_flight)
        try:
            status, headers, body = api.reply(seen)
            if api.delay:
                time.sleep(api.delay)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        finally:
            with api.lock:
                api.in_flight -= 1

    do_POST = do_GET


def start_server() -> tuple[ApiServer, Any]:
    """A running :class:`ApiServer` and a function that stops it."""
    server = ApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.api = server  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return server, stop


# -- a bare server ------------------------------------------------------------------------------


@dataclass
class RawRequest:
    """A request :class:`RawServer` received: its target (path and query) and headers (names in
    lower case)."""

    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))


Respond = Callable[[RawRequest, socket.socket, threading.Event], None]
"""Writes the whole response (status line, headers, body) to the socket; should stop writing an
endless body when the event is set (the server is stopping)."""


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 (ephemeral port) written on a bare socket: each connection
    carries one request, answered in its own thread by ``respond``; with ``tls`` (a server
    context), over TLS. A client that goes away ends the answer. It records every request."""

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None = None):
        self.respond = respond
        self.tls = tls
        self.requests: list[RawRequest] = []
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            request = RawRequest(lines[0].split(" ")[1], headers)
            self.requests.append(request)
            self.respond(request, conn, self.stopping)
        except OSError:  # the client went away (or the TLS handshake failed)
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()


def head(
    status: str = "200 OK",
    *,
    length: int | None = None,
    content_type: str = "application/json",
    **headers: str,
) -> bytes:
    """A response's status line and headers: ``Content-Length: length``, or chunked without
    one. ``headers`` names use ``_`` for ``-``."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (``b""``: the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def streamed(parts: Callable[[], Iterable[bytes]], length: int | None = None) -> Respond:
    """Answers 200 with the body ``parts()`` makes, written as made: with ``length``, a
    Content-Length body, else chunked."""

    def respond(request: RawRequest, conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(head(length=length))
        for part in parts():
            if stopping.is_set():
                return
            conn.sendall(part if length is not None else chunked(part))
        if length is None:
            conn.sendall(chunked(b""))

    return respond


def endless(piece: bytes) -> Iterable[bytes]:
    """``piece`` again and again, for ever."""
    while True:
        yield piece


def json_line(number: int, size: int) -> bytes:
    """A JSON Lines line of ``size`` bytes (its newline included): a record with a padding."""
    start = b'{"id": %d, "pad": "' % number
    return start + b"x" * (size - len(start) - 3) + b'"}\n'

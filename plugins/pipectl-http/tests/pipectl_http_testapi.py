"""A real JSON API for the tests: an HTTP server on 127.0.0.1 (ephemeral port), in a thread.

It serves a dataset of records in every pagination style, and on demand fails every k-th
request with 503, answers 429 with ``Retry-After`` when requests come too fast, delays its
answers, checks credentials (echoing what it got, to prove it is redacted), returns broken JSON
or a chosen status, and filters by ``updated_since``. It records every request it saw (time,
path, query, headers) and the largest number of requests it was serving at once.
"""

from __future__ import annotations

import json
import threading
import time
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
        default_factory=lambda: [make_record(i) for i in range(N_RECORDS)])
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
            return 200, {}, {"data": rows[start:start + size], "total": len(rows)}
        if path == "/offsets":
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 25))
            return 200, {}, {"results": rows[offset:offset + limit], "count": len(rows)}
        if path == "/cursor":
            start = int(q.get("cursor", "c0")[1:])
            end = start + 10
            return 200, {}, {"items": rows[start:end],
                             "meta": {"next": f"c{end}" if end < len(rows) else None}}
        if path == "/links":
            page, size = int(q.get("page", 1)), int(q.get("per_page", 10))
            headers = {}
            if page * size < len(rows):
                following = urlencode({**q, "page": page + 1})
                headers["Link"] = f'</links?{following}>; rel="next", </links?page=1>; rel="first"'
            return 200, headers, rows[(page - 1) * size:page * size]
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
            seen = Seen(len(api.requests) + 1, time.monotonic(), time.time(), parts.path,
                        dict(parse_qsl(parts.query)),
                        {k.lower(): v for k, v in self.headers.items()}, body)
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
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return server, stop

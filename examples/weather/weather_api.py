"""A tiny weather API for the example: hourly readings per location, as JSON, on 127.0.0.1.

Nothing is fetched from anywhere: the readings are made up, the same on every start (a
function of the location and the hour), ``days`` days of 24 hourly readings per location from
2026-11-16T00:00:00Z. Standard library only: a ``ThreadingHTTPServer``.

    python examples/weather/weather_api.py --port 8765             # Ctrl-C stops it
    python examples/weather/weather_api.py --port 8765 --days 30 --api-key s3cret --delay 0.05

``GET /v1/readings``: ``{"data": [reading, ...], "meta": {...}}``, oldest first (by
``observed_at``, then location). Query parameters:

- ``location``: a location code, repeated (``location=NYC&location=SF``) or comma-separated;
  all locations when left out. An unknown code is a 400 naming the known ones.
- ``page`` (from 1) and ``page_size`` (default 100, at most 500); ``meta`` has ``page``,
  ``page_size``, ``total`` (readings matching the filters) and ``next_cursor``.
- or ``cursor`` (the ``meta.next_cursor`` of the previous response) with ``page_size``;
  ``next_cursor`` is ``null`` on the last page.
- ``updated_since`` (or ``since``): only readings whose ``updated_at`` is later, an ISO 8601
  UTC time such as ``2026-11-18T12:00:00Z`` (incremental extraction).

``GET /v1/locations`` lists the locations; ``GET /v1/health`` says the API is up. With an API
key (``--api-key``, or the environment variable ``WEATHER_API_KEY`` when the server starts),
``/v1/readings`` and ``/v1/locations`` answer 401 without the header ``X-API-Key: <key>``;
``/v1/health`` never needs it. ``--delay`` makes each response wait, as a remote API would.

A reading::

    {"location": "NYC", "observed_at": "2026-11-16T00:00:00Z", "temperature_c": 3.1,
     "humidity_pct": 62, "wind_kph": 20.0, "precipitation_mm": 0.0, "conditions": "clear",
     "updated_at": "2026-11-16T00:10:00Z"}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

START = datetime(2026, 11, 16, tzinfo=UTC)
"""The first hour of the readings."""
PUBLISHED_AFTER = timedelta(minutes=10)
"""A reading's ``updated_at``: when the API published it, after its ``observed_at``."""
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
KEY_HEADER = "X-API-Key"

#: code: (name, mean temperature °C, daily swing °C, humidity %)
LOCATIONS: dict[str, tuple[str, float, float, int]] = {
    "NYC": ("New York", 7.0, 5.0, 64),
    "SF": ("San Francisco", 13.0, 4.0, 76),
    "LON": ("London", 8.0, 3.0, 82),
    "TYO": ("Tokyo", 12.0, 4.5, 60),
    "SYD": ("Sydney", 21.0, 5.5, 68),
}


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _noise(*key: object) -> float:
    """A number in [0, 1) that depends only on ``key``: made-up data, the same every time."""
    return zlib.crc32(repr(key).encode()) / 2**32


def reading(location: str, hour: int) -> dict[str, Any]:
    """The reading of ``location`` at ``hour`` hours after :data:`START`."""
    _, mean, swing, humidity = LOCATIONS[location]
    observed = START + timedelta(hours=hour)
    warmest = math.sin(2 * math.pi * (observed.hour - 9) / 24)  # warmest mid-afternoon
    rain = _noise(location, hour, "rain")
    precipitation = round((rain - 0.8) * 10, 1) if rain > 0.8 else 0.0
    return {
        "location": location,
        "observed_at": _stamp(observed),
        "temperature_c": round(mean + swing * warmest + 4 * (_noise(location, hour) - 0.5), 1),
        "humidity_pct": min(
            100,
            humidity + int(20 * (_noise(location, hour, "h") - 0.5)) + (15 if precipitation else 0),
        ),
        "wind_kph": round(25 * _noise(location, hour, "wind"), 1),
        "precipitation_mm": precipitation,
        "conditions": "rain" if precipitation else ("clear" if rain < 0.4 else "cloudy"),
        "updated_at": _stamp(observed + PUBLISHED_AFTER),
    }


class WeatherApi:
    """The API's data and answers, apart from HTTP: ``answer(path, query, headers)``."""

    def __init__(self, days: int = 7, api_key: str | None = None, delay: float = 0.0):
        if days < 1:
            raise ValueError("days must be at least 1")
        self.days = days
        self.api_key = api_key or None
        self.delay = delay
        self.requests = 0
        """Requests answered so far (every path, every status)."""
        self.lock = threading.Lock()
        self._all = sorted(
            (reading(code, hour) for code in LOCATIONS for hour in range(days * 24)),
            key=lambda r: (r["observed_at"], r["location"]),
        )

    def readings(
        self, locations: list[str] | None = None, since: str | None = None
    ) -> list[dict[str, Any]]:
        """Every reading of ``locations`` (all when None) updated after ``since``, in order."""
        wanted = set(locations) if locations else None
        return [
            r
            for r in self._all
            if (wanted is None or r["location"] in wanted)
            and (since is None or r["updated_at"] > since)
        ]

    def answer(
        self, path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> tuple[int, Any]:
        """(HTTP status, JSON body) for a GET of ``path`` with ``query`` (pairs, repeats kept)."""
        if path == "/v1/health":
            return 200, {
                "service": "weather",
                "status": "ok",
                "days": self.days,
                "key_required": self.api_key is not None,
            }
        if path not in ("/v1/readings", "/v1/locations"):
            return 404, {
                "error": f"no such path {path!r}; try /v1/readings, /v1/locations or /v1/health"
            }
        if self.api_key is not None and headers.get(KEY_HEADER.lower()) != self.api_key:
            return 401, {"error": f"a valid {KEY_HEADER} header is required"}
        if path == "/v1/locations":
            return 200, {"data": [{"code": c, "name": n} for c, (n, *_) in LOCATIONS.items()]}
        return self._readings(query)

    def _readings(self, query: list[tuple[str, str]]) -> tuple[int, Any]:
        single = dict(query)
        locations = [
            code.strip()
            for name, value in query
            if name == "location"
            for code in value.split(",")
            if code.strip()
        ]
        unknown = [c for c in locations if c not in LOCATIONS]
        if unknown:
            return 400, {
                "error": f"unknown location(s) {', '.join(unknown)}; known: {', '.join(LOCATIONS)}"
            }
        since = single.get("updated_since", single.get("since"))
        try:
            size = int(single.get("page_size", DEFAULT_PAGE_SIZE))
            if "cursor" in single:
                start = int(single["cursor"].removeprefix("r"))
                page = start // size + 1 if size > 0 else 0
            else:
                page = int(single.get("page", 1))
                start = (page - 1) * size
        except ValueError:
            return 400, {
                "error": "page, page_size and cursor must be what the API gave: "
                "page and page_size numbers, cursor a next_cursor"
            }
        if not 1 <= size <= MAX_PAGE_SIZE or page < 1 or start < 0:
            return 400, {"error": f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}"}
        rows = self.readings(locations or None, since)
        end = start + size
        return 200, {
            "data": rows[start:end],
            "meta": {
                "page": page,
                "page_size": size,
                "total": len(rows),
                "next_cursor": f"r{end}" if end < len(rows) else None,
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connections
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall
    server: WeatherServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        api = self.server.api
        parts = urlsplit(self.path)
        status, body = api.answer(
            parts.path, parse_qsl(parts.query), {k.lower(): v for k, v in self.headers.items()}
        )
        if api.delay:
            time.sleep(api.delay)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with api.lock:
            api.requests += 1


class WeatherServer(ThreadingHTTPServer):
    """The HTTP server of a :class:`WeatherApi`; ``url`` is where it listens."""

    daemon_threads = True

    def __init__(
        self, api: WeatherApi, host: str = "127.0.0.1", port: int = 0, verbose: bool = False
    ):
        self.api = api
        self.verbose = verbose
        super().__init__((host, port), _Handler)
        self.url = f"http://{host}:{self.server_address[1]}"
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away
            super().handle_error(request, client_address)

    def start(self) -> WeatherServer:
        """Serve in a daemon thread (it ends with the process, or with :meth:`stop`)."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            name="weather-api",
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **options: Any) -> WeatherServer:
    """A :class:`WeatherServer` serving in a background thread (``port=0``: any free port).
    ``options`` go to :class:`WeatherApi` (``days``, ``api_key``, ``delay``)."""
    return WeatherServer(WeatherApi(**options), host, port).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--days", type=int, default=7, help="days of hourly readings (7)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("WEATHER_API_KEY"),
        help="require this X-API-Key header (default: $WEATHER_API_KEY; none: no key needed)",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each response waits (0)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    server = WeatherServer(
        WeatherApi(args.days, args.api_key, args.delay),
        args.host,
        args.port,
        verbose=not args.quiet,
    )
    key = "an X-API-Key header" if args.api_key else "no key"
    print(
        f"weather API on {server.url}/v1/readings ({args.days} days, {key}); Ctrl-C stops it",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

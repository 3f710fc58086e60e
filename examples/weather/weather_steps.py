"""The Python steps of the weather example: start the API when nothing answers, and decide
whether PostgreSQL is a target."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import weather_api

KEY_ENV = "WEATHER_API_KEY"
DEMO_KEY = "demo-key"
"""The API key the example uses when ``WEATHER_API_KEY`` is not set."""
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class RunningApi:
    """What ``start_api`` returns: the API's URL, and the server when this process started it.

    It is not picklable on purpose: pipectl stores a step's output for ``--resume`` only when it
    pickles, so a resumed run runs ``start_api`` again and gets a server of its own (the old
    run's server died with its process)."""

    def __init__(self, url: str, server: weather_api.WeatherServer | None = None):
        self.url = url
        self.server = server

    def __reduce__(self) -> Any:
        raise TypeError("a running API is not kept for --resume: the step starts it again")

    def __repr__(self) -> str:
        how = "started by this run" if self.server is not None else "already running"
        return f"<weather API at {self.url}, {how}>"


def _health(url: str) -> dict[str, Any] | None:
    """What ``/v1/health`` answers at ``url``; None when nothing listens there."""
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=2) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (ConnectionError, TimeoutError, urllib.error.URLError):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else {}


def start_api(params: dict, ctx: Any) -> RunningApi:
    """Start the weather API on ``params["api"]`` in a background thread, unless something
    already answers there (the API started by hand, say). The API key comes from
    ``WEATHER_API_KEY``; when it is not set, the example sets it to a demo key, for the server
    and for the ``http`` extractor's ``auth`` alike."""
    url = params["api"].rstrip("/")
    key = os.environ.setdefault(KEY_ENV, DEMO_KEY)
    health = _health(url)
    if health is not None:
        if health.get("service") != "weather":
            raise RuntimeError(
                f"something that is not the weather API answers at {url}; "
                "pick another port: -p api=http://127.0.0.1:PORT"
            )
        ctx.logger.info("weather_api_found", url=url)
        return RunningApi(url)
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS or parts.port is None:
        raise ConnectionError(
            f"nothing answers at {url}, and the example starts its API only "
            "at http://127.0.0.1:PORT (or localhost)"
        )
    try:
        server = weather_api.start_in_thread(parts.hostname, parts.port, api_key=key)
    except OSError as exc:
        raise ConnectionError(f"cannot start the weather API at {url}: {exc}") from None
    ctx.logger.info("weather_api_started", url=server.url, days=server.api.days)
    return RunningApi(url, server)


def postgres_target(params: dict, ctx: Any) -> dict[str, Any]:
    """Whether to load PostgreSQL too: when the variable named by ``postgres_dsn_env`` holds a
    DSN. The DSN itself stays in the environment (the ``postgres`` output reads it there), out
    of the run's params and records."""
    variable = params["postgres_dsn_env"]
    enabled = bool(os.environ.get(variable))
    if not enabled:
        ctx.logger.info(
            "postgres_not_configured",
            variable=variable,
            hint=f"set {variable} to a DSN to load PostgreSQL too",
        )
    return {"enabled": enabled, "dsn_env": variable, "schema": params["postgres_schema"]}

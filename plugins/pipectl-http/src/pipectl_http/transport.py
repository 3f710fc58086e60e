"""Sending requests: retries with exponential backoff, ``Retry-After``, the rate limit, per-request
timeouts, JSON decoding, and keeping secrets out of every message and log line."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import Any

import httpx

from pipectl_http.errors import HttpExtractorError

#: Query parameter names whose values are never shown (a name containing one of these words).
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "signature", "sig", "auth",
                "credential")
SNIPPET = 200
"""Characters of a response body quoted in an error."""

RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Transport errors worth another attempt: the network or the server, not the request."""


class Redactor:
    """Replaces secrets by ``***``: known secret strings anywhere in a text, and in URLs the
    values of query parameters named like secrets (or named in ``params``)."""

    def __init__(self, secrets: Iterable[str] = (), params: Iterable[str] = ()):
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._params = {p.lower() for p in params}

    def _is_secret_param(self, name: str) -> bool:
        lowered = name.lower()
        return lowered in self._params or any(word in lowered for word in SECRET_WORDS)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def url(self, url: httpx.URL | str) -> str:
        url = httpx.URL(url)
        if not url.query:
            return self.text(str(url))
        items = [(k, "***" if self._is_secret_param(k) else v)
                 for k, v in url.params.multi_items()]
        query = urllib.parse.urlencode(items, safe="*/:,")
        return self.text(f"{url.copy_with(query=None)}?{query}")

    def snippet(self, response: httpx.Response) -> str:
        """The start of the body, on one line, secrets removed."""
        body = self.text(response.text)  # all of it first: a secret cut in two stays hidden
        return " ".join(body[: SNIPPET * 2].split())[:SNIPPET] or "(an empty body)"


class _RedactingFilter(logging.Filter):
    """Rewrites httpx's own log lines (``HTTP Request: GET URL ...``) without the secrets."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):  # httpx logs the URL as an argument: hide its params
            record.args = tuple(self.redactor.url(a) if isinstance(a, httpx.URL) else a
                                for a in record.args)
        record.msg, record.args = self.redactor.text(record.getMessage()), None
        return True


@contextlib.contextmanager
def redacted_httpx_logs(redactor: Redactor) -> Iterator[None]:
    """While this lasts, what httpx logs goes through ``redactor``."""
    logger = logging.getLogger("httpx")
    log_filter = _RedactingFilter(redactor)
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for: seconds or an HTTP-date; None if absent or
    unreadable. Fractional seconds are accepted too."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = time.time() if now is None else now
        return max(0.0, when.timestamp() - now)
    return seconds if seconds >= 0 and seconds == seconds else None


class RateLimiter:
    """At most ``rate`` request starts per second: each start is at least ``1 / rate`` seconds
    after the previous one (no bursts). ``rate=None``: no limit."""

    def __init__(self, rate: float | None):
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        start = max(now, self._next)  # reserve the slot before sleeping: no lock needed
        self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class Fetcher:
    """Sends the requests of one extraction and decodes their JSON.

    A request that fails with a connection error, a timeout, HTTP 429 or a 5xx status is tried
    again, up to ``retries`` more times, after ``retry_delay * 2 ** (attempt - 1)`` seconds
    (at most ``retry_max_delay``), or after what ``Retry-After`` asks if that is longer. Any
    other 4xx fails at once. Every attempt waits for the rate limiter first.
    """

    def __init__(self, client: httpx.AsyncClient, *, method: str, body: Any, retries: int,
                 retry_delay: float, retry_max_delay: float, timeout: float,
                 limiter: RateLimiter, redactor: Redactor, logger: Any):
        self.client = client
        self.method = method
        self.body = body
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.timeout = timeout
        self.limiter = limiter
        self.redactor = redactor
        self.logger = logger
        self.attempts = 0
        """Requests sent so far, retries included."""

    async def get_json(self, url: httpx.URL) -> tuple[httpx.Response, Any]:
        """The response to ``url`` and its JSON, or :class:`HttpExtractorError`."""
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.wait()
            self.attempts += 1
            retry_after = None
            status = None
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.client.request(
                        self.method, url, json=self.body if self.method == "POST" else None)
            except TimeoutError:
                problem = f"no complete response within timeout={self.timeout:g} s"
            except RETRYABLE_ERRORS as exc:
                problem = f"{type(exc).__name__}: {self.redactor.text(str(exc)) or 'failed'}"
            except httpx.HTTPError as exc:  # a request that cannot work (bad URL, scheme...)
                shown, where = self._described(url)
                raise HttpExtractorError(
                    f"{where}: {type(exc).__name__}: {self.redactor.text(str(exc))}",
                    url=shown) from None
            else:
                status = response.status_code
                if status < 400:
                    return response, self._decode(response, url)
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                snippet = self.redactor.snippet(response)
                if status != 429 and status < 500:
                    shown, where = self._described(url)
                    hint = ("check the credentials (auth)" if status in (401, 403)
                            else "client errors other than 429 are not retried")
                    raise HttpExtractorError(f"{where}: {reason} ({hint}); the response starts "
                                             f"with: {snippet}", url=shown, status=status)
                problem = f"{reason}; the response starts with: {snippet}"
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            shown, where = self._described(url)
            if attempt > self.retries:
                raise HttpExtractorError(f"{where}: {problem}; gave up after {attempt} "
                                         f"attempt(s) (retries={self.retries})",
                                         url=shown, status=status)
            delay = min(self.retry_max_delay, self.retry_delay * 2 ** (attempt - 1))
            if retry_after is not None:
                if retry_after > self.retry_max_delay:
                    raise HttpExtractorError(
                        f"{where}: {problem}; the server asks to retry after {retry_after:g} s, "
                        f"longer than retry_max_delay={self.retry_max_delay:g} s (raise "
                        "retry_max_delay, or lower rate_limit)", url=shown, status=status)
                delay = max(delay, retry_after)
            self.logger.warning("http_retry", url=shown, problem=problem, attempt=attempt,
                                delay=round(delay, 3))
            await asyncio.sleep(delay)

    def _described(self, url: httpx.URL) -> tuple[str, str]:
        """``url`` as messages show it (secrets as ``***``), and ``http METHOD url``. Made only
        when a message needs it: redacting parses the URL again, a cost on every page."""
        shown = self.redactor.url(url)
        return shown, f"http {self.method} {shown}"

    def _decode(self, response: httpx.Response, url: httpx.URL) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as exc:  # JSONDecodeError, or bytes in no Unicode encoding
            shown, where = self._described(url)
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise HttpExtractorError(
                f"{where}: HTTP {response.status_code}: the response is not valid JSON "
                f"({self.redactor.text(str(exc))}; {kind}); it starts with: "
                f"{self.redactor.snippet(response)}",
                url=shown, status=response.status_code) from None


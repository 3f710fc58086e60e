"""Sending requests: retries with exponential backoff, ``Retry-After``, the rate limit, the time
a request may take, bodies read as they come up to a size limit, redirects that keep credentials
to their origin, and keeping secrets out of every message and log line."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC
from typing import Any, TypeVar

import httpx

from pipectl_http.errors import HttpExtractorError

#: Query parameter names whose values are never shown (a name containing one of these words).
SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "sig",
    "auth",
    "credential",
)
SNIPPET = 200
"""Characters of a response body quoted in an error."""
HEAD_BYTES = 4096
"""Bytes of a response body kept for the snippet of an error (more than ``SNIPPET`` characters
need: the snippet is cut from the first ``2 * SNIPPET`` characters)."""
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
"""Headers that are credentials whatever their value (besides names with a ``SECRET_WORDS``)."""
MAX_REDIRECTS = 20
DEFAULT_PORTS = {"http": 80, "https": 443}

T = TypeVar("T")

RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Transport errors worth another attempt: the network or the server, not the request."""


class Redactor:
    """Replaces secrets by ``***``: known secret strings anywhere in a text, and in URLs the
    values of query parameters named like secrets (or named in ``params``)."""

    def __init__(self, secrets: Iterable[str] = (), params: Iterable[str] = ()):
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._params = {p.lower() for p in params}

    def _is_secret_param(self, name: str) -> bool:
        return name.lower() in self._params or secret_named(name)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def url(self, url: httpx.URL | str) -> str:
        url = httpx.URL(url)
        if not url.query:
            return self.text(str(url))
        items = [(k, "***" if self._is_secret_param(k) else v) for k, v in url.params.multi_items()]
        query = urllib.parse.urlencode(items, safe="*/:,")
        return self.text(f"{url.copy_with(query=None)}?{query}")

    def snippet(self, head: bytes) -> str:
        """The start of a body (its first bytes), on one line, secrets removed."""
        body = self.text(head.decode("utf-8", "replace"))  # before cutting: no half secret shown
        return " ".join(body[: SNIPPET * 2].split())[:SNIPPET] or "(an empty body)"


def secret_named(name: str) -> bool:
    """Whether a name holds a word of SECRET_WORDS (``api_token``, ``X-Auth-Token``...)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def is_credential_header(name: str) -> bool:
    """Authorization, Proxy-Authorization, Cookie, and any name with a word of SECRET_WORDS."""
    return name.lower() in CREDENTIAL_HEADERS or secret_named(name)


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """Scheme, host and port (the default port of the scheme if none is written)."""
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 0)


class OriginGuard:
    """Credentials go to one origin only: the scheme, host and port of the extraction's URL.

    ``apply`` is called on every request before it is sent, the first one, each redirect and
    each next link. A request to that origin gets the credential ``headers`` and ``params``;
    a request to any other origin (another port of the same host, http instead of https, another
    host) gets no credential header of any kind (``headers``, and Authorization,
    Proxy-Authorization, Cookie, whatever set them), nor the query parameters ``params`` and
    ``secret_params`` (taken out of a URL the server gave).
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        secret_params: Iterable[str] = (),
    ):
        self.home = origin(httpx.URL(url))
        self.headers = dict(headers)
        self.params = dict(params)
        self.names = {*CREDENTIAL_HEADERS, *(name.lower() for name in headers)}
        self.query = {*params, *secret_params}

    def apply(self, request: httpx.Request) -> None:
        if origin(request.url) == self.home:
            request.headers.update(self.headers)
            if any(request.url.params.get(k) != v for k, v in self.params.items()):
                request.url = request.url.copy_merge_params(self.params)
            return
        for name in self.names:
            request.headers.pop(name, None)
        for name in self.query:
            if name in request.url.params:
                request.url = request.url.copy_remove_param(name)


class _RedactingFilter(logging.Filter):
    """Rewrites httpx's own log lines (``HTTP Request: GET URL ...``) without the secrets."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):  # httpx logs the URL as an argument: hide its params
            record.args = tuple(
                self.redactor.url(a) if isinstance(a, httpx.URL) else a for a in record.args
            )
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


class Budget:
    """The seconds one request may spend waiting for the server, in all: connecting, each
    redirect, the response's headers and every chunk of its body. The time the records already
    read spend in the pipeline (while the rest of a big body waits) does not count."""

    def __init__(self, seconds: float):
        self.left = seconds

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or TimeoutError when the budget runs out first."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(self.left, 0.0)):
                return await awaitable
        finally:
            self.left -= time.monotonic() - started


class Body:
    """The body of a response (2xx), read as it comes in: decoded chunks (gzip...), at most
    ``max_body_bytes`` of them, within the request's :class:`Budget`. ``head`` keeps the first
    bytes, for messages. Closing it (or reading it to the end) closes the response."""

    def __init__(self, fetcher: Fetcher, url: httpx.URL, response: httpx.Response, budget: Budget):
        self.fetcher = fetcher
        self.url = url
        self.response = response
        self.budget = budget
        self.size = 0
        self.head = b""
        self._stream = response.aiter_bytes()

    async def chunks(self) -> AsyncIterator[bytes]:
        limit = self.fetcher.max_body_bytes
        length = self.response.headers.get("Content-Length", "")
        try:
            if length.isdigit() and int(length) > limit:
                raise self._too_big(f"its Content-Length is {int(length)} bytes")
            while (chunk := await self.budget.wait(anext(self._stream, None))) is not None:
                self.size += len(chunk)
                if self.size > limit:
                    raise self._too_big(f"more than {limit} bytes came")
                if len(self.head) < HEAD_BYTES:
                    self.head += chunk[: HEAD_BYTES - len(self.head)]
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()
        await self.response.aclose()

    def error(self, problem: str) -> HttpExtractorError:
        """An error about this response: ``http METHOD URL: HTTP status: problem``."""
        status = self.response.status_code
        return self.fetcher.error(self.url, f"HTTP {status}: {problem}", status)

    def _too_big(self, detail: str) -> HttpExtractorError:
        limit = self.fetcher.max_body_bytes
        size = f" ({limit / 2**20:g} MiB)" if limit >= 2**20 else ""
        return self.error(
            f"the response is larger than max_body_bytes={limit}{size}: {detail}; "
            "raise max_body_bytes to read it"
        )


class Fetcher:
    """Sends the requests of one extraction and hands their bodies to a reader.

    A request that fails with a connection error, a timeout, HTTP 429 or a 5xx status is tried
    again, up to ``retries`` more times, after ``retry_delay * 2 ** (attempt - 1)`` seconds
    (at most ``retry_max_delay``), or after what ``Retry-After`` asks if that is longer. Any
    other 4xx fails at once. Every attempt waits for the rate limiter first. A failure while
    the reader reads the body is retried the same way, up to the moment the reader returns
    (it returns with the first records of the body, which are then passed on).

    Redirects are followed here, not by httpx (which reads each redirect's body whole): at most
    ``MAX_REDIRECTS``, each request going through ``guard`` first.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        method: str,
        body: Any,
        retries: int,
        retry_delay: float,
        retry_max_delay: float,
        timeout: float,
        max_body_bytes: int,
        guard: OriginGuard,
        limiter: RateLimiter,
        redactor: Redactor,
        logger: Any,
    ):
        self.client = client
        self.method = method
        self.body = body
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.guard = guard
        self.limiter = limiter
        self.redactor = redactor
        self.logger = logger
        self.attempts = 0
        """Requests sent so far, retries included."""

    async def fetch(self, url: httpx.URL, read: Callable[[Body], Awaitable[T]]) -> T:
        """What ``read`` makes of the body of the response to ``url`` (a 2xx status), or
        :class:`HttpExtractorError`."""
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.wait()
            self.attempts += 1
            retry_after = None
            status = None
            budget = Budget(self.timeout)
            try:
                response = await self._send(url, budget)
                status = response.status_code
                if status < 400:
                    body = Body(self, url, response, budget)
                    try:
                        return await read(body)
                    except BaseException:
                        await body.aclose()
                        raise
                reason = f"HTTP {status} {response.reason_phrase}".rstrip()
                snippet = self.redactor.snippet(await self._head(response, budget))
                if status != 429 and status < 500:
                    hint = (
                        "check the credentials (auth)"
                        if status in (401, 403)
                        else "client errors other than 429 are not retried"
                    )
                    if status in (401, 403) and origin(response.url) != self.guard.home:
                        hint += (
                            f"; redirected to {self.redactor.url(response.url)}, another "
                            "origin, which is sent no credentials"
                        )
                    raise self.error(
                        url, f"{reason} ({hint}); the response starts with: {snippet}", status
                    )
                problem = f"{reason}; the response starts with: {snippet}"
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except (TimeoutError, *RETRYABLE_ERRORS) as exc:
                problem = self.problem(exc)
            except httpx.HTTPError as exc:  # a request that cannot work (bad URL, scheme...)
                raise self.error(url, self.problem(exc)) from None
            if attempt > self.retries:
                raise self.error(
                    url,
                    f"{problem}; gave up after {attempt} attempt(s) (retries={self.retries})",
                    status,
                )
            delay = min(self.retry_max_delay, self.retry_delay * 2 ** (attempt - 1))
            if retry_after is not None:
                if retry_after > self.retry_max_delay:
                    raise self.error(
                        url,
                        f"{problem}; the server asks to retry after {retry_after:g} s, "
                        f"longer than retry_max_delay={self.retry_max_delay:g} s (raise "
                        "retry_max_delay, or lower rate_limit)",
                        status,
                    )
                delay = max(delay, retry_after)
            self.logger.warning(
                "http_retry",
                url=self.redactor.url(url),
                problem=problem,
                attempt=attempt,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _send(self, url: httpx.URL, budget: Budget) -> httpx.Response:
        """The response to ``url`` after its redirects, its body not read yet."""
        request = self.client.build_request(
            self.method, url, json=self.body if self.method == "POST" else None
        )
        for _ in range(MAX_REDIRECTS + 1):
            self.guard.apply(request)
            response = await budget.wait(self.client.send(request, stream=True))
            if response.next_request is None:
                return response
            await response.aclose()
            request = response.next_request
        raise self.error(url, f"more than {MAX_REDIRECTS} redirects")

    async def _head(self, response: httpx.Response, budget: Budget) -> bytes:
        """The first bytes of the body of an error response, which is then closed."""
        head = b""
        stream = response.aiter_bytes()
        try:
            while len(head) < HEAD_BYTES:
                chunk = await budget.wait(anext(stream, None))
                if chunk is None:
                    break
                head += chunk
        finally:
            await stream.aclose()
            await response.aclose()
        return head[:HEAD_BYTES]

    def problem(self, exc: BaseException) -> str:
        """What went wrong, for a message (secrets removed)."""
        if isinstance(exc, TimeoutError):
            return f"no complete response within timeout={self.timeout:g} s"
        return f"{type(exc).__name__}: {self.redactor.text(str(exc)) or 'failed'}"

    def error(self, url: httpx.URL, problem: str, status: int | None = None) -> HttpExtractorError:
        """``http METHOD URL: problem``, the URL as messages show it (secrets as ``***``).
        Made only when a message needs it: redacting parses the URL again."""
        shown = self.redactor.url(url)
        return HttpExtractorError(
            f"http {self.method} {shown}: {problem}", url=shown, status=status
        )

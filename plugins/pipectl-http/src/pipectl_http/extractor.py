"""The ``http`` extractor: records from a JSON HTTP API, page after page.

``batches(ctx)`` is an async generator: each page of records is one batch (or several, if it
holds more than ``batch_size`` records), in the order the API serves them. Page and offset
pagination fetch up to ``concurrency`` pages ahead and still yield them in order; cursor and
link pagination are sequential, since each request needs the previous response. A body is read
as it comes in: JSON Lines line by line, and a JSON body of more than ``STREAM_AFTER`` bytes item
by item along ``records_path``, so that a big page is held a batch at a time. The README
documents every option.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import math
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import httpx

from pipectl_http import options as opt
from pipectl_http.errors import HttpExtractorError
from pipectl_http.stream import JsonWalk, json_lines
from pipectl_http.transport import (
    RETRYABLE_ERRORS,
    Body,
    Fetcher,
    OriginGuard,
    RateLimiter,
    Redactor,
    is_credential_header,
    redacted_httpx_logs,
    secret_named,
)

PAGINATE = ("none", "page", "offset", "cursor", "link")
METHODS = ("GET", "POST")
FORMATS = {"json": "application/json", "jsonl": "application/x-ndjson, application/jsonl"}
"""The formats of a response, with the ``Accept`` header sent for each."""
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
STREAM_AFTER = 2**20
"""A JSON body up to this many bytes is decoded whole (``json.loads``, the fastest); a bigger one
is walked as it comes in, its records array item by item (the same values, a batch at a time)."""

#: The options of each pagination style, with their defaults (None: no default).
STYLE_OPTIONS: dict[str, dict[str, Any]] = {
    "page": {"page_param": "page", "start_page": 1, "page_size_param": None, "page_size": None},
    "offset": {"offset_param": "offset", "limit_param": "limit", "limit": 100},
    "cursor": {"cursor_path": None, "cursor_param": "cursor"},
}
NUMBERED = ("page", "offset")
"""The styles whose pages can be requested ahead (``total_path`` goes with them)."""

_MISSING: Any = object()


def lookup(data: Any, path: tuple[str, ...]) -> tuple[Any, str]:
    """The value at ``path`` (keys; a number indexes a list) in ``data``, and ``""``; or
    ``_MISSING`` and why there is nothing there."""
    value = data
    for depth, key in enumerate(path):
        where = repr(".".join(path[:depth])) if depth else "the response"
        if isinstance(value, dict):
            if key not in value:
                keys = ", ".join(sorted(map(str, value))[:20]) or "none"
                return _MISSING, f"{where} has no key {key!r} (its keys: {keys})"
            value = value[key]
        elif isinstance(value, list) and key.isdigit():
            if int(key) >= len(value):
                return _MISSING, f"{where} is a list of {len(value)}, it has no item {key}"
            value = value[int(key)]
        else:
            return _MISSING, f"{where} is {_json_kind(value)}, which has no key {key!r}"
    return value, ""


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]


@dataclass
class Page:
    """One response: the URL requested, its JSON (of a body walked as a stream: all but its
    records) and its records. ``records`` are those read when the page was fetched: all of them,
    unless the body is streamed and holds more than ``batch_size``; :meth:`lists` gives them,
    then the rest as the body comes in, and ``data`` and ``count`` are complete after it.
    ``url`` is the URL as shown in messages (secrets as ``***``), made only when one needs it."""

    target: httpx.URL
    fetcher: Fetcher
    response: httpx.Response
    data: Any = None
    records: list[Any] = field(default_factory=list)
    count: int = 0
    """The records of the page read so far."""
    more: AsyncGenerator[list[Any], None] | None = None

    @functools.cached_property
    def url(self) -> str:
        return self.fetcher.redactor.url(self.target)

    async def lists(self) -> AsyncIterator[list[Any]]:
        """The page's records, in lists. A failure in the middle of the body is not retried:
        records of the response were passed on already."""
        try:
            self.count = len(self.records)
            yield self.records
            if self.more is not None:
                async for records in self.more:
                    self.count += len(records)
                    yield records
        except (TimeoutError, *RETRYABLE_ERRORS) as exc:
            raise self.fetcher.error(
                self.target,
                f"{self.fetcher.problem(exc)}, after {self.count} record(s) of the "
                "response were passed on (a response that fails midway is not retried; the "
                "step's own retries start the extraction again)",
            ) from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.more is not None:
            await self.more.aclose()


class HttpExtractor:
    """Records from a JSON HTTP API (the ``http`` extractor). See the README for the options.

    Options are checked here; the secret of ``auth`` is read from its environment variable when
    ``batches`` starts, and is never kept on the object.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        records_path: str = "",
        paginate: str = "none",
        page_param: str | None = None,
        start_page: int | None = None,
        page_size_param: str | None = None,
        page_size: int | None = None,
        offset_param: str | None = None,
        limit_param: str | None = None,
        limit: int | None = None,
        cursor_path: str | None = None,
        cursor_param: str | None = None,
        total_path: str | None = None,
        max_pages: int | None = None,
        auth: Mapping[str, Any] | None = None,
        rate_limit: float | None = None,
        concurrency: int = 1,
        retries: int = 3,
        retry_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        timeout: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        format: str = "json",
        incremental: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        self.url = _base_url(url)
        self.method = opt.text("method", method).upper()
        if self.method not in METHODS:
            raise ValueError(
                f"{opt.WHAT}: method must be one of {', '.join(METHODS)}, got {method!r}"
            )
        self.params = opt.query_params(params) if params is not None else {}
        self.headers = opt.headers(headers) if headers is not None else {}
        if body is not None and self.method != "POST":
            raise ValueError(
                f"{opt.WHAT}: body is sent with method POST only (method is {self.method})"
            )
        try:
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{opt.WHAT}: body must be JSON data: {exc}") from None
        self.body = body
        self.records_path = opt.dotted("records_path", records_path, empty_ok=True)
        if paginate not in PAGINATE:
            raise ValueError(
                f"{opt.WHAT}: paginate must be one of {', '.join(PAGINATE)}, got {paginate!r}"
            )
        self.paginate = paginate
        self._set_pagination(
            total_path=total_path,
            page_param=page_param,
            start_page=start_page,
            page_size_param=page_size_param,
            page_size=page_size,
            offset_param=offset_param,
            limit_param=limit_param,
            limit=limit,
            cursor_path=cursor_path,
            cursor_param=cursor_param,
        )
        self.max_pages = (
            None if max_pages is None else opt.integer("max_pages", max_pages, minimum=1)
        )
        self.auth = None if auth is None else opt.Auth.parse(auth)
        self.rate_limit = (
            None if rate_limit is None else opt.number("rate_limit", rate_limit, positive=True)
        )
        self.concurrency = opt.integer("concurrency", concurrency, minimum=1)
        self.retries = opt.integer("retries", retries, minimum=0)
        self.retry_delay = opt.number("retry_delay", retry_delay, positive=False)
        self.retry_max_delay = opt.number("retry_max_delay", retry_max_delay, positive=False)
        self.timeout = opt.number("timeout", timeout, positive=True)
        self.max_body_bytes = opt.integer("max_body_bytes", max_body_bytes, minimum=1)
        if format not in FORMATS:
            raise ValueError(
                f"{opt.WHAT}: format must be one of {', '.join(FORMATS)}, got {format!r}"
            )
        self.format = format
        if format == "jsonl":
            paths = {
                "records_path": self.records_path,
                "cursor_path": self.cursor_path,
                "total_path": self.total_path,
            }
            wrong = [name for name, path in paths.items() if path]
            if wrong:
                raise ValueError(
                    f"{opt.WHAT}: {', '.join(wrong)}: only for format: json (a "
                    "JSON Lines response is its records, one a line)"
                )
        self.incremental = None if incremental is None else opt.Incremental.parse(incremental)
        self.batch_size = opt.integer("batch_size", batch_size, minimum=1)
        self._cursor = self.incremental.initial if self.incremental else None
        self._secret_params = [self.auth.param] if self.auth and self.auth.param else []

    def _set_pagination(self, *, total_path: str | None, **given: Any) -> None:
        """Check the options of the pagination styles (``given``: None where not given): only
        those of ``self.paginate`` may be given; the others keep their defaults."""
        paginate = self.paginate
        for style, names in STYLE_OPTIONS.items():
            wrong = [n for n in names if given[n] is not None and style != paginate]
            if wrong:
                raise ValueError(
                    f"{opt.WHAT}: {', '.join(wrong)}: only for paginate: {style} "
                    f"(paginate is {paginate})"
                )
        settings = {
            n: d if given[n] is None else given[n]
            for n, d in STYLE_OPTIONS.get(paginate, {}).items()
        }
        self.page_param: str | None = None
        self.start_page: int | None = None
        self.page_size_param: str | None = None
        self.page_size: int | None = None
        self.offset_param: str | None = None
        self.limit_param: str | None = None
        self.limit: int | None = None
        self.cursor_path: tuple[str, ...] = ()
        self.cursor_param: str | None = None
        if paginate == "page":
            self.page_param = opt.text("page_param", settings["page_param"])
            self.start_page = opt.integer("start_page", settings["start_page"], minimum=0)
            if settings["page_size"] is not None:
                self.page_size = opt.integer("page_size", settings["page_size"], minimum=1)
            if settings["page_size_param"] is not None:
                self.page_size_param = opt.text("page_size_param", settings["page_size_param"])
                if self.page_size is None:
                    raise ValueError(
                        f"{opt.WHAT}: page_size_param needs page_size (the value to send)"
                    )
        elif paginate == "offset":
            self.offset_param = opt.text("offset_param", settings["offset_param"])
            self.limit_param = opt.text("limit_param", settings["limit_param"])
            self.limit = opt.integer("limit", settings["limit"], minimum=1)
        elif paginate == "cursor":
            if settings["cursor_path"] is None:
                raise ValueError(
                    f"{opt.WHAT}: paginate: cursor needs cursor_path (where the "
                    "next cursor is in the response, e.g. 'meta.next_cursor')"
                )
            self.cursor_path = opt.dotted("cursor_path", settings["cursor_path"])
            self.cursor_param = opt.text("cursor_param", settings["cursor_param"])
        self.total_path: tuple[str, ...] = ()
        if total_path is not None:
            if paginate not in NUMBERED:
                raise ValueError(
                    f"{opt.WHAT}: total_path goes with paginate: page or offset, not {paginate}"
                )
            if paginate == "page" and self.page_size is None:
                raise ValueError(f"{opt.WHAT}: total_path needs page_size (to count the pages)")
            self.total_path = opt.dotted("total_path", total_path)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HttpExtractor:
        """An extractor from a data step's options: unknown names are refused with a
        suggestion, before the values are checked."""
        known = [n for n in inspect.signature(cls).parameters]
        opt.unknown_names(opt.WHAT, options, known)
        if "url" not in options:
            raise ValueError(f"{opt.WHAT}: the option 'url' is required")
        return cls(**options)

    # -- the extractor contract -----------------------------------------------------------

    def describe(self) -> str:
        return f"http {self.method} {Redactor(params=self._secret_params).url(self.url)}"

    def __repr__(self) -> str:
        auth = f" auth={self.auth.describe()!r}" if self.auth else ""
        return f"<HttpExtractor {self.describe()!r} paginate={self.paginate!r}{auth}>"

    @property
    def state(self) -> dict[str, Any] | None:
        """``{"cursor": value}`` with ``incremental`` once there is a cursor, else None. A run
        moves it to the largest ``field`` among its records only after its last batch."""
        if self.incremental is None or self._cursor is None:
            return None
        return {"cursor": self._cursor}

    def set_state(self, state: Mapping[str, Any] | None) -> None:
        """Start from ``state`` (a previous run's :attr:`state`). Without ``incremental`` there
        is no cursor to set and the state is ignored."""
        if self.incremental is None or state is None:
            return
        if not isinstance(state, Mapping) or "cursor" not in state:
            raise ValueError(
                f"{opt.WHAT}: state must be a mapping {{'cursor': ...}}, got {state!r}"
            )
        self._cursor = state["cursor"]

    async def batches(self, ctx: Any) -> AsyncIterator[list[dict[str, Any]]]:
        """The records, a page (or ``batch_size`` records) at a time, in the API's order."""
        credentials = self.auth.credentials() if self.auth else opt.Credentials()
        redactor = Redactor(credentials.secrets, self._secret_params)
        logger = getattr(ctx, "logger", None)
        if logger is None:
            from pipectl.log import get_logger

            logger = get_logger()
        params = {**self.params, **credentials.params}
        if self.incremental is not None and self._cursor is not None:
            params[self.incremental.param] = self._cursor
        newest = self._cursor
        records_read = pages_read = 0
        # credentials (auth, and headers and params named like them) go only to the origin of url
        secret = {k: v for k, v in self.headers.items() if is_credential_header(k)}
        plain = {k: v for k, v in self.headers.items() if k not in secret}
        guard = OriginGuard(
            self.url,
            {**secret, **credentials.headers},
            credentials.params,
            [name for name in self.params if secret_named(name)],
        )

        with redacted_httpx_logs(redactor):
            async with httpx.AsyncClient(
                headers={"Accept": FORMATS[self.format], **plain},
                timeout=None,
                follow_redirects=False,
            ) as client:
                fetcher = Fetcher(
                    client,
                    method=self.method,
                    body=self.body,
                    retries=self.retries,
                    retry_delay=self.retry_delay,
                    retry_max_delay=self.retry_max_delay,
                    timeout=self.timeout,
                    max_body_bytes=self.max_body_bytes,
                    guard=guard,
                    limiter=RateLimiter(self.rate_limit),
                    redactor=redactor,
                    logger=logger,
                )
                async for page in self._pages(fetcher, params, credentials.params, logger):
                    pages_read += 1
                    async with contextlib.aclosing(page.lists()) as lists:
                        async for items in lists:
                            records = self._checked(page, items, ctx)
                            if self.incremental is not None:
                                newest = self._newest(records, newest, page)
                            records_read += len(records)
                            for start in range(0, len(records), self.batch_size):
                                yield records[start : start + self.batch_size]
        logger.info(
            "http_extracted",
            source=self.describe(),
            pages=pages_read,
            records=records_read,
            requests=fetcher.attempts,
        )
        self._cursor = newest

    # -- pages --------------------------------------------------------------------------------

    def _pages(
        self, fetcher: Fetcher, params: dict[str, Any], auth_params: dict[str, Any], logger: Any
    ) -> AsyncIterator[Page]:
        if self.paginate in NUMBERED:
            return self._numbered_pages(fetcher, params, logger)
        if self.paginate == "cursor":
            return self._cursor_pages(fetcher, params, logger)
        if self.paginate == "link":
            return self._link_pages(fetcher, params, auth_params, logger)
        return self._single_page(fetcher, params)

    async def _fetch(self, fetcher: Fetcher, url: httpx.URL) -> Page:
        return await fetcher.fetch(url, self._read)

    async def _read(self, body: Body) -> Page:
        """The page of ``body``, read up to its first records (a failure until then is retried
        by the fetcher); the rest is read by ``Page.lists``."""
        page = Page(body.url, body.fetcher, body.response)
        page.more = self._lists(page, body)
        page.records = await anext(page.more, [])
        return page

    async def _lists(self, page: Page, body: Body) -> AsyncGenerator[list[Any], None]:
        """The records of ``body`` in lists (none empty), and ``page.data`` at the end."""
        chunks = body.chunks()
        try:
            if self.format == "jsonl":
                async for records in json_lines(chunks, self.batch_size):
                    yield records
                return
            held = []
            async for chunk in chunks:
                held.append(chunk)
                if body.size > STREAM_AFTER:
                    break
            else:
                page.data = json.loads(b"".join(held))
                if records := self._records_in(page):
                    yield records
                return
            walk = JsonWalk(_chained(b"".join(held), chunks), self.records_path, self.batch_size)
            del held
            async for records in walk.records():
                yield records
            page.data = walk.skeleton
            if not walk.streamed and (records := self._records_in(page)):
                yield records  # a list reached through a list index: decoded whole
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            kind = body.response.headers.get("Content-Type", "no Content-Type")
            what = "JSON Lines" if self.format == "jsonl" else "JSON"
            redactor = body.fetcher.redactor
            raise body.error(
                f"the response is not valid {what} ({redactor.text(str(exc))}; "
                f"{kind}); it starts with: {redactor.snippet(body.head)}"
            ) from None
        finally:
            await chunks.aclose()

    def _records_in(self, page: Page) -> list[Any]:
        """The list at ``records_path`` in ``page.data``, or an error saying what is there."""
        data = page.data
        if not self.records_path:
            records, why = data, ""
        else:
            records, why = lookup(data, self.records_path)
        if not isinstance(records, list):
            path = ".".join(self.records_path)
            setting = f"records_path {path!r}" if path else "records_path '' (the whole response)"
            detail = why or f"it is {_json_kind(records)}"
            if not path and isinstance(data, dict):
                keys = ", ".join(sorted(map(str, data))[:20])
                detail += f"; set records_path to the list's key (keys: {keys})"
            raise HttpExtractorError(
                f"http {self.method} {page.url}: HTTP {page.response.status_code}: {setting} "
                f"does not lead to a list of records: {detail}",
                url=page.url,
                status=page.response.status_code,
            )
        return records

    async def _single_page(self, fetcher: Fetcher, params: dict[str, Any]) -> AsyncIterator[Page]:
        yield await self._fetch(fetcher, _with_params(self.url, params))

    def _numbered_url(self, index: int, params: dict[str, Any]) -> httpx.URL:
        if self.paginate == "page":
            extra: dict[str, Any] = {self.page_param: self.start_page + index}  # type: ignore[operator,dict-item]
            if self.page_size_param:
                extra[self.page_size_param] = self.page_size
        else:
            extra = {
                self.offset_param: index * self.limit,  # type: ignore[operator,dict-item]
                self.limit_param: self.limit,
            }
        return _with_params(self.url, {**params, **extra})

    async def _numbered_pages(
        self, fetcher: Fetcher, params: dict[str, Any], logger: Any
    ) -> AsyncIterator[Page]:
        """Page or offset pagination, up to ``concurrency`` requests ahead, yielded in order.

        The last page is an empty one, one with fewer records than the page size, or the last
        by ``total_path``. Pages requested beyond it are cancelled and their outcome ignored.
        With ``total_path`` the first page is fetched alone, to read the total, so that no page
        beyond the end is ever requested.
        """
        size = self.page_size if self.paginate == "page" else self.limit
        cap = self.max_pages or math.inf
        last = math.inf  # pages there are, once the total is known
        width = 1 if self.total_path else self.concurrency
        window: deque[asyncio.Task[Page]] = deque()
        scheduled = 0
        try:
            for index in count():
                while scheduled < min(last, cap) and len(window) < width:
                    url = self._numbered_url(scheduled, params)
                    window.append(asyncio.create_task(self._fetch(fetcher, url)))
                    scheduled += 1
                page = await window.popleft()
                if page.records:
                    yield page  # read to its end: page.count and page.data are complete
                if index == 0 and self.total_path:
                    last = max(1, math.ceil(self._total(page) / size))  # type: ignore[operator]
                    width = self.concurrency
                if (
                    not page.records
                    or (size is not None and page.count < size)
                    or index + 1 >= last
                ):
                    return
                if index + 1 >= cap:
                    _capped(logger, page, self.max_pages)
                    return
        finally:
            for task in window:
                task.cancel()
            for outcome in await asyncio.gather(*window, return_exceptions=True):
                if isinstance(outcome, Page):  # fetched ahead, a body may still be open
                    await outcome.aclose()

    def _total(self, page: Page) -> int:
        total, why = lookup(page.data, self.total_path)
        path = ".".join(self.total_path)
        if total is _MISSING or isinstance(total, bool) or not isinstance(total, int) or total < 0:
            detail = why or f"it is {_json_kind(total)}, not a count"
            raise HttpExtractorError(
                f"http {self.method} {page.url}: total_path {path!r} "
                f"does not lead to the number of records: {detail}",
                url=page.url,
                status=page.response.status_code,
            )
        return total

    async def _cursor_pages(
        self, fetcher: Fetcher, params: dict[str, Any], logger: Any
    ) -> AsyncIterator[Page]:
        """Cursor pagination: the next cursor is read at ``cursor_path`` and sent as
        ``cursor_param``; no cursor (missing, null or empty) means the last page."""
        cursor: Any = None
        seen: set[Any] = set()
        path = ".".join(self.cursor_path)
        for number in count(1):
            query = params if cursor is None else {**params, self.cursor_param: cursor}
            page = await self._fetch(fetcher, _with_params(self.url, query))
            if page.records:
                yield page
            cursor, _ = lookup(page.data, self.cursor_path)
            if cursor is _MISSING or cursor is None or cursor == "":
                return
            if isinstance(cursor, bool) or not isinstance(cursor, (str, int, float)):
                raise HttpExtractorError(
                    f"http {self.method} {page.url}: cursor_path {path!r} "
                    f"is {_json_kind(cursor)}, not a cursor (a string or "
                    "number)",
                    url=page.url,
                )
            if cursor in seen:
                raise HttpExtractorError(
                    f"http {self.method} {page.url}: cursor_path {path!r} "
                    f"gave the cursor {cursor!r} a second time; stopping "
                    "rather than reading the same pages again",
                    url=page.url,
                )
            seen.add(cursor)
            if number >= (self.max_pages or math.inf):
                _capped(logger, page, self.max_pages)
                return

    async def _link_pages(
        self, fetcher: Fetcher, params: dict[str, Any], auth_params: dict[str, Any], logger: Any
    ) -> AsyncIterator[Page]:
        """Link pagination (RFC 8288): the next page is the ``Link`` header's ``rel="next"``
        URL, requested as it is (with the auth query param, if any, added)."""
        url = _with_params(self.url, params)
        seen = {str(url)}
        for number in count(1):
            page = await self._fetch(fetcher, url)
            if page.records:
                yield page
            target = page.response.links.get("next", {}).get("url")
            if not target:
                return
            url = _with_params(page.response.url.join(target), auth_params)
            if str(url) in seen:
                raise HttpExtractorError(
                    f"http {self.method} {page.url}: the Link header's "
                    "next page is a page already read; stopping rather "
                    "than looping",
                    url=page.url,
                )
            seen.add(str(url))
            if number >= (self.max_pages or math.inf):
                _capped(logger, page, self.max_pages)
                return

    # -- records ------------------------------------------------------------------------------

    @staticmethod
    def _checked(page: Page, records: list[Any], ctx: Any) -> list[dict[str, Any]]:
        """``records``, the last ones read of ``page``; an item that is not a JSON object is a
        bad record."""
        if all(type(r) is dict for r in records):
            return records
        good = []
        for n, item in enumerate(records, page.count - len(records) + 1):
            if isinstance(item, dict):
                good.append(item)
            else:
                ctx.bad_record(
                    item,
                    f"expected a JSON object, got {_json_kind(item)}",
                    f"{page.url} record {n}",
                )
        return good

    def _newest(self, records: list[dict[str, Any]], newest: Any, page: Page) -> Any:
        """The largest ``incremental.field`` among ``records`` and ``newest`` (records without
        the field, or with null, are left out)."""
        assert self.incremental is not None
        field = self.incremental.field
        for record in records:
            value, _ = lookup(record, field)
            if value is _MISSING or value is None:
                continue
            try:
                if newest is None or value > newest:
                    newest = value
            except TypeError:
                raise HttpExtractorError(
                    f"http {self.method} {page.url}: incremental field "
                    f"{self.incremental.field_name!r}: cannot compare {value!r} with the cursor "
                    f"{newest!r}; the field and the cursor must both be strings or numbers",
                    url=page.url,
                ) from None
        return newest


def _base_url(url: Any) -> str:
    url = opt.text("url", url)
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:  # checked first: never shown
        raise ValueError(
            f"{opt.WHAT}: url must not hold credentials (user:password@); use "
            "auth: {type: basic, username: ..., password_env: ...}"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{opt.WHAT}: url must be an http:// or https:// URL, got {url!r}")
    return url


def _with_params(url: httpx.URL | str, params: Mapping[str, Any]) -> httpx.URL:
    """``url`` with ``params`` added to its own query (httpx would replace the query)."""
    url = httpx.URL(url)
    return url.copy_merge_params(dict(params)) if params else url


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _capped(logger: Any, page: Page, max_pages: int | None) -> None:
    logger.warning(
        "http_max_pages_reached",
        url=page.url,
        max_pages=max_pages,
        hint="the API has more pages than max_pages; the records after them were not read",
    )

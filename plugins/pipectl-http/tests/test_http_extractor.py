"""The ``http`` extractor against a real HTTP server (see conftest.py): pagination, retries,
rate limits, concurrency, auth and secrets, errors, incremental state and option checks."""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import math
import socket
import time
from typing import Any

import pytest
from pipectl import Pipeline, RunStatus
from pipectl.data import BadRecordError, DataContext
from pipectl.log import configure_logging, reset_logging

from pipectl_http import plugin
from pipectl_http.errors import HttpExtractorError
from pipectl_http.extractor import HttpExtractor

from pipectl_http_testapi import N_RECORDS, make_record

ALL_IDS = list(range(N_RECORDS))
FAST = {"retry_delay": 0.01, "retry_max_delay": 1.0}
SECRET = "s3cr3t-Value-7f2a9"


def http(**options: Any) -> HttpExtractor:
    """An extractor made as a data step makes it: through the plugin's factory."""
    return plugin.make_http_extractor(**options)


def collect(extractor: HttpExtractor, mode: str = "fail") -> tuple[list[list[dict]], DataContext]:
    """Every batch of one run, with the real data context the runner would give."""
    ctx = DataContext("test", {}, mode, None, None)

    async def run() -> list[list[dict]]:
        return [batch async for batch in extractor.batches(ctx)]

    return asyncio.run(run()), ctx


def ids(batches: list[list[dict]]) -> list[int]:
    return [record["id"] for batch in batches for record in batch]


def fails(extractor: HttpExtractor) -> HttpExtractorError:
    with pytest.raises(HttpExtractorError) as info:
        collect(extractor)
    return info.value


# -- pagination -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "options", "requests"),
    [
        ("/list", {}, 1),
        ("/wrapped", {"records_path": "data.items"}, 1),
        (
            "/pages",
            {
                "paginate": "page",
                "records_path": "data",
                "page_size_param": "per_page",
                "page_size": 10,
            },
            24,
        ),
        ("/pages", {"paginate": "page", "records_path": "data"}, 25),  # stops at the empty page
        (
            "/pages",
            {
                "paginate": "page",
                "records_path": "data",
                "page_size_param": "per_page",
                "page_size": 10,
                "total_path": "total",
            },
            24,
        ),
        ("/offsets", {"paginate": "offset", "records_path": "results", "limit": 25}, 10),
        (
            "/offsets",
            {"paginate": "offset", "records_path": "results", "limit": 25, "total_path": "count"},
            10,
        ),
        (
            "/cursor",
            {"paginate": "cursor", "records_path": "items", "cursor_path": "meta.next"},
            24,
        ),
        ("/links", {"paginate": "link"}, 24),
    ],
    ids=[
        "none",
        "records_path",
        "page",
        "page-until-empty",
        "page-total",
        "offset",
        "offset-total",
        "cursor",
        "link",
    ],
)
def test_each_pagination_style_reads_every_record_once_in_order(api, path, options, requests):
    batches, _ = collect(http(url=api.url(path), **options))

    assert ids(batches) == ALL_IDS
    assert len(api.requests) == requests


def test_page_param_names_and_start_page_are_sent(api):
    collect(
        http(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_param="page",
            start_page=1,
            page_size_param="per_page",
            page_size=100,
        )
    )

    assert [(r.query["page"], r.query["per_page"]) for r in api.requests] == [
        ("1", "100"),
        ("2", "100"),
        ("3", "100"),
    ]


def test_query_string_of_the_url_and_params_are_both_kept(api):
    collect(http(url=api.url("/list?fixed=1"), params={"extra": "two", "tag": ["a", "b"]}))

    assert api.requests[0].query == {"fixed": "1", "extra": "two", "tag": "b"}  # last of a list


def test_big_pages_are_split_into_batches_of_batch_size(api):
    batches, _ = collect(http(url=api.url("/list"), batch_size=50))

    assert [len(b) for b in batches] == [50, 50, 50, 50, 37]
    assert ids(batches) == ALL_IDS


def test_post_sends_the_json_body(api):
    batches, _ = collect(
        http(url=api.url("/search"), method="post", body={"min_id": 200}, records_path="hits")
    )

    assert ids(batches) == list(range(200, N_RECORDS))
    assert api.requests[0].body == {"min_id": 200}


def test_max_pages_stops_early_with_a_warning(api):
    out = io.StringIO()
    configure_logging("info", stream=out)
    try:
        batches, _ = collect(
            http(
                url=api.url("/cursor"),
                paginate="cursor",
                records_path="items",
                cursor_path="meta.next",
                max_pages=3,
            )
        )
    finally:
        reset_logging()

    assert ids(batches) == list(range(30))
    assert len(api.requests) == 3
    assert "http_max_pages_reached" in out.getvalue()


def test_a_cursor_given_twice_is_an_error_not_a_loop(api):
    api.script = {
        n: (200, {}, {"items": [make_record(n)], "meta": {"next": "same"}}) for n in (1, 2, 3)
    }

    error = fails(
        http(
            url=api.url("/cursor"), paginate="cursor", records_path="items", cursor_path="meta.next"
        )
    )

    assert "gave the cursor 'same' a second time" in str(error)
    assert len(api.requests) == 2


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
def test_prefetch_keeps_at_most_concurrency_requests_in_flight_and_the_order(api):
    api.delay = 0.05

    batches, _ = collect(
        http(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_size_param="per_page",
            page_size=10,
            concurrency=3,
        )
    )

    assert ids(batches) == ALL_IDS  # in order, each once
    assert api.max_in_flight == 3
    assert 24 <= len(api.requests) <= 24 + 3  # at most concurrency pages past the end


def test_with_total_path_no_page_beyond_the_end_is_requested(api):
    api.delay = 0.02

    batches, _ = collect(
        http(
            url=api.url("/offsets"),
            paginate="offset",
            records_path="results",
            limit=10,
            total_path="count",
            concurrency=4,
        )
    )

    assert ids(batches) == ALL_IDS
    assert sorted(int(r.query["offset"]) for r in api.requests) == list(range(0, 240, 10))
    assert 1 < api.max_in_flight <= 4


def test_concurrency_one_is_sequential(api):
    api.delay = 0.01

    collect(
        http(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_size_param="per_page",
            page_size=50,
        )
    )

    assert api.max_in_flight == 1


# -- retries, Retry-After, timeouts, rate limits ----------------------------------------------


def test_503_every_fourth_request_is_retried_and_each_record_read_once(api):
    api.fail_every = 4

    batches, _ = collect(
        http(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_size_param="per_page",
            page_size=10,
            **FAST,
        )
    )

    assert ids(batches) == ALL_IDS
    assert api.failed == len(api.requests) // 4 > 0
    assert len(api.requests) == 24 + api.failed


def test_retries_are_counted_then_the_error_names_url_and_status(api):
    error = fails(http(url=api.url("/status/503"), params={"q": "x"}, retries=2, **FAST))

    assert len(api.requests) == 3
    message = str(error)
    assert api.url("/status/503?q=x") in message
    assert "HTTP 503" in message and "3 attempt(s)" in message and "on purpose" in message
    assert error.status == 503


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_client_errors_are_never_retried(api, status):
    error = fails(http(url=api.url(f"/status/{status}"), retries=5, **FAST))

    assert len(api.requests) == 1
    assert f"http GET {api.url(f'/status/{status}')}: HTTP {status}" in str(error)
    assert f"status {status} on purpose" in str(error)  # a snippet of the body


@pytest.mark.slow
def test_retry_after_in_seconds_is_honoured(api):
    api.script = {1: (429, {"Retry-After": "0.3"}, {"error": "slow down"})}

    batches, _ = collect(http(url=api.url("/list"), retry_delay=0.01))

    assert ids(batches) == ALL_IDS
    first, second = api.requests
    assert second.monotonic - first.monotonic >= 0.3 - 0.01


@pytest.mark.slow
def test_retry_after_as_an_http_date_is_honoured(api):
    at = math.ceil(time.time()) + 1.0
    api.script = {1: (503, {"Retry-After": email.utils.formatdate(at, usegmt=True)}, {})}

    batches, _ = collect(http(url=api.url("/list"), retry_delay=0.01, retry_max_delay=5))

    assert ids(batches) == ALL_IDS
    assert api.requests[1].wall >= at - 0.01


def test_retry_after_longer_than_retry_max_delay_fails_at_once(api):
    api.script = {1: (429, {"Retry-After": "120"}, {"error": "slow down"})}

    error = fails(http(url=api.url("/list"), retry_max_delay=2))

    assert len(api.requests) == 1
    assert "retry after 120 s, longer than retry_max_delay=2 s" in str(error)


def test_a_slow_response_times_out_and_is_retried(api):
    api.delay = 0.5

    started = time.monotonic()
    error = fails(http(url=api.url("/list"), timeout=0.1, retries=1, **FAST))

    assert time.monotonic() - started < 0.45
    assert len(api.requests) == 2
    assert "no complete response within timeout=0.1 s" in str(error)
    assert api.url("/list") in str(error)


def test_connection_errors_are_retried():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    error = fails(http(url=f"http://127.0.0.1:{port}/list", retries=2, **FAST))

    assert "ConnectError" in str(error) and "3 attempt(s)" in str(error)
    assert f"http://127.0.0.1:{port}/list" in str(error)


@pytest.mark.slow
def test_rate_limit_keeps_under_the_servers_limit(api):
    api.rate_limit = 20  # 429 when requests come less than 50 ms apart

    started = time.monotonic()
    batches, _ = collect(
        http(
            url=api.url("/offsets"),
            paginate="offset",
            records_path="results",
            limit=40,
            rate_limit=10,
            concurrency=3,
        )
    )

    assert ids(batches) == ALL_IDS
    assert api.throttled == 0
    assert len(api.requests) >= 6
    assert time.monotonic() - started >= (len(api.requests) - 1) / 10 - 0.01


@pytest.mark.slow
def test_without_a_rate_limit_429_is_retried_after_retry_after(api):
    api.rate_limit = 20
    api.retry_after = "0.06"

    batches, _ = collect(
        http(
            url=api.url("/offsets"),
            paginate="offset",
            records_path="results",
            limit=25,
            retries=10,
            **FAST,
        )
    )

    assert ids(batches) == ALL_IDS
    assert api.throttled > 0
    assert len(api.requests) == 10 + api.throttled


# -- responses that cannot be used -------------------------------------------------------------


def test_malformed_json_is_a_clear_error(api):
    error = fails(http(url=api.url("/malformed"), records_path="data"))

    message = str(error)
    assert message.startswith(
        f"http GET {api.url('/malformed')}: HTTP 200: the response is not valid JSON ("
    )
    assert "application/json" in message and '{"data": [{"id": 1}' in message


def test_records_path_to_a_missing_key_names_the_path_and_url(api):
    error = fails(http(url=api.url("/wrapped"), records_path="data.itemz"))

    assert str(error) == (
        f"http GET {api.url('/wrapped')}: HTTP 200: records_path 'data.itemz' "
        "does not lead to a list of records: 'data' has no key 'itemz' "
        "(its keys: items)"
    )


def test_records_path_to_an_object_is_an_error(api):
    error = fails(http(url=api.url("/wrapped"), records_path="meta"))

    assert "records_path 'meta' does not lead to a list of records: it is an object" in str(error)


def test_an_object_response_without_records_path_suggests_its_keys(api):
    error = fails(http(url=api.url("/wrapped")))

    assert "records_path '' (the whole response)" in str(error)
    assert "set records_path to the list's key (keys: data, meta)" in str(error)


def test_items_that_are_not_objects_are_bad_records(api):
    with pytest.raises(BadRecordError, match=r"/mixed record 2: expected a JSON object, got int"):
        collect(http(url=api.url("/mixed")))

    batches, ctx = collect(http(url=api.url("/mixed")), mode="skip")
    assert ids(batches) == [1, 2] and ctx.bad == 1


# -- auth and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"type": "bearer", "token_env": "HTTP_TEST_SECRET"}, "Authorization", f"Bearer {SECRET}"),
        (
            {"type": "basic", "username": "ann", "password_env": "HTTP_TEST_SECRET"},
            "Authorization",
            "Basic " + __import__("base64").b64encode(f"ann:{SECRET}".encode()).decode(),
        ),
        (
            {"type": "api_key", "header": "X-API-Key", "key_env": "HTTP_TEST_SECRET"},
            "X-API-Key",
            SECRET,
        ),
    ],
    ids=["bearer", "basic", "api_key-header"],
)
def test_auth_headers_are_sent(api, monkeypatch, auth, header, value):
    monkeypatch.setenv("HTTP_TEST_SECRET", SECRET)
    api.require_headers = {header: value}

    batches, _ = collect(http(url=api.url("/list"), auth=auth))

    assert ids(batches) == ALL_IDS


def test_api_key_as_a_query_param_is_hidden_in_errors(api, monkeypatch):
    monkeypatch.setenv("HTTP_TEST_SECRET", SECRET)
    api.require_query = {"appid": SECRET}
    auth = {"type": "api_key", "param": "appid", "key_env": "HTTP_TEST_SECRET"}

    batches, _ = collect(http(url=api.url("/links"), paginate="link", auth=auth))
    assert ids(batches) == ALL_IDS  # the key is added to every next link too

    error = fails(http(url=api.url("/status/404"), auth=auth))
    assert f"{api.url('/status/404')}?appid=***" in str(error)
    assert SECRET not in str(error)


def test_a_missing_environment_variable_is_named_and_nothing_is_sent(api, monkeypatch):
    monkeypatch.delenv("HTTP_TEST_MISSING", raising=False)

    error = fails(
        http(url=api.url("/list"), auth={"type": "bearer", "token_env": "HTTP_TEST_MISSING"})
    )

    assert str(error) == (
        "http extractor: the environment variable 'HTTP_TEST_MISSING' "
        "(auth.token_env, bearer auth) is not set or is empty"
    )
    assert api.requests == []


def test_a_rejected_secret_is_not_repeated_in_the_error(api, monkeypatch):
    monkeypatch.setenv("HTTP_TEST_SECRET", SECRET)
    api.require_headers = {"Authorization": "Bearer the-right-one"}

    error = fails(
        http(url=api.url("/list"), auth={"type": "bearer", "token_env": "HTTP_TEST_SECRET"})
    )

    message = str(error)
    assert f"http GET {api.url('/list')}: HTTP 401 Unauthorized (check the credentials" in message
    assert "bad credentials: Authorization was 'Bearer ***'" in message  # the body echoed it
    assert SECRET not in message and SECRET not in repr(error)


@pytest.mark.slow
def test_the_secret_is_in_no_log_line_error_traceback_or_repr(
    api, monkeypatch, caplog, plugin_manager, register_plugin
):
    monkeypatch.setenv("HTTP_TEST_SECRET", SECRET)
    register_plugin(plugin, "http")
    api.require_query = {"appid": SECRET}
    api.fail_every = 3  # retries: warnings with URLs
    auth = {"type": "api_key", "param": "appid", "key_env": "HTTP_TEST_SECRET"}
    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    configure_logging("debug", stream=out)
    try:
        good = Pipeline("secret-ok", plugin_manager=plugin_manager)
        good.data_step(
            "load",
            extractor={
                "type": "http",
                "url": api.url("/pages"),
                "auth": auth,
                "paginate": "page",
                "records_path": "data",
                "page_size": 10,
                **FAST,
            },
            outputs=[Sink()],
        )
        bad = Pipeline("secret-bad", plugin_manager=plugin_manager)
        bad.data_step(
            "load",
            extractor={"type": "http", "url": api.url("/status/401"), "auth": auth},
            outputs=[Sink()],
        )
        good_run, bad_run = good.run_sync(), bad.run_sync()
    finally:
        reset_logging()

    assert good_run.status is RunStatus.SUCCESS, good_run.errors
    assert bad_run.status is RunStatus.FAILED
    assert "http_retry" in out.getvalue() and "appid=***" in out.getvalue()
    assert "HTTP Request: GET" in caplog.text and "appid=***" in caplog.text  # httpx's own log
    step = bad_run.steps["load"]
    texts = [
        out.getvalue(),
        caplog.text,
        step.error or "",
        step.traceback or "",
        str(step.exception),
        repr(http(url=api.url("/"), auth=auth)),
    ]
    assert api.url("/status/401?appid=***") in step.error
    for text in texts:
        assert SECRET not in text


class Sink:
    """A transactional output keeping records in memory."""

    guarantee = "transactional"

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.pending: list[dict] = []

    def describe(self) -> str:
        return "memory"

    def open(self, ctx: Any) -> None:
        self.pending = []

    def write(self, batch: list[dict]) -> None:
        self.pending.extend(batch)

    def commit(self) -> None:
        self.rows.extend(self.pending)

    def abort(self) -> None:
        self.pending = []

    def close(self) -> None:
        pass


# -- incremental ------------------------------------------------------------------------------


def test_incremental_cursor_goes_from_run_to_run(api, plugin_manager, register_plugin):
    register_plugin(plugin, "http")
    sink = Sink()
    pipe = Pipeline("incremental", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor={
            "type": "http",
            "url": api.url("/pages"),
            "paginate": "page",
            "records_path": "data",
            "page_size_param": "per_page",
            "page_size": 50,
            "incremental": {
                "param": "updated_since",
                "field": "updated_at",
                "initial": make_record(99)["updated_at"],
            },
        },
        outputs=[sink],
    )

    first = pipe.run_sync()
    assert first.status is RunStatus.SUCCESS, first.errors
    assert [r["id"] for r in sink.rows] == list(range(100, N_RECORDS))
    assert first.extractor_state == {"load": {"cursor": make_record(N_RECORDS - 1)["updated_at"]}}
    assert api.requests[0].query["updated_since"] == make_record(99)["updated_at"]

    api.records.extend(make_record(i) for i in range(N_RECORDS, N_RECORDS + 5))
    sink.rows.clear()
    second = pipe.run_sync(extractor_state=first.extractor_state)
    assert [r["id"] for r in sink.rows] == list(range(N_RECORDS, N_RECORDS + 5))
    assert api.requests[-1].query["updated_since"] == make_record(N_RECORDS - 1)["updated_at"]
    assert second.extractor_state == {"load": {"cursor": make_record(N_RECORDS + 4)["updated_at"]}}

    sink.rows.clear()
    third = pipe.run_sync(extractor_state=second.extractor_state)
    assert sink.rows == [] and third.extractor_state == second.extractor_state


def test_incremental_state_does_not_move_when_the_run_fails(api):
    initial = make_record(0)["updated_at"]
    extractor = http(
        url=api.url("/pages"),
        paginate="page",
        records_path="data",
        page_size_param="per_page",
        page_size=10,
        incremental={"param": "updated_since", "field": "updated_at", "initial": initial},
    )
    api.script = {3: (404, {}, {"error": "gone"})}
    seen: list[dict] = []

    async def run() -> None:
        async for batch in extractor.batches(DataContext("t", {}, "fail", None, None)):
            seen.extend(batch)

    with pytest.raises(HttpExtractorError, match="HTTP 404"):
        asyncio.run(run())

    assert len(seen) == 20  # two pages were yielded before the failure
    assert extractor.state == {"cursor": initial}


def test_set_state_takes_a_previous_state_and_checks_it(api):
    extractor = http(
        url=api.url("/list"), incremental={"param": "updated_since", "field": "updated_at"}
    )
    assert extractor.state is None  # no initial cursor yet

    extractor.set_state({"cursor": make_record(230)["updated_at"]})
    batches, _ = collect(extractor)
    assert ids(batches) == list(range(231, N_RECORDS))
    assert extractor.state == {"cursor": make_record(N_RECORDS - 1)["updated_at"]}

    with pytest.raises(ValueError, match=r"state must be a mapping \{'cursor': \.\.\.\}"):
        extractor.set_state("2024-01-01")


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"url": "http://h/x", "record_path": "data"},
            "unknown option 'record_path'; did you mean 'records_path'?",
        ),
        (
            {"url": "http://h/x", "pagination": "page"},
            "unknown option 'pagination'; did you mean 'paginate'?",
        ),
        ({"records_path": "data"}, "the option 'url' is required"),
        ({"url": "ftp://h/x"}, "url must be an http:// or https:// URL, got 'ftp://h/x'"),
        ({"url": "http://u:pw@h/x"}, "url must not hold credentials"),
        (
            {"url": "http://h/x", "paginate": "pages"},
            "paginate must be one of none, page, offset, cursor, link, got 'pages'",
        ),
        ({"url": "http://h/x", "concurrency": "3"}, "concurrency must be an integer >= 1, got '3'"),
        ({"url": "http://h/x", "retries": True}, "retries must be an integer >= 0, got True"),
        ({"url": "http://h/x", "rate_limit": 0}, "rate_limit must be a number > 0"),
        ({"url": "http://h/x", "timeout": "30"}, "timeout must be a number > 0"),
        (
            {"url": "http://h/x", "max_body_bytes": 0},
            "max_body_bytes must be an integer >= 1, got 0",
        ),
        (
            {"url": "http://h/x", "max_body_bytes": "64MiB"},
            "max_body_bytes must be an integer >= 1, got '64MiB'",
        ),
        ({"url": "http://h/x", "format": "xml"}, "format must be one of json, jsonl, got 'xml'"),
        (
            {"url": "http://h/x", "format": "jsonl", "records_path": "data"},
            "records_path: only for format: json"
            " (a JSON Lines response is its records, one a line)",
        ),
        (
            {"url": "http://h/x", "format": "jsonl", "paginate": "cursor", "cursor_path": "next"},
            "cursor_path: only for format: json",
        ),
        ({"url": "http://h/x", "params": {"q": {"a": 1}}}, "params['q'] must be a string, number"),
        ({"url": "http://h/x", "headers": {"X-N": 1}}, "headers['X-N'] must be a string, got 1"),
        ({"url": "http://h/x", "headers": ["X-N"]}, "headers must be a mapping with string keys"),
        ({"url": "http://h/x", "method": "DELETE"}, "method must be one of GET, POST"),
        ({"url": "http://h/x", "body": {"a": 1}}, "body is sent with method POST only"),
        ({"url": "http://h/x", "method": "POST", "body": {"a": {1, 2}}}, "body must be JSON data"),
        ({"url": "http://h/x", "records_path": "data..items"}, "has an empty key"),
        ({"url": "http://h/x", "paginate": "cursor"}, "paginate: cursor needs cursor_path"),
        (
            {"url": "http://h/x", "paginate": "page", "limit": 10},
            "limit: only for paginate: offset (paginate is page)",
        ),
        (
            {"url": "http://h/x", "paginate": "page", "page_size_param": "n"},
            "page_size_param needs page_size",
        ),
        (
            {"url": "http://h/x", "paginate": "page", "total_path": "total"},
            "total_path needs page_size",
        ),
        (
            {"url": "http://h/x", "paginate": "link", "total_path": "total"},
            "total_path goes with paginate: page or offset, not link",
        ),
        (
            {"url": "http://h/x", "auth": {"type": "oauth"}},
            "auth.type must be one of bearer, basic, api_key, got 'oauth'",
        ),
        (
            {"url": "http://h/x", "auth": {"type": "bearer", "token": "abc"}},
            "unknown option 'token'; did you mean 'token_env'?",
        ),
        (
            {
                "url": "http://h/x",
                "auth": {"type": "api_key", "key_env": "K", "header": "X", "param": "k"},
            },
            "takes 'header' or 'param', not both",
        ),
        ({"url": "http://h/x", "incremental": {"param": "since"}}, "incremental needs 'field'"),
        (
            {"url": "http://h/x", "incremental": {"param": "since", "field": "t", "start": 1}},
            "unknown option 'start'",
        ),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError) as info:
        http(**options)

    assert message in str(info.value)
    assert str(info.value).startswith("http extractor")


def test_describe_and_repr_name_the_source_without_secrets():
    extractor = http(
        url="https://api.example.com/v1/items?token=abc&page=1",
        auth={"type": "api_key", "param": "appid", "key_env": "KEY_VAR"},
    )

    assert extractor.describe() == "http GET https://api.example.com/v1/items?token=***&page=1"
    assert repr(extractor) == (
        "<HttpExtractor 'http GET https://api.example.com/v1/items?"
        "token=***&page=1' paginate='none' auth='api_key ?appid from "
        "$KEY_VAR'>"
    )
    assert "abc" not in repr(extractor)


@pytest.mark.slow
def test_credential_headers_are_not_sent_to_another_host_on_a_redirect(monkeypatch):
    """A redirect from 127.0.0.1 to "localhost" (another host name, same machine): the
    API-key header goes to the first host only."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Other(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)

    class Home(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{other.server_port}/items")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    home = ThreadingHTTPServer(("127.0.0.1", 0), Home)
    for server in (other, home):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("API_KEY_FOR_TEST", SECRET)
        batches, _ = collect(
            http(
                url=f"http://127.0.0.1:{home.server_port}/items",
                auth={"type": "api_key", "header": "X-API-Key", "key_env": "API_KEY_FOR_TEST"},
            )
        )
    finally:
        for server in (other, home):
            server.shutdown()
            server.server_close()
    assert batches == [] or batches == [[]]
    assert len(seen) == 2
    assert seen[0]["x-api-key"] == SECRET  # the configured host gets it
    assert "x-api-key" not in seen[1]  # the other host does not

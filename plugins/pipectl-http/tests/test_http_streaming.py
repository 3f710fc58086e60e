"""Bodies read as they come in: JSON Lines line by line, and a JSON body of more than 1 MiB
item by item along ``records_path``, its other fields (next cursor, total) still read; records
passed on before the body has ended; a failure in the middle of a body."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pipectl.data import DataContext

from pipectl_http import plugin
from pipectl_http.errors import HttpExtractorError

from pipectl_http_testapi import head, json_line, make_record, streamed

PAD = "x" * 600


def padded(i: int) -> dict[str, Any]:
    """A record of about 700 bytes of JSON: 2000 of them are more than 1 MiB."""
    return {**make_record(i), "pad": PAD}


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def batches_of(extractor: Any, on_batch: Any = None) -> list[list[dict]]:
    async def run() -> list[list[dict]]:
        out = []
        async for batch in extractor.batches(DataContext("t", {}, "fail", None, None)):
            out.append(batch)
            if on_batch:
                on_batch(batch)
        return out

    return asyncio.run(run())


def ids(batches: list[list[dict]]) -> list[int]:
    return [r["id"] for batch in batches for r in batch]


# -- JSON Lines ----------------------------------------------------------------------------------


def test_json_lines_pages_are_read_line_by_line(api):
    api.script = {
        1: (200, {}, jsonl([make_record(i) for i in range(10)])),
        2: (
            200,
            {},
            b"\r\n".join(json.dumps(make_record(i)).encode() for i in range(10, 20)) + b"\r\n\n",
        ),
        3: (200, {}, jsonl([make_record(i) for i in range(20, 23)])),
    }

    batches = batches_of(
        plugin.make_http_extractor(
            url=api.url("/export"), format="jsonl", paginate="page", page_size=10
        )
    )

    assert ids(batches) == list(range(23))
    assert [r.query["page"] for r in api.requests] == ["1", "2", "3"]  # 3 is short: the last
    assert api.requests[0].headers["accept"] == "application/x-ndjson, application/jsonl"


def test_a_json_lines_line_that_is_not_json_is_an_error_naming_it(api):
    api.script = {1: (200, {}, b'{"id": 1}\n{"id": 2\n{"id": 3}\n')}

    with pytest.raises(HttpExtractorError) as info:
        batches_of(plugin.make_http_extractor(url=api.url("/export"), format="jsonl"))

    assert str(info.value).startswith(
        f"http GET {api.url('/export')}: HTTP 200: the response is not valid JSON Lines "
        "(line 2: Expecting ',' delimiter: line 1 column 9 (char 8); application/json); it "
        'starts with: {"id": 1} {"id": 2 {"id": 3}'
    )


# -- JSON bodies of more than 1 MiB ----------------------------------------------------------


@pytest.mark.parametrize("meta_first", [False, True], ids=["cursor-after", "cursor-before"])
def test_the_cursor_of_a_big_page_is_read_beside_its_streamed_records(api, meta_first):
    def page(n: int) -> dict[str, Any]:
        items = [padded(i) for i in range(n * 2000, (n + 1) * 2000)]
        meta = {"next": f"c{n + 1}" if n < 2 else None}
        return {"meta": meta, "items": items} if meta_first else {"items": items, "meta": meta}

    api.script = {n + 1: (200, {}, page(n)) for n in range(3)}
    assert len(json.dumps(page(0))) > 2**20

    batches = batches_of(
        plugin.make_http_extractor(
            url=api.url("/cursor"),
            paginate="cursor",
            records_path="items",
            cursor_path="meta.next",
            batch_size=500,
        )
    )

    assert ids(batches) == list(range(6000))
    assert [len(b) for b in batches] == [500] * 12
    assert [r.query.get("cursor") for r in api.requests] == [None, "c1", "c2"]


def test_total_path_after_the_streamed_records_of_big_pages(api):
    api.records = [padded(i) for i in range(5000)]  # pages {"data": [...], "total": 5000}

    batches = batches_of(
        plugin.make_http_extractor(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_size_param="per_page",
            page_size=2000,
            total_path="total",
            concurrency=3,
        )
    )

    assert ids(batches) == list(range(5000))
    assert sorted(r.query["page"] for r in api.requests) == ["1", "2", "3"]


def test_a_wrong_records_path_in_a_big_body_is_the_same_clear_error(api):
    api.records = [padded(i) for i in range(3000)]  # {"data": {"items": [...]}, "meta": ...}

    with pytest.raises(HttpExtractorError) as info:
        batches_of(plugin.make_http_extractor(url=api.url("/wrapped"), records_path="data.itemz"))

    assert str(info.value) == (
        f"http GET {api.url('/wrapped')}: HTTP 200: records_path "
        "'data.itemz' does not lead to a list of records: 'data' has no "
        "key 'itemz' (its keys: items)"
    )


@pytest.mark.slow
def test_a_streamed_body_gives_the_values_json_loads_gives(raw):
    """Awkward values, cut into pieces of 997 bytes at any place (within a number, a string or
    a multi-byte character), give exactly what ``json.loads`` gives."""
    tricky = [
        {
            "id": i,
            "s": 'a"b]}\\[,{ ',
            "u": "é€😀" * (i % 5),
            "big": 2**70 + i,
            "f": -1.5e-7 * i,
            "t": True,
            "z": None,
            "l": [1, [2, {"x": "]"}]],
            "e": {},
            "ea": [],
        }
        for i in range(6000)
    ]
    body = json.dumps(
        {"a": {"before": [1, {"b": 2}], "b": tricky, "after": {"next": "n"}}, "z": "end"},
        ensure_ascii=False,
        indent=1,
    ).encode()
    assert len(body) > 2**20
    server = raw(streamed(lambda: (body[i : i + 997] for i in range(0, len(body), 997))))

    batches = batches_of(
        plugin.make_http_extractor(url=server.url("/doc"), records_path="a.b", batch_size=1000)
    )

    assert [r for batch in batches for r in batch] == json.loads(body)["a"]["b"]


def test_a_list_index_in_records_path_reads_a_big_body_whole(api):
    api.script = {1: (200, {}, {"results": [{"rows": [padded(i) for i in range(3000)]}]})}

    batches = batches_of(
        plugin.make_http_extractor(url=api.url("/x"), records_path="results.0.rows")
    )

    assert ids(batches) == list(range(3000))


# -- records passed on before the body has ended -----------------------------------------------


def _held_back(first: bytes, rest: bytes, released: threading.Event, sent: threading.Event) -> Any:
    """Sends ``first``, then ``rest`` only once ``released`` (or after 30 s)."""

    def parts() -> Iterator[bytes]:
        yield first
        released.wait(30)
        sent.set()
        yield rest

    return streamed(parts)


@pytest.mark.parametrize("form", ["jsonl", "json"])
def test_the_first_records_are_passed_on_before_the_body_has_ended(raw, form):
    records = [padded(i) for i in range(4000)]
    if form == "jsonl":
        first, rest, options = jsonl(records[:2000]), jsonl(records[2000:]), {"format": "jsonl"}
    else:
        body = json.dumps({"data": records}).encode()
        cut = len(json.dumps({"data": records[:2000]})) - 2  # inside the array
        first, rest, options = body[:cut], body[cut:], {"records_path": "data"}
    released, sent = threading.Event(), threading.Event()
    server = raw(_held_back(first, rest, released, sent))
    early: list[bool] = []

    def on_batch(batch: list[dict]) -> None:
        early.append(not sent.is_set())
        released.set()

    batches = batches_of(
        plugin.make_http_extractor(url=server.url("/big"), batch_size=100, **options), on_batch
    )

    assert ids(batches) == list(range(4000))
    assert early[0]  # the first batch came while the server held the rest back


# -- a body that fails midway ------------------------------------------------------------------


def _cut_short(request: Any, conn: Any, stopping: Any) -> None:
    """Five JSON Lines records of a body said to be a million bytes, then the connection
    closes."""
    conn.sendall(head(length=10**6) + b"".join(json_line(i, 100) for i in range(5)))


def test_a_body_that_fails_before_its_first_records_are_passed_on_is_retried(raw):
    server = raw(_cut_short)

    with pytest.raises(HttpExtractorError) as info:
        batches_of(
            plugin.make_http_extractor(
                url=server.url("/x"), format="jsonl", retries=2, retry_delay=0.01
            )
        )

    assert "RemoteProtocolError" in str(info.value)
    assert "gave up after 3 attempt(s) (retries=2)" in str(info.value)
    assert len(server.requests) == 3


def test_a_body_that_fails_after_records_were_passed_on_is_not_retried(raw):
    server = raw(_cut_short)
    passed: list[dict] = []

    with pytest.raises(HttpExtractorError) as info:
        batches_of(
            plugin.make_http_extractor(
                url=server.url("/x"), format="jsonl", retries=2, batch_size=2
            ),
            passed.extend,
        )

    assert [r["id"] for r in passed] == [0, 1, 2, 3]
    message = str(info.value)
    assert message.startswith(f"http GET {server.url('/x')}: RemoteProtocolError: ")
    assert message.endswith(
        ", after 4 record(s) of the response were passed on (a response "
        "that fails midway is not retried; the step's own retries start "
        "the extraction again)"
    )
    assert len(server.requests) == 1

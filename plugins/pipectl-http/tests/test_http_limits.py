"""Limits of one request: the size of a body (``max_body_bytes``), the memory a huge body takes
(measured in a separate pipectl process, against servers that make their bodies on the fly),
and the time a request may take in all (``timeout``), against a server that drips its body."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipectl.data import DataContext

from pipectl_http import plugin
from pipectl_http.errors import HttpExtractorError

from pipectl_http_testapi import endless, head, json_line, streamed

MiB = 2**20
GiB = 2**30
MAX_RSS_MB = 300
LINE = 4096
"""Bytes of each record of the generated bodies (its newline or comma included)."""

PEAK = """
def peak_kb():
    # VmHWM: the high-water mark of this process's own memory. Not ru_maxrss, which on Linux
    # keeps the RSS of the process that forked it (a big pytest process) across exec.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
"""

CLI = (
    PEAK
    + """
import sys
from pipectl.cli import main
try:
    main(sys.argv[1:])
finally:
    print("peak_rss_kb", peak_kb(), file=sys.stderr)
"""
)
"""``pipectl ARGS``, then the peak memory of the process on stderr."""

API = (
    PEAK
    + """
import json, sys
from pipectl import Pipeline

class Count:
    guarantee = "transactional"
    records = 0
    def describe(self): return "count"
    def open(self, ctx): self.records = 0
    def write(self, batch): self.records += len(batch)
    def commit(self): pass
    def abort(self): pass
    def close(self): pass

count = Count()
pipe = Pipeline("measured")
pipe.data_step("load", extractor=json.loads(sys.argv[1]), outputs=[count])
run = pipe.run_sync()
print(json.dumps({"ok": run.ok, "errors": [str(e) for e in run.errors], "records": count.records,
                  "peak_rss_kb": peak_kb()}))
"""
)
"""A data step with the ``extract`` options given as JSON, into an output that counts; prints
the outcome and the peak memory of the process."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PIPECTL_")}


def run_cli(
    tmp_path: Path, extract: dict[str, Any]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``pipectl run`` of one data step (``extract`` into a JSON Lines file) in its own process:
    the process and its peak memory in MB."""
    file = tmp_path / "big.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "name": "big",
                "steps": [
                    {
                        "name": "load",
                        "extract": extract,
                        "load": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "run", str(file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    peak = [line for line in proc.stderr.splitlines() if line.startswith("peak_rss_kb")]
    assert peak, proc.stderr
    return proc, int(peak[-1].split()[1]) / 1024


def run_api(extract: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", API, json.dumps(extract)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.splitlines()[-1])
    outcome["peak_mb"] = outcome["peak_rss_kb"] / 1024
    print(f"peak memory {outcome['peak_mb']:.0f} MB, {outcome['records']} records")
    return outcome


def lines_of(total: int) -> Iterator[bytes]:
    """A JSON Lines body of ``total`` bytes (a multiple of LINE), 1 MiB at a time."""
    piece = json_line(0, LINE) * (MiB // LINE)
    for _ in range(total // MiB):
        yield piece


# -- max_body_bytes -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "length", "detail"),
    [
        ("endless", None, f"more than {64 * MiB} bytes came"),
        ("2 GiB", 2 * GiB, f"its Content-Length is {2 * GiB} bytes"),
        ("2 GiB chunked", None, f"more than {64 * MiB} bytes came"),
    ],
    ids=["endless-chunked", "2GiB-content-length", "2GiB-chunked"],
)
def test_a_body_over_the_default_limit_fails_the_run_in_bounded_memory(
    raw, tmp_path, body, length, detail
):
    parts = (
        (lambda: endless(json_line(0, LINE) * 256))
        if body == "endless"
        else (lambda: lines_of(2 * GiB))
    )
    server = raw(streamed(parts, length))
    url = server.url("/export?token=not-shown&day=1")

    started = time.monotonic()
    proc, peak_mb = run_cli(tmp_path, {"type": "http", "url": url, "format": "jsonl"})

    print(f"{body}: peak memory {peak_mb:.0f} MB, {time.monotonic() - started:.1f} s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    shown = server.url("/export?token=***&day=1")
    assert (
        f"HttpExtractorError: http GET {shown}: HTTP 200: the response is larger than "
        f"max_body_bytes={64 * MiB} (64 MiB): {detail}; raise max_body_bytes to read it"
    ) in proc.stdout
    assert "not-shown" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(server.requests) == 1  # not retried
    assert peak_mb < MAX_RSS_MB


def test_a_content_length_over_the_limit_fails_before_the_body_is_read(raw):
    def respond(request: Any, conn: Any, stopping: Any) -> None:
        conn.sendall(head(length=10**6) + b"[" * 1000)
        stopping.wait()  # the rest never comes: reading the body would end at the timeout

    server = raw(respond)
    extractor = plugin.make_http_extractor(url=server.url("/big"), max_body_bytes=1000)

    with pytest.raises(HttpExtractorError) as info:
        asyncio.run(_drain(extractor))

    assert str(info.value) == (
        f"http GET {server.url('/big')}: HTTP 200: the response is larger "
        "than max_body_bytes=1000: its Content-Length is 1000000 bytes; "
        "raise max_body_bytes to read it"
    )
    assert len(server.requests) == 1


@pytest.mark.slow
@pytest.mark.parametrize("form", ["jsonl", "json-array"])
def test_a_2gib_body_under_a_raised_limit_streams_in_bounded_memory(raw, form):
    total = 2 * GiB
    records = total // LINE
    if form == "jsonl":
        server = raw(streamed(lambda: lines_of(total), total))
        extract = {"format": "jsonl"}
    else:  # {"meta": {...}, "data": [{...}, ...], "next": null}: the records at data
        item = json_line(0, LINE)[:-1]
        start, end = b'{"meta": {"total": %d}, "data": [' % records, b'], "next": null}'

        def array() -> Iterator[bytes]:
            yield start
            piece = (item + b",") * (MiB // LINE)
            for _ in range(total // MiB - 1):
                yield piece
            yield (item + b",") * (MiB // LINE - 1) + item + end

        server = raw(streamed(array, len(start) + total - 1 + len(end)))
        extract = {"records_path": "data"}

    outcome = run_api(
        {
            "type": "http",
            "url": server.url("/export"),
            "max_body_bytes": 3 * GiB,
            "timeout": 300,
            **extract,
        }
    )

    assert outcome["ok"], outcome["errors"]
    assert outcome["records"] == records
    assert outcome["peak_mb"] < MAX_RSS_MB


# -- timeout: the whole request ----------------------------------------------------------------


def _drip(request: Any, conn: Any, stopping: Any) -> None:
    """A body of a million bytes, one byte every 0.2 s."""
    conn.sendall(head(length=10**6) + b"[")
    while not stopping.wait(0.2):
        conn.sendall(b" ")


async def _drain(extractor: Any) -> list[list[dict]]:
    return [b async for b in extractor.batches(DataContext("t", {}, "fail", None, None))]


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_a_dripping_body_fails_at_the_timeout_of_the_whole_request(raw, retries):
    server = raw(_drip)
    extractor = plugin.make_http_extractor(
        url=server.url("/slow"), timeout=1.5, retries=retries, retry_delay=0.01
    )

    started = time.monotonic()
    with pytest.raises(HttpExtractorError) as info:
        asyncio.run(_drain(extractor))
    elapsed = time.monotonic() - started

    assert str(info.value) == (
        f"http GET {server.url('/slow')}: no complete response within "
        f"timeout=1.5 s; gave up after {retries + 1} attempt(s) "
        f"(retries={retries})"
    )
    assert len(server.requests) == retries + 1
    assert 1.5 * (retries + 1) <= elapsed < 1.5 * (retries + 1) + 10

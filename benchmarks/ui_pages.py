"""How fast pipectl-ui's pages answer (server time) with 100,000 runs in a SQLite tracker, and a
run page of a 1,000-step run, against a hand-written minimal page in the same server.

The tracker: one real run of a 1,000-step pipeline (a layered DAG of no-op steps, written by
the tracker's own writer; it also creates the schema and its indexes), then 100,000 runs of
3 steps each added with ``executemany`` into its tables (``RUN_COLUMNS``/``STEP_COLUMNS``:
the rows the writer writes; 12 pipelines, a failed run in 13 with an error message), in one
transaction. No ``ANALYZE``: the database is as a user's would be.

The server: the real app (``pipectl_ui.app.create_app`` over the tracker opened as
``pipectl ui`` opens it) and the baseline under one uvicorn on 127.0.0.1, each wrapped in the
same ASGI timer: **server time** is from the ASGI call to the last byte of the body handed to
uvicorn (middleware, routing, the read on the reads' thread, rendering; not the network or
HTTP parsing). The client time (httpx, keep-alive, same machine) is shown too. (The listening
socket is made with ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on its connections:
without it every keep-alive answer after the first waits ~40 ms for a delayed ACK.)

The baseline: a hand-written Starlette handler that runs the first page's query with
``sqlite3`` (the 51 newest runs, by the same index) and renders them with a trivial Jinja2
template (a table row per run): what any page listing runs pays at least. ``ratio`` is a
page's median over the baseline's.

Pages (each requested ``--requests`` times, default 20, after 3 untimed, all interleaved):
the runs page (first page; filtered by pipeline and status; a search that matches nothing,
which reads every run; a page deep in the list, by cursor, past 90,000 runs), the run page of
the 1,000-step run and its JSON (``/api/runs/ID``). Targets (issue 18): the runs page under 100 ms, the run page of the
1,000-step run under 300 ms (server time, median).

Run:  .venv/bin/python benchmarks/ui_pages.py [--requests 20] [--runs 100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import _bench as B

RUNS_TARGET_MS = 100.0
RUN_TARGET_MS = 300.0
STEPS = 1_000
PIPELINES = 12
WARM_UP = 3  # requests of each page first, not counted

Scope = dict[str, Any]
ASGIApp = Callable[..., Awaitable[None]]


# -- the tracker ---------------------------------------------------------------------------------


def real_run(url: str) -> str:
    """One run of a 1,000-step layered pipeline through the tracker's own writer."""
    pipe = B.build_pipeline(B.layered(STEPS, width=50), B.noop, name="big_dag")
    run = asyncio.run(pipe.run(plugin_manager=B.builtins_only_pm(), tracker=url))
    assert run.ok, run.errors
    return str(run.run_id)


def add_runs(db: Path, runs: int) -> None:
    """``runs`` runs of 3 steps each, one a minute back from the 1,000-step run, inserted
    with executemany into the tables the real run created."""
    start = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=runs)
    run_rows, step_rows = [], []
    for i in range(runs):
        t = start + timedelta(minutes=i)
        run_id = f"{i:032x}"
        failed = i % 13 == 0
        run = {
            "execution_id": run_id,
            "pipeline_name": f"pipeline_{i % PIPELINES}",
            "status": "failed" if failed else "success",
            "started_at": t.isoformat(),
            "completed_at": (t + timedelta(seconds=3)).isoformat(),
            "execution_time_ms": 3000.0 + i % 500,
            "parameters": json.dumps({"day": str(t.date())}),
            "records_processed": i % 1000,
            "error_message": (
                f"step 's2' failed: ConnectionError: host db-{i % 5} timed out" if failed else None
            ),
            "host": "bench",
            "pid": 1,
            "executor": "local",
            "graph": json.dumps({"s0": [], "s1": ["s0"], "s2": ["s1"]}),
            "metadata": "{}",
        }
        run_rows.append(run)
        for k in range(3):
            step = {
                "execution_id": run_id,
                "step_id": f"s{k}",
                "step_name": f"s{k}",
                "step_type": "python",
                "status": "failed" if failed and k == 2 else "success",
                "started_at": t.isoformat(),
                "completed_at": (t + timedelta(seconds=1)).isoformat(),
                "execution_time_ms": 1000.0,
                "retry_count": 0,
                "step_order": k,
                "metadata": "{}",
            }
            step_rows.append(step)
    B.insert_rows(db, run_rows, step_rows)


# -- the server ----------------------------------------------------------------------------------


class Timed:
    """An ASGI app around ``app`` that records, per request path and query, the time from the
    call to the last body chunk sent (``more_body`` false)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples: dict[str, list[float]] = defaultdict(list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = scope["path"] + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        t0 = time.perf_counter()

        async def timed_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.samples[key].append(time.perf_counter() - t0)

        await self.app(scope, receive, timed_send)


def baseline_app(db: Path) -> ASGIApp:
    """The first page of runs, by hand: the same query with sqlite3 on a thread of its own, a
    trivial Jinja2 template."""
    from concurrent.futures import ThreadPoolExecutor

    from jinja2 import Environment
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    template = Environment(autoescape=True).from_string(
        "<!doctype html><title>runs</title><table>{% for r in runs %}<tr><td>{{ r[0] }}</td>"
        "<td>{{ r[1] }}</td><td>{{ r[2] }}</td><td>{{ r[3] }}</td><td>{{ r[4] }}</td>"
        "<td>{{ r[5] }}</td><td>{{ r[6] }}</td></tr>{% endfor %}</table>"
    )
    conn = sqlite3.connect(db, check_same_thread=False)
    thread = ThreadPoolExecutor(max_workers=1)

    def page() -> str:
        rows = conn.execute(
            "SELECT execution_id, pipeline_name, status, started_at, execution_time_ms, "
            "records_processed, error_message FROM pipeline_executions "
            "ORDER BY started_at DESC, execution_id DESC LIMIT 51"
        ).fetchall()
        return template.render(runs=rows[:50])

    async def runs(request: Any) -> HTMLResponse:
        loop = asyncio.get_running_loop()
        return HTMLResponse(await loop.run_in_executor(thread, page))

    return Starlette(routes=[Route("/", runs)])


class Mount:
    """``/baseline/...`` to the baseline app, everything else to the UI."""

    def __init__(self, ui: ASGIApp, baseline: ASGIApp) -> None:
        self.ui, self.baseline = ui, baseline

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/baseline"):
            scope = dict(scope, path=scope["path"][len("/baseline") :] or "/")
            await self.baseline(scope, receive, send)
        else:
            await self.ui(scope, receive, send)


class Server:
    def __init__(self, app: ASGIApp) -> None:
        import uvicorn

        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on the connections of a socket made with
        # it; without, a keep-alive answer written in two sends waits ~40 ms for a delayed ACK
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# -- the measurement -----------------------------------------------------------------------------


def served_key(path: str) -> str:
    """The key :class:`Timed` files a request of ``path`` under (the baseline's, unmounted)."""
    return path.removeprefix("/baseline") or "/"


def measure(runs: int, requests: int) -> dict[str, Any]:
    import httpx

    from pipectl.plugins import get_plugin_manager
    from pipectl.tracking import open_tracker
    from pipectl_ui.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "pipectl.db"
        url = f"sqlite:///{db}"
        t0 = time.perf_counter()
        big = real_run(url)
        t1 = time.perf_counter()
        add_runs(db, runs)
        t2 = time.perf_counter()
        print(
            f"tracker: the {STEPS:,}-step run written by the tracker in {t1 - t0:.1f} s, "
            f"{runs:,} runs of 3 steps inserted in {t2 - t1:.1f} s "
            f"({db.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        tracker = open_tracker(url, get_plugin_manager().registries)
        try:
            ui = Timed(create_app(tracker))
            base = Timed(baseline_app(db))
            with Server(Mount(ui, base)) as server, httpx.Client(timeout=60) as client:
                deep_at = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(minutes=int(runs * 0.9))
                answer = client.get(
                    server.url + "/api/runs", params={"limit": 1, "until": deep_at.isoformat()}
                )
                cursor = answer.json()["next"]
                assert cursor, answer.text
                pages = {
                    "baseline: minimal first page": ("/baseline/", base),
                    "runs page, first": ("/", ui),
                    "runs page, pipeline+status": ("/?pipeline=pipeline_3&status=failed", ui),
                    "runs page, search, no match": ("/?search=no-such-text", ui),
                    "runs page, cursor past 90%": (f"/?cursor={quote(cursor)}", ui),
                    f"run page, {STEPS:,} steps": (f"/runs/{big}", ui),
                    f"/api/runs/ID, {STEPS:,} steps": (f"/api/runs/{big}", ui),
                }
                client_times: dict[str, list[float]] = defaultdict(list)
                sizes: dict[str, int] = {}
                order = list(pages)
                for r in range(requests + WARM_UP):
                    for name in order[r % len(order) :] + order[: r % len(order)]:
                        path, app = pages[name]
                        c0 = time.perf_counter()
                        answer = client.get(server.url + path)
                        elapsed = time.perf_counter() - c0
                        assert answer.status_code == 200, (path, answer.status_code, answer.text)
                        sizes[name] = len(answer.content)
                        if r >= WARM_UP:
                            client_times[name].append(elapsed)
        finally:
            tracker.close()
    rows, raw = [], {}
    base_median = statistics.median(base.samples["/"][WARM_UP:])
    for name, (path, app) in pages.items():
        server_times = app.samples[served_key(path)][WARM_UP:]  # in the order requested
        assert len(server_times) == requests, (name, len(server_times))
        median = statistics.median(server_times)
        target = RUN_TARGET_MS if name.startswith("run page") else None
        if name.startswith("runs page"):
            target = RUNS_TARGET_MS
        rows.append(
            [
                name,
                median * 1e3,
                min(server_times) * 1e3,
                statistics.median(client_times[name]) * 1e3,
                median / base_median,
                sizes[name] // 1024,
                "-" if target is None else ("yes" if median * 1e3 < target else "NO"),
            ]
        )
        raw[name] = {"path": path, "server_s": server_times, "client_s": client_times[name]}
    return {"rows": rows, "raw": raw}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    print(B.describe_source())
    result = measure(args.runs, args.requests)
    print(
        f"\n== pipectl-ui pages, {args.runs:,} runs in SQLite, server time, medians of "
        f"{args.requests} requests (interleaved) =="
    )
    headers = ["page", "median ms", "best ms", "client ms", "ratio", "KiB", "target"]
    print(B.table(headers, result["rows"]))
    print(
        f"targets: runs page < {RUNS_TARGET_MS:.0f} ms, run page of a {STEPS:,}-step run "
        f"< {RUN_TARGET_MS:.0f} ms (server time, median); ratio: over the baseline's median"
    )
    B.write_json(
        args.json,
        {
            "benchmark": "ui_pages",
            "runs": args.runs,
            "requests": args.requests,
            "targets_ms": {"runs_page": RUNS_TARGET_MS, "run_page": RUN_TARGET_MS},
            "table": [dict(zip(headers, row, strict=True)) for row in result["rows"]],
            "raw": result["raw"],
        },
    )


if __name__ == "__main__":
    main()

"""Pages per second of the ``http`` extractor against a hand-written httpx loop.

A local JSON API serves ``--pages`` pages (100) of ``--records`` records (100, about 20 kB of
JSON a page), each response held back ``--delay`` seconds (5 ms) to stand for a network API.
Three variants read all of them, 8 requests in flight (``--concurrency``), and keep every
record, in page order:

- **data step** (the figure to quote): a pipectl data step, ``{type: http, paginate: page,
  page_size, page_size_param, total_path: meta.total, concurrency: 8}``, into a minimal
  in-memory output (it extends a list); timed around ``await pipe.run()`` of a warm
  ``Pipeline`` (the plugin manager, the plan and the output are made once). This is what a
  user pays: the extractor, the data-step runner (a bounded queue per output, each ``write`` on
  a worker thread) and the engine's bookkeeping of one step.
- **extractor**: the same ``HttpExtractor``'s ``batches()`` iterated directly, to tell the
  extractor's cost from the data step's.
- **hand-written**: what a person would write with httpx: an ``httpx.AsyncClient``, the first
  page read alone for ``meta.total`` (as ``total_path`` does), then the other pages with
  ``asyncio.gather`` under an ``asyncio.Semaphore(8)``, ``raise_for_status()`` and
  ``json.loads`` on each response, the records collected in page order.

Every variant makes a new client (and its connections) in each round, and sends exactly
``--pages`` requests (checked against the server's count). Rounds interleave the variants
(A B C, B C A, C A B, ...) after a warm-up round of each, with a full garbage collection before
each (not timed); the tables show the best and the median round, and the ratios are of medians.

The server runs in a separate process (a ``ThreadingHTTPServer``, keep-alive, its pages
encoded in advance, a listen backlog of 64: with the default 5, a round opening its 8
connections at once lost a SYN now and then and took a second more): in the same process its
threads would take the GIL from the client's event loop, and the figures would measure the two
fighting over it rather than the client.
Its delay is a ``time.sleep`` in the handler thread, so 8 requests wait at once. The client
process is then the one at work: the table shows its CPU time per round next to the wall time.

httpcore (httpx's transport) runs ``import sniffio`` each time it sets up a lock or an event,
several times a request; httpx 0.28 with anyio 4 no longer installs sniffio, and an import that
fails searches ``sys.path`` again every time. That costs every variant alike (about 1 ms of
CPU a request on a small VM) and brings the ratios closer to 1; ``--cheap-sniffio-miss`` makes
the missing import fail at once (``sys.modules["sniffio"] = None``, what installing sniffio
would roughly do), for the stricter comparison.

    python plugins/pipectl-http/benchmarks/extract_pages.py
    python plugins/pipectl-http/benchmarks/extract_pages.py --cheap-sniffio-miss --rounds 30
    python plugins/pipectl-http/benchmarks/extract_pages.py --profile    # where the time goes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from urllib.request import urlopen

# -- the server (run in its own process with --serve) ------------------------------------------


def make_record(i: int) -> dict[str, Any]:
    """A record shaped like a weather reading: about 200 bytes of JSON."""
    return {
        "id": i,
        "location": ("NYC", "SF", "LON", "TYO")[i % 4],
        "observed_at": f"2026-11-{16 + i // 2400 % 14:02d}T{i // 100 % 24:02d}:00:00Z",
        "temperature_c": round(5 + (i * 37 % 200) / 10, 1),
        "humidity_pct": 40 + i % 60,
        "wind_kph": round((i * 13 % 300) / 10, 1),
        "precipitation_mm": 0.0,
        "conditions": ("clear", "cloudy", "rain")[i % 3],
        "updated_at": f"2026-11-{16 + i // 2400 % 14:02d}T{i // 100 % 24:02d}:10:00Z",
    }


def serve(pages: int, size: int, delay: float) -> None:
    """Serve ``/items?page=P&page_size=S`` and ``/stats`` on an ephemeral port of 127.0.0.1;
    print the port, then serve until stdin closes."""
    total = pages * size
    bodies = {
        p: json.dumps(
            {
                "data": [make_record(i) for i in range((p - 1) * size, p * size)],
                "meta": {"page": p, "page_size": size, "total": total},
            }
        ).encode()
        for p in range(1, pages + 1)
    }
    empty = json.dumps({"data": [], "meta": {"total": total}}).encode()
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/stats":
                body = json.dumps({"requests": served[0]}).encode()
            else:
                query = dict(parse_qsl(parts.query))
                if int(query.get("page_size", size)) != size:
                    self.send_error(400, f"this server serves pages of {size}")
                    return
                served[0] += 1
                time.sleep(delay)
                body = bodies.get(int(query.get("page", 1)), empty)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        # the default backlog (5) overflows when a round opens its 8 connections at once: a
        # dropped SYN is sent again after 1 s, and that round takes a second more
        request_queue_size = 64

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(httpd.server_address[1], flush=True)
    sys.stdin.read()  # the parent closes it (or dies): stop
    httpd.shutdown()


class Server:
    """The server process."""

    def __init__(self, pages: int, size: int, delay: float):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--pages",
                str(pages),
                "--records",
                str(size),
                "--delay",
                str(delay),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        port = self.proc.stdout.readline().strip()
        if not port:
            raise SystemExit("the server process did not start")
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/items"

    def requests(self) -> int:
        with urlopen(f"{self.base}/stats", timeout=10) as response:
            return json.loads(response.read())["requests"]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# -- the variants ------------------------------------------------------------------------------


def extractor_options(url: str, size: int, concurrency: int) -> dict[str, Any]:
    return {
        "type": "http",
        "url": url,
        "records_path": "data",
        "paginate": "page",
        "page_size_param": "page_size",
        "page_size": size,
        "total_path": "meta.total",
        "concurrency": concurrency,
    }


class ListOutput:
    """A minimal output: the records of the attempt, in a list, kept at commit."""

    guarantee = "transactional"
    name = "list"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []

    def describe(self) -> str:
        return "list (in memory)"

    def open(self, ctx: Any) -> None:
        self.pending = []

    def write(self, batch: list[dict[str, Any]]) -> None:
        self.pending.extend(batch)

    def commit(self) -> None:
        self.rows = self.pending

    def abort(self) -> None:
        self.pending = []

    def close(self) -> None:
        pass


class DataStep:
    """The pipectl data step, built once (warm), run once per round."""

    def __init__(self, url: str, size: int, concurrency: int):
        from pipectl import Pipeline
        from pipectl.plugins import get_plugin_manager

        from pipectl_http import plugin

        self.pm = get_plugin_manager(autoload=False, entry_points=())  # this tree's plugin
        record = self.pm.add_plugin(plugin, "http")
        if record.status != "loaded":
            raise SystemExit(f"the http plugin did not load: {record.error}")
        self.output = ListOutput()
        self.pipe = Pipeline("extract-pages", plugin_manager=self.pm)
        self.pipe.data_step(
            "extract", extractor=extractor_options(url, size, concurrency), outputs=[self.output]
        )

    async def __call__(self) -> list[dict[str, Any]]:
        run = await self.pipe.run(plugin_manager=self.pm)
        if not run.ok:
            raise SystemExit(f"the data step failed: {run.errors}")
        return self.output.rows


class Extractor:
    """The extractor alone: ``batches()`` iterated, the records collected."""

    def __init__(self, url: str, size: int, concurrency: int):
        from pipectl.data import DataContext

        self.options = extractor_options(url, size, concurrency)
        del self.options["type"]
        self.ctx = DataContext("extract", {}, "fail", None, None)

    async def __call__(self) -> list[dict[str, Any]]:
        from pipectl_http.extractor import HttpExtractor

        extractor = HttpExtractor.from_options(self.options)
        rows: list[dict[str, Any]] = []
        async for batch in extractor.batches(self.ctx):
            rows.extend(batch)
        return rows


class HandWritten:
    """httpx by hand: the first page for the total, then the rest, ``concurrency`` at a time."""

    def __init__(self, url: str, size: int, concurrency: int):
        self.url, self.size, self.concurrency = url, size, concurrency

    async def __call__(self) -> list[dict[str, Any]]:
        import httpx

        async with httpx.AsyncClient(
            headers={"Accept": "application/json"}, timeout=30.0
        ) as client:
            limit = asyncio.Semaphore(self.concurrency)

            async def fetch(page: int) -> dict[str, Any]:
                async with limit:
                    response = await client.get(
                        self.url, params={"page": page, "page_size": self.size}
                    )
                response.raise_for_status()
                return json.loads(response.content)

            first = await fetch(1)
            pages = math.ceil(first["meta"]["total"] / self.size)
            rest = await asyncio.gather(*(fetch(p) for p in range(2, pages + 1)))
        rows = list(first["data"])
        for body in rest:
            rows.extend(body["data"])
        return rows


# -- measuring ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(variant: Any) -> tuple[float, float, list[dict[str, Any]]]:
    """(wall seconds, CPU seconds, the records) of one round, in a new event loop."""

    async def once() -> tuple[float, float, list[dict[str, Any]]]:
        cpu = cpu_seconds()
        started = time.perf_counter()
        rows = await variant()
        return time.perf_counter() - started, cpu_seconds() - cpu, rows

    return asyncio.run(once())


def profile(variant: Any, rounds: int) -> None:
    import cProfile
    import pstats

    timed(variant)  # warm: imports, the plan
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        timed(variant)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--records", type=int, default=100, help="records per page")
    parser.add_argument("--delay", type=float, default=0.005, help="server seconds per page")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds of each variant")
    parser.add_argument(
        "--cheap-sniffio-miss",
        action="store_true",
        help="make httpcore's 'import sniffio' fail at once when sniffio is "
        "not installed (see above)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the data step and the hand-written loop instead",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.pages, args.records, args.delay)
        return

    sniffio = importlib.util.find_spec("sniffio") is not None
    if args.cheap_sniffio_miss and not sniffio:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    import httpx
    import pipectl

    import pipectl_http

    server = Server(args.pages, args.records, args.delay)
    try:
        shape = (server.url, args.records, args.concurrency)
        variants = {
            "data step": DataStep(*shape),
            "extractor": Extractor(*shape),
            "hand-written": HandWritten(*shape),
        }
        if args.profile:
            for name in ("data step", "hand-written"):
                print(f"== {name}: {args.rounds} rounds, by own time")
                profile(variants[name], args.rounds)
            return
        want = [make_record(i)["id"] for i in range(args.pages * args.records)]
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_number in range(args.rounds + 1):  # round 0 warms up
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                before = server.requests()
                elapsed, used, rows = timed(variants[name])
                sent = server.requests() - before
                if [r["id"] for r in rows] != want or sent != args.pages:
                    raise SystemExit(
                        f"{name}: {len(rows)} records in {sent} requests; expected"
                        f" {len(want)} in order, in {args.pages} requests"
                    )
                if round_number:
                    seconds[name].append(elapsed)
                    cpu[name].append(used)
    finally:
        server.stop()

    floor = args.pages / args.concurrency * args.delay
    print(
        f"{args.pages} pages x {args.records} records, {args.concurrency} in flight, "
        f"server delay {args.delay * 1000:g} ms a page (floor {floor * 1000:.0f} ms a "
        f"round), {args.rounds} rounds"
    )
    print(
        f"Python {platform.python_version()}, httpx {httpx.__version__}, pipectl "
        f"{pipectl.__version__}, pipectl-http {pipectl_http.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, server in a separate process"
    )
    if sniffio:
        print("sniffio: installed")
    else:
        how = "made to fail at once" if args.cheap_sniffio_miss else "searched for on each try"
        print(f"sniffio: not installed, {how} (--cheap-sniffio-miss)")
    print(
        f"{'variant':<14}{'best pages/s':>14}{'median pages/s':>16}{'median ms':>11}"
        f"{'median CPU ms':>15}"
    )
    rates = {}
    for name, times in seconds.items():
        rates[name] = args.pages / statistics.median(times)
        median_cpu = statistics.median(cpu[name])
        print(
            f"{name:<14}{args.pages / min(times):>14,.0f}{rates[name]:>16,.0f}"
            f"{statistics.median(times) * 1000:>11.1f}{median_cpu * 1000:>15.1f}"
        )
    hand = rates["hand-written"]
    print(f"ratio data step / hand-written (medians): {rates['data step'] / hand:.2f}")
    print(f"ratio extractor / hand-written (medians): {rates['extractor'] / hand:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "sniffio_installed": sniffio,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "pages_per_second": rates,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()

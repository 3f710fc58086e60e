"""What run tracking costs: the engine's 10,000-step runs with the SQLite tracker on, against
the same runs with tracking off, in the same process, rounds interleaved (off, on, off, on ...).

Each tracked run writes its run row, a row per step (at start and at the end: attempts,
timing, fingerprint) and commits, all in the tracker's writer thread; ``run()`` returns only
once everything is committed (it flushes), so the time measured includes all of the writing.
Overhead per step = (median tracked - median untracked) / steps. Target: at most 50 µs.

Part 2 fills a tracker with 10,000 runs (of 5 steps each) and times ``list_runs()`` (the
query ``pipectl runs list`` makes, newest 20 first) in process, and the whole
``pipectl runs list`` command against ``python -c pass``. Target: under 100 ms.

Run:  .venv/bin/python benchmarks/tracking_overhead.py [--rounds 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench as B

TARGET_US = 50.0
LIST_TARGET_MS = 100.0
STEPS = 10_000


async def timed(pipe: Any, pm: Any, tracker: Any) -> float:
    t0 = time.perf_counter()
    run = await pipe.run(plugin_manager=pm, tracker=tracker)
    elapsed = time.perf_counter() - t0
    assert run.ok, run.errors
    return elapsed


def overhead(rounds: int, db: Path) -> list[list[Any]]:
    from pipectl.tracking import SqliteTracker

    pm = B.builtins_only_pm()
    tracker = SqliteTracker(f"sqlite:///{db}")
    tracker.migrate()
    rows = []
    for kind, fn in (("async", B.noop), ("sync", B.noop_sync)):
        for shape_name in ("chain", "independent", "layered"):
            shape = B.SHAPES[shape_name](STEPS)
            pipe = B.build_pipeline(shape, fn)
            off: list[float] = []
            on: list[float] = []

            async def main() -> None:
                await timed(pipe, pm, "none")  # plan once, warm everything up
                await timed(pipe, pm, tracker)
                for _ in range(rounds):
                    off.append(await timed(pipe, pm, "none"))
                    on.append(await timed(pipe, pm, tracker))

            asyncio.run(main())
            m_off, m_on = statistics.median(off), statistics.median(on)
            per_step = (m_on - m_off) / STEPS * 1e6
            rows.append(
                [
                    kind,
                    f"{shape_name}-{STEPS}",
                    m_off * 1e3,
                    m_on * 1e3,
                    per_step,
                    "yes" if per_step <= TARGET_US else "NO",
                ]
            )
            print(
                B.table(["kind", "shape", "off ms", "on ms", "µs/step", "≤ 50 µs"], rows[-1:]),
                flush=True,
            )
    tracker.close()
    return rows


def fill(db: Path, runs: int) -> None:
    """``runs`` runs of 5 steps, written as the writer writes them (one transaction)."""
    import json
    from datetime import UTC, datetime, timedelta

    from pipectl.tracking import SqliteTracker

    SqliteTracker(f"sqlite:///{db}").migrate()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    run_rows, step_rows = [], []
    for i in range(runs):
        t = start + timedelta(minutes=i)
        run_id = f"{i:032x}"
        run = {
            "execution_id": run_id,
            "pipeline_name": f"pipeline_{i % 7}",
            "status": "failed" if i % 13 == 0 else "success",
            "started_at": t.isoformat(),
            "completed_at": (t + timedelta(seconds=3)).isoformat(),
            "execution_time_ms": 3000.0,
            "parameters": json.dumps({"day": str(t.date())}),
            "records_processed": i,
            "host": "bench",
            "pid": 1,
            "executor": "local",
            "graph": "{}",
            "metadata": "{}",
        }
        run_rows.append(run)
        for k in range(5):
            step = {
                "execution_id": run_id,
                "step_id": f"s{k}",
                "step_name": f"s{k}",
                "step_type": "python",
                "status": "success",
                "started_at": t.isoformat(),
                "completed_at": t.isoformat(),
                "execution_time_ms": 1.0,
                "retry_count": 0,
                "step_order": k,
                "metadata": "{}",
            }
            step_rows.append(step)
    B.insert_rows(db, run_rows, step_rows)


def listing(db: Path, pairs: int) -> list[list[Any]]:
    from pipectl.tracking import SqliteTracker

    fill(db, 10_000)
    tracker = SqliteTracker(f"sqlite:///{db}")
    samples = []
    for _ in range(50):
        t0 = time.perf_counter()
        rows = tracker.list_runs(limit=20)
        samples.append(time.perf_counter() - t0)
        assert len(rows) == 20
    filtered = []
    for _ in range(50):
        t0 = time.perf_counter()
        tracker.list_runs(pipeline="pipeline_3", status="failed", limit=20)
        filtered.append(time.perf_counter() - t0)
    tracker.close()
    py = sys.executable
    script = str(Path(py).with_name("pipectl"))
    env = {**os.environ, "PIPECTL_HOME": str(db.parent)}
    command, bare = [], []
    for _ in range(pairs):
        for target, cmd in ((command, [script, "runs", "list"]), (bare, [py, "-c", "pass"])):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
            target.append(time.perf_counter() - t0)
    return [
        ["list_runs(limit=20), in process", statistics.median(samples) * 1e3],
        ["list_runs(pipeline, status=failed)", statistics.median(filtered) * 1e3],
        ["`pipectl runs list`, whole process", statistics.median(command) * 1e3],
        ["`python -c pass`", statistics.median(bare) * 1e3],
        [
            "`pipectl runs list` over python -c pass",
            (statistics.median(command) - statistics.median(bare)) * 1e3,
        ],
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    print(B.describe_source())
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"\n== Tracking on (SQLite, {STEPS:,} no-op steps) vs off, medians of "
            f"{args.rounds} interleaved rounds =="
        )
        rows = overhead(args.rounds, Path(tmp) / "runs" / "pipectl.db")
        print("\n== Listing runs with 10,000 runs in the database, medians ==")
        listed = listing(Path(tmp) / "list" / "pipectl.db", args.pairs)
        print(B.table(["what", "ms"], listed))
    B.write_json(
        args.json,
        {
            "benchmark": "tracking_overhead",
            "target_us": TARGET_US,
            "overhead": rows,
            "listing": listed,
        },
    )


if __name__ == "__main__":
    main()

"""Records per second and peak memory of a data step, against a hand-written script.

Moves N records (id int, name str, value float, ts str) from a CSV file into a JSONL file and a
SQLite table at once. The hand-written baseline does what a person would write: csv.DictReader,
int()/float() on the typed columns, json.dumps per line, executemany in batches of 10,000, one
transaction. Each variant runs in a fresh subprocess, so its peak memory (ru_maxrss) is its own.

    .venv/bin/python benchmarks/data_throughput.py                 # 1,000,000 records, 3 rounds
    .venv/bin/python benchmarks/data_throughput.py --records 10000000 --rounds 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
COLUMNS = {"id": "INTEGER", "name": "TEXT", "value": "REAL", "ts": "TEXT"}


def make_csv(path: Path, n: int) -> None:
    rng = random.Random(42)
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "value", "ts"])
        for i in range(n):
            w.writerow(
                [
                    i,
                    f"{rng.choice(names)}-{i % 997}",
                    f"{rng.random() * 1000:.4f}",
                    f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                ]
            )


def hand_written(src: Path, out: Path) -> int:
    db = sqlite3.connect(out / "hand.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute('CREATE TABLE "records" (id INTEGER, name TEXT, value REAL, ts TEXT)')
    db.execute("BEGIN")
    n = 0
    batch: list[tuple] = []
    with (
        open(src, newline="", encoding="utf-8") as f,
        open(out / "hand.jsonl", "w", encoding="utf-8") as j,
    ):
        for row in csv.DictReader(f):
            row["id"] = int(row["id"])
            row["value"] = float(row["value"])
            j.write(json.dumps(row) + "\n")
            batch.append((row["id"], row["name"], row["value"], row["ts"]))
            n += 1
            if len(batch) == 10_000:
                db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", batch)
                batch = []
        if batch:
            db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", batch)
    db.execute("COMMIT")
    db.close()
    return n


def with_pipectl(src: Path, out: Path) -> int:
    from pipectl import Pipeline
    from pipectl.plugins import get_plugin_manager

    pipe = Pipeline("throughput", plugin_manager=get_plugin_manager(autoload=False))
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(src), "types": {"id": "int", "value": "float"}},
        outputs=[
            {"type": "jsonl", "path": str(out / "pipectl.jsonl")},
            {
                "type": "sqlite",
                "path": str(out / "pipectl.sqlite"),
                "table": "records",
                "columns": COLUMNS,
            },
        ],
    )
    run = pipe.run_sync()
    if not run.ok:
        raise SystemExit(f"pipectl run failed: {run.errors}")
    return run.records_processed


def child(variant: str, src: Path, out: Path) -> None:
    started = time.perf_counter()
    n = hand_written(src, out) if variant == "hand" else with_pipectl(src, out)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "records": n, "seconds": seconds, "peak_mb": peak_mb}))


def run_child(variant: str, src: Path, tmp: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=tmp))
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", variant, "--csv", str(src), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", choices=["hand", "pipectl"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.csv), Path(args.out))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "records.csv"
        make_csv(src, args.records)
        results: dict[str, list[dict]] = {"hand": [], "pipectl": []}
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            for variant in ("hand", "pipectl"):
                results[variant].append(run_child(variant, src, tmp))
    print(
        f"{args.records:,} records, CSV -> JSONL + SQLite at once, {args.rounds} rounds, "
        f"{os.cpu_count()} cpus"
    )
    print(f"{'variant':<8} {'rec/s median':>14} {'best':>12} {'peak MB':>9}")
    summary = {}
    for variant, rows in results.items():
        rates = [r["records"] / r["seconds"] for r in rows]
        peak = max(r["peak_mb"] for r in rows)
        summary[variant] = {
            "rate_median": statistics.median(rates),
            "rate_best": max(rates),
            "peak_mb": peak,
            "runs": rows,
        }
        print(f"{variant:<8} {statistics.median(rates):>14,.0f} {max(rates):>12,.0f} {peak:>9.1f}")
    ratio = summary["pipectl"]["rate_median"] / summary["hand"]["rate_median"]
    print(
        f"pipectl / hand-written throughput: {ratio:.2f}x (target >= 0.9x); "
        f"pipectl peak {summary['pipectl']['peak_mb']:.0f} MB (target < 150 MB)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"records": args.records, "ratio": ratio, **summary}, indent=2)
        )


if __name__ == "__main__":
    main()

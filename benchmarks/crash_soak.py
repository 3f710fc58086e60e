"""Crash soak: SIGKILL a real ``pipectl run`` at a random moment, resume it, count the records.

Each trial loads a 200,000-record CSV into a JSONL file, an SQLite append table and an SQLite
keyed table (two outputs on one database file), and, with ``--postgres DSN``, a PostgreSQL
append table and a PostgreSQL keyed table too. The run is killed (SIGKILL, no clean-up) at a
random instant between its start and the time an uninterrupted run takes (measured first),
then ``pipectl run FILE --resume latest`` finishes it. Every output must then hold every source
record exactly once: the script prints, per output, the records missing and the records held
twice, summed over the trials (both must be 0), and exits 1 if any is not.

    .venv/bin/python benchmarks/crash_soak.py                       # 20 trials, ~2-4 min
    .venv/bin/python benchmarks/crash_soak.py --trials 5 --records 50000
    .venv/bin/python benchmarks/crash_soak.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PIPELINE = """
name: soak
steps:
  - name: load
    extract: {{type: csv, path: source.csv, types: {{id: int}}, batch_size: 5000}}
    load:
      - {{name: file, type: jsonl, path: out/records.jsonl}}
      - {{name: appended, type: sqlite, path: out/db.sqlite, table: appended}}
      - {{name: keyed, type: sqlite, path: out/db.sqlite, table: keyed, key: id}}
{postgres}"""

POSTGRES_OUTPUTS = """\
      - {{name: pg_appended, type: postgres, dsn_env: SOAK_DSN, schema: {schema}, table: appended}}
      - {{name: pg_keyed, type: postgres, dsn_env: SOAK_DSN, schema: {schema}, table: keyed, key: id}}
"""


def pipectl(folder: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def held(folder: Path, dsn: str | None, schema: str | None) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    path = folder / "out" / "records.jsonl"
    out["jsonl"] = (
        [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []
    )
    with sqlite3.connect(folder / "out" / "db.sqlite") as conn:
        for table in ("appended", "keyed"):
            out[f"sqlite {table}"] = [r[0] for r in conn.execute(f"SELECT id FROM {table}")]
    if dsn:
        import psycopg

        with psycopg.connect(dsn) as conn:
            for table in ("appended", "keyed"):
                out[f"postgres {table}"] = [
                    r[0] for r in conn.execute(f'SELECT id FROM "{schema}"."{table}"')
                ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--postgres", metavar="DSN", help="also load into PostgreSQL")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    totals: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="pipectl-soak-") as tmp:
        root = Path(tmp)
        source = root / "source.csv"
        with open(source, "w", encoding="utf-8") as f:
            f.write("id,name\n")
            for i in range(args.records):
                f.write(f"{i},name-{i}\n")
        env = {**os.environ, "PIPECTL_HOME": ".pipectl"}
        if args.postgres:
            env["SOAK_DSN"] = args.postgres

        def prepare(name: str) -> tuple[Path, str | None]:
            folder = root / name
            folder.mkdir()
            os.symlink(source, folder / "source.csv")
            schema = None
            outputs = ""
            if args.postgres:
                import psycopg

                schema = f"soak_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')
                outputs = POSTGRES_OUTPUTS.format(schema=schema)
            (folder / "pipeline.yaml").write_text(PIPELINE.format(postgres=outputs))
            return folder, schema

        def drop(schema: str | None) -> None:
            if schema and args.postgres:
                import psycopg

                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

        folder, schema = prepare("warm-up")  # how long an uninterrupted run takes
        t0 = time.perf_counter()
        proc = pipectl(folder, "run", "pipeline.yaml", env=env)
        proc.communicate()
        full = time.perf_counter() - t0
        drop(schema)
        if proc.returncode != 0:
            print("the uninterrupted run failed", file=sys.stderr)
            return 1
        print(
            f"an uninterrupted run: {full:.2f} s; {args.trials} trials, "
            f"{args.records:,} records each"
        )
        for trial in range(args.trials):
            folder, schema = prepare(f"trial-{trial}")
            delay = rng.uniform(0.0, full)
            proc = pipectl(folder, "run", "pipeline.yaml", env=env)
            time.sleep(delay)
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.communicate()
            resume = pipectl(folder, "run", "pipeline.yaml", "--resume", "latest", env=env)
            out, err = resume.communicate()
            if resume.returncode != 0:
                print(f"trial {trial}: the resume failed ({resume.returncode}):\n{out}\n{err}")
                return 1
            counts = held(folder, args.postgres, schema)
            drop(schema)
            line = []
            for output, ids in counts.items():
                missing = args.records - len(set(ids))
                twice = len(ids) - len(set(ids))
                total = totals.setdefault(output, [0, 0])
                total[0] += missing
                total[1] += twice
                line.append(f"{output} {missing}/{twice}")
            skipped = out.count("already committed by run")
            print(
                f"trial {trial:2}: killed at {delay:5.2f} s"
                + ("" if killed else " (had ended)")
                + f", {skipped} output(s) found committed; missing/twice: "
                + ", ".join(line)
            )
    print()
    print(f"{'output':20} {'missing':>8} {'twice':>8}")
    bad = False
    for output, (missing, twice) in totals.items():
        print(f"{output:20} {missing:8} {twice:8}")
        bad = bad or missing or twice
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

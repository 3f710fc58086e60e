"""Records per second of the ``postgres`` output against a hand-written psycopg COPY script.

Loads N generated records (``id`` bigint, ``name`` text, ``value`` double precision, ``ts``
timestamptz, ``flag`` boolean) into a new table, in each round once through a pipectl data step
(the built-in ``python`` extractor yielding batches of 10,000 records, the ``postgres`` output
in ``append`` mode: one COPY per batch, one transaction) and once with what a person would
write by hand: one connection, ``CREATE TABLE``, one ``COPY ... FROM STDIN`` fed by
``write_row`` for every record, commit. Both generate the same records the same way in this
process, and both times include connecting, creating the table and committing. The order of the
two alternates from round to round; the tables live in a schema of their own, dropped at the
end.

    python benchmarks/load_copy.py --dsn postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/load_copy.py --records 200000 --rounds 3

The DSN defaults to the variable ``PIPECTL_TEST_POSTGRES_DSN``. The figure to quote is the
ratio of the medians (pipectl / hand-written); the best of each is what the code can do on a
quiet machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

BATCH = 10_000
COLUMNS = {
    "id": "bigint",
    "name": "text",
    "value": "double precision",
    "ts": "timestamptz",
    "flag": "boolean",
}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def generate(n: int) -> Iterator[list[dict[str, Any]]]:
    """``n`` records, in batches of ``BATCH``."""
    for start in range(0, n, BATCH):
        yield [
            {
                "id": i,
                "name": f"name-{i % 997}",
                "value": i * 0.25,
                "ts": EPOCH + timedelta(seconds=i),
                "flag": i % 3 == 0,
            }
            for i in range(start, min(n, start + BATCH))
        ]


def hand_written(dsn: str, schema: str, table: str, n: int) -> None:
    """The baseline: one connection, one COPY, one commit."""
    target = sql.Identifier(schema, table)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint, name text, value double precision,"
                " ts timestamptz, flag boolean)"
            ).format(target)
        )
        copy_sql = sql.SQL("COPY {} (id, name, value, ts, flag) FROM STDIN").format(target)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for batch in generate(n):
                for r in batch:
                    copy.write_row((r["id"], r["name"], r["value"], r["ts"], r["flag"]))
        # leaving the block commits


def with_pipectl(dsn: str, schema: str, table: str, n: int) -> None:
    """The same load as a pipectl data step."""
    from pipectl import Pipeline
    from pipectl.plugins import get_plugin_manager

    from pipectl_postgres import plugin

    pm = get_plugin_manager(autoload=False, entry_points=())  # this source tree's plugin
    record = pm.add_plugin(plugin, "postgres")
    if record.status != "loaded":
        raise SystemExit(f"the postgres plugin did not load: {record.error}")
    pipe = Pipeline("load-copy", plugin_manager=pm)
    pipe.data_step(
        "load",
        batch_size=BATCH,
        extractor={"type": "python", "function": generate, "args": {"n": n}},
        outputs=[
            {
                "type": "postgres",
                "dsn": dsn,
                "schema": schema,
                "table": table,
                "columns": COLUMNS,
                "mode": "append",
            }
        ],
    )
    run = pipe.run_sync()
    if not run.ok:
        raise SystemExit(f"the pipectl load failed: {run.errors}")


def count(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    return row[0] if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per load")
    parser.add_argument("--rounds", type=int, default=3, help="loads of each variant")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PIPECTL_TEST_POSTGRES_DSN"),
        help="PostgreSQL DSN (default: $PIPECTL_TEST_POSTGRES_DSN)",
    )
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set PIPECTL_TEST_POSTGRES_DSN")
    n = args.records
    schema = f"pipectl_bench_{secrets.token_hex(4)}"
    variants = {"pipectl": with_pipectl, "hand-written": hand_written}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        server = admin.info.server_version
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            for round_number in range(args.rounds):
                order = list(variants) if round_number % 2 == 0 else list(variants)[::-1]
                for name in order:
                    table = f"{name.replace('-', '_')}_{round_number}"
                    started = time.perf_counter()
                    variants[name](args.dsn, schema, table, n)
                    seconds[name].append(time.perf_counter() - started)
                    loaded = count(args.dsn, schema, table)
                    if loaded != n:
                        raise SystemExit(f"{name} loaded {loaded} records, not {n}")
                    admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, table)))
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    print(
        f"{n:,} records x {args.rounds} rounds; Python {sys.version.split()[0]}, psycopg "
        f"{psycopg.__version__}, PostgreSQL {server // 10000}.{server % 10000}"
    )
    print(f"{'variant':<14}{'best rec/s':>14}{'median rec/s':>16}")
    rates = {}
    for name, times in seconds.items():
        rates[name] = n / statistics.median(times)
        print(f"{name:<14}{n / min(times):>14,.0f}{rates[name]:>16,.0f}")
    print(f"ratio pipectl / hand-written (medians): {rates['pipectl'] / rates['hand-written']:.2f}")


if __name__ == "__main__":
    main()

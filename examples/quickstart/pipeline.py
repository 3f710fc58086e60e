"""The quick start: read a CSV of orders, clean it, load it into SQLite and JSON Lines.

    pip install -e . && python examples/quickstart/pipeline.py

Everything is local: the output goes to examples/quickstart/output/ (a SQLite database and a
JSON Lines file), no server needed.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the transforms module lives beside this file

from transforms import clean_orders  # noqa: E402

from pipectl import Pipeline, RunStatus  # noqa: E402

pipe = Pipeline("quickstart", description="orders.csv -> clean -> SQLite + JSONL", max_concurrent=4)


@pipe.step("extract")
def extract(params):
    with open(params["source"], newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pipe.step("clean", depends_on=["extract"])
def clean(extract, ctx):
    orders, rejected, duplicates = clean_orders(extract)
    ctx.logger.info("cleaned", kept=len(orders), rejected=len(rejected), duplicates=duplicates)
    return {"orders": orders, "rejected": rejected, "duplicates": duplicates}


@pipe.step("load_sqlite", depends_on=["clean"], retries=2, retry_delay=0.5)
def load_sqlite(clean, params):
    """One transaction: the table is replaced whole, so a retry never duplicates a row."""
    path = Path(params["output_dir"]) / "orders.sqlite"
    orders = clean["orders"]
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS orders")
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, ordered_at TEXT, customer_email TEXT,"
            " city TEXT, sku TEXT, product TEXT, quantity INTEGER, unit_price REAL, amount REAL,"
            " status TEXT)"
        )
        db.executemany(
            "INSERT INTO orders VALUES (:order_id, :ordered_at, :customer_email, :city, :sku,"
            " :product, :quantity, :unit_price, :amount, :status)",
            orders,
        )
    return {"path": str(path), "rows": len(orders)}


@pipe.step("load_jsonl", depends_on=["clean"])
def load_jsonl(clean, params):
    """Written to a temporary file and renamed into place: readers never see half a file."""
    path = Path(params["output_dir"]) / "orders.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for order in clean["orders"]:
            f.write(json.dumps(order) + "\n")
    os.replace(tmp, path)
    return {"path": str(path), "rows": len(clean["orders"])}


@pipe.step("summary", depends_on=["clean", "load_sqlite", "load_jsonl"])
def summary(clean, load_sqlite, load_jsonl):
    return {"sqlite": load_sqlite, "jsonl": load_jsonl, "rejected": len(clean["rejected"]),
            "duplicates": clean["duplicates"]}


def main() -> int:
    output_dir = HERE / "output"
    output_dir.mkdir(exist_ok=True)
    params = {"source": str(HERE / "data" / "orders.csv"), "output_dir": str(output_dir)}
    print(pipe.visualize())
    run = pipe.run_sync(params=params)
    print()
    for name, result in run.steps.items():
        print(f"  {name:<12} {result.status.value:<9} {result.duration_ms:8.1f} ms  "
              f"attempts={result.attempts}" + (f"  {result.error}" if result.error else ""))
    if run.status is not RunStatus.SUCCESS:
        print(f"\nrun {run.run_id} {run.status.value}: " + "; ".join(run.errors))
        return 1
    out = run.steps["summary"].output
    print(f"\nrun {run.run_id} succeeded in {run.duration_ms:.0f} ms")
    print(f"  {out['sqlite']['rows']} orders loaded into SQLite: {out['sqlite']['path']} (table orders)")
    print(f"  {out['jsonl']['rows']} orders written as JSON Lines: {out['jsonl']['path']}")
    print(f"  {out['rejected']} rows rejected (unparseable quantity or price), "
          f"{out['duplicates']} duplicate lines dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

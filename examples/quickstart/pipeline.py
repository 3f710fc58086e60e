"""The quick start in Python: the same pipeline as pipeline.yaml, step for step.

    pip install -e . && python examples/quickstart/pipeline.py

A data step streams data/orders.csv through the transforms of transforms.py into SQLite and
JSON Lines, setting aside the rows it cannot parse; then revenue_by_city reads the table back.
Paths are relative to this file, so it runs the same from any folder; the data goes to
examples/quickstart/output/ (the same files `pipectl run examples/quickstart/pipeline.yaml`
writes), no server needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # transforms.py lives beside this file

from transforms import drop_repeats, parse_order, revenue_by_city  # noqa: E402

from pipectl import Pipeline  # noqa: E402

SOURCE = HERE / "data" / "orders.csv"
OUT = HERE / "output"
DATABASE = OUT / "orders.sqlite"

pipe = Pipeline(
    "quickstart",
    description="clean the orders of a CSV file and load them into SQLite and JSON Lines",
)
pipe.param("database", str(DATABASE))  # what revenue_by_city reads, as params["database"]

pipe.data_step(
    "load_orders",
    description="stream the CSV through the transforms into both outputs, in one transaction each",
    extractor={"type": "csv", "path": str(SOURCE)},
    transforms=[
        parse_order,  # raises for a row it cannot trust: set aside (on_bad_record below)
        drop_repeats,  # the first line of each order_id
    ],
    outputs=[
        {"type": "sqlite", "path": str(DATABASE), "table": "orders", "key": "order_id"},
        {"type": "jsonl", "path": str(OUT / "orders.jsonl")},
    ],
    on_bad_record="dead_letter",
    dead_letter=str(OUT / "rejected_orders.jsonl"),
    retries=2,
    retry_delay=0.5,
)

pipe.add_step(
    "revenue_by_city",
    revenue_by_city,
    depends_on=["load_orders"],
    description="paid revenue per city, from the table just loaded",
)


def main() -> int:
    run = pipe.run_sync()
    if not run.ok:
        print(f"run {run.run_id} of {run.pipeline_id!r}: {run.status}", file=sys.stderr)
        for error in run.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    loaded = run.steps["load_orders"].output  # a DataStepResult
    print(f"load_orders read {loaded.records_read} records")
    for report in loaded.outputs.values():
        print(f"load_orders -> {report.target}: {report.written} records")
    print(f"load_orders: {loaded.bad_records} bad records set aside in {loaded.dead_letter_path}")
    print("paid revenue by city:")
    for city, revenue in run.steps["revenue_by_city"].output.items():
        print(f"  {city:<14} {revenue:>9,.2f}")
    print(
        f"run {run.run_id} of {run.pipeline_id!r}: {run.status} in {run.duration_ms:.0f} ms, "
        f"{run.records_processed} records"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

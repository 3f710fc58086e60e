"""The README's quick start runs as a new user would run it, and its data lands where it says."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_loads_clean_orders_into_sqlite_and_jsonl(tmp_path):
    example = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", example,
                    ignore=shutil.ignore_patterns("output", "__pycache__"))

    proc = subprocess.run([sys.executable, str(example / "pipeline.py")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    out_dir = example / "output"
    assert f"orders loaded into SQLite: {out_dir / 'orders.sqlite'}" in proc.stdout
    assert f"orders written as JSON Lines: {out_dir / 'orders.jsonl'}" in proc.stdout
    with sqlite3.connect(out_dir / "orders.sqlite") as db:
        rows = db.execute("SELECT order_id, customer_email, city, amount FROM orders").fetchall()
    lines = [json.loads(line) for line in (out_dir / "orders.jsonl").read_text().splitlines()]
    # 121 CSV lines: 6 unparseable, 1 repeated order line
    assert len(rows) == len(lines) == 114
    assert {r[0] for r in rows} == {o["order_id"] for o in lines}
    assert all(r[1] == r[1].strip().lower() for r in rows)
    assert all(r[2] == r[2].title() for r in rows)
    assert "114 orders loaded" in proc.stdout and "6 rows rejected" in proc.stdout
    assert "Traceback" not in proc.stderr

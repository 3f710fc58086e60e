"""The examples under examples/ run as their comments say."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bronze_silver_gold_layers(tmp_path):
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("output", "__pycache__"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "run", "examples/layers/pipeline.yaml", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "examples" / "layers" / "output"
    assert proc.stdout.index("'bronze_to_silver': success") < proc.stdout.index(
        "'silver_to_gold': success"
    )
    silver = [json.loads(x) for x in (out / "silver_orders.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (out / "rejected_orders.jsonl").read_text().splitlines()]
    assert len(silver) == 115 and len(rejected) == 6  # 121 raw lines, 1 of them repeated
    # the raw file's path, relative to the pipeline file, is absolute once loaded
    source = tmp_path / "examples" / "quickstart" / "data" / "orders.csv"
    assert all(r["position"].startswith(f"csv {source} record ") for r in rejected)
    with sqlite3.connect(out / "gold.sqlite") as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (114,)  # upserted by key
        cities = {c for (c,) in db.execute("SELECT DISTINCT city FROM orders")}
    assert cities == {c.title() for c in cities}


@pytest.mark.slow
def test_resilience_example_retries_times_out_cleans_up_and_rolls_back(tmp_path):
    shutil.copytree(
        ROOT / "examples" / "resilience",
        tmp_path / "examples" / "resilience",
        ignore=shutil.ignore_patterns("output", "__pycache__"),
    )
    cli = [
        sys.executable,
        "-m",
        "pipectl.cli",
        "run",
        "examples/resilience/pipeline.yaml",
        "--no-progress",
    ]
    proc = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:6]}
    assert rows["fetch_rates"][1:2] + rows["fetch_rates"][4:5] == ["success", "3"]
    assert rows["slow_enrichment"][1] == "failed"  # allowed to fail: the run still succeeds
    assert "timed out after 0.5s" in proc.stdout
    assert rows["convert"][1] == rows["cleanup"][1] == "success"
    assert "of 'resilience': success" in proc.stdout
    marker = tmp_path / "examples" / "resilience" / "output" / "batch.reserved"
    assert marker.exists()

    proc = subprocess.run(
        [*cli, "-p", "flaky_attempts=5", "--rollback"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "fetch_rates failed on attempt 4 of 4: ConnectionError" in proc.stdout
    assert "at examples/resilience/steps.py:28, in fetch_rates" in proc.stdout
    assert "convert          skipped" in proc.stdout
    assert "cleanup          success" in proc.stdout
    assert "reserve_batch    rolled_back" in proc.stdout
    assert "of 'resilience': rolled_back" in proc.stdout
    assert not marker.exists()  # the rollback released the batch

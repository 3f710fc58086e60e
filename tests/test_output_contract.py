"""The built-in outputs pass the exactly-once output contract of ``pipectl.testing``."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from pipectl.components.files import CsvOutput, JsonlOutput
from pipectl.components.sqlite import SqliteOutput
from pipectl.testing import check_output_contract


def _rows(db, table: str) -> list[dict]:
    try:
        with sqlite3.connect(db) as conn:
            return [
                {"id": i, "name": n} for i, n in conn.execute(f'SELECT id, name FROM "{table}"')
            ]
    except sqlite3.OperationalError:  # no table yet
        return []


@pytest.mark.parametrize("key", [None, "id"], ids=["append", "keyed"])
def test_the_sqlite_output_keeps_the_contract(tmp_path, key):
    db = tmp_path / "contract.sqlite"
    check_output_contract(lambda: SqliteOutput(str(db), "t", key=key), lambda: _rows(db, "t"))


def test_the_jsonl_output_keeps_the_contract(tmp_path):
    path = tmp_path / "contract.jsonl"

    def read() -> list[dict]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    check_output_contract(lambda: JsonlOutput(str(path)), read)


def test_the_csv_output_keeps_the_contract(tmp_path):
    path = tmp_path / "contract.csv"

    def read() -> list[dict]:
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return [{"id": int(r["id"]), "name": r["name"]} for r in csv.DictReader(f)]

    check_output_contract(lambda: CsvOutput(str(path)), read)


def test_an_output_that_forgets_its_marker_fails_the_contract(tmp_path):
    """The check can fail: an output that commits its records but no marker is caught."""
    db = tmp_path / "contract.sqlite"

    class NoMarker(SqliteOutput):
        def loaded(self, load):
            return None

        def last_load(self, load):
            return None

    with pytest.raises(AssertionError, match="marker"):
        check_output_contract(lambda: NoMarker(str(db), "t"), lambda: _rows(db, "t"))

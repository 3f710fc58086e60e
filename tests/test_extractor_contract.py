"""The built-in extractors (csv, jsonl, python; sync and async) against the extractor contract
of ``pipectl.testing``, the suite plugin packages run against their own extractors."""

from __future__ import annotations

import json

import pytest

from pipectl.components.files import CsvExtractor, JsonlExtractor, PythonExtractor
from pipectl.testing import check_extractor_contract

RECORDS = [{"id": i, "name": f"n{i}"} for i in range(1, 8)]


def test_csv_extractor(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{r['id']},{r['name']}\n" for r in RECORDS))
    check_extractor_contract(
        lambda **options: CsvExtractor(str(path), types={"id": "int"}, **options), RECORDS
    )


def test_incremental_csv_extractor_reads_only_what_was_appended(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,name\n" + "".join(f"{r['id']},{r['name']}\n" for r in RECORDS))

    def append():
        with path.open("a") as f:
            f.write("8,n8\n9,n9\n")
        return [{"id": 8, "name": "n8"}, {"id": 9, "name": "n9"}]

    check_extractor_contract(
        lambda **options: CsvExtractor(
            str(path), types={"id": "int"}, incremental={"column": "id"}, **options
        ),
        RECORDS,
        append=append,
    )


def test_jsonl_extractor(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    check_extractor_contract(lambda **options: JsonlExtractor(str(path), **options), RECORDS)


def records_sync():
    yield from RECORDS


async def records_async():
    for record in RECORDS:
        yield record


@pytest.mark.parametrize("function", [records_sync, records_async])
def test_python_extractor(function):
    check_extractor_contract(lambda **options: PythonExtractor(function, **options), RECORDS)


def test_an_extractor_without_batch_size_and_a_broken_one():
    class Fixed:  # takes no options at all: batch_size is optional
        def describe(self):
            return "fixed"

        def batches(self, ctx):
            yield RECORDS[:4]
            yield RECORDS[4:]

    check_extractor_contract(Fixed, RECORDS)

    class Tuples(Fixed):
        def batches(self, ctx):
            yield tuple(RECORDS)

    with pytest.raises(AssertionError, match="a batch is a tuple, not a list"):
        check_extractor_contract(Tuples, RECORDS)

    class Oversized(Fixed):
        def __init__(self, batch_size=1000):
            pass

    with pytest.raises(AssertionError, match="batch_size=2 gave batches of"):
        check_extractor_contract(Oversized, RECORDS)

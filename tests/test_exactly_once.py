"""Exactly once, whatever instant the process dies: a real ``pipectl run`` subprocess is killed
(SIGKILL) at each named fault point of the data step and the tracker (``pipectl.faults``), then
``pipectl run FILE --resume latest`` (or, for an incremental extractor, a plain next run) must
leave every source record exactly once in each output."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipectl.testing import run_killed_at

pytestmark = pytest.mark.slow

N = 3000  # records, in batches of 250: 12 batches per output

PIPELINE = textwrap.dedent("""
    name: crash
    steps:
      - name: load
        extract: {type: csv, path: data/source.csv, types: {id: int}, batch_size: 250%s}
        load:
          - {name: file, type: jsonl, path: out/records.jsonl}
          - {name: appended, type: sqlite, path: out/db.sqlite, table: appended}
          - {name: keyed, type: sqlite, path: out/db.sqlite, table: keyed, key: id}
""")

#: every point, and the count that makes it the interesting one
POINTS = [
    "data.mid-write:20",  # after 20 batch writes, about half way
    "output.mid-commit:2",  # inside the second output's commit
    "data.between-commits:1",  # the first output committed, the second not yet
    "data.between-commits:2",  # two committed, the third not yet
    "data.after-commits",  # all committed, the step's result not yet recorded
    "tracker.after-row",  # the step's success row committed
]


def write_source(folder, ids) -> None:
    (folder / "data").mkdir(exist_ok=True)
    with open(folder / "data" / "source.csv", "a", encoding="utf-8") as f:
        if f.tell() == 0:
            f.write("id,name\n")
        for i in ids:
            f.write(f"{i},name-{i}\n")


def pipectl(folder, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ids_in(folder) -> dict[str, list[int]]:
    """The ids each output holds."""
    out = {}
    path = folder / "out" / "records.jsonl"
    out["file"] = (
        [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []
    )
    db = folder / "out" / "db.sqlite"
    for table in ("appended", "keyed"):
        try:
            with sqlite3.connect(db) as conn:
                out[table] = [r[0] for r in conn.execute(f"SELECT id FROM {table}")]
        except sqlite3.OperationalError:  # not created yet
            out[table] = []
    return out


def assert_exactly_once(held: dict[str, list[int]], expected: list[int]) -> None:
    for output, ids in held.items():
        missing = sorted(set(expected) - set(ids))
        twice = len(ids) - len(set(ids))
        assert not missing and not twice and sorted(ids) == expected, (
            f"output {output}: {len(missing)} missing (first {missing[:5]}), {twice} written "
            f"twice, {len(ids)} held of {len(expected)}"
        )


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_each_point_then_resumed_holds_every_record_once(tmp_path, point):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE % "")
    write_source(tmp_path, range(N))
    run_killed_at(point, "run", "pipeline.yaml", cwd=tmp_path)
    resumed = pipectl(tmp_path, "run", "pipeline.yaml", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_exactly_once(ids_in(tmp_path), list(range(N)))
    if point.startswith(("data.between-commits", "data.after-commits", "output.mid-commit")):
        # the outputs that had committed were recognised, not loaded again
        assert (
            "already committed by run" in resumed.stdout + resumed.stderr
            or point == "output.mid-commit:2"
        )
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("point", POINTS)
def test_an_incremental_extractor_run_again_after_a_crash_neither_skips_nor_repeats(
    tmp_path, point
):
    """Not a resume: the next run starts from the cursor committed with the records."""
    (tmp_path / "pipeline.yaml").write_text(PIPELINE % ", incremental: {column: id}")
    write_source(tmp_path, range(N))
    run_killed_at(point, "run", "pipeline.yaml", cwd=tmp_path)
    write_source(tmp_path, range(N, N + 500))  # the source grows meanwhile
    again = pipectl(tmp_path, "run", "pipeline.yaml")
    assert again.returncode == 0, again.stdout + again.stderr
    held = ids_in(tmp_path)
    held.pop("file")  # a jsonl file holds one load (it is replaced): checked below
    assert_exactly_once(held, list(range(N + 500)))
    write_source(tmp_path, range(N + 500, N + 700))
    third = pipectl(tmp_path, "run", "pipeline.yaml")
    assert third.returncode == 0, third.stdout + third.stderr
    held = ids_in(tmp_path)
    assert sorted(held.pop("file")) == list(range(N + 500, N + 700))  # the last load only
    assert_exactly_once(held, list(range(N + 700)))

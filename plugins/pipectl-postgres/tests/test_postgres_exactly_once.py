"""Exactly once with PostgreSQL in the mix: a real ``pipectl run`` is killed (SIGKILL) at each
named fault point (``pipectl.faults``), then ``pipectl run FILE --resume latest`` must leave
every source record exactly once in a JSONL file, an SQLite append table, an SQLite keyed
table, a PostgreSQL append table and a PostgreSQL keyed table, all outputs of one data step;
and an incremental extractor run again after the crash neither skips nor repeats a record."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from pipectl.testing import run_killed_at
from psycopg import sql

pytestmark = pytest.mark.slow

N = 2000  # records, in batches of 200: 10 batches per output

PIPELINE = textwrap.dedent("""
    name: crash
    steps:
      - name: load
        extract: {{type: csv, path: source.csv, types: {{id: int}}, batch_size: 200{incremental}}}
        load:
          - {{name: file, type: jsonl, path: out/records.jsonl}}
          - {{name: sqlite_appended, type: sqlite, path: out/db.sqlite, table: appended}}
          - {{name: sqlite_keyed, type: sqlite, path: out/db.sqlite, table: keyed, key: id}}
          - {{name: pg_appended, type: postgres, dsn_env: CRASH_DSN, schema: {schema},
             table: appended}}
          - {{name: pg_keyed, type: postgres, dsn_env: CRASH_DSN, schema: {schema},
             table: keyed, key: id}}
""")

POINTS = [
    "data.mid-write:25",  # half of the 50 batch writes done
    "output.mid-commit:4",  # inside the first PostgreSQL output's commit
    "data.between-commits:3",  # file and SQLite committed, PostgreSQL not yet
    "data.between-commits:4",  # one PostgreSQL output committed, the other not
    "data.after-commits",  # all committed, the step's result not recorded yet
    "tracker.after-row",  # the step's success row committed
]


@pytest.fixture
def project(tmp_path, schema, pg_dsn):
    """A folder with the source and the pipeline file; returns (folder, env, write_source)."""

    def write_source(ids) -> None:
        with open(tmp_path / "source.csv", "a", encoding="utf-8") as f:
            if f.tell() == 0:
                f.write("id,name\n")
            f.writelines(f"{i},name-{i}\n" for i in ids)

    def configure(incremental: bool) -> None:
        (tmp_path / "pipeline.yaml").write_text(
            PIPELINE.format(
                schema=schema, incremental=", incremental: {column: id}" if incremental else ""
            )
        )

    return tmp_path, {"CRASH_DSN": pg_dsn}, write_source, configure


def pipectl(folder, env, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def ids_in(folder, pg, schema) -> dict[str, list[int]]:
    path = folder / "out" / "records.jsonl"
    out = {
        "file": [json.loads(line)["id"] for line in path.read_text().splitlines()]
        if path.exists()
        else []
    }
    with sqlite3.connect(folder / "out" / "db.sqlite") as conn:
        for table in ("appended", "keyed"):
            try:
                out[f"sqlite {table}"] = [r[0] for r in conn.execute(f"SELECT id FROM {table}")]
            except sqlite3.OperationalError:
                out[f"sqlite {table}"] = []
    for table in ("appended", "keyed"):
        exists = pg.execute(
            "SELECT to_regclass(%s)", (sql.Identifier(schema, table).as_string(pg),)
        ).fetchone()[0]
        out[f"postgres {table}"] = (
            [
                r[0]
                for r in pg.execute(
                    sql.SQL("SELECT id FROM {}").format(sql.Identifier(schema, table))
                )
            ]
            if exists
            else []
        )
    return out


def assert_exactly_once(held: dict[str, list[int]], expected: list[int]) -> None:
    for output, ids in held.items():
        missing = len(set(expected) - set(ids))
        twice = len(ids) - len(set(ids))
        assert (missing, twice, sorted(ids)) == (0, 0, expected), (
            f"output {output}: {missing} missing, {twice} written twice, {len(ids)} held"
        )


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_each_point_then_resumed_every_output_holds_each_record_once(
    project, pg, schema, point
):
    folder, env, write_source, configure = project
    configure(incremental=False)
    write_source(range(N))
    run_killed_at(point, "run", "pipeline.yaml", cwd=folder, env=env)
    resumed = pipectl(folder, env, "run", "pipeline.yaml", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_exactly_once(ids_in(folder, pg, schema), list(range(N)))


@pytest.mark.parametrize("point", POINTS)
def test_an_incremental_run_after_a_crash_neither_skips_nor_repeats(project, pg, schema, point):
    folder, env, write_source, configure = project
    configure(incremental=True)
    write_source(range(N))
    run_killed_at(point, "run", "pipeline.yaml", cwd=folder, env=env)
    write_source(range(N, N + 300))
    again = pipectl(folder, env, "run", "pipeline.yaml")
    assert again.returncode == 0, again.stdout + again.stderr
    held = ids_in(folder, pg, schema)
    held.pop("file")  # a jsonl file holds its last load only (it is replaced)
    assert_exactly_once(held, list(range(N + 300)))

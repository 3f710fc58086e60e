"""The plugin through pipectl: data steps from Python and from a pipeline file run by the CLI, and
the installed distribution as ``pipectl plugins`` sees it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest
from pipectl import Pipeline, RunStatus, Transform
from psycopg import sql


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "qty"])
        writer.writerows(rows)
    return str(path)


def test_csv_upserted_twice_through_a_pipeline(
    tmp_path, plugin_manager, registries, pg_dsn, schema, rows
):
    first = write_csv(tmp_path / "first.csv", [(i, f"a{i}", i) for i in range(1, 1001)])
    second = write_csv(
        tmp_path / "second.csv",  # overlaps 501-1000; id 600 twice: last wins
        [(i, f"b{i}", -i) for i in range(501, 1501)] + [(600, "last", 0)],
    )

    def load(path):
        pipe = Pipeline("orders", plugin_manager=plugin_manager)
        pipe.data_step(
            "load",
            batch_size=300,
            extractor={"type": "csv", "path": path, "types": {"id": "int", "qty": "int"}},
            outputs=[
                {
                    "type": "postgres",
                    "dsn": pg_dsn,
                    "schema": schema,
                    "table": "orders",
                    "key": "id",
                }
            ],
        )
        return pipe.run_sync()

    for path, count in ((first, 1000), (second, 1001)):
        run = load(path)
        assert run.status is RunStatus.SUCCESS, run.errors
        assert run.steps["load"].output.outputs["postgres#0"].written == count
    expected = [(i, f"a{i}", i) for i in range(1, 501)] + [
        (i, f"b{i}", -i) for i in range(501, 1501)
    ]
    expected[599] = (600, "last", 0)
    assert rows("orders", "id") == expected


@pytest.mark.slow
def test_a_pipeline_file_run_by_the_cli_upserts(tmp_path, pg_dsn, schema, rows):
    pipeline = tmp_path / "orders.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""\
        name: orders
        params:
          source: {{type: str}}
        steps:
          - name: load
            extract: {{type: csv, path: "${{params.source}}", types: {{id: int, qty: int}}}}
            load:
              - type: postgres
                dsn_env: PIPECTL_TEST_POSTGRES_DSN
                schema: {schema}
                table: orders
                columns: {{id: bigint, name: text, qty: integer}}
                key: id
        """),
        encoding="utf-8",
    )
    write_csv(tmp_path / "first.csv", [(1, "a", 1), (2, "b", 2)])
    write_csv(tmp_path / "second.csv", [(2, "B", 20), (3, "C", 30), (3, "c", 31)])
    env = {**os.environ, "PIPECTL_TEST_POSTGRES_DSN": pg_dsn}
    for source in ("first.csv", "second.csv"):
        done = subprocess.run(
            [sys.executable, "-m", "pipectl.cli", "run", str(pipeline), "-p", f"source={source}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"postgres-{version('pipectl-postgres')}" in done.stderr.splitlines()[0]
    assert rows("orders", "id") == [(1, "a", 1), (2, "B", 20), (3, "c", 31)]


def test_a_failing_load_leaves_the_table_and_a_retry_writes_each_record_once(
    plugin_manager, registries, pg, pg_dsn, schema, rows
):
    pg.execute(sql.SQL("CREATE TABLE {} (id bigint, qty int)").format(sql.Identifier(schema, "t")))
    pg.execute(sql.SQL("INSERT INTO {} VALUES (-1, -1)").format(sql.Identifier(schema, "t")))
    output = {"type": "postgres", "dsn": pg_dsn, "schema": schema, "table": "t"}

    def batches(bad):
        for start in range(0, 3000, 1000):
            batch = [{"id": i, "qty": i} for i in range(start, start + 1000)]
            if bad and start == 2000:
                batch[500]["qty"] = "lots"  # the server rejects it in the third batch
            yield batch

    pipe = Pipeline("bad", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        batch_size=1000,
        outputs=[output],
        extractor={"type": "python", "function": batches, "args": {"bad": True}},
    )
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert 'invalid input syntax for type integer: "lots"' in run.steps["load"].error
    assert rows("t") == [(-1, -1)]  # exactly as it was

    attempts = []

    def blip_once(batch):
        if batch[0]["id"] == 1000:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("network blip")
        return batch

    pipe = Pipeline("retry", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        batch_size=1000,
        retries=1,
        retry_delay=0,
        retry_jitter=0,
        extractor={"type": "python", "function": batches, "args": {"bad": False}},
        outputs=[output],
        transforms=[Transform(blip_once, per="batch")],
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.steps["load"].attempts == 2
    assert rows("t", "id") == [(i, i) for i in range(-1, 3000)]


def test_postgres_to_postgres_incrementally_with_the_runs_state(
    plugin_manager, registries, pg, pg_dsn, schema, rows
):
    source = sql.Identifier(schema, "source")
    pg.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text, version bigint)").format(source)
    )
    pg.execute(
        sql.SQL("INSERT INTO {} SELECT g, 'v' || g, g FROM generate_series(1, 100) g").format(
            source
        )
    )
    pipe = Pipeline("sync", plugin_manager=plugin_manager)
    pipe.data_step(
        "copy",
        batch_size=30,
        extractor={
            "type": "postgres",
            "dsn": pg_dsn,
            "schema": schema,
            "table": "source",
            "incremental": {"column": "version"},
        },
        outputs=[
            {"type": "postgres", "dsn": pg_dsn, "schema": schema, "table": "target", "key": "id"}
        ],
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.records_processed == 100
    assert run.extractor_state == {"copy": {"cursor": 100}}

    pg.execute(sql.SQL("UPDATE {} SET v = 'new', version = 101 WHERE id = 5").format(source))
    pg.execute(sql.SQL("INSERT INTO {} VALUES (101, 'added', 102)").format(source))
    run = pipe.run_sync(extractor_state=run.extractor_state)
    assert run.ok, run.errors
    assert run.records_processed == 2  # only what changed
    assert run.extractor_state == {"copy": {"cursor": 102}}
    assert rows("target", "id") == rows("source", "id")


def test_pipectl_plugins_lists_the_installed_distribution():
    done = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    entry = {row["name"]: row for row in json.loads(done.stdout)}["postgres"]
    assert entry["status"] == "loaded", entry["error"]
    assert entry["distribution"] == "pipectl-postgres"
    assert entry["version"] == version("pipectl-postgres")
    assert entry["components"] == {
        "extractors": ["postgres"],
        "outputs": ["postgres"],
        "trackers": ["postgresql"],
    }


def test_the_plugin_module_does_not_import_psycopg():
    code = "import sys, pipectl_postgres.plugin; print('psycopg' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


def test_the_dsn_is_masked_in_a_failed_runs_error(plugin_manager, registries):
    pipe = Pipeline("unreachable", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor={"type": "python", "function": lambda: [{"a": 1}]},
        outputs=[
            {
                "type": "postgres",
                "table": "t",
                "dsn": "postgresql://loader:s3cr3t@127.0.0.1:1/sales",
            }
        ],
    )
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    error = run.steps["load"].error
    assert "ConnectionError: postgres output: cannot connect to loader@127.0.0.1:1/sales" in error
    assert all("s3cr3t" not in text for text in [error, *run.errors])

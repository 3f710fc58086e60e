"""The data plane end to end, on real files and a real SQLite database, and its memory bound."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipectl import Pipeline, RunStatus

N = 1_000_000


def _write_source(path, n):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "value", "ts"])
        for i in range(n):
            w.writerow(
                [
                    i,
                    f"name-{i % 997}",
                    f"{(i * 7919) % 100000 / 100:.2f}",
                    f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                ]
            )


def _expected(i):
    return {
        "id": i,
        "name": f"name-{i % 997}",
        "value": float(f"{(i * 7919) % 100000 / 100:.2f}"),
        "ts": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
    }


@pytest.mark.slow
def test_a_million_records_from_csv_into_jsonl_and_sqlite(tmp_path, plugin_manager):
    source = tmp_path / "records.csv"
    _write_source(source, N)
    jsonl = tmp_path / "out" / "records.jsonl"
    jsonl.parent.mkdir()
    db = tmp_path / "out" / "records.sqlite"
    pipe = Pipeline("million", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(source), "types": {"id": "int", "value": "float"}},
        outputs=[
            {"type": "jsonl", "path": str(jsonl)},
            {
                "type": "sqlite",
                "path": str(db),
                "table": "records",
                "columns": {"id": "INTEGER", "name": "TEXT", "value": "REAL", "ts": "TEXT"},
            },
        ],
    )

    run = pipe.run_sync()

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.records_processed == N
    report = run.steps["load"].output.outputs
    assert {r.written for r in report.values()} == {N}
    with open(jsonl, encoding="utf-8") as f:
        count = 0
        for i, line in enumerate(f):
            assert json.loads(line) == _expected(i)
            count += 1
    assert count == N
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (N,)
        rows = conn.execute("SELECT id, name, value, ts FROM records ORDER BY id")
        for i, (rid, name, value, ts) in enumerate(rows):
            assert {"id": rid, "name": name, "value": value, "ts": ts} == _expected(i)
    # no temporary file left: the outputs and the jsonl file's load marker only
    names = sorted(p.name for p in jsonl.parent.iterdir())
    marker = ".records.jsonl.pipectl-load"
    assert names in (
        [marker, "records.jsonl", "records.sqlite", "records.sqlite-shm", "records.sqlite-wal"],
        [marker, "records.jsonl", "records.sqlite"],
    )


def test_a_failing_output_leaves_nothing_half_written_and_the_other_committed(
    tmp_path, plugin_manager, register_plugin
):
    from pipectl import hookimpl

    class Flaky:
        """Wraps the real jsonl output and breaks after the first batches."""

        @hookimpl
        def pipectl_register_outputs(self, register):
            def make(**options):
                inner = plugin_manager.registries.outputs.create("jsonl", **options)

                class Breaks:
                    guarantee = inner.guarantee

                    def describe(self):
                        return "breaking " + inner.describe()

                    def open(self, ctx):
                        self.n = 0
                        inner.open(ctx)

                    def write(self, batch):
                        self.n += 1
                        if self.n == 3:
                            raise OSError("No space left on device")
                        inner.write(batch)

                    def commit(self):
                        inner.commit()

                    def abort(self):
                        inner.abort()

                    def close(self):
                        inner.close()

                return Breaks()

            register("breaking-jsonl", make)

    register_plugin(Flaky(), "flaky-outputs")
    source = tmp_path / "records.csv"
    _write_source(source, 5000)
    db = tmp_path / "good.sqlite"
    broken = tmp_path / "broken.jsonl"
    pipe = Pipeline("isolation", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        batch_size=500,
        extractor={"type": "csv", "path": str(source), "types": {"id": "int"}},
        outputs=[
            {"type": "breaking-jsonl", "path": str(broken), "name": "broken"},
            {"type": "sqlite", "path": str(db), "table": "t", "name": "db"},
        ],
    )

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert "output 'broken' failed: OSError: No space left on device" in run.errors[0]
    assert not broken.exists()  # nothing half-written in place
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".broken")] == []  # no temp
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone() == (5000, 5000)


def test_an_extraction_error_halfway_commits_nothing_in_files(tmp_path, plugin_manager):
    source = tmp_path / "records.csv"
    _write_source(source, 3000)
    with open(source, "a", encoding="utf-8") as f:
        f.write("3000,too,many,fields,here\n")  # a bad row after 3000 good ones
    db, out = tmp_path / "t.sqlite", tmp_path / "t.jsonl"
    pipe = Pipeline("bad-source", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        batch_size=1000,
        extractor={"type": "csv", "path": str(source)},
        outputs=[
            {"type": "jsonl", "path": str(out)},
            {"type": "sqlite", "path": str(db), "table": "t"},
        ],
    )

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert f"{source}:3002" in run.steps["load"].error
    assert not out.exists()
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            if tables:
                assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_bad_csv_rows_with_file_and_line_in_each_mode(tmp_path, plugin_manager):
    source = tmp_path / "orders.csv"
    source.write_text("id,amount\n1,10\n2,x\n3,30,extra\n4,40\n", encoding="utf-8")
    dead = tmp_path / "dead.jsonl"
    results = {}
    for mode in ("fail", "skip", "dead_letter"):
        out = tmp_path / f"{mode}.jsonl"
        pipe = Pipeline(f"bad-{mode}", plugin_manager=plugin_manager)
        pipe.data_step(
            "load",
            extractor={"type": "csv", "path": str(source), "types": {"id": "int", "amount": "int"}},
            outputs=[{"type": "jsonl", "path": str(out)}],
            on_bad_record=mode,
            dead_letter=str(dead),
        )
        results[mode] = (pipe.run_sync(), out)

    run, out = results["fail"]
    assert run.status is RunStatus.FAILED and f"{source}:3" in run.steps["load"].error
    assert not out.exists()
    run, out = results["skip"]
    assert run.ok and [json.loads(x)["id"] for x in out.read_text().splitlines()] == [1, 4]
    assert run.steps["load"].output.bad_records == 2
    run, out = results["dead_letter"]
    assert run.ok
    letters = [json.loads(x) for x in dead.read_text().splitlines()]
    assert [d["position"] for d in letters] == [f"{source}:3", f"{source}:4"]
    assert all(d["reason"] for d in letters)


def test_a_retried_file_step_leaves_each_record_once(tmp_path, plugin_manager):
    source = tmp_path / "records.csv"
    _write_source(source, 4000)
    db, out = tmp_path / "r.sqlite", tmp_path / "r.jsonl"
    attempts = {"n": 0}

    def break_first_attempt_halfway(batch):
        if batch and batch[0]["id"] == 2000:
            attempts["n"] += 1
            if attempts["n"] == 1:
                raise ConnectionError("network blip")
        return batch

    from pipectl import Transform

    pipe = Pipeline("retry-files", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        batch_size=1000,
        retries=1,
        retry_delay=0,
        retry_jitter=0,
        extractor={"type": "csv", "path": str(source), "types": {"id": "int"}},
        outputs=[
            {"type": "jsonl", "path": str(out)},
            {"type": "sqlite", "path": str(db), "table": "t"},
        ],
        transforms=[Transform(break_first_attempt_halfway, per="batch")],
    )

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert run.steps["load"].attempts == 2
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == list(range(4000))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone() == (4000, 4000)


MEMORY_CHILD = textwrap.dedent("""
    import resource, sys
    from pipectl import Pipeline
    from pipectl.plugins import get_plugin_manager

    n = int(sys.argv[1])

    class Generated:
        def describe(self):
            return "generated"
        def batches(self, ctx):
            batch = []
            for i in range(n):
                batch.append({"id": i, "name": "x" * 20, "value": i * 0.5})
                if len(batch) == 5000:
                    yield batch
                    batch = []
            if batch:
                yield batch

    class Sink:
        guarantee = "transactional"
        def __init__(self, name, slow):
            self.name, self.slow, self.count = name, slow, 0
        def describe(self):
            return self.name
        def open(self, ctx): pass
        def write(self, batch):
            if self.slow:
                sum(len(str(r)) for r in batch)  # a slower consumer
            self.count += len(batch)
        def commit(self): pass
        def abort(self): pass
        def close(self): pass

    pipe = Pipeline("memory", plugin_manager=get_plugin_manager(autoload=False))
    pipe.data_step("load", extractor=Generated(), outputs=[Sink("fast", False), Sink("slow", True)],
                   buffer_size=4)
    run = pipe.run_sync()
    assert run.ok, run.errors
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_records(tmp_path):
    script = tmp_path / "memory_child.py"
    script.write_text(MEMORY_CHILD)
    peaks = {}
    for n in (1_000_000, 5_000_000):
        proc = subprocess.run(
            [sys.executable, str(script), str(n)], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        peaks[n] = int(proc.stdout.strip().splitlines()[-1])
    growth = peaks[5_000_000] / peaks[1_000_000]
    assert growth < 1.2, peaks

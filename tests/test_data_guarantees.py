"""What a data step promises beyond the happy path: bad records bounded by
``max_bad_records``, a step that rejects everything never replaces good data, several sqlite
outputs on one file, and a commit that Ctrl-C cannot abandon."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipectl import Pipeline, RunStatus


class Numbers:
    """``n`` records ``{"id": i}`` in batches of ``batch``."""

    def __init__(self, n: int, batch: int = 10):
        self.n, self.batch = n, batch

    def describe(self) -> str:
        return "numbers"

    def batches(self, ctx):
        for start in range(0, self.n, self.batch):
            yield [{"id": i} for i in range(start, min(start + self.batch, self.n))]


def reject_multiples_of(k: int):
    def transform(record):
        if record["id"] % k == 0:
            raise ValueError(f"{record['id']} is a multiple of {k}")
        return record

    return transform


def table_ids(db, table: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute(f'SELECT id FROM "{table}" ORDER BY id')]


@pytest.mark.parametrize("limit, ok", [(10, True), (9, False), ("10%", True), ("9.9%", False)])
def test_max_bad_records_bounds_the_rejected_records(plugin_manager, tmp_path, limit, ok):
    db = tmp_path / "out.sqlite"
    pipe = Pipeline("bounded", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(100),  # ids 0..99: ten multiples of 10
        outputs=[{"type": "sqlite", "path": str(db), "table": "t"}],
        transforms=[reject_multiples_of(10)],
        on_bad_record="skip",
        max_bad_records=limit,
    )
    run = pipe.run_sync()
    if ok:
        assert run.status is RunStatus.SUCCESS, run.errors
        assert len(table_ids(db, "t")) == 90
    else:
        assert run.status is RunStatus.FAILED
        assert "max_bad_records" in run.steps["load"].error
        assert "nothing was committed" in run.steps["load"].error
        with sqlite3.connect(db) as conn:  # the table the attempt created went with it
            assert conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 't'"
            ).fetchone() == (0,)


def test_a_bad_max_bad_records_is_a_validation_error(plugin_manager, tmp_path):
    pipe = Pipeline("invalid", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(1),
        outputs=[{"type": "jsonl", "path": "x.jsonl"}],
        max_bad_records="lots",
    )
    with pytest.raises(Exception, match="max_bad_records must be a count"):
        pipe.validate()


TRANSFORMS_OK = "def clean(record):\n    return record\n"
TRANSFORMS_BROKEN = (
    "def clean(record):\n    raise ValueError('a bug in clean() rejects every record')\n"
)

PIPELINE = textwrap.dedent("""
    name: daily
    steps:
      - name: load
        extract: {type: csv, path: data.csv, types: {id: int}}
        transform: transforms:clean
        on_bad_record: dead_letter
        dead_letter: rejected.jsonl
        load:
          - {type: jsonl, path: out/daily.jsonl}
          - {type: sqlite, path: out/daily.sqlite, table: daily, mode: replace}
""")


@pytest.mark.slow
def test_a_transform_failing_every_record_leaves_yesterdays_file_and_table(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "data.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(50)))
    (tmp_path / "transforms.py").write_text(TRANSFORMS_OK)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipectl.cli", "run", "pipeline.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    before_file = (tmp_path / "out" / "daily.jsonl").read_bytes()
    assert len(before_file.splitlines()) == 50

    (tmp_path / "transforms.py").write_text(TRANSFORMS_BROKEN)
    (tmp_path / "data.csv").write_text("id,name\n" + "".join(f"{i},m{i}\n" for i in range(60)))
    second = run()
    assert second.returncode == 1, second.stdout + second.stderr
    assert "every record of the source was rejected" in second.stdout
    assert (tmp_path / "out" / "daily.jsonl").read_bytes() == before_file
    assert table_ids(tmp_path / "out" / "daily.sqlite", "daily") == list(range(50))
    letters = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert len(letters) == 60  # what was rejected is there to look at, with run and step
    assert {letter["step"] for letter in letters} == {"load"}
    assert letters[0]["position"] == f"csv {tmp_path / 'data.csv'} record 1"  # relative to the file


@pytest.mark.slow
def test_two_sqlite_outputs_of_one_step_on_one_file(plugin_manager, tmp_path):
    """The second output does not wait for the first's lock (it used to deadlock, then fail
    with "database is locked" after 30 s)."""
    db = tmp_path / "both.sqlite"
    pipe = Pipeline("shared-file", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(20_000, batch=1000),
        outputs=[
            {"type": "sqlite", "path": str(db), "table": "a", "timeout": 5},
            {"type": "sqlite", "path": str(db), "table": "b", "key": "id", "timeout": 5},
            {"type": "sqlite", "path": str(db), "table": "c", "mode": "replace", "timeout": 5},
        ],
    )
    for _ in range(2):
        run = pipe.run_sync()
        assert run.status is RunStatus.SUCCESS, run.errors
    assert len(table_ids(db, "a")) == 40_000  # appended twice
    assert table_ids(db, "b") == list(range(20_000))  # upserted
    assert table_ids(db, "c") == list(range(20_000))  # replaced


SLOW_COMMIT = textwrap.dedent("""
    import sys
    import time

    from pipectl import Pipeline
    from pipectl.components.files import JsonlOutput
    from pipectl.plugins import get_plugin_manager


    class SlowJsonl(JsonlOutput):
        def commit(self):
            print("committing", flush=True)
            time.sleep(2)  # Ctrl-C comes now
            super().commit()
            print("committed", flush=True)


    def numbers():
        for i in range(1000):
            yield {"id": i}


    pipe = Pipeline("slow", plugin_manager=get_plugin_manager(autoload=False))
    pipe.data_step("load", extractor={"type": "python", "function": numbers},
                   outputs=[SlowJsonl("out.jsonl")])
    run = pipe.run_sync(tracker="sqlite:///runs.db", resume=sys.argv[1] if len(sys.argv) > 1
                        else None)
    print("status", run.status.value, flush=True)
    report = run.steps["load"].output
    if report is not None:
        for name, output in report.outputs.items():
            print("output", output.status, output.note or "", flush=True)
""")


@pytest.mark.slow
def test_ctrl_c_during_a_slow_commit_waits_for_it_and_a_resume_does_not_load_again(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_COMMIT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == "committing"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "committed" in out.split()  # the commit under way was finished, not abandoned
    assert "status cancelled" in out
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1000

    resumed = subprocess.run(
        [sys.executable, str(script), "latest"],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "status success" in resumed.stdout
    assert "output skipped already committed by run" in resumed.stdout
    assert "committing" not in resumed.stdout  # nothing was written again
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1000


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_the_temp_files_of_dead_runs_only(plugin_manager, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".orders.jsonl.pipectl-{_dead_pid()}-0a1b2c.tmp"
    dead.write_bytes(b"x" * 1000)  # a killed run's half-written file
    alive = out / f".orders.jsonl.pipectl-{os.getppid()}-3d4e5f.tmp"  # a running process's
    alive.write_bytes(b"y")
    foreign = out / ".orders.jsonl.something.tmp"  # not pipectl's naming: not touched
    foreign.write_bytes(b"z")
    pipe = Pipeline("cleanup", plugin_manager=plugin_manager)
    pipe.data_step(
        "load", extractor=Numbers(5), outputs=[{"type": "jsonl", "path": str(out / "orders.jsonl")}]
    )
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    assert not dead.exists()
    assert alive.exists() and foreign.exists()
    assert len((out / "orders.jsonl").read_text().splitlines()) == 5


@pytest.mark.slow
def test_one_output_fails_the_other_commits_and_the_counts_say_so(tmp_path):
    """records_processed and the summary say what each output committed."""
    db = tmp_path / "out.sqlite"
    with sqlite3.connect(db) as conn:  # a table the records do not fit: that output fails
        conn.execute("CREATE TABLE t (other TEXT)")
    (tmp_path / "data.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(40)))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: half
        steps:
          - name: load
            extract: {type: csv, path: data.csv, types: {id: int}}
            load:
              - {type: jsonl, path: out.jsonl}
              - {type: sqlite, path: out.sqlite, table: t, columns: {id: INTEGER}}
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "run", "pipeline.yaml", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "load -> jsonl out.jsonl: 40 records" in proc.stdout
    assert "load -> sqlite out.sqlite table t: failed, nothing committed" in proc.stdout
    assert "failed in" in proc.stdout and ", 40 records" in proc.stdout  # the run's count
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 40
    shown = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "runs", "show", "latest", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    record = json.loads(shown.stdout)
    assert record["records_processed"] == 40
    (step,) = record["steps"]
    assert {n: (o["status"], o["written"]) for n, o in step["outputs"].items()} == {
        "jsonl#0": ("committed", 40),
        "sqlite#1": ("failed", 0),
    }


@pytest.mark.slow
def test_a_timeout_during_a_commit_lets_it_finish_and_the_retry_writes_nothing_twice(
    plugin_manager, tmp_path
):
    import threading
    import time

    from pipectl.components.sqlite import SqliteOutput

    commits = []

    class SlowCommit(SqliteOutput):
        def commit(self):
            commits.append(threading.get_ident())
            if len(commits) == 1:
                time.sleep(3.0)  # the step's timeout (1.5 s) fires while this commits
            super().commit()

    db = tmp_path / "out.sqlite"
    pipe = Pipeline("timeout", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(100),
        outputs=[SlowCommit(str(db), "t")],
        timeout=1.5,
        retries=1,
        retry_delay=0,
    )
    run = pipe.run_sync(tracker="none")
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["load"].attempts == 2
    (report,) = run.steps["load"].output.outputs.values()  # the retry found it committed
    assert report.status == "skipped" and "already committed by run" in report.note
    assert table_ids(db, "t") == list(range(100))  # the first commit finished; once
    assert len(commits) == 1

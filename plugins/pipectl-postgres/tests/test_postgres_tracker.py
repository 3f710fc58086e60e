"""The ``postgresql`` run tracker through pipectl: runs from Python and from ``pipectl run``
processes, read back by ``pipectl runs``, resumed, written by several processes at once, and
written through serialization failures, deadlocks and lost connections."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from pipectl import Pipeline, RunStatus
from pipectl.tracking import MIGRATIONS, TrackerError, open_tracker
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipectl_postgres.tracker import DEFAULT_SCHEMA, PostgresTracker, parse_url

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def url_of(dsn: str, schema: str | None, **params: str) -> str:
    """A tracker URL on the test server: the DSN as a URL, with ``schema`` and ``params``."""
    if "://" not in dsn:  # a key/value DSN: the same settings as a URL
        p = conninfo_to_dict(dsn)
        auth = quote(p.pop("user", ""), safe="")
        if "password" in p:
            auth += ":" + quote(p.pop("password"), safe="")
        host = p.pop("host", "")
        port = p.pop("port", "")
        dbname = quote(p.pop("dbname", ""), safe="")
        dsn = (
            f"postgresql://{auth + '@' if auth else ''}{host}{':' + port if port else ''}"
            f"/{dbname}"
            + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in p.items()) if p else "")
        )
    extra = ({"schema": schema} if schema else {}) | params
    if not extra:
        return dsn
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in extra.items())
    return dsn + ("&" if "?" in dsn else "?") + query


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def url(pg_dsn: str, schema: str) -> str:
    """The tracker URL of the test's schema."""
    return url_of(pg_dsn, schema)


@pytest.fixture
def new_schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema name nobody created yet; whatever creates it, it is dropped after the test."""
    name = f"pipectl_test_{secrets.token_hex(6)}"
    yield name
    pg.execute("SET lock_timeout = '10s'")
    pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def tracker(url: str) -> Iterator[PostgresTracker]:
    t = PostgresTracker(url)
    t.migrate()
    yield t
    t.close()


STEPS = """
    ATTEMPTS = {"flaky": 0}


    def extract(params):
        return [{"id": i, "amount": i * 1.5} for i in range(params["n"])]


    def flaky(extract):
        ATTEMPTS["flaky"] += 1
        if ATTEMPTS["flaky"] < 3:
            raise ConnectionError(f"warehouse busy (attempt {ATTEMPTS['flaky']})")
        return {"rows": len(extract), "total": sum(r["amount"] for r in extract)}


    def broken(flaky):
        raise ValueError(f"cannot publish {flaky['rows']} rows: schema mismatch")


    def after(broken):
        return "never"
"""

PIPELINE = """
    name: tracked
    description: a run with retries and a failure
    params:
      n: {type: int, default: 30}
      token: {type: str, secret: true, default: "hunter2-secret"}
    steps:
      - {name: extract, run: "MODULE:extract"}
      - {name: flaky, run: "MODULE:flaky", depends_on: [extract], retries: 3,
         retry_delay: 0.01, retry_on: [ConnectionError]}
      - {name: broken, run: "MODULE:broken", depends_on: [flaky]}
      - {name: after, run: "MODULE:after", depends_on: [broken]}
"""


def tracked_project(root: Path, module: str) -> Path:
    write(root / f"{module}.py", STEPS)
    return write(root / "pipeline.yaml", PIPELINE.replace("MODULE", module))


def check_record(record: dict[str, Any]) -> None:
    """What a run of PIPELINE left in the tracker."""
    assert record["pipeline"] == "tracked" and record["status"] == "failed"
    assert record["description"] == "a run with retries and a failure"
    assert record["params"] == {"n": 30, "token": "***"}
    assert record["started_at"] < record["finished_at"] and record["duration_ms"] > 0
    assert "schema mismatch" in record["error"]
    assert record["graph"] == {
        "extract": [],
        "flaky": ["extract"],
        "broken": ["flaky"],
        "after": ["broken"],
    }
    assert record["host"] and record["pid"] > 0 and record["executor"] == "local"
    steps = {s["step_id"]: s for s in record["steps"]}
    assert list(steps) == ["extract", "flaky", "broken", "after"]
    flaky = steps["flaky"]
    assert flaky["status"] == "success" and flaky["step_type"] == "python"
    assert flaky["attempts"] == 3 and flaky["retry_count"] == 2
    assert [a["error"] for a in flaky["attempt_history"]] == [
        "ConnectionError: warehouse busy (attempt 1)",
        "ConnectionError: warehouse busy (attempt 2)",
        None,
    ]
    assert [a["attempt"] for a in flaky["attempt_history"]] == [1, 2, 3]
    assert flaky["started_at"] <= flaky["completed_at"] and flaky["execution_time_ms"] > 0
    assert flaky["output_summary"] == {"rows": 30, "total": 652.5}
    assert flaky["input_summary"]["extract"]["length"] == 30
    broken = steps["broken"]
    assert broken["status"] == "failed"
    assert broken["error_message"] == "ValueError: cannot publish 30 rows: schema mismatch"
    assert "raise ValueError" in broken["traceback"] and ".py" in broken["traceback"]
    assert steps["after"]["status"] == "skipped"
    assert steps["after"]["reason"] == "upstream step 'broken' failed"


# -- the URL ------------------------------------------------------------------------------------


def test_the_url_the_schema_and_the_password():
    dsn, schema, shown, password = parse_url(
        "postgresql+psycopg://loader:p%40ss@db.example:5433/runs?sslmode=require&schema=ops"
        "&application_name=etl"
    )
    assert (
        dsn == "postgresql://loader:p%40ss@db.example:5433/runs?sslmode=require"
        "&application_name=etl"
    )  # libpq never sees schema
    assert schema == "ops" and password == {"p%40ss", "p@ss"}
    assert (
        shown == "postgresql://loader@db.example:5433/runs?sslmode=require"
        "&application_name=etl&schema=ops"
    )
    assert parse_url("postgres://h/db")[1] == DEFAULT_SCHEMA == "pipectl"
    assert parse_url("postgresql:///db?host=/run/postgresql")[:3] == (  # a local socket
        "postgresql:///db?host=/run/postgresql",
        "pipectl",
        "postgresql:///db?host=/run/postgresql&schema=pipectl",
    )
    assert parse_url("postgresql://u:pw@h1:5432,h2:5433/db?schema=s")[:3] == (
        "postgresql://u:pw@h1:5432,h2:5433/db",
        "s",
        "postgresql://u@h1:5432,h2:5433/db?schema=s",
    )
    assert parse_url("postgresql://u@h/db?password=pw&schema=a%20b")[1:3] == (
        "a b",
        "postgresql://u@h/db?schema=a b",
    )  # a password parameter is not shown either
    tracker = PostgresTracker("postgresql://u:hunter2@h:1/db?schema=s")
    assert tracker.display == tracker.url == "postgresql://u@h:1/db?schema=s"
    assert (
        tracker.results is not None
        and tracker.results.root == Path(os.environ["PIPECTL_HOME"]) / "results"
    )
    for bad, message in (
        ("postgresql://u:hunter2@h/db?schema=" + "x" * 64, "longer than"),
        ("postgresql://u:hunter2@h/db?schema=", "non-empty"),
        ("postgresql://u:hunter2@h/db?schema=a&schema=b", "more than once"),
        ("postgresql://u:hunter2@h/db?bogus=1", 'parameter: "bogus"'),
        ("mysql://u:hunter2@h/db", "is not postgresql"),
    ):
        with pytest.raises(TrackerError, match=message) as caught:
            PostgresTracker(bad)
        assert "hunter2" not in str(caught.value)


# -- a run from Python ---------------------------------------------------------------------------


def test_a_run_with_retries_and_a_failure_from_python(
    tmp_path, monkeypatch, plugin_manager, registries, url, pg, schema
):
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tracked_project(tmp_path, "pg_tracked_steps")
    pipe = Pipeline.from_yaml(path, plugin_manager=plugin_manager)
    run = pipe.run_sync(tracker=url)
    assert run.status is RunStatus.FAILED

    tracker = open_tracker(url, registries)  # what --tracker URL opens
    assert isinstance(tracker, PostgresTracker)
    try:
        record = tracker.get_run(run.run_id)
        check_record(record)
        assert record["run_id"] == run.run_id
        assert tracker.resolve("latest", pipeline="tracked") == run.run_id
        assert tracker.resolve(run.run_id[:10]) == run.run_id
        assert [r["execution_id"] for r in tracker.list_runs()] == [run.run_id]
    finally:
        tracker.close()
    # the tables are in the URL's schema, nowhere else
    tables = pg.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE "
        "table_name IN ('pipeline_executions', 'step_executions', "
        "'extractor_state', 'pipectl_schema') AND table_schema = %s "
        "ORDER BY table_name",
        (schema,),
    ).fetchall()
    assert [t[1] for t in tables] == [
        "extractor_state",
        "pipectl_schema",
        "pipeline_executions",
        "step_executions",
    ]
    stored = pg.execute(
        sql.SQL("SELECT parameters FROM {}").format(sql.Identifier(schema, "pipeline_executions"))
    ).fetchone()
    assert stored is not None and "hunter2" not in stored[0]


def test_the_extractor_state_is_kept_between_runs(plugin_manager, registries, url):
    cursor_seen = []

    class Since:
        def __init__(self, source):
            self.source, self.cursor = source, 0

        def describe(self):
            return "since"

        @property
        def state(self):
            return {"cursor": self.cursor}

        def set_state(self, state):
            cursor_seen.append(state)
            self.cursor = state["cursor"]

        def batches(self, ctx):
            rows = [r for r in self.source if r["id"] > self.cursor]
            if rows:
                self.cursor = rows[-1]["id"]
                yield rows

    class Keep:
        guarantee = "transactional"

        def __init__(self):
            self.rows = []

        def describe(self):
            return "keep"

        def open(self, ctx):
            self.pending = []

        def write(self, batch):
            self.pending.extend(batch)

        def commit(self):
            self.rows.extend(self.pending)

        def abort(self):
            self.pending = []

        def close(self):
            pass

    source = [{"id": i} for i in range(1, 6)]
    loaded = []
    for more in ([], [{"id": 6}, {"id": 7}]):
        source.extend(more)
        out = Keep()
        pipe = Pipeline(
            "incremental", extractor=Since(source), outputs=[out], plugin_manager=plugin_manager
        )  # a new object: state from the tracker
        assert pipe.run_sync(tracker=url).ok
        loaded.append([r["id"] for r in out.rows])
    assert loaded == [[1, 2, 3, 4, 5], [6, 7]]
    assert cursor_seen == [{"cursor": 5}]


def test_the_schema_is_versioned_and_migrations_run_once(url, pg, schema, monkeypatch):
    from pipectl.tracking import schema as tracking

    now = len(tracking.MIGRATIONS)
    assert PostgresTracker(url).migrate() == now
    assert PostgresTracker(url).migrate() == now
    version = sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, "pipectl_schema"))
    assert pg.execute(version).fetchall() == [(now,)]
    monkeypatch.setattr(
        tracking,
        "MIGRATIONS",
        [*tracking.MIGRATIONS, ["ALTER TABLE pipeline_executions ADD COLUMN owner TEXT"]],
    )
    assert PostgresTracker(url).migrate() == now + 1
    assert pg.execute(version).fetchall() == [(now + 1,)]
    assert pg.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND "
        "table_name = 'pipeline_executions' AND column_name = 'owner'",
        (schema,),
    ).fetchone() == (1,)
    monkeypatch.setattr(tracking, "MIGRATIONS", tracking.MIGRATIONS[:1])
    with pytest.raises(TrackerError, match="newer than this pipectl knows"):
        PostgresTracker(url).migrate()


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.slow
def test_pipectl_run_then_runs_list_and_show(tmp_path, url):
    tracked_project(tmp_path, "pg_cli_steps")
    proc = cli("run", "pipeline.yaml", "--tracker", url, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "resume it with: pipectl run pipeline.yaml --resume" in proc.stdout

    shown = cli("runs", "show", "latest", "--json", "--tracker", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    check_record(record)

    listed = cli("runs", "list", "--json", "--tracker", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["execution_id"] == record["run_id"] and row["status"] == "failed"
    assert row["pipeline_name"] == "tracked" and row["execution_time_ms"] > 0
    table = cli("runs", "list", "--status", "failed", "--tracker", url, cwd=tmp_path).stdout
    assert record["run_id"][:12] in table and "tracked" in table
    by_prefix = cli("runs", "show", record["run_id"][:8], "--tracker", url, cwd=tmp_path)
    assert by_prefix.returncode == 0 and "warehouse" not in by_prefix.stderr
    assert f"run {record['run_id']} of 'tracked': failed" in by_prefix.stdout
    missing = cli("runs", "show", "abc123", "--tracker", url, cwd=tmp_path)
    assert missing.returncode == 2 and "no run 'abc123'" in missing.stderr


RESUME_STEPS = """
    from pathlib import Path

    def count(name):
        path = Path(f"ran-{name}.txt")
        path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))

    def a():
        count("a")
        return [1, 2, 3]

    def b(a):
        count("b")
        return sum(a)

    def c(b):
        count("c")
        if not Path("fixed").exists():
            raise RuntimeError("c is broken today")
        return b * 10
"""


@pytest.mark.slow
def test_resume_through_the_postgres_tracker(tmp_path, url):
    write(tmp_path / "pg_resume_steps.py", RESUME_STEPS)
    write(
        tmp_path / "pipeline.yaml",
        """
        name: resumable
        steps:
          - {name: a, run: "pg_resume_steps:a"}
          - {name: b, run: "pg_resume_steps:b", depends_on: [a]}
          - {name: c, run: "pg_resume_steps:c", depends_on: [b]}
    """,
    )

    def ran() -> dict[str, int]:
        return {n: int((tmp_path / f"ran-{n}.txt").read_text()) for n in "abc"}

    first = cli("run", "pipeline.yaml", "--tracker", url, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert ran() == {"a": 1, "b": 1, "c": 1}
    (tmp_path / "fixed").write_text("")
    again = cli("run", "pipeline.yaml", "--tracker", url, "--resume", "latest", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ran() == {"a": 1, "b": 1, "c": 2}  # a and b kept their outputs

    record = json.loads(
        cli("runs", "show", "latest", "--json", "--tracker", url, cwd=tmp_path).stdout
    )
    steps = {s["step_id"]: s for s in record["steps"]}
    assert record["status"] == "success" and record["resumed_from"]
    assert steps["c"]["output_summary"] == 60
    assert steps["a"]["attempts"] == 0 and steps["c"]["attempts"] == 1
    # the outputs came from this machine's result store
    stored = Path(os.environ["PIPECTL_HOME"]) / "results" / record["resumed_from"]
    assert len(list(stored.glob("*.pickle"))) == 2  # a and b


# -- several processes at once ------------------------------------------------------------------


@pytest.mark.slow
def test_six_pipectl_run_processes_on_an_empty_schema(tmp_path, pg, pg_dsn, new_schema):
    url = url_of(pg_dsn, new_schema)
    write(
        tmp_path / "pg_many_steps.py",
        """
        def step(params):
            return params["who"]
    """,
    )
    steps = "\n".join(
        f"  - {{name: s{i}, run: 'pg_many_steps:step'"
        + (f", depends_on: [s{i - 1}]" if i % 5 else "")
        + "}"
        for i in range(30)
    )
    (tmp_path / "pipeline.yaml").write_text(
        "name: many\nparams:\n  who: {type: int, default: 0}\nsteps:\n" + steps + "\n"
    )
    # every process creates the schema and the tables if it finds them missing: they race
    procs = [
        subprocess.Popen(
            [
                *PIPECTL,
                "run",
                "pipeline.yaml",
                "-p",
                f"who={k}",
                "--tracker",
                url,
                "--no-progress",
                "-q",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(6)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err

    def table(name: str) -> sql.Identifier:
        return sql.Identifier(new_schema, name)

    assert pg.execute(
        sql.SQL("SELECT version FROM {}").format(table("pipectl_schema"))
    ).fetchall() == [(len(MIGRATIONS),)]
    runs = pg.execute(
        sql.SQL("SELECT execution_id, status, parameters FROM {}").format(
            table("pipeline_executions")
        )
    ).fetchall()
    assert len(runs) == 6 and {r[1] for r in runs} == {"success"}
    assert sorted(json.loads(r[2])["who"] for r in runs) == list(range(6))
    counts = pg.execute(
        sql.SQL(
            "SELECT execution_id, count(*), count(*) FILTER (WHERE status = 'success'), "
            "count(DISTINCT step_order) FROM {} GROUP BY execution_id"
        ).format(table("step_executions"))
    ).fetchall()
    assert len(counts) == 6 and all(n == ok == orders == 30 for _, n, ok, orders in counts)
    listed = json.loads(cli("runs", "list", "--json", "--tracker", url, cwd=tmp_path).stdout)
    assert len(listed) == 6


@pytest.mark.slow
def test_runs_list_with_thousands_of_runs_and_run_id_prefixes(tmp_path, pg, tracker, url, schema):
    runs = sql.Identifier(schema, "pipeline_executions")
    pg.execute(
        sql.SQL(
            "INSERT INTO {} (execution_id, pipeline_name, status, started_at, completed_at, "
            "execution_time_ms, parameters, records_processed, host, pid) "
            "SELECT md5(g::text), 'bulk' || (g % 3), CASE WHEN g % 10 = 0 THEN 'failed' "
            "ELSE 'success' END, to_char(timestamptz '2026-01-01 00:00:00+00' + g * interval "
            "'1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), "
            "NULL, g, '{{}}', g, 'elsewhere',"
            " 1 FROM generate_series(1, 5000) g"
        ).format(runs)
    )
    # LIKE's "_" matches any character unless escaped: ab_cd is a prefix of one run, not two
    pg.execute(
        sql.SQL(
            "INSERT INTO {} (execution_id, pipeline_name, status, started_at) "
            "VALUES ('ab_cd-1', 'ids', 'success', '2025-01-01T00:00:00+00:00'), "
            "('abxcd-2', 'ids', 'success', '2025-01-01T00:00:01+00:00')"
        ).format(runs)
    )
    started = time.perf_counter()
    listed = cli("runs", "list", "--json", "--tracker", url, cwd=tmp_path)
    took = time.perf_counter() - started
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["records_processed"] for r in rows] == list(range(5000, 4980, -1))  # newest first
    failed = json.loads(
        cli(
            "runs",
            "list",
            "--json",
            "--pipeline",
            "bulk1",
            "--status",
            "failed",
            "--limit",
            "5",
            "--tracker",
            url,
            cwd=tmp_path,
        ).stdout
    )
    assert [r["records_processed"] for r in failed] == [4990, 4960, 4930, 4900, 4870]
    print(f"pipectl runs list over 5,002 runs: {took:.2f} s (with the process start)")

    assert tracker.resolve("ab_cd") == "ab_cd-1"
    assert tracker.resolve("abx") == "abxcd-2"
    with pytest.raises(TrackerError, match="ambiguous"):
        tracker.resolve("ab")
    shown = cli("runs", "show", "ab_cd", "--json", "--tracker", url, cwd=tmp_path)
    assert json.loads(shown.stdout)["run_id"] == "ab_cd-1"


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unreachable_servers_and_bad_urls_are_clear_errors(tmp_path, pg_dsn):
    write(tmp_path / "pg_tiny_steps.py", "def a():\n    return 1\n")
    write(
        tmp_path / "pipeline.yaml",
        """
        name: tiny
        steps:
          - {name: a, run: "pg_tiny_steps:a"}
    """,
    )
    refused = "postgresql://ops:hunter2-pw@127.0.0.1:1/runsdb?schema=ops"
    no_db = url_of(make_conninfo(pg_dsn, dbname="no_such_db"), "ops")
    for args, expected in (
        (("runs", "list", "--tracker", refused), ["127.0.0.1:1/runsdb", "Connection refused"]),
        (("run", "pipeline.yaml", "--tracker", refused), ["127.0.0.1:1/runsdb"]),
        (("runs", "show", "latest", "--tracker", no_db), ["no_such_db", "does not exist"]),
        (
            ("runs", "list", "--tracker", refused.replace("schema", "shema")),
            ['invalid URI query parameter: "shema"'],
        ),
    ):
        proc = cli(*args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "pipectl: error: --tracker:" in proc.stderr
        for text in expected:
            assert text in proc.stderr, proc.stderr
        assert "hunter2" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


# -- what is worth retrying --------------------------------------------------------------------


@pytest.mark.slow
def test_writes_survive_serialization_failures_deadlocks_and_lost_connections(
    plugin_manager, registries, tracker, pg, schema
):
    # the server fails the tracker's 2nd, 4th and 6th step row: 40001, 40P01, then it ends the
    # writer's session in the middle of the transaction
    pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    pg.execute("CREATE SEQUENCE step_rows")
    pg.execute("""CREATE FUNCTION fail_some() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          CASE nextval('step_rows')
            WHEN 2 THEN RAISE EXCEPTION 'simulated' USING ERRCODE = 'serialization_failure';
            WHEN 4 THEN RAISE EXCEPTION 'simulated' USING ERRCODE = 'deadlock_detected';
            WHEN 6 THEN PERFORM pg_terminate_backend(pg_backend_pid());
            ELSE NULL;
          END CASE;
          RETURN NEW;
        END $$""")
    pg.execute(
        "CREATE TRIGGER fail_some BEFORE INSERT ON step_executions FOR EACH ROW "
        "EXECUTE FUNCTION fail_some()"
    )

    attempts = []

    def flaky():
        attempts.append(1)
        time.sleep(0.05)  # its start and its end in separate transactions
        if len(attempts) < 2:
            raise ConnectionError("busy")
        return "ok"

    def b(flaky):
        time.sleep(0.05)

    def c(b):
        time.sleep(0.05)

    def d(c):
        time.sleep(0.05)

    pipe = Pipeline("resilient", plugin_manager=plugin_manager)
    pipe.add_step("flaky", flaky, retries=1, retry_delay=0, retry_on=[ConnectionError])
    pipe.add_step("b", b, depends_on=["flaky"])
    pipe.add_step("c", c, depends_on=["b"])
    pipe.add_step("d", d, depends_on=["c"])
    run = pipe.run_sync(tracker=tracker)
    assert run.ok, run.errors
    assert pg.execute("SELECT last_value FROM step_rows").fetchone()[0] >= 8  # it did fail

    record = tracker.get_run(run.run_id)
    steps = {s["step_id"]: s for s in record["steps"]}
    assert record["status"] == "success" and list(steps) == ["flaky", "b", "c", "d"]
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(steps, "success")
    assert [a["error"] for a in steps["flaky"]["attempt_history"]] == [
        "ConnectionError: busy",
        None,
    ]  # nothing lost, nothing twice
    assert all(len(steps[n]["attempt_history"]) == 1 for n in "bcd")
    orders = pg.execute(
        sql.SQL("SELECT step_order FROM {} ORDER BY step_order").format(
            sql.Identifier(schema, "step_executions")
        )
    ).fetchall()
    assert orders == [(0,), (1,), (2,), (3,)]


def test_a_tracker_reconnects_after_its_sessions_were_ended(
    plugin_manager, registries, pg, pg_dsn, schema
):
    name = f"pipectl-test-{secrets.token_hex(4)}"
    tracker = PostgresTracker(url_of(pg_dsn, schema, application_name=name))
    tracker.migrate()
    try:
        pipe = Pipeline("twice", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1)
        first = pipe.run_sync(tracker=tracker)
        assert tracker.get_run(first.run_id)["status"] == "success"  # opens the reader
        ended = pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
        assert len(ended) == 2  # the writer and the reader
        second = pipe.run_sync(tracker=tracker)
        assert [r["execution_id"] for r in tracker.list_runs()] == [second.run_id, first.run_id]
        assert tracker.get_run(second.run_id)["steps"][0]["status"] == "success"
    finally:
        tracker.close()

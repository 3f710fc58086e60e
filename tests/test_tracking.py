"""Run tracking, resume and rollback, through the CLI and the Python API, on real SQLite files
and real processes (one of them killed with SIGKILL)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipectl import Pipeline
from pipectl.model import RunStatus, StepStatus
from pipectl.tracking import ResumeRefused, SqliteTracker

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def tracker(home: Path) -> SqliteTracker:
    t = SqliteTracker(f"sqlite:///{home / 'pipectl.db'}")
    t.migrate()
    return t


# -- what a run record holds ------------------------------------------------------------------


STEPS = """
    import os
    from pathlib import Path

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


@pytest.fixture
def project(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PIPECTL_HOME", str(home))
    write(tmp_path / "track_steps.py", STEPS)
    write(
        tmp_path / "pipeline.yaml",
        """
        name: tracked
        description: a run with retries and a failure
        params:
          n: {type: int, default: 30}
          token: {type: str, secret: true, default: "hunter2-secret"}
        steps:
          - {name: extract, run: "track_steps:extract"}
          - {name: flaky, run: "track_steps:flaky", depends_on: [extract], retries: 3,
             retry_delay: 0.01, retry_on: [ConnectionError]}
          - {name: broken, run: "track_steps:broken", depends_on: [flaky]}
          - {name: after, run: "track_steps:after", depends_on: [broken]}
          - name: load
            depends_on: [extract]
            extract: {type: csv, path: data.csv}
            load: [{type: jsonl, path: out/a.jsonl}, {type: jsonl, path: out/b.jsonl}]
    """,
    )
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name"])
        w.writerows([i, f"n{i}"] for i in range(25))
    return tmp_path, home


@pytest.mark.slow
def test_runs_show_json_of_a_run_with_retries_and_a_failure(project):
    root, home = project
    proc = cli("run", "pipeline.yaml", cwd=root)
    assert proc.returncode == 1, proc.stderr
    assert "resume it with: pipectl run pipeline.yaml --resume" in proc.stdout

    shown = cli("runs", "show", "latest", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["pipeline"] == "tracked" and record["status"] == "failed"
    assert record["params"] == {"n": 30, "token": "***"}
    assert record["started_at"] < record["finished_at"] and record["duration_ms"] > 0
    assert record["records_processed"] == 25
    assert "schema mismatch" in record["error"]
    assert record["graph"] == {
        "extract": [],
        "flaky": ["extract"],
        "broken": ["flaky"],
        "after": ["broken"],
        "load": ["extract"],
    }
    assert record["host"] and record["pid"] > 0 and record["executor"] == "local"
    steps = {s["step_id"]: s for s in record["steps"]}
    assert list(steps) == ["extract", "flaky", "broken", "load", "after"] or set(steps) == {
        "extract",
        "flaky",
        "broken",
        "after",
        "load",
    }

    flaky = steps["flaky"]
    assert flaky["status"] == "success" and flaky["step_type"] == "python"
    assert flaky["attempts"] == 3 and flaky["retry_count"] == 2
    assert [a["error"] for a in flaky["attempt_history"]] == [
        "ConnectionError: warehouse busy (attempt 1)",
        "ConnectionError: warehouse busy (attempt 2)",
        None,
    ]
    history = flaky["attempt_history"]  # each attempt ends before the next starts
    assert all(a["started_at"] <= a["finished_at"] for a in history)
    assert history[0]["finished_at"] <= history[1]["started_at"]
    assert history[1]["finished_at"] <= history[2]["started_at"]
    assert flaky["started_at"] <= flaky["completed_at"] and flaky["execution_time_ms"] > 0
    assert flaky["output_summary"] == {"rows": 30, "total": 652.5}
    assert flaky["input_summary"]["extract"]["length"] == 30  # what it was given, capped
    assert steps["extract"]["input_summary"] is None  # nothing
    assert len(json.dumps(steps["extract"]["output_summary"])) < 2500  # capped
    assert steps["extract"]["output_summary"]["length"] == 30

    broken = steps["broken"]
    assert broken["status"] == "failed"
    assert broken["error_message"] == "ValueError: cannot publish 30 rows: schema mismatch"
    assert "track_steps.py" in broken["traceback"] and "raise ValueError" in broken["traceback"]
    assert steps["after"]["status"] == "skipped"
    assert steps["after"]["reason"] == "upstream step 'broken' failed"
    load = steps["load"]
    assert load["step_type"] == "data" and load["records"] == 25
    assert {n: (o["written"], o["status"]) for n, o in load["outputs"].items()} == {
        "jsonl#0": (25, "committed"),
        "jsonl#1": (25, "committed"),
    }

    listed = cli("runs", "list", "--json", cwd=root)
    (row,) = json.loads(listed.stdout)
    assert row["execution_id"] == record["run_id"] and row["status"] == "failed"
    table = cli("runs", "list", "--status", "failed", cwd=root).stdout
    assert record["run_id"][:12] in table and "tracked" in table


@pytest.mark.slow
def test_tracking_can_be_switched_off_and_runs_are_read_from_the_database(project):
    root, home = project
    proc = cli("run", "pipeline.yaml", "--tracker", "none", cwd=root)
    assert proc.returncode == 1
    assert not (home / "pipectl.db").exists()
    assert "resume it with" not in proc.stdout
    other = root / "elsewhere.db"
    cli("run", "pipeline.yaml", "--tracker", f"sqlite:///{other}", cwd=root)
    assert (
        json.loads(
            cli("runs", "list", "--json", "--tracker", f"sqlite:///{other}", cwd=root).stdout
        )[0]["pipeline_name"]
        == "tracked"
    )
    missing = cli("runs", "show", "abc123", cwd=root)  # the default tracker was never made
    assert missing.returncode == 2 and "no runs recorded" in missing.stderr
    assert not (home / "pipectl.db").exists()
    bad = cli("run", "pipeline.yaml", "--tracker", "mysql://x", cwd=root)
    assert bad.returncode == 2 and "no tracker named 'mysql'" in bad.stderr


# -- several processes at once ---------------------------------------------------------------


@pytest.mark.slow
def test_eight_pipectl_run_processes_on_one_sqlite_tracker(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PIPECTL_HOME", str(home))
    write(
        tmp_path / "many_steps.py",
        """
        def step(params):
            return params["who"]
    """,
    )
    steps = "\n".join(
        f"  - {{name: s{i}, run: 'many_steps:step'"
        + (f", depends_on: [s{i - 1}]" if i % 5 else "")
        + "}"
        for i in range(40)
    )
    (tmp_path / "pipeline.yaml").write_text(
        "name: many\nparams:\n  who: {type: int, default: 0}\nsteps:\n" + steps + "\n"
    )
    procs = [
        subprocess.Popen(
            [*PIPECTL, "run", "pipeline.yaml", "-p", f"who={k}", "--no-progress", "-q"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(8)
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    with sqlite3.connect(home / "pipectl.db") as db:
        runs = db.execute(
            "SELECT execution_id, status, parameters FROM pipeline_executions"
        ).fetchall()
        assert len(runs) == 8 and {r[1] for r in runs} == {"success"}
        assert sorted(json.loads(r[2])["who"] for r in runs) == list(range(8))
        counts = db.execute(
            "SELECT execution_id, count(*), sum(status = 'success') FROM "
            "step_executions GROUP BY execution_id"
        ).fetchall()
    assert len(counts) == 8 and all(n == ok == 40 for _, n, ok in counts)


# -- rollback -----------------------------------------------------------------------------------


def rollback_pipeline(plugin_manager, undone, fail_undo=()):
    pipe = Pipeline("undo", plugin_manager=plugin_manager)

    def undo(name):
        def rollback(output, params, ctx):
            undone.append((name, output, ctx.step))
            if name in fail_undo:
                raise OSError(f"cannot delete {name}'s table")

        rollback.__qualname__ = f"undo_{name}"
        return rollback

    pipe.add_step("a", lambda: "A", rollback=undo("a"))
    pipe.add_step("b", lambda a: a + "B", depends_on=["a"], rollback=undo("b"))
    pipe.add_step("c", lambda b: b + "C", depends_on=["b"], rollback=undo("c"))
    pipe.add_step("no_rollback", lambda: "x")

    async def d(c):
        return c + "D"

    pipe.add_step("d", d, depends_on=["c"], rollback=undo("d"))
    pipe.add_step("boom", lambda d: 1 / 0, depends_on=["d"])
    return pipe


def test_rollbacks_run_in_reverse_order_of_completion(plugin_manager, tmp_path):
    undone: list = []
    pipe = rollback_pipeline(plugin_manager, undone)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run = pipe.run_sync(rollback=True, tracker=url)
    assert run.status is RunStatus.ROLLED_BACK
    assert [u[0] for u in undone] == ["d", "c", "b", "a"]
    assert undone[0] == ("d", "ABCD", "d")  # each gets its own output and context
    assert {n: r.status for n, r in run.steps.items()} == {
        "a": StepStatus.ROLLED_BACK,
        "b": StepStatus.ROLLED_BACK,
        "c": StepStatus.ROLLED_BACK,
        "no_rollback": StepStatus.SUCCESS,
        "d": StepStatus.ROLLED_BACK,
        "boom": StepStatus.FAILED,
    }
    # each outcome is tracked
    t = SqliteTracker(url)
    record = t.get_run(run.run_id)
    steps = {s["step_id"]: s for s in record["steps"]}
    assert record["status"] == "rolled_back"
    assert steps["c"]["status"] == "rolled_back"
    assert steps["c"]["rollback"]["status"] == "success"
    assert steps["c"]["attempt_history"][0]["attempt"] == 1  # the step's own history is kept
    assert steps["no_rollback"]["rollback"] is None
    t.close()


def test_a_failing_rollback_is_named_and_the_others_still_run(plugin_manager, tmp_path):
    undone: list = []
    pipe = rollback_pipeline(plugin_manager, undone, fail_undo=("c",))
    run = pipe.run_sync(rollback=True, tracker=f"sqlite:///{tmp_path / 'runs.db'}")
    assert run.status is RunStatus.ROLLBACK_FAILED
    assert [u[0] for u in undone] == ["d", "c", "b", "a"]
    assert "rollback of step 'c' failed: OSError: cannot delete c's table" in run.errors
    assert run.steps["c"].status is StepStatus.SUCCESS  # not undone
    assert run.steps["c"].rollback["status"] == "failed"
    assert run.steps["b"].status is StepStatus.ROLLED_BACK


def test_without_rollback_nothing_is_undone_and_success_is_never_rolled_back(plugin_manager):
    undone: list = []
    assert rollback_pipeline(plugin_manager, undone).run_sync().status is RunStatus.FAILED
    ok = Pipeline("ok", plugin_manager=plugin_manager)
    ok.add_step("a", lambda: 1, rollback=lambda: undone.append("a"))
    assert ok.run_sync(rollback=True).status is RunStatus.SUCCESS
    assert undone == []


@pytest.mark.slow
def test_rollback_from_the_command_line(tmp_path):
    write(
        tmp_path / "rb_steps.py",
        """
        from pathlib import Path

        def create(params):
            Path("table.txt").write_text("created")
            return "table.txt"

        def drop(output):
            Path(output).unlink()

        def fail(create):
            raise RuntimeError("load failed")
    """,
    )
    write(
        tmp_path / "pipeline.yaml",
        """
        name: rb
        steps:
          - {name: create, run: "rb_steps:create", rollback: "rb_steps:drop"}
          - {name: fail, run: "rb_steps:fail", depends_on: [create]}
    """,
    )
    proc = cli("run", "pipeline.yaml", "--rollback", cwd=tmp_path)
    assert proc.returncode == 1
    assert "of 'rb': rolled_back" in proc.stdout
    assert not (tmp_path / "table.txt").exists()


# -- resume ---------------------------------------------------------------------------------------


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


@pytest.fixture
def resumable(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    write(tmp_path / "resume_steps.py", RESUME_STEPS)
    write(
        tmp_path / "pipeline.yaml",
        """
        name: resumable
        steps:
          - {name: a, run: "resume_steps:a"}
          - {name: b, run: "resume_steps:b", depends_on: [a]}
          - {name: c, run: "resume_steps:c", depends_on: [b]}
    """,
    )
    return tmp_path


def ran(root: Path) -> dict[str, int]:
    return {
        n: int((root / f"ran-{n}.txt").read_text()) if (root / f"ran-{n}.txt").exists() else 0
        for n in "abc"
    }


@pytest.mark.slow
def test_resume_runs_only_what_did_not_finish(resumable):
    root = resumable
    first = cli("run", "pipeline.yaml", cwd=root)
    assert first.returncode == 1 and ran(root) == {"a": 1, "b": 1, "c": 1}
    (root / "fixed").write_text("")
    again = cli("run", "pipeline.yaml", "--resume", "latest", cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ran(root) == {"a": 1, "b": 1, "c": 2}  # a and b kept their outputs
    record = json.loads(cli("runs", "show", "latest", "--json", cwd=root).stdout)
    steps = {s["step_id"]: s for s in record["steps"]}
    assert record["resumed_from"] and record["status"] == "success"
    assert steps["c"]["output_summary"] == 60
    assert steps["a"]["attempts"] == 0 and steps["c"]["attempts"] == 1


@pytest.mark.slow
def test_resume_refuses_a_changed_step_unless_forced(resumable):
    root = resumable
    assert cli("run", "pipeline.yaml", cwd=root).returncode == 1
    source = (root / "resume_steps.py").read_text()
    (root / "resume_steps.py").write_text(source.replace("return sum(a)", "return sum(a) + 1"))
    (root / "fixed").write_text("")
    refused = cli("run", "pipeline.yaml", "--resume", "latest", cwd=root)
    assert refused.returncode == 2
    assert "step(s) 'b' changed since it ran" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert ran(root) == {"a": 1, "b": 1, "c": 1}  # nothing ran
    forced = cli("run", "pipeline.yaml", "--resume", "latest", "--force", cwd=root)
    assert forced.returncode == 0, forced.stderr
    assert ran(root) == {"a": 1, "b": 1, "c": 2}  # b's old output (6) was taken: c = 60
    assert (
        json.loads(cli("runs", "show", "latest", "--json", cwd=root).stdout)["steps"][2][
            "output_summary"
        ]
        == 60
    )


def test_resume_in_python_and_its_errors(plugin_manager, tmp_path):
    pipe = Pipeline("py", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    with pytest.raises(Exception, match="resume needs a tracker"):
        pipe.run_sync(resume="latest")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(Exception, match="no run of pipeline 'py'"):
        pipe.run_sync(resume="latest", tracker=url)
    other = Pipeline("other", plugin_manager=plugin_manager)
    other.add_step("a", lambda: 1)
    run = other.run_sync(tracker=url)
    with pytest.raises(Exception, match="is a run of pipeline 'other', not of 'py'"):
        pipe.run_sync(resume=run.run_id, tracker=url)
    changed = Pipeline("other", plugin_manager=plugin_manager)
    changed.add_step("a", lambda: 2)  # another function: another fingerprint
    with pytest.raises(ResumeRefused):
        changed.run_sync(resume="latest", tracker=url)


# -- SIGKILL in the middle of a data step ---------------------------------------------------------


KILL_STEPS = """
    import os
    import time
    from pathlib import Path

    def prepare():
        path = Path("prepare-runs.txt")
        path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
        return "ready"

    def slow(batch):
        if os.environ.get("SLOW_BATCHES"):
            Path("streaming").write_text("yes")
            time.sleep(0.05)
        return batch
"""


@pytest.mark.slow
def test_a_killed_run_is_interrupted_and_resume_leaves_every_record_once(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("PIPECTL_HOME", str(home))
    write(tmp_path / "kill_steps.py", KILL_STEPS)
    with open(tmp_path / "source.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "value"])
        w.writerows([i, f"v{i}"] for i in range(20_000))
    write(
        tmp_path / "pipeline.yaml",
        """
        name: killed
        steps:
          - {name: prepare, run: "kill_steps:prepare"}
          - name: load
            depends_on: [prepare]
            extract: {type: csv, path: source.csv, types: {id: int}}
            transform: [{function: "kill_steps:slow", per: batch}]
            batch_size: 250
            load:
              - {type: jsonl, path: out/records.jsonl}
              - {type: sqlite, path: out/records.sqlite, table: records}
    """,
    )
    victim = subprocess.Popen(
        [*PIPECTL, "run", "pipeline.yaml", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "SLOW_BATCHES": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "streaming").exists():
        assert victim.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # well into the stream: 20,000 records take 4 s at this pace
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)

    listed = json.loads(cli("runs", "list", "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in listed] == ["interrupted"]
    shown = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path).stdout)
    steps = {s["step_id"]: s["status"] for s in shown["steps"]}
    assert steps == {"prepare": "success", "load": "interrupted"}
    interrupted = cli("runs", "list", "--status", "interrupted", cwd=tmp_path).stdout
    assert shown["run_id"][:12] in interrupted

    resumed = cli("run", "pipeline.yaml", "--resume", "latest", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "prepare-runs.txt").read_text() == "1"  # not run again
    ids = [
        json.loads(line)["id"]
        for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    ]
    assert sorted(ids) == list(range(20_000))
    with sqlite3.connect(tmp_path / "out" / "records.sqlite") as db:
        rows = [r[0] for r in db.execute("SELECT id FROM records")]
    assert sorted(rows) == list(range(20_000))
    record = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path).stdout)
    assert record["resumed_from"] == shown["run_id"] and record["status"] == "success"


# -- stories ------------------------------------------------------------------------------------


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )


@pytest.mark.slow
def test_the_story_of_a_failed_run_with_retries_in_headless_chromium(project):
    import html

    root, home = project
    write(
        root / "pipeline.yaml",
        (root / "pipeline.yaml")
        .read_text()
        .replace(
            "description: a run with retries and a failure",
            "description: a run with retries and a failure\nstory: stories/{pipeline}-{short_id}.html",
        ),
    )
    proc = cli("run", "pipeline.yaml", cwd=root)
    assert proc.returncode == 1
    (written,) = list((root / "stories").glob("tracked-*.html"))  # story: in the file
    assert f"story: stories/{written.name}" in proc.stdout
    made = cli("story", "latest", "-o", "failed.html", cwd=root)
    assert made.returncode == 0, made.stderr
    assert (root / "failed.html").read_text() == written.read_text()
    markdown = cli("story", "latest", "--format", "md", "-o", "failed.md", cwd=root)
    assert markdown.returncode == 0 and "```mermaid" in (root / "failed.md").read_text()
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (Debian: apt-get install -y chromium; .ci/run does)")
    profile = root / "profile"
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--dump-dom",
            (root / "failed.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "HOME": str(profile)},
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for step in ("extract", "flaky", "broken", "after", "load"):
        assert f">{step}<" in page
    assert html.escape("ValueError: cannot publish 30 rows: schema mismatch") in page
    assert html.escape("ConnectionError: warehouse busy (attempt 1)") in page  # the retries
    assert "hunter2-secret" not in page and "***" in page


# -- extractor state and the schema -----------------------------------------------------------


class Since:
    """An incremental extractor: records after the cursor, whose state is the last id read."""

    def __init__(self, source):
        self.source, self.cursor, self.seen_state = source, 0, None

    def describe(self):
        return "since"

    @property
    def state(self):
        return {"cursor": self.cursor}

    def set_state(self, state):
        self.seen_state = state
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


def test_the_tracker_keeps_extractor_state_between_runs(plugin_manager, tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    source = [{"id": i} for i in range(1, 6)]
    first, out = Since(source), Keep()
    pipe = Pipeline("incremental", extractor=first, outputs=[out], plugin_manager=plugin_manager)
    assert pipe.run_sync(tracker=url).ok
    assert first.seen_state is None and len(out.rows) == 5
    source.extend({"id": i} for i in range(6, 9))
    second, out2 = Since(source), Keep()
    again = Pipeline("incremental", extractor=second, outputs=[out2], plugin_manager=plugin_manager)
    assert again.run_sync(tracker=url).ok
    assert second.seen_state == {"cursor": 5}  # from the tracker, in another Pipeline object
    assert [r["id"] for r in out2.rows] == [6, 7, 8]
    t = SqliteTracker(url)
    assert t.extractor_states("incremental") == {"extract_load": {"cursor": 8}}
    t.close()


def test_the_schema_is_versioned_and_migrations_run_once(tmp_path, monkeypatch):
    from pipectl.tracking import schema as tracking

    db = tmp_path / "runs.db"
    t = SqliteTracker(f"sqlite:///{db}")
    now = len(tracking.MIGRATIONS)
    assert t.migrate() == now
    assert t.migrate() == now  # again: nothing to do
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM pipectl_schema").fetchall() == [(now,)]
    # a later pipectl adds a migration: an older database is upgraded in place
    monkeypatch.setattr(
        tracking,
        "MIGRATIONS",
        [*tracking.MIGRATIONS, ["ALTER TABLE pipeline_executions ADD COLUMN owner TEXT"]],
    )
    assert SqliteTracker(f"sqlite:///{db}").migrate() == now + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM pipectl_schema").fetchall() == [(now + 1,)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(pipeline_executions)")]
    assert "owner" in columns
    # and a database newer than this pipectl is refused with the reason
    monkeypatch.setattr(tracking, "MIGRATIONS", tracking.MIGRATIONS[:1])
    with pytest.raises(tracking.TrackerError, match="newer than this pipectl knows"):
        SqliteTracker(f"sqlite:///{db}").migrate()


@pytest.mark.slow
def test_resume_writes_a_failed_data_step_only_to_the_outputs_that_had_not_committed(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    with open(tmp_path / "source.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"])
        w.writerows([i] for i in range(500))
    write(
        tmp_path / "pipeline.yaml",
        """
        name: partial
        steps:
          - name: load
            extract: {type: csv, path: source.csv, types: {id: int}}
            load:
              - {type: sqlite, path: out/a.sqlite, table: records}
              - {type: jsonl, path: out/b/records.jsonl}
    """,
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b").write_text("a file where a folder should be")  # b cannot open
    first = cli("run", "pipeline.yaml", cwd=tmp_path)
    assert first.returncode == 1
    assert "committed: sqlite#0" in first.stdout
    (tmp_path / "out" / "b").unlink()  # fixed
    again = cli("run", "pipeline.yaml", "--resume", "latest", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(tmp_path / "out" / "a.sqlite") as db:
        ids = [r[0] for r in db.execute("SELECT id FROM records")]
    assert sorted(ids) == list(range(500))  # appended once: not again on resume
    lines = (tmp_path / "out" / "b" / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == list(range(500))
    record = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path).stdout)
    outputs = record["steps"][0]["outputs"]
    assert outputs["sqlite#0"]["status"] == "skipped"  # committed by the run it resumed
    assert outputs["jsonl#1"] == {
        "written": 500,
        "status": "committed",
        "error": None,
        "target": f"jsonl {tmp_path}/out/b/records.jsonl",
    }


def test_a_write_retried_after_a_busy_database_keeps_the_attempt_history(plugin_manager, tmp_path):
    """The database part of a write is retried alone: the rows are built once."""
    busy = {"left": 3}

    class BusyAtFirst(SqliteTracker):
        def _write(self, conn, *rows, **kwargs):
            if busy["left"]:
                busy["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            super()._write(conn, *rows, **kwargs)

    tracker = BusyAtFirst(f"sqlite:///{tmp_path / 'runs.db'}")
    tracker.migrate()
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError(f"attempt {calls['n']}")
        return "ok"

    pipe = Pipeline("busy", plugin_manager=plugin_manager)
    pipe.add_step("first", lambda: 1)
    pipe.add_step("flaky", flaky, depends_on=["first"], retries=2, retry_delay=0, retry_jitter=0)
    run = pipe.run_sync(tracker=tracker)
    assert run.ok and busy["left"] == 0
    record = tracker.get_run(run.run_id)
    tracker.close()
    steps = {s["step_id"]: s for s in record["steps"]}
    assert [a["attempt"] for a in steps["flaky"]["attempt_history"]] == [1, 2, 3]
    assert [a["error"] for a in steps["flaky"]["attempt_history"]] == [
        "ConnectionError: attempt 1",
        "ConnectionError: attempt 2",
        None,
    ]
    assert [a["attempt"] for a in steps["first"]["attempt_history"]] == [1]


@pytest.mark.slow
def test_resume_takes_a_required_param_from_the_run_it_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    write(
        tmp_path / "req_steps.py",
        """
        from pathlib import Path

        def use(params):
            if not Path("fixed").exists():
                raise RuntimeError("not yet")
            return params["day"]
    """,
    )
    write(
        tmp_path / "pipeline.yaml",
        """
        name: required
        params:
          day: {type: str, required: true}
        steps:
          - {name: use, run: "req_steps:use"}
    """,
    )
    assert cli("run", "pipeline.yaml", "-p", "day=2026-11-23", cwd=tmp_path).returncode == 1
    (tmp_path / "fixed").write_text("")
    again = cli("run", "pipeline.yaml", "--resume", "latest", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    record = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path).stdout)
    assert record["params"] == {"day": "2026-11-23"}
    assert record["steps"][0]["output_summary"] == "2026-11-23"

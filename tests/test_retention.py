"""Retention: ``pipectl runs prune`` deletes old runs (their rows and their stored outputs) and
keeps what must stay (runs still running, resume chains whose latest run is kept, sub-pipeline
runs with their parent); ``store_output: false`` keeps a step's output out of the result store.
Real ``pipectl`` processes on a real SQLite tracker file; processes meet through files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipectl import Pipeline, RunStatus
from pipectl.tracking import SqliteTracker, parse_duration

PIPECTL = [sys.executable, "-m", "pipectl.cli"]

STEPS = '''
    import time
    from pathlib import Path


    def count(name):
        with open(f"ran-{name}.txt", "a") as f:  # one character per run of the step
            f.write("x")


    def wait_for(name):
        """Until the file ``name`` exists (a few minutes at most: never hang a test run)."""
        for _ in range(6000):
            if Path(name).exists():
                return
            time.sleep(0.05)


    def numbers():
        count("numbers")
        return list(range(10))


    def side():
        count("side")
        return "side"


    def total(numbers, params):
        count("total")
        if params["hold"]:  # this run stays running until the test releases it
            Path(f"holding-{params['hold']}").write_text("")
            wait_for(f"release-{params['hold']}")
        if not Path("fixed").exists():
            raise RuntimeError("total is broken today")
        return sum(numbers)
'''

ORDERS = """
    name: orders
    params:
      hold: {type: str, default: ""}
    steps:
      - {name: numbers, run: "ret_steps:numbers"}
      - {name: total, run: "ret_steps:total", inputs: {numbers: numbers}}
"""

OTHER = """
    name: other
    params:
      hold: {type: str, default: ""}
    steps:
      - {name: numbers, run: "ret_steps:numbers"}
"""

BIG = """
    name: big
    params:
      hold: {type: str, default: ""}
    steps:
      - {name: numbers, run: "ret_steps:numbers", store_output: false}
      - {name: side, run: "ret_steps:side"}
      - {name: total, run: "ret_steps:total", inputs: {numbers: numbers}, depends_on: [side]}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PIPECTL, *args, "--no-progress"],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the limit only keeps a broken test from hanging."""
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def ran(root: Path, name: str) -> int:
    path = root / f"ran-{name}.txt"
    return len(path.read_text()) if path.exists() else 0


class Project:
    """A folder with the step module and pipeline files, its pipectl home in ``home``."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.db = self.home / "pipectl.db"
        self.results = self.home / "results"

    def run(self, file: str, *args: str, code: int = 0) -> str:
        """Run a pipeline file; the id of its run."""
        before = set(self.run_ids())
        proc = cli("run", file, *args, cwd=self.root)
        assert proc.returncode == code, proc.stdout + proc.stderr
        (new,) = set(self.run_ids()) - before
        return new

    def prune(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = cli("runs", "prune", *args, cwd=self.root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, params).fetchall()

    def run_ids(self, pipeline: str | None = None) -> list[str]:
        """The recorded runs, oldest first."""
        if not self.db.exists():
            return []
        where, params = ("WHERE pipeline_name = ?", (pipeline,)) if pipeline else ("", ())
        return [
            r[0]
            for r in self.rows(
                f"SELECT execution_id FROM pipeline_executions {where} ORDER BY started_at", params
            )
        ]

    def step_rows(self, run_id: str) -> int:
        return self.rows("SELECT count(*) FROM step_executions WHERE execution_id = ?", (run_id,))[
            0
        ][0]

    def stored(self, run_id: str) -> list[str]:
        """The steps whose output the result store holds for the run."""
        folder = self.results / run_id
        return sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir()) if folder.exists() else []

    def set_started(self, run_id: str, ago: timedelta) -> None:
        """Move a run's start back in time, in the tracker's database."""
        when = (datetime.now(UTC) - ago).isoformat()
        with sqlite3.connect(self.db) as db:
            db.execute(
                "UPDATE pipeline_executions SET started_at = ? WHERE execution_id = ?",
                (when, run_id),
            )

    def record(self, run_id: str) -> dict:
        shown = cli("runs", "show", run_id, "--json", cwd=self.root)
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)


def listed(output: str) -> list[str]:
    """The run ids a ``runs prune`` output lists (one line each, after the count)."""
    return [line.split()[0] for line in output.splitlines() if line.startswith("  ")]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    write(tmp_path / "ret_steps.py", STEPS)
    write(tmp_path / "orders.yaml", ORDERS)
    write(tmp_path / "other.yaml", OTHER)
    write(tmp_path / "big.yaml", BIG)
    (tmp_path / "fixed").write_text("")
    return Project(tmp_path)


# -- which runs go ---------------------------------------------------------------------------


@pytest.mark.slow
def test_keep_2_after_5_runs_deletes_the_others_rows_and_result_files(project: Project):
    orders = [project.run("orders.yaml") for _ in range(5)]
    other = [project.run("other.yaml") for _ in range(3)]
    for run_id in orders + other:
        assert project.stored(run_id)  # every run stored its outputs
        assert project.step_rows(run_id) > 0

    pruned = project.prune("--keep", "2", "--pipeline", "orders")
    assert pruned.stdout.splitlines()[0] == "deleted 3 runs:"
    assert listed(pruned.stdout) == orders[:3]  # oldest first
    assert project.run_ids("orders") == orders[3:]
    for run_id in orders[:3]:  # rows and result files gone
        assert project.step_rows(run_id) == 0
        assert not (project.results / run_id).exists()
    for run_id in orders[3:]:
        assert project.stored(run_id) == ["numbers", "total"]
        assert project.step_rows(run_id) == 2
    # --pipeline orders: the other pipeline's 3 runs are all still there, files too
    assert project.run_ids("other") == other
    assert all(project.stored(run_id) == ["numbers"] for run_id in other)

    again = project.prune("--keep", "2")  # every pipeline: 'other' has one too many
    assert listed(again.stdout) == other[:1]
    assert project.run_ids("other") == other[1:]
    assert project.run_ids("orders") == orders[3:]
    assert project.prune("--keep", "2").stdout.strip() == "no runs to delete"
    # a kept run still reads whole
    assert project.record(orders[-1])["status"] == "success"


@pytest.mark.slow
def test_older_than_and_both_rules(project: Project):
    runs = [project.run("orders.yaml") for _ in range(4)]
    project.set_started(runs[0], timedelta(days=41))
    project.set_started(runs[1], timedelta(days=40))
    project.set_started(runs[2], timedelta(days=10))

    # both: beyond the 3 latest AND older than 30 days: only the oldest
    both = project.prune("--keep", "3", "--older-than", "30d")
    assert listed(both.stdout) == runs[:1]
    assert project.run_ids() == runs[1:]
    assert not (project.results / runs[0]).exists()

    alone = project.prune("--older-than", "30d")  # the other run older than 30 days
    assert listed(alone.stdout) == runs[1:2]
    assert project.run_ids() == runs[2:]

    # 1w alone would take runs[2] (10 days old); with --keep 2 it is among the 2 latest
    assert project.prune("--older-than", "1w", "--keep", "2").stdout.strip() == "no runs to delete"
    assert listed(project.prune("--older-than", "1w", "--keep", "1").stdout) == runs[2:3]
    assert project.run_ids() == runs[3:]
    assert project.stored(runs[3]) == ["numbers", "total"]


@pytest.mark.slow
def test_dry_run_deletes_nothing(project: Project):
    runs = [project.run("orders.yaml") for _ in range(3)]
    files = {run_id: project.stored(run_id) for run_id in runs}
    dry = project.prune("--keep", "1", "--dry-run")
    assert dry.stdout.splitlines()[0] == "would delete 2 runs (--dry-run: nothing deleted):"
    assert listed(dry.stdout) == runs[:2]
    assert project.run_ids() == runs
    assert {run_id: project.stored(run_id) for run_id in runs} == files
    assert all(project.step_rows(run_id) == 2 for run_id in runs)
    assert listed(project.prune("--keep", "1").stdout) == runs[:2]  # the same, for real


@pytest.mark.slow
def test_a_running_run_is_never_deleted_and_a_dead_one_is(project: Project):
    finished = [project.run("orders.yaml") for _ in range(2)]
    live = start("run", "orders.yaml", "-p", "hold=live", cwd=project.root)
    dead = None
    try:
        wait_until(
            lambda: (project.root / "holding-live").exists() and len(project.run_ids()) == 3,
            "the run to hold",
        )
        (live_id,) = set(project.run_ids()) - set(finished)
        wait_until(lambda: project.stored(live_id) == ["numbers"], "its first output")
        # another run, killed while it runs: recorded as running, its process gone
        dead = start("run", "orders.yaml", "-p", "hold=dead", cwd=project.root)
        wait_until(
            lambda: (project.root / "holding-dead").exists() and len(project.run_ids()) == 4,
            "the second run to hold",
        )
        (dead_id,) = set(project.run_ids()) - set(finished) - {live_id}
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=60)
        project.set_started(live_id, timedelta(days=400))  # old, but running

        pruned = project.prune("--older-than", "0s")
        lines = {
            line.split()[0]: line for line in pruned.stdout.splitlines() if line.startswith("  ")
        }
        assert sorted(lines) == sorted([*finished, dead_id])  # not the live one
        assert " interrupted " in lines[dead_id]
        assert project.run_ids() == [live_id]
        assert project.stored(live_id) == ["numbers"] and project.step_rows(live_id) == 2
        assert not (project.results / dead_id).exists()
    finally:
        (project.root / "release-live").write_text("")  # it ends by itself now
        (project.root / "release-dead").write_text("")
        if dead is not None and dead.poll() is None:
            dead.kill()
            dead.wait(timeout=60)
    out, err = live.communicate(timeout=300)
    assert live.returncode == 0, out + err
    record = project.record(live_id)  # the run went on being recorded normally
    assert record["status"] == "success"
    assert [s["status"] for s in record["steps"]] == ["success", "success"]
    assert project.stored(live_id) == ["numbers", "total"]


@pytest.mark.slow
def test_a_resume_chain_stays_and_goes_as_a_whole(project: Project):
    r1, r2 = project.run("orders.yaml"), project.run("orders.yaml")
    (project.root / "fixed").unlink()
    r3 = project.run("orders.yaml", code=1)  # total fails
    r4 = project.run("orders.yaml", "--resume", "latest", code=1)  # fails again
    assert project.record(r4)["resumed_from"] == r3
    assert ran(project.root, "numbers") == 3  # r4 took it from r3

    # --keep 1: the latest run is r4, a resume of r3: both stay, r1 and r2 go
    pruned = project.prune("--keep", "1")
    assert listed(pruned.stdout) == [r1, r2]
    assert project.run_ids() == [r3, r4]
    assert project.stored(r3) == ["numbers"] and project.stored(r4) == ["numbers"]
    assert project.rows("SELECT execution_id, claimed_by FROM resume_claims") == [(r3, r4)]

    # the chain still resumes: numbers comes from the store, not run again
    (project.root / "fixed").write_text("")
    r5 = project.run("orders.yaml", "--resume", "latest")
    assert project.record(r5)["resumed_from"] == r4
    assert ran(project.root, "numbers") == 3

    r6, r7 = project.run("orders.yaml"), project.run("orders.yaml")
    # --keep 3: r5 is among the 3 latest, so its whole chain stays
    assert project.prune("--keep", "3").stdout.strip() == "no runs to delete"
    # --keep 2: the chain's latest run (r5) goes, so does the whole chain, claims too
    assert listed(project.prune("--keep", "2").stdout) == [r3, r4, r5]
    assert project.run_ids() == [r6, r7]
    assert project.rows("SELECT count(*) FROM resume_claims") == [(0,)]
    assert sorted(p.name for p in project.results.iterdir()) == sorted([r6, r7])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            (),
            "pipectl: error: runs prune needs --keep N, --older-than DURATION or both "
            "(such as --keep 100, or --older-than 30d)",
        ),
        (
            ("--older-than", "3x"),
            "pipectl: error: --older-than: '3x' is not a duration: a number "
            "and a unit, s (seconds), m (minutes), h (hours), d (days) or w "
            "(weeks), such as 30d, 12h, 90m or 1h30m",
        ),
        (
            ("--older-than", "30"),
            "pipectl: error: --older-than: '30' is not a duration (a unit is missing)",
        ),
        (
            ("--older-than", "6M"),
            "pipectl: error: --older-than: '6M' is not a duration (units are "
            "lower case; there are no months: use d or w)",
        ),
        (("--keep", "0"), "Invalid value for '--keep': 0 is not in the range x>=1"),
        (("--keep", "many"), "Invalid value for '--keep': 'many' is not a valid integer"),
    ],
)
def test_bad_arguments_exit_2(project: Project, args: tuple[str, ...], message: str):
    runs = [project.run("other.yaml")]
    proc = cli("runs", "prune", *args, cwd=project.root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert project.run_ids() == runs  # nothing deleted


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("2w", 14 * 86400),
        ("45s", 45),
        ("1h30m", 5400),
        ("1d 12h", 129600),
        ("1.5h", 5400),
        (" 0s ", 0),
        (3600, 3600),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "3x", "d", "-1d", "30D", "1 month", -1, float("nan")])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
    with pytest.raises(TypeError):
        parse_duration(True)


# -- sub-pipelines and the Python API --------------------------------------------------------


def test_sub_pipeline_runs_go_with_their_parent(tmp_path, monkeypatch, plugin_manager):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    inner = Pipeline("inner", plugin_manager=plugin_manager)
    inner.add_step("leaf", lambda: [1, 2, 3])
    outer = Pipeline("outer", plugin_manager=plugin_manager)
    outer.add_subpipeline(inner, "sub")
    runs = [outer.run_sync(tracker=url) for _ in range(3)]
    assert all(r.status is RunStatus.SUCCESS for r in runs)

    tracker = SqliteTracker(url)
    tracker.migrate()
    try:
        with sqlite3.connect(tmp_path / "runs.db") as db:
            children = dict(
                db.execute(
                    "SELECT execution_id, parent_execution_id FROM "
                    "pipeline_executions WHERE pipeline_name = 'inner'"
                )
            )
        assert sorted(children.values()) == sorted(r.run_id for r in runs)
        results = tmp_path / "results"
        assert all((results / child).exists() for child in children)

        planned = tracker.prune(keep=1, dry_run=True)
        deleted = tracker.prune(keep=1)  # 'inner' is not counted on its own: 2 outer + 2 inner
        assert deleted == planned
        gone_children = [c for c, parent in children.items() if parent != runs[2].run_id]
        assert sorted(deleted) == sorted([runs[0].run_id, runs[1].run_id, *gone_children])
        assert deleted.runs[runs[0].run_id]["pipeline_name"] == "outer"
        left = {r["execution_id"] for r in tracker.list_runs(limit=100)}
        (kept_child,) = set(children) - set(gone_children)
        assert left == {runs[2].run_id, kept_child}
        assert sorted(p.name for p in results.iterdir()) == sorted(left)
        assert tracker.prune(keep=1) == []
        with pytest.raises(ValueError, match="keep"):
            tracker.prune()
        with pytest.raises(ValueError, match="keep"):
            tracker.prune(keep=-1)
    finally:
        tracker.close()


def test_a_run_whose_resume_is_starting_stays(tmp_path, monkeypatch, plugin_manager):
    """A resume claims the run it resumes before its own run is recorded: while the claiming
    process is alive, the claimed run stays; once it is gone, the run can go, claim too."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    pipe = Pipeline("claimed", plugin_manager=plugin_manager)
    pipe.add_step("one", lambda: 1)
    old, newer, latest = (pipe.run_sync(tracker=url).run_id for _ in range(3))
    tracker = SqliteTracker(url)
    tracker.migrate()
    try:
        tracker.claim_resume(old, "resume-about-to-start")  # by this process: alive
        assert tracker.prune(keep=1) == [newer]
        # the same claim made by a process that has ended since
        tracker.release_resume(old, "resume-about-to-start")
        claim = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pipectl.tracking import SqliteTracker; "
                "t = SqliteTracker(sys.argv[1]); t.migrate(); "
                "t.claim_resume(sys.argv[2], 'resume-killed'); t.close()",
                url,
                old,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert claim.returncode == 0, claim.stderr
        assert tracker.prune(keep=1) == [old]
        with sqlite3.connect(tmp_path / "runs.db") as db:
            assert db.execute("SELECT count(*) FROM resume_claims").fetchone() == (0,)
            assert [r[0] for r in db.execute("SELECT execution_id FROM pipeline_executions")] == [
                latest
            ]
    finally:
        tracker.close()


# -- store_output: false ---------------------------------------------------------------------


@pytest.mark.slow
def test_store_output_false_in_a_pipeline_file_and_resume_runs_the_step_again(project: Project):
    (project.root / "fixed").unlink()
    failed = project.run("big.yaml", code=1)
    assert project.stored(failed) == ["side"]  # numbers ran and succeeded, not stored
    record = project.record(failed)
    steps = {s["step_id"]: s for s in record["steps"]}
    assert steps["numbers"]["status"] == "success"
    assert steps["numbers"]["output_summary"] == list(range(10))  # its summary is recorded
    assert steps["numbers"]["metadata"].get("output_stored") is not True

    (project.root / "fixed").write_text("")
    resumed = project.run("big.yaml", "--resume", "latest")
    # total needs numbers' output, which was not stored: numbers runs again; side is taken
    assert (
        ran(project.root, "numbers"),
        ran(project.root, "side"),
        ran(project.root, "total"),
    ) == (2, 1, 2)
    steps = {s["step_id"]: s for s in project.record(resumed)["steps"]}
    assert steps["side"]["resumed_from"] == failed and steps["numbers"]["attempts"] == 1
    assert steps["total"]["output_summary"] == 45
    assert project.stored(resumed) == ["side", "total"]


def test_store_output_false_in_python(tmp_path, monkeypatch, plugin_manager):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    (tmp_path / "in.csv").write_text("id\n1\n2\n")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    pipe = Pipeline("py", plugin_manager=plugin_manager)

    @pipe.step(store_output=False)
    def numbers():
        calls.append("numbers")
        return [1, 2, 3]

    @pipe.step
    def kept():
        calls.append("kept")
        return "kept"

    def total(numbers, kept):
        calls.append("total")
        if not (tmp_path / "fixed").exists():
            raise RuntimeError("total is broken today")
        return sum(numbers)

    pipe.add_step("total", total, inputs={"numbers": "numbers", "kept": "kept"})
    pipe.add_step("big", lambda: "x" * 1000, store_output=False)
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(tmp_path / "in.csv")},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        store_output=False,
    )
    assert [s.store_output for s in pipe.spec.steps] == [False, True, True, False, False]

    failed = pipe.run_sync(tracker=url)
    assert failed.status is RunStatus.FAILED
    folder = tmp_path / "results" / failed.run_id
    assert sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir()) == ["kept"]

    (tmp_path / "fixed").write_text("")
    resumed = pipe.run_sync(tracker=url, resume="latest")
    assert resumed.status is RunStatus.SUCCESS
    assert resumed.steps["total"].output == 6
    assert calls.count("numbers") == 2 and calls.count("kept") == 1  # numbers ran again
    folder = tmp_path / "results" / resumed.run_id
    assert sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir()) == ["kept", "total"]

    with pytest.raises(TypeError):
        pipe.add_step("bad", lambda: 1, store_output="no")


def test_store_output_round_trips_through_a_pipeline_file(tmp_path, monkeypatch, plugin_manager):
    import jsonschema
    import yaml

    from pipectl.cli.schema_command import schema_text
    from pipectl.files import PipelineFileError

    write(
        tmp_path / "rt_steps.py",
        """
        def numbers():
            return [1, 2, 3]


        def total(numbers):
            return sum(numbers)
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import rt_steps

    pipe = Pipeline("rt", plugin_manager=plugin_manager)
    pipe.add_step("numbers", rt_steps.numbers, store_output=False)
    pipe.add_step("total", rt_steps.total, inputs={"numbers": "numbers"})
    text = pipe.to_yaml(tmp_path / "rt.yaml")
    data = yaml.safe_load(text)
    assert data["steps"][0]["store_output"] is False
    assert "store_output" not in data["steps"][1]  # the default is not written
    jsonschema.validate(data, json.loads(schema_text()))
    again = Pipeline.from_yaml(tmp_path / "rt.yaml", plugin_manager=plugin_manager)
    assert [s.store_output for s in again.spec.steps] == [False, True]
    assert again.to_yaml() == text

    data["steps"][0]["store_output"] = "no"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(schema_text()))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(
        PipelineFileError, match="steps.numbers.store_output: expected true or false, got 'no'"
    ):
        Pipeline.from_yaml(tmp_path / "bad.yaml", plugin_manager=plugin_manager)

"""One resumer per run: ``pipectl run FILE --resume latest`` resumes the latest run that ended
(not one still running), and a run being resumed is not resumed a second time at once; a claim
left by a resumer that was killed does not block the next resume. Real ``pipectl`` processes on
one SQLite tracker; the processes meet through files, never through fixed sleeps."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PIPECTL = [sys.executable, "-m", "pipectl.cli"]

STEPS = '''
    import os
    import threading
    import time
    from pathlib import Path


    def count(name):
        with open(f"ran-{name}.txt", "a") as f:  # one character per run, appended
            f.write("x")


    def wait_for(name):
        """Until the file ``name`` exists (a few minutes at most: never hang a test run)."""
        for _ in range(6000):
            if Path(name).exists():
                return
            time.sleep(0.05)


    def prepare():
        count("prepare")
        return "ready"


    def staged():
        return [{"id": i} for i in range(100)]


    def gate():
        count("gate")
        if not Path("open").exists():
            raise RuntimeError("the gate is shut: no file 'open'")
        return "open"


    def records():
        """200 records, 20 a batch, a little slowly; after the first batch the process says it
        is loading (a file named after it) and waits for the file 'go'."""
        for start in range(0, 200, 20):
            yield [{"id": i} for i in range(start, start + 20)]
            if start == 0:
                Path(f"loading-{os.getpid()}-{threading.get_ident()}").write_text("")
                wait_for("go")
            time.sleep(0.01)


    def a():
        count("a")
        return 1


    def b(a):
        count("b")
        hold = os.environ.get("HOLD")
        if hold:  # this run stays running until the test releases it
            Path(f"holding-{hold}").write_text(str(os.getpid()))
            wait_for(f"release-{hold}")
        if not Path("fixed").exists():
            raise RuntimeError("b is broken today")
        return a + 1
'''

CLAIMS = """
    name: claims
    steps:
      - {name: prepare, run: "claim_steps:prepare"}
      - name: stage
        depends_on: [prepare]
        extract: {type: python, function: "claim_steps:staged"}
        load:
          - {type: sqlite, path: out/records.sqlite, table: staged}
      - {name: gate, run: "claim_steps:gate", depends_on: [stage]}
      - name: load
        depends_on: [gate]
        batch_size: 20
        extract: {type: python, function: "claim_steps:records"}
        load:
          - {type: sqlite, path: out/records.sqlite, table: records}
"""

WAITING = """
    name: waiting
    steps:
      - {name: a, run: "claim_steps:a"}
      - {name: b, run: "claim_steps:b", depends_on: [a]}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PIPECTL, *args, "--no-progress"],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
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


def table(root: Path, name: str) -> list[int]:
    with sqlite3.connect(root / "out" / "records.sqlite") as db:
        return sorted(r[0] for r in db.execute(f"SELECT id FROM {name}"))


def latest(root: Path) -> dict:
    shown = cli("runs", "show", "latest", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pipectl: error:")]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pipeline ``claims`` after a first run that failed at ``gate``: ``stage`` (a data
    step) succeeded before it, ``load`` (the data step after it) never ran."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    write(tmp_path / "claim_steps.py", STEPS)
    write(tmp_path / "pipeline.yaml", CLAIMS)
    first = cli("run", "pipeline.yaml", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert table(tmp_path, "staged") == list(range(100))
    (tmp_path / "open").write_text("")  # the gate is fixed: a resume gets past it
    return tmp_path


@pytest.mark.slow
def test_two_resumes_of_one_run_at_once_one_runs_the_other_exits_2(project: Path):
    root = project
    failed = latest(root)
    assert failed["status"] == "failed"
    procs = [start("run", "pipeline.yaml", "--resume", "latest", cwd=root) for _ in range(2)]
    try:
        # one is refused at once; the other waits in `load` until the test says go. Were both
        # let through (the bug), both would wait there: the test goes on then too, and fails.
        wait_until(
            lambda: (
                any(p.poll() is not None for p in procs) or len(list(root.glob("loading-*"))) >= 2
            ),
            "a resume to end or load",
        )
    finally:
        (root / "go").write_text("")
    outputs = {p.pid: p.communicate(timeout=300) for p in procs}
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    winner = next(p for p in procs if p.returncode == 0)
    loser = next(p for p in procs if p.returncode == 2)

    record = latest(root)
    assert record["status"] == "success" and record["resumed_from"] == failed["run_id"]
    assert record["pid"] == winner.pid
    stderr = outputs[loser.pid][1]
    assert error_lines(stderr) == [
        f"pipectl: error: --resume: run {failed['run_id']} is being resumed already, by run "
        f"{record['run_id']} (pid {winner.pid} on host {socket.gethostname()}): wait for that "
        "run to end; if it fails, --resume latest resumes it"
    ], stderr
    assert "Traceback" not in stderr
    # every record once: the data step that ran before the failure was taken, not run again;
    # the one after it ran in one resume only
    assert table(root, "records") == list(range(200))
    assert table(root, "staged") == list(range(100))
    assert ran(root, "prepare") == 1 and ran(root, "gate") == 2  # first run, winner
    # the run was resumed successfully: it is not resumed again
    again = cli("run", "pipeline.yaml", "--resume", failed["run_id"], cwd=root)
    assert again.returncode == 2
    assert error_lines(again.stderr) == [
        f"pipectl: error: --resume: run {failed['run_id']} was resumed already, by run "
        f"{record['run_id']}, which succeeded: nothing of it is left to run (run the pipeline "
        "without --resume to run it all again)"
    ], again.stderr
    assert table(root, "records") == list(range(200))


@pytest.mark.slow
def test_resume_latest_takes_the_latest_run_that_ended_not_one_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path
    monkeypatch.setenv("PIPECTL_HOME", str(root / "home"))
    write(root / "claim_steps.py", STEPS)
    write(root / "pipeline.yaml", WAITING)
    host = socket.gethostname()

    first = start("run", "pipeline.yaml", cwd=root, env={"HOLD": "first"})
    wait_until(lambda: (root / "holding-first").exists(), "the first run to hold")
    (running,) = json.loads(cli("runs", "list", "--json", cwd=root).stdout)
    assert running["status"] == "running"
    # no run has ended: nothing to resume, and the one running is not resumed
    nothing = cli("run", "pipeline.yaml", "--resume", "latest", cwd=root)
    assert nothing.returncode == 2
    assert error_lines(nothing.stderr) == [
        "pipectl: error: --resume: no run of pipeline 'waiting' has ended yet in the tracker "
        f"{root / 'home' / 'pipectl.db'}, nothing to resume: run {running['execution_id']} is "
        f"still running (pid {first.pid} on host {host}); wait for it to end"
    ], nothing.stderr
    for given in (running["execution_id"], running["execution_id"][:10]):
        refused = cli("run", "pipeline.yaml", "--resume", given, cwd=root)
        assert refused.returncode == 2
        assert error_lines(refused.stderr) == [
            f"pipectl: error: --resume: run {running['execution_id']} is still running (pid "
            f"{first.pid} on host {host}); wait for it to end or stop it, then resume it"
        ]
        assert "Traceback" not in refused.stderr
    assert ran(root, "a") == 1  # nothing else ran

    (root / "release-first").write_text("")
    assert first.communicate(timeout=300) and first.returncode == 1  # b failed: it ended
    second = start("run", "pipeline.yaml", cwd=root, env={"HOLD": "second"})
    try:
        wait_until(lambda: (root / "holding-second").exists(), "the second run to hold")
        (root / "fixed").write_text("")
        resumed = cli("run", "pipeline.yaml", "--resume", "latest", cwd=root)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        record = latest(root)
        # the first run (ended), not the second (still running, and newer)
        assert record["resumed_from"] == running["execution_id"]
        assert record["status"] == "success"
        assert ran(root, "a") == 2 and ran(root, "b") == 3  # a taken; b ran again
    finally:
        (root / "release-second").write_text("")
        second.communicate(timeout=300)
    assert second.returncode == 0


@pytest.mark.slow
def test_a_claim_left_by_a_killed_resumer_does_not_block_the_next_resume(project: Path):
    root = project
    failed = latest(root)
    victim = start("run", "pipeline.yaml", "--resume", "latest", cwd=root)
    wait_until(
        lambda: any(root.glob(f"loading-{victim.pid}-*")) or victim.poll() is not None,
        "the resume to load",
    )
    assert victim.poll() is None, victim.communicate()

    def gate_recorded() -> bool:  # the tracker's writer is a few ms behind the steps
        steps = {s["step_id"]: s for s in latest(root)["steps"]}
        return steps.get("gate", {}).get("status") == "success"

    wait_until(gate_recorded, "the resume's gate step to be recorded")
    victim.send_signal(signal.SIGKILL)  # in the middle of `load`, holding the claim
    victim.wait(timeout=60)
    killed = latest(root)
    assert killed["status"] == "interrupted" and killed["resumed_from"] == failed["run_id"]

    (root / "go").write_text("")
    again = cli("run", "pipeline.yaml", "--resume", "latest", cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    record = latest(root)
    # the latest run that ended is the killed resume: it is resumed, with what it took
    assert record["resumed_from"] == killed["run_id"] and record["status"] == "success"
    steps = {s["step_id"]: s for s in record["steps"]}
    assert [steps[n]["attempts"] for n in ("prepare", "stage", "gate", "load")] == [0, 0, 0, 1]
    assert table(root, "records") == list(range(200))  # the killed load committed nothing
    assert table(root, "staged") == list(range(100))
    assert ran(root, "prepare") == 1 and ran(root, "gate") == 2
    # the first run was resumed successfully, through the killed resume: not again
    again = cli("run", "pipeline.yaml", "--resume", failed["run_id"], cwd=root)
    assert again.returncode == 2
    assert error_lines(again.stderr) == [
        f"pipectl: error: --resume: run {failed['run_id']} was resumed already, by run "
        f"{record['run_id']} (through run {killed['run_id']}), which succeeded: nothing of it "
        "is left to run (run the pipeline without --resume to run it all again)"
    ], again.stderr
    assert table(root, "records") == list(range(200))


@pytest.mark.slow
def test_the_run_a_killed_resumer_claimed_can_be_resumed_by_id(project: Path):
    root = project
    failed = latest(root)
    victim = start("run", "pipeline.yaml", "--resume", failed["run_id"], cwd=root)
    wait_until(
        lambda: any(root.glob(f"loading-{victim.pid}-*")) or victim.poll() is not None,
        "the resume to load",
    )
    assert victim.poll() is None, victim.communicate()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)

    (root / "go").write_text("")
    again = cli("run", "pipeline.yaml", "--resume", failed["run_id"], cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr  # the dead claim is taken over
    record = latest(root)
    assert record["resumed_from"] == failed["run_id"] and record["status"] == "success"
    assert table(root, "records") == list(range(200))
    assert ran(root, "prepare") == 1 and ran(root, "gate") == 3  # first, killed, this one

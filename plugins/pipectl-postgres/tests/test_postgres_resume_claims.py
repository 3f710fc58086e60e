"""One resumer per run, through the Python API with a PostgreSQL tracker: ``run(resume=...)``
twice at once (two threads) resumes once, ``latest`` is the latest run that ended, a run still
running is not resumed, and a claim left by a resumer that was killed (a real process, SIGKILL)
does not block the next resume. Skipped without ``PIPECTL_TEST_POSTGRES_DSN``."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pipectl import Pipeline, RunStatus
from pipectl.tracking import ResumeClaimed, RunInProgress
from psycopg.conninfo import conninfo_to_dict

STEPS = """
    import os
    import threading
    import time
    from pathlib import Path


    def count(name):
        with open(f"ran-{name}.txt", "a") as f:
            f.write("x")


    def wait_for(name):
        for _ in range(6000):  # a few minutes at most: never hang a test run
            if Path(name).exists():
                return
            time.sleep(0.05)


    def prepare():
        count("prepare")
        return "ready"


    def gate():
        count("gate")
        if not Path("open").exists():
            raise RuntimeError("the gate is shut: no file 'open'")
        return "open"


    def records():
        for start in range(0, 200, 20):
            yield [{"id": i} for i in range(start, start + 20)]
            if start == 0:
                Path(f"loading-{os.getpid()}-{threading.get_ident()}").write_text("")
                wait_for("go")
            time.sleep(0.01)


    def a():
        count("a")
        return 1


    def b(a, params):
        count("b")
        if params["hold"]:  # this run stays running until the test releases it
            Path(f"holding-{params['hold']}").write_text("")
            wait_for(f"release-{params['hold']}")
        if not Path("fixed").exists():
            raise RuntimeError("b is broken today")
        return a + 1
"""

CLAIMS = """
    name: pg_claims
    steps:
      - {name: prepare, run: "pg_claim_steps:prepare"}
      - {name: gate, run: "pg_claim_steps:gate", depends_on: [prepare]}
      - name: load
        depends_on: [gate]
        batch_size: 20
        extract: {type: python, function: "pg_claim_steps:records"}
        load:
          - {type: sqlite, path: out/records.sqlite, table: records}
"""

WAITING = """
    name: pg_waiting
    params:
      hold: {type: str, default: ""}
    steps:
      - {name: a, run: "pg_claim_steps:a"}
      - {name: b, run: "pg_claim_steps:b", depends_on: [a]}
"""

#: a resume through the Python API in a process of its own (the one the test kills)
RESUMER = """
import sys
from pipectl import Pipeline
Pipeline.from_yaml("claims.yaml").run_sync(resume=sys.argv[2], tracker=sys.argv[1])
"""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the limit only keeps a broken test from hanging."""
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def ran(name: str) -> int:
    path = Path(f"ran-{name}.txt")
    return len(path.read_text()) if path.exists() else 0


def records() -> list[int]:
    with sqlite3.connect("out/records.sqlite") as db:
        return sorted(r[0] for r in db.execute("SELECT id FROM records"))


@pytest.fixture
def url(pg_dsn: str, schema: str) -> str:
    """The tracker URL of the test's schema on the test server."""
    dsn = pg_dsn
    if "://" not in dsn:  # key/value settings: the same as the parameters of a URL
        dsn = "postgresql://?" + urlencode(conninfo_to_dict(dsn))
    return dsn + ("&" if "?" in dsn else "?") + urlencode({"schema": schema})


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: Any) -> Path:
    """The steps and both pipeline files in the working directory (a test's own)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "pg_claim_steps.py").write_text(textwrap.dedent(STEPS))
    (tmp_path / "claims.yaml").write_text(textwrap.dedent(CLAIMS))
    (tmp_path / "waiting.yaml").write_text(textwrap.dedent(WAITING))
    return tmp_path


@pytest.fixture
def failed(project: Path, plugin_manager: Any, url: str) -> tuple[Pipeline, Any]:
    """The pipeline ``pg_claims`` and its first run, failed at ``gate``; the gate is fixed
    since."""
    pipe = Pipeline.from_yaml("claims.yaml", plugin_manager=plugin_manager)
    first = pipe.run_sync(tracker=url)
    assert first.status is RunStatus.FAILED
    Path("open").write_text("")
    return pipe, first


def test_two_resumes_at_once_in_python_one_runs_the_other_raises(failed, url):
    pipe, first = failed
    outcome: dict[str, Any] = {}

    def resume(name: str) -> None:
        try:
            outcome[name] = pipe.run_sync(resume="latest", tracker=url)
        except Exception as exc:  # any error: looked at below
            outcome[name] = exc

    threads = [threading.Thread(target=resume, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    try:  # one is refused at once, the other waits in `load`; both there would be the bug
        wait_until(
            lambda: (
                not all(t.is_alive() for t in threads) or len(list(Path().glob("loading-*"))) >= 2
            ),
            "a resume to end or load",
        )
    finally:
        Path("go").write_text("")
    for t in threads:
        t.join(timeout=300)
    runs = [v for v in outcome.values() if not isinstance(v, BaseException)]
    refused = [v for v in outcome.values() if isinstance(v, BaseException)]
    assert len(runs) == 1 and len(refused) == 1, outcome
    (run,), (error,) = runs, refused
    assert run.status is RunStatus.SUCCESS and run.resumed_from == first.run_id
    assert isinstance(error, ResumeClaimed), error
    assert (error.run_id, error.claimed_by, error.state) == (first.run_id, run.run_id, "active")
    assert (error.host, error.pid) == (socket.gethostname(), os.getpid())
    assert f"run {first.run_id} is being resumed already, by run {run.run_id}" in str(error)
    assert records() == list(range(200))
    assert ran("prepare") == 1 and ran("gate") == 2
    # resumed successfully: not again
    with pytest.raises(ResumeClaimed, match="which succeeded") as again:
        pipe.run_sync(resume=first.run_id, tracker=url)
    assert again.value.state == "succeeded" and again.value.claimed_by == run.run_id
    assert records() == list(range(200))


def test_latest_is_the_latest_run_that_ended_and_a_running_one_is_refused(
    project, plugin_manager, url
):
    pipe = Pipeline.from_yaml("waiting.yaml", plugin_manager=plugin_manager)
    ended: dict[str, Any] = {}

    def hold(name: str) -> threading.Thread:
        def run() -> None:
            ended[name] = pipe.run_sync(tracker=url, run_id=f"{name}-run", params={"hold": name})

        thread = threading.Thread(target=run)
        thread.start()
        wait_until(lambda: Path(f"holding-{name}").exists(), f"run {name} to hold")
        return thread

    first = hold("first")
    with pytest.raises(RunInProgress, match=r"no run of pipeline 'pg_waiting' has ended yet"):
        pipe.run_sync(resume="latest", tracker=url)
    with pytest.raises(RunInProgress) as running:
        pipe.run_sync(resume="first-run", tracker=url)
    assert str(running.value) == (
        f"run first-run is still running (pid {os.getpid()} on host "
        f"{socket.gethostname()}); wait for it to end or stop it, "
        "then resume it"
    )
    assert ran("a") == 1
    Path("release-first").write_text("")
    first.join(timeout=300)
    assert ended["first"].status is RunStatus.FAILED

    second = hold("second")
    try:
        Path("fixed").write_text("")
        resumed = pipe.run_sync(resume="latest", tracker=url)
        assert resumed.status is RunStatus.SUCCESS
        assert resumed.resumed_from == "first-run"  # not second-run: it is still running
        assert ran("a") == 2 and ran("b") == 3
    finally:
        Path("release-second").write_text("")
        second.join(timeout=300)
    assert ended["second"].status is RunStatus.SUCCESS


def _killed_resume(url: str, resume: str) -> None:
    """A process resuming ``resume`` through the Python API, killed in the middle of `load`."""
    victim = subprocess.Popen(
        [sys.executable, "-c", RESUMER, url, resume],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(
        lambda: any(Path().glob(f"loading-{victim.pid}-*")) or victim.poll() is not None,
        "the resume to load",
    )
    assert victim.poll() is None, victim.communicate()
    from pipectl.plugins import get_plugin_manager
    from pipectl.tracking import open_tracker

    tracker = open_tracker(url, get_plugin_manager().registries)  # with pipectl-postgres
    try:  # the tracker's writer is a few ms behind the steps: wait for the gate's success row

        def gate_recorded() -> bool:
            (run,) = tracker.list_runs(limit=1)
            steps = {s["step_id"]: s for s in tracker.get_run(run["execution_id"])["steps"]}
            return steps.get("gate", {}).get("status") == "success"

        wait_until(gate_recorded, "the resume's gate step to be recorded")
    finally:
        tracker.close()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)


@pytest.mark.slow
def test_a_killed_resumer_leaves_a_claim_the_next_resume_gets_past(failed, url):
    pipe, first = failed
    _killed_resume(url, "latest")
    Path("go").write_text("")
    resumed = pipe.run_sync(resume="latest", tracker=url)
    assert resumed.status is RunStatus.SUCCESS
    killed = resumed.resumed_from  # the latest run that ended: the killed resume
    assert killed != first.run_id
    assert records() == list(range(200))  # the killed load committed nothing
    assert ran("prepare") == 1 and ran("gate") == 2
    # the first run was resumed successfully through the killed one: not resumed again
    with pytest.raises(ResumeClaimed) as again:
        pipe.run_sync(resume=first.run_id, tracker=url)
    assert (again.value.state, again.value.claimed_by, again.value.through) == (
        "succeeded",
        resumed.run_id,
        [killed],
    )


@pytest.mark.slow
def test_the_claim_of_a_killed_resumer_is_taken_over_by_id(failed, url):
    pipe, first = failed
    _killed_resume(url, first.run_id)
    Path("go").write_text("")
    resumed = pipe.run_sync(resume=first.run_id, tracker=url)
    assert resumed.status is RunStatus.SUCCESS and resumed.resumed_from == first.run_id
    assert records() == list(range(200))
    assert ran("prepare") == 1 and ran("gate") == 3

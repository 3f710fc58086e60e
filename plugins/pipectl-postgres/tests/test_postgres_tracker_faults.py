"""The PostgreSQL tracker's server going away in the middle of a ``pipectl run``: the run goes
on, its rows are retried in the background, and what is still not written when the run ends
is spooled to a local file that the next command opening the tracker writes to it.

These tests stop and start a PostgreSQL server of their own (``initdb`` into a temporary
folder, on a free port): the shared test server is never touched. They need
``PIPECTL_TEST_POSTGRES_DSN`` set (the PostgreSQL tests are wanted) and the server binaries
``initdb`` and ``pg_ctl``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PIPECTL = [sys.executable, "-m", "pipectl.cli"]
PASSWORD = "hunter2-pw"  # in the URL: the server trusts, so it is never checked, only hidden


def _server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, else the newest Debian-style
    ``/usr/lib/postgresql/VERSION/bin``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnServer:
    """A PostgreSQL server in a temporary folder, trusting local connections, that the test
    stops (``-m immediate``: as a crash or a lost machine would) and starts again."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        # not under pytest's tmp_path: its folders are private to the user running the tests,
        # and the server runs as the postgres user when that one is root
        self.base = Path(tempfile.mkdtemp(prefix="pipectl-pg-faults-"))
        self.data = self.base / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            runuser = shutil.which("runuser")
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                runuser = None
            if runuser is None:
                shutil.rmtree(self.base)
                pytest.skip(
                    "the tests run as root and there is no `postgres` user (or no "
                    "runuser) to run a PostgreSQL server of their own as"
                )
            self.as_owner = [runuser, "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """The tracker URL, with a password the output must never show."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [*self.as_owner, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{tool} {' '.join(args)}: {proc.stdout}{proc.stderr}"

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [
                *self.as_owner,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)

    def query(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def server(pg_dsn: str) -> Iterator[OwnServer]:
    """A PostgreSQL server of the test's own, started (``pg_dsn``: skipped like the other
    PostgreSQL tests when no test server is configured)."""
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip(
            "initdb and pg_ctl (the PostgreSQL server binaries) are not installed: "
            "they are needed to start a server these tests can stop"
        )
    own = OwnServer(bindir)
    try:
        own.start()
        yield own
    finally:
        own.remove()


STEPS = """
    import time
    from pathlib import Path


    def wait_for(name):
        Path(f"waiting-{name}").write_text("")
        deadline = time.monotonic() + 120
        while not Path(name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test never created {name}")
            time.sleep(0.02)


    def step(**upstream):
        return len(upstream)


    def gate1(**upstream):
        wait_for("go1")
        return "through gate 1"


    def gate2(**upstream):
        wait_for("go2")
        return "through gate 2"


    def last(**upstream):
        Path("ended").write_text(repr(time.time()))
        return "done"
"""

# 12 steps: 3 before gate1, 4 between the gates, 3 after gate2, then last
PIPELINE = """
    name: outage
    steps:
      - {name: a1, run: "outage_steps:step"}
      - {name: a2, run: "outage_steps:step", depends_on: [a1]}
      - {name: a3, run: "outage_steps:step", depends_on: [a1]}
      - {name: gate1, run: "outage_steps:gate1", depends_on: [a2, a3]}
      - {name: b1, run: "outage_steps:step", depends_on: [gate1]}
      - {name: b2, run: "outage_steps:step", depends_on: [gate1]}
      - {name: b3, run: "outage_steps:step", depends_on: [b1, b2]}
      - {name: gate2, run: "outage_steps:gate2", depends_on: [b3]}
      - {name: c1, run: "outage_steps:step", depends_on: [gate2]}
      - {name: c2, run: "outage_steps:step", depends_on: [gate2]}
      - {name: c3, run: "outage_steps:step", depends_on: [c1]}
      - {name: last, run: "outage_steps:last", depends_on: [c2, c3]}
"""


def project(root: Path) -> None:
    (root / "outage_steps.py").write_text(textwrap.dedent(STEPS))
    (root / "pipeline.yaml").write_text(textwrap.dedent(PIPELINE))


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def step_rows(server: OwnServer) -> dict[str, str]:
    return dict(server.query("SELECT step_id, status FROM pipectl.step_executions"))


def start_run(root: Path, server: OwnServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PIPECTL, "run", "pipeline.yaml", "--tracker", server.url, "--no-progress"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def spool_files() -> list[Path]:
    return sorted((Path(os.environ["PIPECTL_HOME"]) / "spool").glob("*.jsonl"))


def check_recorded(server: OwnServer) -> None:
    """Every step row and the run row are in the database, as successes."""
    steps = step_rows(server)
    assert sorted(steps) == sorted(
        ["a1", "a2", "a3", "gate1", "b1", "b2", "b3", "gate2", "c1", "c2", "c3", "last"]
    )
    assert set(steps.values()) == {"success"}, steps
    assert server.query("SELECT pipeline_name, status FROM pipectl.pipeline_executions") == [
        ("outage", "success")
    ]


@pytest.mark.slow
def test_the_server_lost_mid_run_the_rows_are_spooled_and_written_by_the_next_command(
    tmp_path, server
):
    project(tmp_path)
    proc = start_run(tmp_path, server)
    try:
        wait_until(lambda: (tmp_path / "waiting-go1").exists(), "gate1 to start")
        # what ran so far is in the database (a1 a2 a3 done, gate1 started)
        wait_until(lambda: len(step_rows(server)) == 4, "the first rows to be written")
        server.stop()
        (tmp_path / "go1").write_text("")
        wait_until(lambda: (tmp_path / "waiting-go2").exists(), "gate2 to start")
        (tmp_path / "go2").write_text("")
        out, err = proc.communicate(timeout=120)
        ended_at = time.time()
    finally:
        proc.kill()
    pipeline_ended = float((tmp_path / "ended").read_text())

    assert proc.returncode == 0, out + err  # the pipeline's outcome, not the tracker's
    assert ended_at - pipeline_ended < 10, "the run waited too long on the lost tracker"
    assert "Traceback" not in err and PASSWORD not in out + err
    warnings = [line for line in err.splitlines() if line.startswith("pipectl: warning:")]
    assert len(warnings) == 1, err
    (warning,) = warnings
    assert f"tracker postgresql://postgres@127.0.0.1:{server.port}/postgres" in warning
    assert "spooled to" in warning and "next pipectl command" in warning
    assert "step rows" in warning and "run row" in warning
    assert "last" in out and "success" in out  # the summary table still printed
    (spooled,) = spool_files()
    assert str(spooled) in warning
    lines = [json.loads(line) for line in spooled.read_text().splitlines()]
    assert {line["table"] for line in lines} >= {"step_executions", "pipeline_executions"}

    server.start()
    listed = subprocess.run(
        [*PIPECTL, "runs", "list", "--json", "--tracker", server.url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert run["status"] == "success" and run["pipeline_name"] == "outage"
    check_recorded(server)
    assert spool_files() == []
    # the step order and the attempt history survived the detour through the spool
    orders = server.query("SELECT step_id, step_order FROM pipectl.step_executions")
    assert sorted(o for _, o in orders) == list(range(12))


@pytest.mark.slow
def test_the_server_back_during_the_run_gets_the_rows_from_the_background_retry(tmp_path, server):
    project(tmp_path)
    proc = start_run(tmp_path, server)
    try:
        wait_until(lambda: (tmp_path / "waiting-go1").exists(), "gate1 to start")
        wait_until(lambda: len(step_rows(server)) == 4, "the first rows to be written")
        server.stop()
        (tmp_path / "go1").write_text("")
        wait_until(lambda: (tmp_path / "waiting-go2").exists(), "gate2 to start")
        time.sleep(1)  # the writer fails and retries meanwhile
        server.start()
        # while gate2 still holds the run, the retries write b1 b2 b3 and gate2's start
        wait_until(lambda: len(step_rows(server)) == 8, "the background retry", timeout=60)
        assert step_rows(server)["b3"] == "success"
        (tmp_path / "go2").write_text("")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "pipectl: warning" not in err and "Traceback" not in err
    check_recorded(server)
    assert spool_files() == []

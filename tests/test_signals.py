"""SIGTERM (what ``kill``, systemd, Docker, Kubernetes and CI runners send) ends a run as Ctrl-C
does: the run is cancelled, data-step outputs are aborted, the tracker records the run as
``cancelled``, and ``pipectl run`` exits 143. A second signal while the first cancellation is
still under way ends the process (exit 130).

Every test runs a real process and signals it once it has printed that it got where the test
wants it; the timeouts only bound a hang."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PIPECTL = [sys.executable, "-m", "pipectl.cli"]
TIMEOUT = 120  # seconds; generous for a slow shared machine: only a hang reaches it

SOURCE = '''
import sys
import time


def records(start, batches, delay):
    """``batches`` batches of 10 records, ids from ``start``; says "writing" after the third."""
    for b in range(batches):
        yield [{"id": start + b * 10 + i, "value": f"v{b}"} for i in range(10)]
        if b == 2:
            print("writing", file=sys.stderr, flush=True)
        time.sleep(delay)
'''

PIPELINE = """
name: slow_load
params:
  start: {type: int, default: 0}
  batches: {type: int, default: 3}
  delay: {type: float, default: 0.0}
steps:
  - name: load
    extract:
      type: python
      function: "slow_source:records"
      args: {start: "${params.start}", batches: "${params.batches}", delay: "${params.delay}"}
      batch_size: 10
    load:
      - {type: jsonl, path: out/records.jsonl}
      - {type: sqlite, path: out/records.sqlite, table: records, key: id}
"""

STUBBORN = '''
import asyncio
import sys


async def stubborn():
    """Takes its time to stop: its clean-up outlasts any test."""
    print("started", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        print("cleaning up", file=sys.stderr, flush=True)
        await asyncio.sleep(600)
'''


def _default_signals() -> None:
    # the child gets SIGINT and SIGTERM as a terminal or a service manager gives them: a test
    # runner started in the background (SIGINT ignored) would otherwise pass SIG_IGN on
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )


def _wait_for(proc: subprocess.Popen[str], stream: str, marker: str) -> list[str]:
    """The lines of ``proc``'s ``stream`` up to and including ``marker``. readline blocks; a
    timer kills the process if the marker never comes, which ends the wait with EOF."""
    lines: list[str] = []
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    try:
        for line in getattr(proc, stream):
            lines.append(line)
            if line.strip() == marker:
                return lines
    finally:
        timer.cancel()
    raise AssertionError(f"no {marker!r} line from the process:\n{''.join(lines)}")


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def _rows(database: Path) -> list[int]:
    # closed at once: an open connection would keep the database's -wal file
    with closing(sqlite3.connect(database)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM records ORDER BY id")]


@pytest.mark.slow
def test_sigterm_cancels_a_cli_run_aborts_its_outputs_and_records_it(tmp_path):
    (tmp_path / "slow_source.py").write_text(SOURCE)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    out = tmp_path / "out"
    # a first run commits 30 records to both outputs: the cancelled run must leave them so
    first = _cli("run", "pipeline.yaml", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = (out / "records.jsonl").read_text()
    assert len(before.splitlines()) == 30
    assert _rows(out / "records.sqlite") == list(range(30))

    proc = _start(
        [
            *PIPECTL,
            "run",
            "pipeline.yaml",
            "--no-progress",
            "-p",
            "start=1000",
            "-p",
            "batches=1000000",
            "-p",
            "delay=0.05",
        ],
        cwd=tmp_path,
    )
    try:
        _wait_for(proc, "stderr", "writing")
        # the outputs are open and being written: each has its temporary file
        assert list(out.glob(".records.jsonl.*.tmp")), sorted(p.name for p in out.iterdir())
        proc.send_signal(signal.SIGTERM)
    finally:
        stdout, stderr = _finish(proc)

    assert proc.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "the run was terminated (SIGTERM)" in stdout
    resume = [line for line in stdout.splitlines() if line.startswith("resume it with:")]
    assert resume, stdout
    run_id = resume[0].split("--resume ")[1]
    # nothing of the cancelled run reached the outputs, and nothing of it is left behind
    leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith((".tmp", "-wal")))
    assert leftovers == []
    assert (out / "records.jsonl").read_text() == before
    assert _rows(out / "records.sqlite") == list(range(30))
    # the normal end of the run ran: the tracker has it as cancelled, not running
    shown = _cli("runs", "show", run_id, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "cancelled"
    assert {s["step_name"]: s["status"] for s in record["steps"]} == {"load": "cancelled"}


@pytest.mark.slow
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_during_the_cancellation_ends_the_process(tmp_path, second):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    (tmp_path / "pipeline.yaml").write_text(
        "name: stubborn\nsteps:\n  - name: stubborn\n    run: stubborn:stubborn\n"
    )
    proc = _start([*PIPECTL, "run", "pipeline.yaml", "--no-progress"], cwd=tmp_path)
    try:
        _wait_for(proc, "stderr", "started")
        proc.send_signal(signal.SIGTERM)
        # the first signal cancelled the step, which now takes 600 s to stop
        _wait_for(proc, "stderr", "cleaning up")
        proc.send_signal(second)
    finally:
        stdout, stderr = _finish(proc)  # fails with a timeout if the second signal did nothing
    assert proc.returncode == 130, stdout + stderr
    assert "pipectl: interrupted" in stderr
    assert "Traceback" not in stderr, stderr


API_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import signal
    import sys
    import time

    from pipectl import Pipeline, get_plugin_manager

    mode = sys.argv[1]
    pipe = Pipeline("sigterm", plugin_manager=get_plugin_manager(autoload=False))

    if mode == "async":
        @pipe.step
        async def sleeper():
            print("started", flush=True)
            await asyncio.sleep(600)
    else:
        @pipe.step
        def sleeper():
            print("started", flush=True)
            time.sleep(600)

    @pipe.step(depends_on=["sleeper"])
    def after(sleeper):
        print("after ran", flush=True)

    def own_handler(signum, frame):
        pass

    signal.signal(signal.SIGTERM, own_handler)
    run = pipe.run_sync()
    print("status", run.status.value, flush=True)
    print("cancelled_by", run.cancelled_by, flush=True)
    for name, result in run.steps.items():
        print("step", name, result.status.value, flush=True)
    print("own handler back", signal.getsignal(signal.SIGTERM) is own_handler, flush=True)
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_run_sync_returns_the_run_a_sigterm_cancelled(tmp_path, mode):
    script = tmp_path / "sigterm_pipeline.py"
    script.write_text(API_SCRIPT)
    proc = _start([sys.executable, str(script), mode], cwd=tmp_path)
    try:
        _wait_for(proc, "stdout", "started")
        proc.send_signal(signal.SIGTERM)
    finally:
        stdout, stderr = _finish(proc)
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr, stderr
    lines = stdout.splitlines()
    assert "status cancelled" in lines
    assert "cancelled_by SIGTERM" in lines
    assert "step sleeper cancelled" in lines
    assert "step after cancelled" in lines
    assert "after ran" not in lines
    # the application's own SIGTERM handler is its own again once the run is over
    assert "own handler back True" in lines


IGNORED_SCRIPT = textwrap.dedent(
    """
    import signal
    import sys

    from pipectl import Pipeline, get_plugin_manager

    pipe = Pipeline("nohup", plugin_manager=get_plugin_manager(autoload=False))

    @pipe.step
    def wait_for_go():
        print("started", flush=True)
        return sys.stdin.readline().strip()

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run = pipe.run_sync()
    print("status", run.status.value, flush=True)
    print("output", run.steps["wait_for_go"].output, flush=True)
    print("still ignored", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, flush=True)
    """
)


def test_an_ignored_sigterm_stays_ignored(tmp_path):
    script = tmp_path / "ignored.py"
    script.write_text(IGNORED_SCRIPT)
    proc = _start([sys.executable, str(script)], cwd=tmp_path)
    try:
        _wait_for(proc, "stdout", "started")
        # an ignored signal is discarded when sent: the run never sees it and goes on
        proc.send_signal(signal.SIGTERM)
        proc.stdin.write("go\n")
        proc.stdin.flush()
    finally:
        stdout, stderr = _finish(proc)
    assert proc.returncode == 0, stdout + stderr
    lines = stdout.splitlines()
    assert "status success" in lines
    assert "output go" in lines
    assert "still ignored True" in lines

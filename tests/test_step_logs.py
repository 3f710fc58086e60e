"""Step logs: what each attempt of a step prints, writes to stderr, logs with ``logging`` and
pipectl's events for it, captured per attempt into the tracker (real SQLite files, real runs
through the public API and the CLI), bounded, secrets masked, still shown on the terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipectl import Pipeline, step_logs
from pipectl.tracking import SqliteTracker


@pytest.fixture
def url(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'runs.db'}"


def open_store(url: str) -> SqliteTracker:
    store = SqliteTracker(url)
    store.migrate()
    return store


def lines_of(url: str, run_id: str, step: str, attempt: int | None = None) -> list[dict]:
    store = open_store(url)
    try:
        return store.step_logs(run_id, step, attempt)
    finally:
        store.close()


def texts(rows: list[dict], stream: str | None = None) -> list[str]:
    return [r["message"] for r in rows if stream is None or r["stream"] == stream]


def test_prints_stderr_logging_and_events_land_in_each_attempts_logs(plugin_manager, url, capsys):
    calls = {"n": 0}

    def load(ctx):
        calls["n"] += 1
        print(f"loading, attempt {calls['n']}")
        print("half a line", end="")
        print(" and its end")
        sys.stderr.write("a warning on stderr\n")
        logging.getLogger("loader").warning("%d rows look odd", 3)
        ctx.logger.info("loader_progress", rows=3)  # below the console's level: captured only
        if calls["n"] == 1:
            raise ConnectionError("warehouse busy")
        return 3

    pipe = Pipeline("logs", plugin_manager=plugin_manager)
    pipe.add_step("load", load, retries=1, retry_delay=0, retry_jitter=0)
    run = pipe.run_sync(tracker=url)
    assert run.ok, run.errors
    first = lines_of(url, run.run_id, "load", 1)
    second = lines_of(url, run.run_id, "load", 2)
    assert [(r["stream"], r["level"], r["message"]) for r in first] == [
        ("event", "info", "step_started attempt=1"),
        ("stdout", None, "loading, attempt 1"),
        ("stdout", None, "half a line and its end"),
        ("stderr", None, "a warning on stderr"),
        ("logging", "WARNING", "loader: 3 rows look odd"),
        ("event", "info", "loader_progress rows=3"),
        (
            "event",
            "info",
            "step_retry attempt=1 error='ConnectionError: warehouse busy' delay_s=0.0",
        ),
    ]
    assert texts(second, "stdout") == ["loading, attempt 2", "half a line and its end"]
    assert texts(second)[0] == "step_started attempt=2"
    assert [r["seq"] for r in second] == list(range(len(second)))
    assert {r["attempt"] for r in lines_of(url, run.run_id, "load")} == {1, 2}
    assert all(r["logged_at"].endswith("+00:00") for r in first)
    # the result carries them too, for other listeners
    assert [a for a, _ in run.steps["load"].logs] == [1, 2]
    # the terminal still showed everything (the info event was not shown: warning level)
    shown = capsys.readouterr()
    assert shown.out.count("loading, attempt") == 2 and "half a line and its end" in shown.out
    assert shown.err.count("a warning on stderr") == 2
    assert "loader_progress" not in shown.err


def test_concurrent_async_and_sync_steps_do_not_mix_their_lines(plugin_manager, url):
    async def talker(ctx):
        for i in range(20):
            print(f"{ctx.step} line {i}")
            logging.getLogger("talk").warning("%s record %d", ctx.step, i)
            await asyncio.sleep(0.001)

    def worker(ctx):
        for i in range(20):
            print(f"{ctx.step} line {i}")
            logging.getLogger("work").warning("%s record %d", ctx.step, i)
            time.sleep(0.001)

    pipe = Pipeline("mixed", plugin_manager=plugin_manager)
    names = []
    for k in range(4):
        pipe.add_step(f"async{k}", talker)
        pipe.add_step(f"sync{k}", worker)
        names += [f"async{k}", f"sync{k}"]
    run = pipe.run_sync(tracker=url)
    assert run.ok, run.errors
    for name in names:
        rows = lines_of(url, run.run_id, name)
        out = texts(rows, "stdout")
        assert out == [f"{name} line {i}" for i in range(20)], name
        logged = texts(rows, "logging")
        assert len(logged) == 20 and all(f": {name} record" in m for m in logged), name


def test_a_secret_params_value_printed_by_a_step_is_masked(plugin_manager, url, capsys):
    secret = "s3cr3t-value-123"

    def leak(params):
        print(f"connecting with {params['token']}")
        logging.getLogger("db").warning("password=%s", params["token"])
        return "ok"

    pipe = Pipeline("secretive", plugin_manager=plugin_manager)
    pipe.param("token", secret, secret=True)
    pipe.add_step("leak", leak)
    run = pipe.run_sync(tracker=url)
    rows = lines_of(url, run.run_id, "leak")
    assert texts(rows, "stdout") == ["connecting with ***"]
    assert texts(rows, "logging") == ["db: password=***"]
    assert secret not in json.dumps(rows)
    assert secret not in repr(run.steps["leak"].logs)
    assert secret in capsys.readouterr().out  # the user's own terminal shows what they printed


def test_each_attempts_log_is_bounded_and_says_what_was_left_out(plugin_manager, url):
    def chatty():
        for i in range(5000):
            print(f"line {i}")

    def wide():
        print("x" * 200_000)  # one line bigger than the whole bound
        print("after it")

    pipe = Pipeline("bounded", plugin_manager=plugin_manager)
    pipe.add_step("chatty", chatty)
    pipe.add_step("wide", wide)
    run = pipe.run_sync(tracker=url)
    rows = lines_of(url, run.run_id, "chatty")
    kept = [r for r in rows if r["stream"] == "stdout"]
    assert len(rows) <= step_logs.MAX_LINES + 2  # the lines, step_started, the cut's note
    assert len(kept) <= step_logs.MAX_LINES
    assert sum(len(r["message"].encode()) for r in kept) <= step_logs.MAX_BYTES
    assert kept[0]["message"] == "line 0"
    note = rows[-1]
    assert note["stream"] == "event" and note["level"] == "warning"
    left = 5000 - len(kept)
    assert f"lines_left_out={left} " in note["message"]
    wide_rows = lines_of(url, run.run_id, "wide")
    assert not any(r["stream"] == "stdout" for r in wide_rows)  # neither fits after the cut
    assert "lines_left_out=2 bytes_left_out=200008" in wide_rows[-1]["message"]


def test_streams_and_handlers_are_put_back_after_runs_also_failing_and_nested(plugin_manager, url):
    before = (sys.stdout, sys.stderr, list(logging.getLogger().handlers))
    seen = {}

    def inside():
        seen["tee"] = isinstance(sys.stdout, step_logs.Tee)
        print("from the child")

    child = Pipeline("child", plugin_manager=plugin_manager)
    child.add_step("inner", inside)
    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_step("outer", lambda: print("from the parent"))
    parent.add_subpipeline(child, "sub", depends_on=["outer"])
    parent.add_step("boom", lambda: {}["missing"], depends_on=["sub"])
    run = parent.run_sync(tracker=url)
    assert not run.ok and seen["tee"]
    assert (sys.stdout, sys.stderr, logging.getLogger().handlers) == before
    assert not step_logs.installed()
    child_run = run.steps["sub"].output.run
    assert texts(lines_of(url, child_run.run_id, "inner"), "stdout") == ["from the child"]
    assert texts(lines_of(url, run.run_id, "outer"), "stdout") == ["from the parent"]


def test_runs_at_once_in_threads_keep_their_own_lines(plugin_manager, url, tmp_path):
    def make(name):
        def step():
            for i in range(30):
                print(f"{name} {i}")
                time.sleep(0.0005)

        pipe = Pipeline(name, plugin_manager=plugin_manager)
        pipe.add_step("talk", step)
        return pipe

    runs = {}

    def go(name):
        runs[name] = make(name).run_sync(tracker=f"sqlite:///{tmp_path / (name + '.db')}")

    threads = [threading.Thread(target=go, args=(f"p{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, run in runs.items():
        rows = lines_of(f"sqlite:///{tmp_path / (name + '.db')}", run.run_id, "talk")
        assert texts(rows, "stdout") == [f"{name} {i}" for i in range(30)]
    assert not step_logs.installed() and not isinstance(sys.stdout, step_logs.Tee)


def test_without_a_tracker_nothing_is_captured_or_installed(plugin_manager):
    seen = {}

    def step():
        seen["stdout"] = type(sys.stdout)
        print("just printed")

    pipe = Pipeline("untracked", plugin_manager=plugin_manager)
    pipe.add_step("step", step)
    run = pipe.run_sync()
    assert run.ok and run.steps["step"].logs is None
    assert seen["stdout"] is not step_logs.Tee

    # and with a tracker, capture_logs=False turns it off
    class Asks:
        wants_step_logs = True

    run = pipe.run_sync(listeners=[Asks()])
    assert run.steps["step"].logs is not None  # a listener asking for them gets them
    run = pipe.run_sync(listeners=[Asks()], capture_logs=False)
    assert run.steps["step"].logs is None


def test_a_quiet_step_records_no_lines(plugin_manager, url):
    pipe = Pipeline("quiet", plugin_manager=plugin_manager)
    pipe.add_step("noop", lambda: None)
    run = pipe.run_sync(tracker=url)
    assert lines_of(url, run.run_id, "noop") == []


def test_a_warning_logged_without_logging_configured_is_still_shown(plugin_manager, url, capfd):
    """The root logger's handler stands in for logging.lastResort while runs capture."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in a script that configured no logging (pytest added some)
    try:
        pipe = Pipeline("lastresort", plugin_manager=plugin_manager)
        pipe.add_step("warn", lambda: logging.getLogger("lonely").warning("shown anyway"))
        run = pipe.run_sync(tracker=url)
    finally:
        root.handlers[:] = saved
    assert "shown anyway" in capfd.readouterr().err
    assert texts(lines_of(url, run.run_id, "warn")) == [
        "step_started attempt=1",
        "lonely: shown anyway",
    ]


def test_prune_deletes_a_runs_logs_with_it(plugin_manager, url):
    pipe = Pipeline("pruned", plugin_manager=plugin_manager)
    pipe.add_step("say", lambda: print("hello"))
    old = pipe.run_sync(tracker=url)
    new = pipe.run_sync(tracker=url)
    store = open_store(url)
    try:
        assert store.prune(keep=1) == [old.run_id]
        assert store.step_logs(new.run_id, "say")
        rows = store._query(
            "SELECT COUNT(*) AS n FROM step_logs WHERE execution_id = ?", (old.run_id,)
        )
        assert rows[0]["n"] == 0
    finally:
        store.close()


# -- pipectl runs logs ------------------------------------------------------------------------


def test_runs_logs_prints_a_steps_lines_and_json(plugin_manager, url, run_cli):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        print(f"try {calls['n']}")
        if calls["n"] == 1:
            raise ValueError("not yet")

    pipe = Pipeline("cli", plugin_manager=plugin_manager)
    pipe.add_step("flaky", flaky, retries=1, retry_delay=0, retry_jitter=0)
    run = pipe.run_sync(tracker=url)
    result = run_cli("runs", "logs", run.run_id[:10], "flaky", "--tracker", url)
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0] == "-- attempt 1" and "-- attempt 2" in out
    assert any(line.endswith("stdout          try 1") for line in out)
    assert any("event info" in line and "step_retry attempt=1" in line for line in out)
    result = run_cli(
        "runs", "logs", "latest", "flaky", "--attempt", "2", "--json", "--tracker", url
    )
    assert result.exit_code == 0, result.output
    lines = json.loads(result.output)
    assert {line["attempt"] for line in lines} == {2}
    assert [line["message"] for line in lines if line["stream"] == "stdout"] == ["try 2"]
    assert set(lines[0]) == {"attempt", "seq", "logged_at", "stream", "level", "message"}


def test_runs_logs_says_what_is_wrong_with_exit_status_2(plugin_manager, url, run_cli):
    pipe = Pipeline("cli", plugin_manager=plugin_manager)
    pipe.add_step("extract", lambda: print("x"))
    pipe.add_step("quiet", lambda: None)
    run = pipe.run_sync(tracker=url)
    unknown_run = run_cli("runs", "logs", "nosuchrun", "extract", "--tracker", url)
    assert unknown_run.exit_code == 2
    assert "no run 'nosuchrun'" in unknown_run.output and "Traceback" not in unknown_run.output
    typo = run_cli("runs", "logs", "latest", "extrakt", "--tracker", url)
    assert typo.exit_code == 2
    assert f"run {run.run_id} has no step 'extrakt' (did you mean 'extract'?)" in typo.output
    attempt = run_cli("runs", "logs", "latest", "extract", "--attempt", "2", "--tracker", url)
    assert attempt.exit_code == 2
    assert "step 'extract' of run" in attempt.output and "has no attempt 2: it ran 1 attempt" in (
        attempt.output
    )
    quiet = run_cli("runs", "logs", "latest", "quiet", "--tracker", url)
    assert quiet.exit_code == 0 and "no logs recorded for step 'quiet'" in quiet.output


@pytest.mark.slow
def test_pipectl_run_shows_the_prints_and_runs_logs_reads_them(tmp_path):
    (tmp_path / "steps.py").write_text(
        textwrap.dedent(
            """
            import logging

            def hello(params):
                print("hello from the step with", params["token"])
                logging.getLogger("steps").error("an error record")
                return 1
            """
        )
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(
            """
            name: greet
            params:
              token: {default: hunter2-secret, secret: true}
            steps:
              - name: hello
                run: steps:hello
            """
        )
    )
    env = {**os.environ, "PIPECTL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(tmp_path)}
    pipectl = [sys.executable, "-m", "pipectl.cli"]
    ran = subprocess.run(
        [*pipectl, "run", "pipeline.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "hello from the step with hunter2-secret" in ran.stdout  # the terminal shows it
    assert "an error record" in ran.stderr
    logs = subprocess.run(
        [*pipectl, "runs", "logs", "latest", "hello"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert logs.returncode == 0, logs.stderr
    assert "stdout          hello from the step with ***" in logs.stdout
    assert "logging ERROR   steps: an error record" in logs.stdout
    assert "hunter2-secret" not in logs.stdout
    # pipectl's own event lines (run on a pipe: info) are not captured as the step's stderr
    assert "stderr" not in logs.stdout


def test_the_tracker_contract_suite_still_passes_with_logs(plugin_manager, tmp_path, monkeypatch):
    from pipectl.testing import check_tracker_contract

    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    check_tracker_contract(
        lambda: SqliteTracker(f"sqlite:///{Path(tmp_path) / 'contract.db'}"),
        plugin_manager=plugin_manager,
    )


@pytest.mark.slow
def test_logs_a_failing_database_did_not_take_are_spooled_and_written_later(
    plugin_manager, url, monkeypatch
):
    class Down(SqliteTracker):
        def _write(self, conn, *rows, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("pipectl.tracking.sql.GIVE_UP_SECONDS", 0.2)
    down = Down(url)
    down.migrate()
    pipe = Pipeline("spooled", plugin_manager=plugin_manager)
    pipe.add_step("say", lambda: print("kept through the spool"))
    run = pipe.run_sync(tracker=down)
    problems = down.close(report=False)
    assert any("step log line" in p and "spooled to" in p for p in problems), problems
    assert texts(lines_of(url, run.run_id, "say"), "stdout") == ["kept through the spool"]


def test_lines_captured_elsewhere_keep_their_time_within_the_attempts_bounds():
    log = step_logs.AttemptLog(1)
    log.add("stdout", None, "in the driver")
    elsewhere = [(1000.0 + i, "stderr", None, f"remote {i}") for i in range(step_logs.MAX_LINES)]
    log.extend(elsewhere, left_lines=5, left_bytes=50)
    lines = log.close()
    assert lines[1][1:] == ("stdout", None, "in the driver")
    assert lines[2] == (1000.0, "stderr", None, "remote 0")  # its own timestamp and stream
    kept = [line for line in lines if line[1] == "stderr"]
    assert len(kept) == step_logs.MAX_LINES - 1  # the driver's line took one place
    # the one that did not fit, and what was left out where they were captured
    assert "lines_left_out=6 bytes_left_out=60 " in lines[-1][3]
    log.extend([(1.0, "stdout", None, "too late")])  # closed: nothing more
    assert log.close() == lines

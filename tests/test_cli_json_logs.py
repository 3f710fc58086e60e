"""``python -m pipectl`` works, and with ``--log-format json`` every line pipectl writes to
stderr is a JSON object (jq and log shippers read it), plugins installed or not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def test_python_dash_m_pipectl_is_the_pipectl_command():
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "run" in proc.stdout


@pytest.mark.slow
def test_every_stderr_line_is_json_with_log_format_json(tmp_path):
    (tmp_path / "steps.py").write_text("def hello():\n    return 'hi'\n")
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: jsonlogs
        steps:
          - name: hello
            run: steps:hello
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl", "run", "pipeline.yaml", "--log-format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # each line parses
    names = [e["event"] for e in events]
    assert "run_started" in names and "run_finished" in names
    # with the repository's plugins installed (as the test command installs them), the line
    # that names them on a terminal is an event here
    from importlib.metadata import entry_points

    if any(ep.group == "pipectl" for ep in entry_points(group="pipectl")):
        (loaded,) = [e for e in events if e["event"] == "plugins_loaded"]
        assert loaded["plugins"] and all("-" in p for p in loaded["plugins"])


@pytest.mark.slow
def test_every_stderr_line_is_json_with_failures_retries_and_debug_events(tmp_path):
    (tmp_path / "steps.py").write_text(
        textwrap.dedent("""
        import logging
        from pathlib import Path

        def flaky():
            marker = Path("tried")
            if not marker.exists():
                marker.write_text("1")
                raise ConnectionError("the first call fails")
            logging.getLogger("some.library").debug("a library's own debug line")
            return 1

        def broken(flaky):
            print("a line the step prints")
            raise ValueError("<broken> step")
    """)
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: jsonlogs
        steps:
          - {name: flaky, run: "steps:flaky", retries: 2, retry_delay: 0.01}
          - {name: broken, run: "steps:broken", depends_on: [flaky]}
          - {name: after, run: "steps:flaky", depends_on: [broken]}
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl", "run", "pipeline.yaml", "--log-format", "json", "-vv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # each line parses
    names = [e["event"] for e in events]
    assert {"plan", "plugins", "project", "step_retry", "run_finished"} <= set(names)
    finished = {e["step"]: e["status"] for e in events if e["event"] == "step_finished"}
    assert finished == {"flaky": "success", "broken": "failed", "after": "skipped"}
    # -vv: the libraries' logging, as events of the same format
    assert any(
        e["event"] == "a library's own debug line" and e["logger"] == "some.library" for e in events
    )

"""``python -m pipectl`` works, and with ``--log-format json`` every line pipectl writes to
stderr is a JSON object (jq and log shippers read it), plugins installed or not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_python_dash_m_pipectl_is_the_pipectl_command():
    proc = subprocess.run([sys.executable, "-m", "pipectl", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "run" in proc.stdout


def test_every_stderr_line_is_json_with_log_format_json(tmp_path):
    (tmp_path / "steps.py").write_text("def hello():\n    return 'hi'\n")
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent("""
        name: jsonlogs
        steps:
          - name: hello
            run: steps:hello
    """))
    proc = subprocess.run([sys.executable, "-m", "pipectl", "run", "pipeline.yaml",
                           "--log-format", "json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
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

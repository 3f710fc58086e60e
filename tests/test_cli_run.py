"""``pipectl run``: ``--only STEP`` runs the steps named and what they depend on, nothing else;
the summary says which failures were allowed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FILE = textwrap.dedent("""
    pipelines:
      - name: first
        steps:
          - {name: a, run: "steps:a"}
          - {name: b, run: "steps:b", depends_on: [a]}
          - {name: c, run: "steps:c"}
      - name: second
        steps:
          - {name: d, run: "steps:d"}
""")

STEPS = textwrap.dedent("""
    from pathlib import Path


    def mark(name):
        with open("ran.txt", "a") as f:
            f.write(name + "\\n")


    def a():
        mark("a")
        return 1


    def b(a):
        mark("b")
        return a + 1


    def c():
        mark("c")


    def d():
        mark("d")
""")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(FILE)
    (tmp_path / "steps.py").write_text(STEPS)
    return tmp_path


def run(project, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipectl",
            "run",
            "pipeline.yaml",
            "--no-progress",
            "--tracker",
            "none",
            *args,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_only_runs_the_step_and_its_upstreams(project):
    proc = run(project, "--only", "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "ran.txt").read_text().split() == ["a", "b"]  # not c, not pipeline second
    assert "pipeline 'second'" not in proc.stdout


def test_only_picks_steps_of_several_pipelines(project):
    proc = run(project, "--only", "c", "--only", "d")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted((project / "ran.txt").read_text().split()) == ["c", "d"]


def test_only_an_unknown_step_is_exit_2_with_a_hint(project):
    proc = run(project, "--only", "bb")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "pipectl: error: --only bb: no such step; did you mean 'b'?"
    assert not (project / "ran.txt").exists()


@pytest.mark.slow
def test_an_allowed_failure_reads_as_allowed_in_the_summary(tmp_path):
    (tmp_path / "steps.py").write_text(
        "def ok():\n    return 1\n\n\ndef flaky():\n    raise RuntimeError('down')\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: tolerant
        steps:
          - {name: ok, run: "steps:ok"}
          - {name: flaky, run: "steps:flaky", allow_failure: true}
    """)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipectl",
            "run",
            "pipeline.yaml",
            "--no-progress",
            "--tracker",
            "none",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the run succeeds
    flaky = next(line for line in proc.stdout.splitlines() if line.startswith("flaky "))
    assert "failed (allowed)" in flaky
    assert (
        "flaky failed (allowed) on attempt 1 of 1: RuntimeError: down" in proc.stdout.splitlines()
    )

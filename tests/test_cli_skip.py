"""``pipectl run FILE --skip STEP``: the step and every step downstream of it are left out of the
run (as ``--only`` leaves steps out), the others run; with ``--only``, of the steps it selects;
the summary says what was left out. And the same through the Python API (``skip=``)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from pipectl import Pipeline
from pipectl.errors import PipelineValidationError

FILE = textwrap.dedent("""
    pipelines:
      - name: first
        steps:
          - {name: a, run: "steps:a"}
          - {name: b, run: "steps:b", depends_on: [a]}
          - {name: c, run: "steps:c", depends_on: [b]}
          - {name: e, run: "steps:e", depends_on: [a]}
          - {name: boom, run: "steps:boom", depends_on: [e]}
      - name: second
        depends_on: [first]
        steps:
          - {name: d, run: "steps:d"}
""")

STEPS = textwrap.dedent("""
    def mark(name):
        with open("ran.txt", "a") as f:
            f.write(name + "\\n")


    def a():
        mark("a")
        return 1


    def b(a):
        mark("b")
        return a + 1


    def c(b):
        mark("c")


    def e(a):
        mark("e")


    def boom(e):
        mark("boom")
        raise RuntimeError("boom")


    def d():
        mark("d")
""")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(FILE)
    (tmp_path / "steps.py").write_text(STEPS)
    return tmp_path


def run(project, *args, progress="--no-progress"):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipectl",
            "run",
            "pipeline.yaml",
            progress,
            "--tracker",
            "none",
            *args,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "TERM": "xterm", "COLUMNS": "120"},
    )


def ran(project):
    path = project / "ran.txt"
    return sorted(path.read_text().split()) if path.exists() else []


@pytest.mark.slow
def test_skip_leaves_out_the_step_and_all_downstream_of_it(project):
    proc = run(project, "--skip", "b", "--skip", "boom")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == ["a", "d", "e"]  # not b, nor c after it; boom neither
    lines = proc.stdout.splitlines()
    assert "left out by --skip: b, c, boom" in lines
    assert not any(line.split()[:1] in (["b"], ["c"], ["boom"]) for line in lines)  # no rows
    # the pipeline without any of the steps named ran whole, and said nothing was left out
    second = proc.stdout[proc.stdout.index("of 'first'") :]
    assert "of 'second': success" in second and "left out" not in second


def test_without_skip_the_failing_step_fails_the_run(project):
    proc = run(project)
    assert proc.returncode == 1
    assert ran(project) == ["a", "b", "boom", "c", "e"]  # 'second' waits for 'first': skipped
    assert "left out" not in proc.stdout


def test_skipping_a_step_skips_what_depends_on_it(project):
    proc = run(project, "--skip", "e")  # boom depends on e: left out too, the run succeeds
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == ["a", "b", "c", "d"]
    assert "left out by --skip: e, boom" in proc.stdout.splitlines()


@pytest.mark.slow
def test_only_and_skip_combine(project):
    # --only selects c (with a, b) and e (with a); --skip b leaves b and c out of that
    proc = run(project, "--only", "c", "--only", "e", "--skip", "b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == ["a", "e"]
    assert "left out by --skip: b, c" in proc.stdout.splitlines()  # not boom: not selected
    assert "pipeline 'second'" not in proc.stdout and "'second'" not in proc.stdout


@pytest.mark.slow
def test_skip_of_a_step_outside_the_only_selection_leaves_nothing_out(project):
    proc = run(project, "--only", "b", "--skip", "e")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == ["a", "b"]
    assert "left out" not in proc.stdout


def test_a_pipeline_all_of_whose_steps_are_skipped_does_not_run(project):
    proc = run(project, "--skip", "a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == ["d"]  # the pipeline after it still runs
    assert (
        "pipeline 'first' not run: --skip left out every step it would run (a, b, c, e, boom)"
    ) in proc.stdout


@pytest.mark.slow
def test_an_unknown_step_is_exit_2_with_a_hint(project):
    proc = run(project, "--skip", "bom")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "pipectl: error: --skip bom: no such step; did you mean 'boom'?"
    assert "Traceback" not in proc.stderr
    assert ran(project) == []
    proc = run(project, "--only", "c", "--skip", "zzz")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("pipectl: error: --skip zzz: no such step (steps: a,")
    assert ran(project) == []


def test_dry_run_prints_the_plan_without_the_skipped_steps(project):
    proc = run(project, "--skip", "b", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran(project) == []
    assert "  - e <- [a]" in proc.stdout and "  - c" not in proc.stdout
    assert "left out by --skip: b, c" in proc.stdout.splitlines()
    assert "2 pipeline(s), 4 steps; nothing was run" in proc.stdout


def test_the_terminal_summary_says_what_was_left_out(project):
    proc = run(project, "--skip", "b", "--skip", "boom", progress="--progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout)
    assert "left out by --skip: b, c, boom" in text.splitlines()
    assert ran(project) == ["a", "d", "e"]


def test_quiet_keeps_to_the_final_line(project):
    proc = run(project, "--skip", "b", "--skip", "boom", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left out" not in proc.stdout
    assert ran(project) == ["a", "d", "e"]


# -- the Python API ----------------------------------------------------------------------------


def make(plugin_manager, tmp_path):
    log = tmp_path / "ran.txt"

    def mark(name):
        with open(log, "a") as f:
            f.write(name + "\n")

    pipe = Pipeline("api", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: mark("a"))
    pipe.add_step("b", lambda: mark("b"), depends_on=["a"])
    pipe.add_step("c", lambda: mark("c"), depends_on=["b"])
    pipe.add_step("e", lambda: mark("e"), depends_on=["a"])
    return pipe


def test_api_skip_leaves_out_the_steps_and_lists_them(plugin_manager, tmp_path):
    pipe = make(plugin_manager, tmp_path)
    result = pipe.run_sync(skip=["b"])
    assert result.ok
    assert ran(tmp_path) == ["a", "e"]
    assert list(result.steps) == ["a", "e"]
    assert result.left_out == ["b", "c"]


def test_api_skip_takes_one_name_and_combines_with_only(plugin_manager, tmp_path):
    pipe = make(plugin_manager, tmp_path)
    result = pipe.run_sync(only={"c", "e"}, skip="c")
    assert result.ok and ran(tmp_path) == ["a", "b", "e"]
    assert result.left_out == ["c"]
    full = pipe.run_sync()  # the plan of a skip is its own: the next run runs everything
    assert sorted(full.steps) == ["a", "b", "c", "e"] and full.left_out == []


def test_api_skip_of_an_unknown_step_raises_before_anything_runs(plugin_manager, tmp_path):
    pipe = make(plugin_manager, tmp_path)
    with pytest.raises(PipelineValidationError, match=r"unknown step 'bb' \(did you mean 'b'"):
        pipe.run_sync(skip=["bb"])
    assert ran(tmp_path) == []

"""Pipeline-file formats (``pipectl_register_pipeline_formats``): an ia_modules JSON pipeline
run as it is by ``pipectl run pipeline.json`` (the built-in ``ia-modules`` format), a format
added by an installed plugin, and what the tracker records of what each step received and
returned (bounded, secrets masked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures.fakedist import fake_dists  # noqa: F401 - fixture

from pipectl import Pipeline

HERE = Path(__file__).parent / "ia_modules"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


@pytest.fixture
def ia_env(tmp_path, monkeypatch):
    """The seed step classes importable as ``ia_steps.seed``, in this process and in the
    ``pipectl`` processes the test starts."""
    shutil.copytree(HERE / "steps", tmp_path / "ia_steps")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for name in ("ia_steps", "ia_steps.seed"):
        sys.modules.pop(name, None)
    yield tmp_path
    for name in ("ia_steps", "ia_steps.seed"):
        sys.modules.pop(name, None)


def pipectl(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*PIPECTL, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


def recorded(tracker: str) -> dict[str, Any]:
    """The latest run in ``tracker``, as ``pipectl runs show latest --json`` prints it."""
    shown = pipectl("runs", "show", "latest", "--json", "--tracker", tracker)
    assert shown.returncode == 0, shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


# ia_modules' three test shapes: the params given, then what each step must have received and
# returned (the received data of a step class: ``*`` is its whole data)
SHAPES: dict[str, tuple[list[str], dict[str, Any], dict[str, Any]]] = {
    "seed_simple": (
        ["topic=ml"],
        {  # the first step the pipeline input, each next one the previous step's result
            "step1": {"topic": "ml"},
            "step2": {"*": {"topic": "PROCESSED_ML"}},
            "step3": {"*": {"topic": "PROCESSED_ML_RICH"}},
        },
        {
            "step1": {"topic": "PROCESSED_ML"},
            "step2": {"topic": "PROCESSED_ML_RICH"},
            "step3": {"topic": "PROCESSED_ML_RICH_DONE"},
        },
    ),
    "seed_parallel": (
        ["items=[1, 2, 3, 4, 5]"],
        {  # both streams get the source's result: ia_modules' runner hands stream 2 stream 1's
            "step1": {"items": [1, 2, 3, 4, 5]},
            "step2": {"*": {"chunks": [[1, 3, 5], [2, 4]]}},
            "step3": {"*": {"chunks": [[1, 3, 5], [2, 4]]}},
            "step4": {"step2": {"sum": 9, "count": 3}, "step3": {"sum": 6, "count": 2}},
        },
        {
            "step2": {"sum": 9, "count": 3},
            "step3": {"sum": 6, "count": 2},
            "step4": {"total": 15, "streams": ["step2", "step3"]},
        },
    ),
    "seed_conditional": (
        ["rows=[1, null, 3, 4]"],
        {  # only the chosen branch runs (ia_modules' runner runs both), the join gets its result
            "score": {"rows": [1, None, 3, 4]},
            "good": {"*": {"rows": [1, None, 3, 4], "quality": 0.75}},
            "poor": None,
            "report": {"*": {"rows": [["good", 1], ["good", None], ["good", 3], ["good", 4]]}},
        },
        {
            "good": {"rows": [["good", 1], ["good", None], ["good", 3], ["good", 4]]},
            "poor": None,
            "report": {"report": ["good"], "n": 4},
        },
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
def test_pipectl_run_runs_an_ia_modules_json_file_as_it_is(ia_env, name):
    params, received, returned = SHAPES[name]
    tracker = f"sqlite:///{ia_env / 'runs.db'}"
    args = [a for p in params for a in ("-p", p)]
    done = pipectl("run", str(HERE / f"{name}.json"), *args, "--no-progress", "--tracker", tracker)
    assert done.returncode == 0, done.stdout + done.stderr
    run = recorded(tracker)
    assert run["status"] == "success"
    assert run["pipeline_file"].endswith(f"{name}.json")
    steps = {s["step_name"]: s for s in run["steps"]}
    assert {n: s["input_summary"] for n, s in steps.items()} == received
    for step, output in returned.items():
        assert steps[step]["output_summary"] == output, step
    if name == "seed_conditional":
        assert steps["poor"]["status"] == "skipped"
        assert "condition is false" in steps["poor"]["reason"]


@pytest.mark.slow
def test_validate_and_graph_read_the_json_file_too(ia_env):
    checked = pipectl("validate", str(HERE / "seed_parallel.json"), "-p", "items=[1]")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    drawn = pipectl("graph", str(HERE / "seed_parallel.json"), "-p", "items=[1]")
    assert drawn.returncode == 0, drawn.stderr
    assert "step4" in drawn.stdout and "step2" in drawn.stdout


def test_the_python_api_loads_the_json_file(ia_env):
    pipe = Pipeline.from_yaml(HERE / "seed_simple.json", {"topic": "ai"})
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.outputs()["step3"] == {"topic": "PROCESSED_AI_RICH_DONE"}
    assert run.steps["step2"].received == {"*": {"topic": "PROCESSED_AI"}}


def test_a_wrong_ia_modules_file_names_its_line_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        textwrap.dedent(
            """\
            {
              "name": "broken",
              "steps": [
                {"id": "a", "module": "m", "step_class": "A"},
                {"id": "b", "module": "m", "step_class": "B"}
              ],
              "flow": {
                "paths": [
                  {"from_step": "a", "to_step": "b"},
                  {"from_step": "b", "to_step": "c"}
                ]
              }
            }
            """
        )
    )
    done = pipectl("validate", str(bad))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{bad}:10" in done.stderr  # the line of the path that names step 'c'
    assert "flow.paths[1].to_step" in done.stderr and "unknown step 'c'" in done.stderr

    missing = tmp_path / "missing.json"
    missing.write_text('{"steps": [{"id": "a", "step_class": "A"}]}\n')
    done = pipectl("run", str(missing))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "steps[0].module" in done.stderr and "every step needs 'module'" in done.stderr


BIG_STEPS = """
from pipectl.compat.ia_modules import Step


class Fetch(Step):
    async def run(self, data):
        # what a careless step returns: the token it was given, and a lot of text
        return {"echo": data["token"], "body": "x" * 500_000}


class Keep(Step):
    async def run(self, data):
        return {"length": len(data["body"]), "seen": data["echo"]}
"""


@pytest.mark.slow
def test_what_a_step_received_and_returned_is_recorded_bounded_and_masked(tmp_path):
    (tmp_path / "big_steps.py").write_text(BIG_STEPS)
    token = "s3cr3t-T0KEN-4711"
    pipeline = {
        "name": "careless",
        "parameters": [
            {"name": "token", "schema": {"type": "string"}, "required": True, "secret": True}
        ],
        "steps": [
            {"id": "fetch", "module": "big_steps", "step_class": "Fetch"},
            {"id": "keep", "module": "big_steps", "step_class": "Keep"},
        ],
        "flow": {"paths": [{"from_step": "fetch", "to_step": "keep"}]},
    }
    (tmp_path / "careless.json").write_text(json.dumps(pipeline))
    db = tmp_path / "runs.db"
    done = pipectl(
        "run",
        str(tmp_path / "careless.json"),
        "-p",
        f"token={token}",
        "--no-progress",
        "--tracker",
        f"sqlite:///{db}",
        PYTHONPATH=str(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert token not in done.stdout + done.stderr
    run = recorded(f"sqlite:///{db}")
    steps = {s["step_name"]: s for s in run["steps"]}
    assert steps["keep"]["output_summary"] == {"length": 500_000, "seen": "***"}
    assert steps["fetch"]["input_summary"] == {"token": "***"}
    # the 500,000 characters are summarized, not stored: a bounded summary of each value
    for step in steps.values():
        for key in ("input_summary", "output_summary"):
            assert len(json.dumps(step[key])) <= 2_100, (step["step_name"], key)
    assert "x" * 3000 not in json.dumps(run)
    assert token.encode() not in db.read_bytes()


FORMAT_PLUGIN = """
from pipectl import hookimpl


@hookimpl
def pipectl_register_pipeline_formats(register):
    def read_tasks(path, data):
        if "tasks" not in data or "steps" in data:
            return None  # not this format
        return {
            "name": data.get("title", path.stem),
            "steps": [
                {"name": t["id"], "run": t["call"], "depends_on": t.get("after", [])}
                for t in data["tasks"]
            ],
        }

    register("tasks", read_tasks)
"""

TASKS_MODULE = """
def first():
    return 20


def second(first):
    return first + 22
"""


@pytest.mark.slow
def test_hook_pipectl_register_pipeline_formats(fake_dists, tmp_path):
    """A format an installed plugin registers: ``pipectl run`` and ``validate`` read its files,
    its problems after conversion are reported at the file's lines, and ``pipectl plugins``
    lists it."""
    fake_dists.add("tasks", FORMAT_PLUGIN)
    (tmp_path / "task_funcs.py").write_text(TASKS_MODULE)
    tasks = tmp_path / "flow.yaml"
    tasks.write_text(
        textwrap.dedent(
            """\
            title: answer
            tasks:
              - id: first
                call: task_funcs:first
              - id: second
                call: task_funcs:second
                after: [first]
            """
        )
    )
    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    done = fake_dists.run_cli("run", str(tasks), "--no-progress", "--tracker", tracker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run " in done.stdout and "'answer'" in done.stdout and "success" in done.stdout

    listed = fake_dists.run_cli("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tasks"]["components"] == {"pipeline_formats": ["tasks"]}

    # a converted file is checked like any: an unknown dependency, at the task's line
    tasks.write_text(tasks.read_text().replace("after: [first]", "after: [frist]"))
    done = fake_dists.run_cli("validate", str(tasks))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "frist" in done.stderr and "Traceback" not in done.stderr
    assert f"{tasks}:7" in done.stderr  # the line of "after: [frist]"

    # a file that is not in the format is a pipectl file, as ever
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\nsteps:\n  - {name: first, run: task_funcs:first}\n")
    done = fake_dists.run_cli("run", str(plain), "--no-progress", "--tracker", tracker)
    assert done.returncode == 0, done.stdout + done.stderr


BROKEN_FORMATS = """
from pipectl import hookimpl


@hookimpl
def pipectl_register_pipeline_formats(register):
    def crashes(path, data):
        if data.get("kind") == "crash":
            raise KeyError("tasks")
        return None

    def gives_a_list(path, data):
        if data.get("kind") == "list":
            return ["not", "a", "pipeline"]
        return None

    register("crashes", crashes)
    register("gives-a-list", gives_a_list)
"""


@pytest.mark.slow
def test_a_format_that_fails_is_reported_with_the_plugin_named(fake_dists, tmp_path):
    fake_dists.add("broken-formats", BROKEN_FORMATS)
    crash = tmp_path / "crash.yaml"
    crash.write_text("kind: crash\n")
    done = fake_dists.run_cli("run", str(crash))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'crashes' pipeline format (plugin 'broken-formats')" in done.stderr
    assert "KeyError" in done.stderr

    listed = tmp_path / "list.yaml"
    listed.write_text("kind: list\n")
    done = fake_dists.run_cli("validate", str(listed))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'gives-a-list' pipeline format" in done.stderr and "a list" in done.stderr


FLAKY_STEPS = """
import pathlib

from pipectl.compat.ia_modules import Step

CALLS = pathlib.Path(__file__).with_name("calls.txt")


class Count(Step):
    async def run(self, data):
        with CALLS.open("a") as log:
            log.write(self.name + "\\n")
        if self.config.get("fail_once") and not pathlib.Path(self.config["fail_once"]).exists():
            pathlib.Path(self.config["fail_once"]).write_text("failed once")
            raise RuntimeError("the service is down")
        return {"n": data.get("n", 0) + 1}
"""


@pytest.mark.slow
def test_resume_latest_of_an_ia_modules_file_runs_only_what_failed(tmp_path):
    (tmp_path / "flaky_steps.py").write_text(FLAKY_STEPS)
    pipeline = {
        "name": "flaky",
        "parameters": [{"name": "n", "schema": {"type": "integer"}, "default": 1}],
        "steps": [
            {"id": "a", "module": "flaky_steps", "step_class": "Count"},
            {
                "id": "b",
                "module": "flaky_steps",
                "step_class": "Count",
                "config": {"fail_once": str(tmp_path / "b.failed")},
            },
        ],
        "flow": {"paths": [{"from_step": "a", "to_step": "b"}]},
    }
    path = tmp_path / "flaky.json"
    path.write_text(json.dumps(pipeline))
    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    first = pipectl(
        "run", str(path), "--no-progress", "--tracker", tracker, PYTHONPATH=str(tmp_path)
    )
    assert first.returncode == 1, first.stdout + first.stderr
    assert "the service is down" in first.stdout
    again = pipectl(
        "run",
        str(path),
        "--resume",
        "latest",
        "--no-progress",
        "--tracker",
        tracker,
        PYTHONPATH=str(tmp_path),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "calls.txt").read_text().split() == ["a", "b", "b"]
    run = recorded(tracker)
    steps = {s["step_name"]: s for s in run["steps"]}
    assert steps["b"]["output_summary"] == {"n": 3}
    assert run["resumed_from"]

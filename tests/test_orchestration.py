"""The library API of ``pipectl run FILE``: :class:`pipectl.PipelineFile` loads a file's
pipelines, picks its tracker, orders the pipelines, skips those whose upstream failed, and
resumes, the same from Python as from the command line."""

from __future__ import annotations

import contextlib
import textwrap

import pytest

from pipectl import PipelineFile
from pipectl.errors import PipectlError
from pipectl.orchestration import ResumeError

STEPS = """
import os, pathlib

def extract():
    return [1, 2, 3]

def load(extract):
    marks = pathlib.Path(os.environ["ORCH_MARKS"])
    with marks.open("a") as f:
        f.write("load\\n")
    return sum(extract)

def reload():
    return load([1, 2, 3])

def flaky(load):
    marks = pathlib.Path(os.environ["ORCH_MARKS"])
    if os.environ.get("ORCH_FAIL") == "1":
        raise RuntimeError("the warehouse is down")
    with marks.open("a") as f:
        f.write("flaky\\n")
    return load * 2

def report(params):
    return f"report of {params['day']}"
"""

FILE = """
params:
  day: {type: str, default: "2026-12-01"}
pipelines:
  - name: bronze
    steps:
      - {name: extract, run: orch_steps:extract}
      - {name: load, run: orch_steps:load, depends_on: [extract]}
  - name: silver
    depends_on: [bronze]
    steps:
      - {name: load, run: orch_steps:reload}
      - {name: flaky, run: orch_steps:flaky, depends_on: [load], inputs: {load: steps.load.output}}
  - name: gold
    depends_on: [silver]
    steps:
      - {name: report, run: orch_steps:report}
  - name: side
    steps:
      - {name: report, run: orch_steps:report}
"""


@pytest.fixture
def project(tmp_path, monkeypatch, plugin_manager):
    (tmp_path / "pipectl.toml").write_text("", encoding="utf-8")
    (tmp_path / "orch_steps.py").write_text(STEPS, encoding="utf-8")
    (tmp_path / "pipelines.yaml").write_text(textwrap.dedent(FILE), encoding="utf-8")
    monkeypatch.setenv("ORCH_MARKS", str(tmp_path / "marks.txt"))
    monkeypatch.delenv("PIPECTL_HOME", raising=False)
    monkeypatch.chdir(tmp_path.parent)  # not the project: the file finds its project itself
    return tmp_path


def _marks(project):
    path = project / "marks.txt"
    return path.read_text().split() if path.exists() else []


def test_runs_the_named_pipelines_after_those_they_depend_on(project, plugin_manager):
    seen = []
    with PipelineFile.load(
        project / "pipelines.yaml", {"day": "2026-12-06"}, plugin_manager=plugin_manager
    ) as pf:
        assert pf.select(["gold"]) == ["bronze", "silver", "gold"]
        every = pf.select()
        assert sorted(every) == ["bronze", "gold", "side", "silver"]
        assert every.index("bronze") < every.index("silver") < every.index("gold")
        result = pf.run(["gold"], on_outcome=seen.append)
    assert result.ok
    assert result.outcome == {"bronze": "success", "silver": "success", "gold": "success"}
    assert result.runs["gold"].steps["report"].output == "report of 2026-12-06"
    assert [o.name for o in seen] == ["bronze", "silver", "gold"]
    # the project's tracker, in the project's .pipectl/, whatever the working directory
    assert (project / ".pipectl" / "pipectl.db").exists()
    with PipelineFile.load(project / "pipelines.yaml", plugin_manager=plugin_manager) as again:
        runs = again.tracker.list_runs()
    assert sorted(r["pipeline_name"] for r in runs) == ["bronze", "gold", "silver"]


def test_a_failed_pipeline_skips_those_after_it_and_resume_runs_only_what_failed(
    project, plugin_manager, monkeypatch
):
    monkeypatch.setenv("ORCH_FAIL", "1")
    with PipelineFile.load(project / "pipelines.yaml", plugin_manager=plugin_manager) as pf:
        result = pf.run(["gold", "side"])
    assert not result.ok
    assert result.outcome == {
        "bronze": "success",
        "side": "success",
        "silver": "failed",
        "gold": "skipped",
    }
    assert result.outcomes["gold"].reason == "upstream pipeline 'silver' failed"
    assert result.outcomes["gold"].run is None
    assert "the warehouse is down" in str(result.runs["silver"].errors)
    assert _marks(project) == ["load", "load"]  # bronze's load, silver's load

    monkeypatch.setenv("ORCH_FAIL", "0")
    with PipelineFile.load(
        project / "pipelines.yaml", resume="latest", plugin_manager=plugin_manager
    ) as pf:
        resumed = pf.run(["gold"], resume="latest")
    assert resumed.ok, resumed.outcome
    silver = resumed.runs["silver"]
    assert silver.resumed_from == result.runs["silver"].run_id
    # silver's load came from the result store; only flaky ran again
    # bronze resumed its latest run, which succeeded: nothing of it ran again
    assert _marks(project) == ["load", "load", "flaky"]


def test_resume_of_a_run_id_takes_its_params_and_only_its_pipeline_resumes(
    project, plugin_manager, monkeypatch
):
    monkeypatch.setenv("ORCH_FAIL", "1")
    with PipelineFile.load(
        project / "pipelines.yaml", {"day": "2026-11-30"}, plugin_manager=plugin_manager
    ) as pf:
        failed = pf.run(["silver"]).runs["silver"]
    monkeypatch.setenv("ORCH_FAIL", "0")
    with PipelineFile.load(
        project / "pipelines.yaml", resume=failed.run_id, plugin_manager=plugin_manager
    ) as pf:
        assert pf.pipelines["gold"].params["day"] == "2026-11-30"  # taken from the run
        result = pf.run(["silver"], resume=failed.run_id)
    assert result.ok
    assert result.runs["silver"].resumed_from == failed.run_id
    assert result.runs["bronze"].resumed_from is None


def test_resume_errors_are_clear(project, plugin_manager):
    with PipelineFile.load(project / "pipelines.yaml", plugin_manager=plugin_manager) as pf:
        done = pf.run(["side"]).runs["side"]
        with pytest.raises(
            ResumeError, match="is a run of pipeline 'side', which is not among those to run"
        ):
            pf.run(["bronze"], resume=done.run_id)
    with PipelineFile.load(
        project / "pipelines.yaml", tracker="none", plugin_manager=plugin_manager
    ) as pf:
        with pytest.raises(ResumeError, match="needs a tracker"):
            pf.run(["side"], resume="latest")


def test_tracker_choice_given_then_file_then_project(project, plugin_manager):
    path = project / "pipelines.yaml"
    path.write_text(path.read_text() + "\n", encoding="utf-8")
    with PipelineFile.load(
        path, tracker=f"sqlite:///{project / 'given.db'}", plugin_manager=plugin_manager
    ) as pf:
        pf.run(["side"])
    assert (project / "given.db").exists()
    text = textwrap.dedent(FILE).replace(
        "  - name: side\n", "  - name: side\n    tracker: sqlite:///file.db\n"
    )
    path.write_text(text, encoding="utf-8")
    with PipelineFile.load(path, plugin_manager=plugin_manager) as pf:
        pf.run(["side"])
    assert (project / "file.db").exists()  # relative to the file's folder
    with PipelineFile.load(path, tracker="none", plugin_manager=plugin_manager) as pf:
        assert pf.tracker is None
        assert pf.run(["side"]).ok


def test_loading_creates_nothing_and_unknown_names_are_named(project, plugin_manager):
    with PipelineFile.load(project / "pipelines.yaml", plugin_manager=plugin_manager) as pf:
        with pytest.raises(PipectlError, match="no pipeline named 'glod'; did you mean 'gold'"):
            pf.select(["glod"])
    assert not (project / ".pipectl" / "pipectl.db").exists()


def test_progress_wraps_each_run_and_skip_of_every_step_is_not_run(project, plugin_manager):
    entered = []

    class View:
        def __init__(self):
            self.steps = []

        from pipectl import hookimpl

        @hookimpl
        def pipectl_step_finish(self, run, step, result):
            self.steps.append(step.name)

    views = {}

    @contextlib.contextmanager
    def progress(name, total):
        entered.append((name, total))
        views[name] = View()
        yield views[name]

    with PipelineFile.load(
        project / "pipelines.yaml", tracker="none", plugin_manager=plugin_manager
    ) as pf:
        result = pf.run(["gold"], progress=progress, skip={"gold": ["report"]})
    assert entered == [("bronze", 2), ("silver", 2)]
    assert views["bronze"].steps == ["extract", "load"]
    assert result.outcome["gold"] == "not_run" and result.ok
    assert "left out every step" in result.outcomes["gold"].reason

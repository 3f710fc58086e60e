"""Step classes, sub-pipelines and progress callbacks, in Python and in pipeline files."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pipectl import Pipeline
from pipectl.errors import PipelineValidationError
from pipectl.files import PipelineFileError
from pipectl.model import RunStatus, StepStatus
from pipectl.pipeline import load_pipelines

SUCCESS, SKIPPED, FAILED = StepStatus.SUCCESS, StepStatus.SKIPPED, StepStatus.FAILED

# Tests taking the ``executor`` fixture run on ``local`` and on a dask cluster (tests/conftest.py):
# a sub-pipeline step runs in the driver (it orchestrates), the child's steps on the cluster.


# -- step classes ------------------------------------------------------------------------------


class Upper:
    """A step class in the ia_modules style: built with (name, config), async run(data)."""

    built: list[tuple[str, dict]] = []

    def __init__(self, name, config):
        self.name = name
        self.config = config
        Upper.built.append((name, dict(config)))

    async def run(self, data):
        return {"topic": f"{self.config.get('prefix', '')}{data['topic'].upper()}"}


class SyncCount:
    def __init__(self, name, config):
        self.name = name

    def run(self, data, ctx):
        return {"n": len(data), "step": ctx.step, "keys": sorted(data)}


class NoRun:
    def __init__(self, name, config):
        pass


class WrongInit:
    def __init__(self):
        pass

    async def run(self, data):
        return data


def test_step_classes_are_built_with_name_and_options_and_get_their_inputs(plugin_manager):
    Upper.built.clear()
    pipe = Pipeline("classes", plugin_manager=plugin_manager)
    pipe.add_step("prepare", Upper, options={"prefix": "P_"}, inputs={"topic": "params.topic"})
    pipe.add_step("count", SyncCount, depends_on=["prepare"])
    run = pipe.run_sync({"topic": "ml"})
    assert run.ok, run.errors
    assert run.steps["prepare"].output == {"topic": "P_ML"}
    # without inputs, data holds each dependency's output by step name; ctx when asked for
    assert run.steps["count"].output == {"n": 1, "step": "count", "keys": ["prepare"]}
    assert Upper.built == [("prepare", {"prefix": "P_"})]
    # a new instance per run: no state leaks from one run into the next
    pipe.run_sync({"topic": "ai"})
    assert len(Upper.built) == 2


def test_a_class_without_run_or_with_the_wrong_constructor_is_refused(plugin_manager):
    pipe = Pipeline("bad", plugin_manager=plugin_manager)
    pipe.add_step("a", NoRun)
    pipe.add_step("b", WrongInit)
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    text = str(info.value)
    assert "NoRun is a class without a run method" in text
    assert "cannot be built as WrongInit(name, config)" in text


def test_options_go_with_classes_not_functions(plugin_manager):
    pipe = Pipeline("opts", plugin_manager=plugin_manager)
    pipe.add_step("f", lambda: 1, options={"x": 1})
    with pytest.raises(PipelineValidationError, match="go with a step class"):
        pipe.validate()


# -- progress callbacks ------------------------------------------------------------------------


def test_on_step_complete_sees_every_step_of_its_own_runs_only(plugin_manager):
    pipe = Pipeline("cb", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda: 1 / 0, depends_on=["a"])
    pipe.add_step("c", lambda: 3, depends_on=["b"])
    seen = []

    @pipe.on_step_complete
    def record(result):
        seen.append((result.step_name, result.status))

    other = Pipeline("other", plugin_manager=plugin_manager)
    other.add_step("x", lambda: 1)
    other.run_sync()
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert sorted(seen) == [("a", SUCCESS), ("b", FAILED), ("c", SKIPPED)]
    # the listener is registered for the run only: it is gone afterwards
    assert not [
        p for p in plugin_manager.get_plugins() if type(p).__name__ == "_StepCompleteListener"
    ]


def test_a_failing_callback_does_not_break_the_run(plugin_manager):
    pipe = Pipeline("cb", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.on_step_complete(lambda result: 1 / 0)
    assert pipe.run_sync().ok


def test_on_step_complete_takes_callables_only(plugin_manager):
    with pytest.raises(TypeError, match="takes a callable"):
        Pipeline("x", plugin_manager=plugin_manager).on_step_complete("not callable")


# -- sub-pipelines -----------------------------------------------------------------------------


def test_a_sub_pipeline_runs_nested_in_its_parent(plugin_manager, executor):
    child = Pipeline("child", plugin_manager=plugin_manager)
    child.add_step("double", lambda params: params["n"] * 2)
    child.add_step("plus_one", lambda double: double + 1, depends_on=["double"])
    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_step("start", lambda: "go")
    parent.add_subpipeline(child, "prep", params={"n": 20}, depends_on=["start"])
    parent.add_step("use", lambda value: value, inputs={"value": "steps.prep.output.plus_one"})
    runs = []

    class Listener:
        from pipectl import hookimpl

        @hookimpl
        def pipectl_run_finish(self, run):
            runs.append(run)

    plugin_manager.register(Listener())
    run = parent.run_sync()
    assert run.ok, run.errors
    assert run.steps["use"].output == 41
    nested = run.steps["prep"].output.run
    assert nested.pipeline_id == "child" and nested.parent_run_id == run.run_id
    assert nested.ok and set(nested.steps) == {"double", "plus_one"}
    # listeners saw both runs: the child's first (it ends inside the parent's step)
    assert [(r.pipeline_id, r.parent_run_id) for r in runs] == [
        ("child", run.run_id),
        ("parent", None),
    ]


def test_a_failing_sub_pipeline_fails_its_step_with_the_childs_errors(plugin_manager, executor):
    child = Pipeline("child", plugin_manager=plugin_manager)
    child.add_step("boom", lambda: {}["missing"])
    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_subpipeline(child)
    parent.add_step("after", lambda: 1, depends_on=["child"])
    run = parent.run_sync()
    assert run.status is RunStatus.FAILED
    assert run.steps["child"].error == (
        "SubPipelineFailed: sub-pipeline 'child' failed: step 'boom' failed: KeyError: 'missing'"
    )
    assert run.steps["after"].status is SKIPPED


def test_a_run_with_rollback_rolls_back_a_failing_sub_pipelines_own_steps(plugin_manager):
    """Under ``rollback=True`` the sub-pipeline's run has rollback too: when it fails, its
    completed steps are undone (last completed first) before its step fails; then the
    parent's completed steps are undone."""
    undone: list[str] = []
    child = Pipeline("child", plugin_manager=plugin_manager)
    child.add_step("stage", lambda: 1, rollback=lambda output: undone.append("child.stage"))
    child.add_step(
        "publish",
        lambda: 2,
        depends_on=["stage"],
        rollback=lambda output: undone.append("child.publish"),
    )
    child.add_step("boom", lambda: {}["missing"], depends_on=["publish"])
    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_step("first", lambda: 0, rollback=lambda output: undone.append("parent.first"))
    parent.add_subpipeline(child, depends_on=["first"])
    run = parent.run_sync(rollback=True)
    assert undone == ["child.publish", "child.stage", "parent.first"]
    assert run.status is RunStatus.ROLLED_BACK
    assert run.steps["child"].error == (
        "SubPipelineFailed: sub-pipeline 'child' rolled_back: step 'boom' failed: "
        "KeyError: 'missing'"
    )
    # without rollback, nothing is undone, in the child either
    undone.clear()
    assert parent.run_sync().status is RunStatus.FAILED
    assert undone == []


def test_sub_pipeline_cycles_and_bad_children_are_validation_errors(plugin_manager):
    a = Pipeline("a", plugin_manager=plugin_manager)
    b = Pipeline("b", plugin_manager=plugin_manager)
    a.add_subpipeline(b)
    b.add_subpipeline(a)
    with pytest.raises(PipelineValidationError, match="sub-pipelines form a cycle"):
        a.validate()
    with pytest.raises(ValueError, match="cannot run itself"):
        a.add_subpipeline(a)
    broken = Pipeline("broken", plugin_manager=plugin_manager)
    broken.add_step("x", lambda nope: 1)
    parent = Pipeline("parent", plugin_manager=plugin_manager)
    parent.add_subpipeline(broken)
    with pytest.raises(PipelineValidationError, match="parameter 'nope'"):
        parent.validate()


# -- in pipeline files -------------------------------------------------------------------------


@pytest.fixture
def steps_module(tmp_path, monkeypatch):
    name = f"composition_steps_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        class Score:
            def __init__(self, name, config):
                self.config = config

            async def run(self, data):
                return {"score": self.config["score"], "rows": data["rows"]}


        class Tag:
            def __init__(self, name, config):
                self.name, self.config = name, config

            async def run(self, data):
                return {"rows": [f"{self.config['tag']}:{r}" for r in data["rows"]]}


        def collect(rows):
            return rows


        def total(params):
            return sum(params["numbers"])
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def write(tmp_path, text):
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_with_classes_conditions_and_a_join(tmp_path, steps_module, plugin_manager):
    path = write(
        tmp_path,
        f"""
        name: branches
        params:
          threshold: {{type: float, default: 0.5}}
          rows: {{type: list, default: [a, b]}}
        steps:
          - name: score
            run: {steps_module}:Score
            options: {{score: 0.8}}
            inputs: {{rows: params.rows}}
          - name: high
            run: {steps_module}:Tag
            options: {{tag: hi}}
            when: steps.score.output.score >= params.threshold
            inputs: {{rows: steps.score.output.rows}}
          - name: low
            run: {steps_module}:Tag
            options: {{tag: lo}}
            when: steps.score.output.score < params.threshold
            inputs: {{rows: steps.score.output.rows}}
          - name: join
            run: {steps_module}:collect
            trigger: one_success
            inputs:
              rows: steps.high.output.rows | steps.low.output.rows
    """,
    )
    pipes, _ = load_pipelines(path, plugin_manager=plugin_manager)
    run = pipes["branches"].run_sync()
    assert run.ok, run.errors
    assert run.steps["join"].output == ["hi:a", "hi:b"]
    assert run.steps["low"].status is SKIPPED
    run = pipes["branches"].run_sync({"threshold": 0.9})
    assert run.steps["join"].output == ["lo:a", "lo:b"]
    # and the round trip keeps classes, options, conditions and references
    again = tmp_path / "again.yaml"
    pipes["branches"].to_yaml(again)
    reloaded, _ = load_pipelines(again, plugin_manager=plugin_manager)
    assert reloaded["branches"].spec == pipes["branches"].spec


def test_sub_pipelines_in_a_file_with_params(tmp_path, steps_module, plugin_manager):
    path = write(
        tmp_path,
        f"""
        params:
          numbers: {{type: list, default: [1, 2]}}
        pipelines:
          - name: sum
            steps:
              - name: total
                run: {steps_module}:total
          - name: main
            steps:
              - name: small
                pipeline: sum
              - name: big
                pipeline: sum
                params: {{numbers: [10, 20, 30]}}
    """,
    )
    pipes, _ = load_pipelines(path, plugin_manager=plugin_manager)
    assert pipes["sum"].nested and not pipes["main"].nested
    run = pipes["main"].run_sync()
    assert run.ok, run.errors
    assert run.steps["small"].output == {"total": 3}
    assert run.steps["big"].output == {"total": 60}


@pytest.mark.parametrize(
    "body, line, message",
    [
        (
            """
        pipelines:
          - name: a
            steps: [{name: x, pipeline: b}]
          - name: b
            steps: [{name: y, pipeline: a}]
     """,
            6,
            "pipelines[1].steps.y.pipeline: sub-pipelines form a cycle: a -> b -> a",
        ),
        (
            """
        pipelines:
          - name: a
            steps: [{name: x, pipeline: bb}]
          - name: b
            steps: [{name: y, run: "os:getcwd"}]
     """,
            4,
            "no pipeline named 'bb' in this file; did you mean 'b'?",
        ),
        (
            """
        name: one
        steps: [{name: x, pipeline: other}]
     """,
            3,
            "write the file with several pipelines",
        ),
        (
            """
        params: {n: {type: int, default: 1}}
        pipelines:
          - name: a
            steps: [{name: x, pipeline: b, params: {m: 2}}]
          - name: b
            steps: [{name: y, run: "os:getcwd"}]
     """,
            5,
            "declares no param 'm'",
        ),
        (
            """
        name: one
        steps: [{name: x, run: "os:getcwd", params: {a: 1}}]
     """,
            3,
            "'params' go with 'pipeline'",
        ),
        (
            """
        name: one
        steps: [{name: x, run: "os:getcwd", when: "params.a = 1"}]
     """,
            3,
            "steps.x.when: 'params.a = 1': cannot read",
        ),
        (
            """
        name: one
        steps: [{name: x, run: "os:getcwd", inputs: {a: "steps.y.outputs"}}]
     """,
            3,
            "steps.x.inputs.a: 'steps.y.outputs': expected 'steps.y.output'",
        ),
        (
            """
        name: one
        steps: [{name: x, run: "os:getcwd", options: {a: 1}}]
     """,
            3,
            "'options' go with a step class",
        ),
        (
            """
        name: one
        steps: [{name: x, run: "os:getcwd", trigger: one_succes}]
     """,
            3,
            "did you mean 'one_success'?",
        ),
    ],
)
def test_bad_composition_files(tmp_path, body, line, message, plugin_manager):
    path = write(tmp_path, body)
    with pytest.raises(PipelineFileError) as info:
        load_pipelines(path, plugin_manager=plugin_manager)
    assert info.value.line == line, str(info.value)
    assert message in str(info.value)


@pytest.mark.slow
def test_pipectl_run_without_names_runs_sub_pipelines_only_inside_their_parent(
    tmp_path, steps_module
):
    import subprocess

    path = write(
        tmp_path,
        f"""
        params:
          numbers: {{type: list, default: [1, 2]}}
        pipelines:
          - name: sum
            steps:
              - name: total
                run: {steps_module}:total
          - name: main
            steps:
              - name: nested
                pipeline: sum
                params: {{numbers: [5, 6]}}
    """,
    )
    cli = [sys.executable, "-m", "pipectl.cli", "run", str(path), "--no-progress"]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "of 'main': success" in proc.stdout
    assert "of 'sum'" not in proc.stdout  # not run on its own
    proc = subprocess.run([*cli, "sum"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "of 'sum': success" in proc.stdout

"""Pipeline files: the loader's messages for bad files, and pipectl run / validate / graph."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings

from pipectl import Pipeline, RunStatus
from pipectl.files import PipelineFileError
from pipectl.pipeline import load_pipeline

HERE = Path(__file__).resolve().parent / "pipeline_files"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


@pytest.fixture(autouse=True)
def _steps_module_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _cli(*args: str, cwd: Path = HERE) -> subprocess.CompletedProcess:
    return subprocess.run([*PIPECTL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


GOOD_STEP = "  - name: a\n    run: steps_for_tests:numbers\n"

# (file text, expected line, expected fragments of the message)
BAD_FILES = {
    "empty": ("", 1, ["the file is empty"]),
    "not a mapping": ("- a\n- b\n", 1, ["a pipeline file is a mapping", "not a list"]),
    "scalar": ("just text\n", 1, ["a pipeline file is a mapping"]),
    "tabs": ("name: x\nsteps:\n\t- name: a\n", 3, ["tabs", "use spaces"]),
    "duplicate key": (
        "name: x\nname: y\nsteps:\n" + GOOD_STEP,
        2,
        ["name: duplicate key (first at line 1)"],
    ),
    "unknown top field": (
        "name: x\nstepz: []\n",
        2,
        ["stepz: unknown field", "did you mean 'steps'"],
    ),
    "no name": ("steps:\n" + GOOD_STEP, 1, ["name: the pipeline needs a name"]),
    "no steps": ("name: x\n", 1, ["steps: expected a list of steps"]),
    "steps not a list": ("name: x\nsteps: {a: 1}\n", 2, ["expected a list of steps"]),
    "step not a mapping": ("name: x\nsteps:\n  - just-a-name\n", 3, ["a step is a mapping"]),
    "misspelled step field": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n    retires: 3\n",
        5,
        ["steps[0].retires: unknown step field", "did you mean 'retries'"],
    ),
    "retries: three": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n    retries: three\n",
        5,
        ["steps.a.retries: expected an integer >= 0", "'three'"],
    ),
    "negative timeout": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n    timeout: -1\n",
        5,
        ["steps.a.timeout: expected a number > 0"],
    ),
    "duplicate step": (
        "name: x\nsteps:\n" + GOOD_STEP + GOOD_STEP,
        5,
        ["duplicate step 'a' (first at line 3)"],
    ),
    "unknown dependency": (
        "name: x\nsteps:\n"
        + GOOD_STEP
        + "  - name: b\n    run: steps_for_tests:numbers\n    depends_on: [aa]\n",
        5,
        ["unknown step 'aa'", "did you mean 'a'"],
    ),
    "cycle": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n    depends_on: b\n"
        "  - name: b\n    run: steps_for_tests:numbers\n    depends_on: a\n",
        3,
        ["cycle: a -> b -> a"],
    ),
    "unimportable module": (
        "name: x\nsteps:\n  - name: a\n    run: no_such_module_xyz:f\n",
        4,
        ["steps.a.run: cannot import module 'no_such_module_xyz'"],
    ),
    "missing function": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbrs\n",
        4,
        ["has no 'numbrs'", "did you mean 'numbers'"],
    ),
    "not callable": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:NOT_CALLABLE\n",
        4,
        ["is a int, not a function"],
    ),
    "not a reference": (
        "name: x\nsteps:\n  - name: a\n    run: numbers\n",
        4,
        ["expected 'module:function'"],
    ),
    "step does nothing": ("name: x\nsteps:\n  - name: a\n", 3, ["the step does nothing"]),
    "bad trigger": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n    trigger: all_don\n",
        5,
        ["one of all_success, all_done", "did you mean 'all_done'"],
    ),
    "undefined param ref": (
        "name: x\nsteps:\n  - name: a\n    extract: {type: csv, path: "
        '"${params.src}"}\n    load: [{type: jsonl, path: o.jsonl}]\n',
        4,
        ["${params.src}: no such param"],
    ),
    "unset env": (
        "name: x\nsteps:\n  - name: a\n    extract: {type: csv, path: "
        '"${env.PIPECTL_TEST_SURELY_UNSET}"}\n    load: [{type: jsonl, path: o}]\n',
        4,
        ["${env.PIPECTL_TEST_SURELY_UNSET} is not set", ":-default"],
    ),
    "missing required param": (
        "name: x\nparams:\n  day: {type: str}\nsteps:\n" + GOOD_STEP,
        None,
        ["params.day: is required", "params={'day': ...}"],
    ),
    "bad param type": (
        "name: x\nparams:\n  day: {type: date}\nsteps:\n" + GOOD_STEP,
        3,
        ["params.day.type: unknown type 'date'"],
    ),
    "default of the wrong type": (
        "name: x\nparams:\n  n: {type: int, default: many}\nsteps:\n" + GOOD_STEP,
        3,
        ["params.n.default: 'many' is not a int"],
    ),
    "bad retry_on": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n"
        "    retry_on: [ConectionError]\n",
        5,
        ["'ConectionError' is not an exception class", "did you mean 'ConnectionError'"],
    ),
    "run and extract": (
        "name: x\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n"
        "    extract: {type: csv, path: x}\n    load: []\n",
        3,
        ["a step has one of 'run'"],
    ),
    "data step without load": (
        "name: x\nsteps:\n  - name: a\n    extract: {type: csv, path: x}\n",
        3,
        ["steps.a.load: a data step needs 'load'"],
    ),
    "max_concurrent zero": (
        "name: x\nmax_concurrent: 0\nsteps:\n" + GOOD_STEP,
        2,
        ["max_concurrent: expected an integer >= 1"],
    ),
    "fail_fast not bool": (
        "name: x\nfail_fast: sometimes\nsteps:\n" + GOOD_STEP,
        2,
        ["fail_fast: expected true or false"],
    ),
    "non-string key": ("name: x\n1: a\nsteps:\n" + GOOD_STEP, 2, ["keys must be strings"]),
    "unclosed bracket": ("name: x\nsteps: [\n", 3, ["invalid YAML"]),
    "resources not a mapping": (
        "name: x\nsteps:\n" + GOOD_STEP + "    resources: GPU\n",
        5,
        ["steps.a.resources: expected a mapping of resource name"],
    ),
    "resource amount not a size": (
        "name: x\nsteps:\n" + GOOD_STEP + "    resources:\n      GPU: 1\n      memory: lots\n",
        7,
        ["steps.a.resources.memory: 'lots' is not a size (such as 4GB"],
    ),
    "resource amount zero": (
        "name: x\nsteps:\n" + GOOD_STEP + "    resources: {GPU: 0}\n",
        5,
        ["steps.a.resources.GPU: expected a positive amount"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_pipeline_file_is_one_message_with_file_line_and_field(tmp_path, case):
    text, line, fragments = BAD_FILES[case]
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:"), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("case", ["missing file", "directory", "binary file", "not utf-8"])
def test_files_that_are_not_pipeline_files(tmp_path, case):
    path = tmp_path / "x.yaml"
    if case == "directory":
        path.mkdir()
    elif case == "binary file":
        path.write_bytes(b"\x7fELF\x00\x00\x01")
    elif case == "not utf-8":
        path.write_bytes(b"name: caf\xe9\n")
    expected = {
        "missing file": "no such file",
        "directory": "is a directory",
        "binary file": "is a binary file",
        "not utf-8": "is not UTF-8",
    }[case]
    with pytest.raises(PipelineFileError, match=expected):
        load_pipeline(path)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_FILES)[:12] + ["missing file"])
def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path, case):
    path = tmp_path / "pipeline.yaml"
    if case != "missing file":
        path.write_text(BAD_FILES[case][0], encoding="utf-8")
    for command in ("run", "validate", "graph"):
        proc = _cli(command, str(path), cwd=HERE)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"pipectl: error: {path}"), proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


# found when the pipeline is validated (the components and executor installed, the functions'
# signatures), still reported as file:line: field
INVALID_FILES = {
    "unknown extractor": (
        "name: x\nsteps:\n  - name: s\n    extract: {type: csvv, path: a.csv}\n"
        "    load: [{type: jsonl, path: o.jsonl}]\n",
        4,
        "steps.s.extract.type",
        "no extractor named 'csvv'; did you mean 'csv'?",
    ),
    "unknown output": (
        "name: x\nsteps:\n  - name: s\n    extract: {type: csv, path: a.csv}\n"
        "    load: [{type: jsnol, path: o.jsonl}]\n",
        5,
        "steps.s.load[0].type",
        "no output named 'jsnol'; did you mean 'jsonl'?",
    ),
    "unknown executor": (
        "name: x\nexecutor: daskk\nsteps:\n" + GOOD_STEP,
        2,
        "executor",
        "no executor named 'daskk'",
    ),
    "unknown step type": (
        "name: x\nsteps:\n  - name: s\n    type: shelll\n",
        3,
        "steps.s",
        "no step type named 'shelll'",
    ),
    "parameter nothing binds": (
        "name: x\nsteps:\n" + GOOD_STEP + "  - name: b\n    run: os.path:join\n",
        6,
        "steps.b.run",
        "parameter 'a' of posixpath:join is not an upstream step",
    ),
    "condition on a missing step": (
        "name: x\nsteps:\n" + GOOD_STEP + "  - name: b\n    run: steps_for_tests:numbers\n"
        "    when: steps.zz.output > 1\n",
        None,
        "steps",
        "step 'b' depends on unknown step 'zz'",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_FILES))
def test_invalid_pipelines_name_file_line_and_field(tmp_path, case):
    text, line, field, fragment = INVALID_FILES[case]
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    for command in ("validate", "run"):
        proc = _cli(command, str(path), cwd=HERE)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        where = f"{path}:{line}: {field}:" if line else f"{path}:"
        assert proc.stderr.startswith(f"pipectl: error: {where}"), proc.stderr
        assert fragment in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-p", "n"], "-p 'n': expected KEY=VALUE"),
        (["-p", "n=many"], "-p n: expected an integer, got 'many'"),
        (["-p", "nn=3"], "-p nn: the pipeline declares no param 'nn'; did you mean 'n'?"),
        (["--executor", "ray"], "no executor named 'ray'"),
        (["--max-concurrent", "0"], "Invalid value for '--max-concurrent'"),
    ],
)
def test_bad_command_lines_exit_2(args, fragment):
    proc = _cli("run", "good.yaml", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_pipectl_run_succeeds_and_prints_a_summary():
    proc = _cli("run", "good.yaml", "-p", "n=4", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "numbers" in proc.stdout and "total" in proc.stdout
    assert "of 'good': success" in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    names = [e["event"] for e in events if e["event"] != "plugins_loaded"]
    assert names[0] == "run_started"
    assert {e.get("step") for e in events if e["event"] == "step_finished"} == {"numbers", "total"}


@pytest.mark.slow
def test_pipectl_run_exits_1_when_the_run_fails():
    proc = _cli("run", "failing.yaml", "-q")
    assert proc.returncode == 1, proc.stderr
    assert "broken" in proc.stdout and "RuntimeError: boom in a step" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_dry_run_prints_the_plan_and_runs_nothing():
    proc = _cli("run", "failing.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Level 0:" in proc.stdout and "nothing was run" in proc.stdout


@pytest.mark.slow
def test_validate_and_graph():
    proc = _cli("validate", "good.yaml")
    assert proc.returncode == 0 and "is valid (2 steps)" in proc.stdout
    proc = _cli("graph", "good.yaml", "--format", "dot")
    assert proc.returncode == 0, proc.stderr
    # one labelled cluster per pipeline, nodes labelled with the step names
    assert 'label="good";' in proc.stdout
    assert 'p0_s0 [label="numbers"];' in proc.stdout and 'p0_s1 [label="total"];' in proc.stdout
    assert "p0_s0 -> p0_s1;" in proc.stdout


def test_from_yaml_params_are_typed_and_interpolated(tmp_path, monkeypatch, plugin_manager):
    monkeypatch.setenv("PIPECTL_TEST_OUT", str(tmp_path))
    source = tmp_path / "in.csv"
    source.write_text("id,value\n1,10\n2,20\n", encoding="utf-8")
    path = tmp_path / "data.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: data
        params:
          source: {{type: str, default: "{source}"}}
          batch: {{type: int, default: 1}}
        steps:
          - name: load
            extract: {{type: csv, path: "${{params.source}}", types: {{id: int, value: int}},
                       batch_size: "${{params.batch}}"}}
            transform: [steps_for_tests:double]
            load:
              - {{type: jsonl, path: "${{env.PIPECTL_TEST_OUT}}/out.jsonl"}}
              - {{type: jsonl, path: "${{env.PIPECTL_TEST_MISSING:-{tmp_path}}}/again.jsonl"}}
    """),
        encoding="utf-8",
    )
    pipe = Pipeline.from_yaml(path, {"batch": "2"}, plugin_manager=plugin_manager)
    assert pipe.params == {"source": str(source), "batch": 2}
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    for name in ("out.jsonl", "again.jsonl"):
        rows = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
        assert rows == [{"id": 1, "value": 20}, {"id": 2, "value": 40}]


def _yaml_documents():
    import yaml
    from hypothesis import strategies as st

    keys = st.sampled_from(
        [
            "name",
            "steps",
            "params",
            "run",
            "depends_on",
            "retries",
            "timeout",
            "type",
            "extract",
            "load",
            "transform",
            "trigger",
            "max_concurrent",
            "fail_fast",
            "default",
            "options",
            "inputs",
            "x",
            "1",
        ]
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 5),
        st.floats(-2, 2),
        st.sampled_from(
            [
                "a",
                "steps_for_tests:numbers",
                "${params.n}",
                "${env.HOME}",
                "all_done",
                "csv",
                "",
                "${",
                "\t",
            ]
        ),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=20,
    )
    structured = st.dictionaries(keys, values, max_size=6).map(lambda d: yaml.safe_dump(d))
    raw = st.text(alphabet=st.sampled_from(list("ab: -\n\t[]{}\"'#&*!|>%@`,?~0")), max_size=80)
    return st.one_of(structured, raw)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(text=_yaml_documents())
def test_random_yaml_loads_or_raises_our_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_pipeline(path, env={"HOME": "/home/x"})
    except PipelineFileError:
        pass


SECRET = "s3cr3t-Token-4242"


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [["--log-format", "console"], ["--log-format", "json"], ["--progress"]],
    ids=["console", "json", "live-display"],
)
def test_secret_params_never_appear_in_any_output(flags, tmp_path, monkeypatch):
    import shutil

    for name in ("secret.yaml", "steps_for_tests.py"):
        shutil.copy(HERE / name, tmp_path / name)
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / ".pipectl"))  # the tracker, grepped too
    proc = _cli("run", "secret.yaml", "-p", f"token={SECRET}", "-v", *flags, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the step fails, quoting the key
    everything = proc.stdout + proc.stderr
    assert SECRET not in everything
    assert "the API refused key ***" in everything
    assert "calling the api" in proc.stderr and "***" in proc.stderr
    # nor in any file the run left behind (the tracker's database, outputs, dead letters ...)
    assert (tmp_path / ".pipectl" / "pipectl.db").exists()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_secret_params_are_masked_in_the_run_record(plugin_manager, hook_recorder):
    pipe = Pipeline.from_yaml(
        HERE / "secret.yaml", {"token": SECRET}, plugin_manager=plugin_manager
    )
    run = pipe.run_sync()
    assert run.parameters == {"token": "***", "region": "eu"}
    result = run.steps["call"]
    assert result.error == "PermissionError: the API refused key ***"
    assert SECRET not in result.traceback and "***" in result.traceback
    assert SECRET not in " ".join(run.errors)
    (finish,) = hook_recorder.calls_for("step_finish")
    assert SECRET not in (finish.result.error or "")  # listeners never see it either


@pytest.mark.slow
def test_several_pipelines_run_in_dependency_order():
    proc = _cli("run", "layers.yaml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("of 'bronze_to_silver': success") < out.index("of 'silver_to_gold': success")
    assert "of 'side_report': success" in out


@pytest.mark.slow
def test_naming_a_pipeline_runs_it_and_what_it_depends_on_only():
    proc = _cli("run", "layers.yaml", "silver_to_gold", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Pipeline: bronze_to_silver" in proc.stdout and "Pipeline: silver_to_gold" in proc.stdout
    assert "side_report" not in proc.stdout
    assert "(after: bronze_to_silver)" in proc.stdout


@pytest.mark.slow
def test_a_failed_upstream_pipeline_skips_its_dependents(tmp_path):
    text = (
        (HERE / "layers.yaml")
        .read_text()
        .replace("run: steps_for_tests:silver", "run: steps_for_tests:boom")
        .replace("depends_on: [bronze]\n", "depends_on: [bronze]\n        inputs: {}\n")
    )
    path = tmp_path / "layers.yaml"
    path.write_text(text)
    proc = _cli("run", str(path), cwd=HERE)
    assert proc.returncode == 1, proc.stderr
    assert (
        "pipeline 'silver_to_gold' skipped: upstream pipeline 'bronze_to_silver' failed"
        in proc.stdout
    )
    assert "of 'side_report': success" in proc.stdout  # independent pipelines still run


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "pipelines:\n  - name: a\n    steps:\n"
            + GOOD_STEP.replace("  -", "      -").replace("    run", "        run")
            + "  - name: a\n    steps:\n"
            + GOOD_STEP.replace("  -", "      -").replace("    run", "        run"),
            "duplicate pipeline 'a'",
        ),
        (
            "pipelines:\n  - name: a\n    depends_on: [b]\n    steps:\n      - name: s\n"
            "        run: steps_for_tests:numbers\n  - name: b\n    depends_on: [a]\n    steps:\n"
            "      - name: s\n        run: steps_for_tests:numbers\n",
            "cycle: a -> b -> a",
        ),
        (
            "pipelines:\n  - name: a\n    depends_on: [bb]\n    steps:\n      - name: s\n"
            "        run: steps_for_tests:numbers\n",
            "depends on unknown pipeline 'bb'",
        ),
        ("steps: []\npipelines: []\n", "unknown field of a file with several pipelines"),
    ],
)
def test_bad_multi_pipeline_files(tmp_path, text, fragment):
    path = tmp_path / "multi.yaml"
    path.write_text(text)
    proc = _cli("validate", str(path), cwd=HERE)
    assert proc.returncode == 2, proc.stdout
    assert fragment in proc.stderr, proc.stderr


def test_unknown_pipeline_name_on_the_command_line():
    proc = _cli("run", "layers.yaml", "silver_to_gld")
    assert proc.returncode == 2
    assert "no pipeline named 'silver_to_gld'; did you mean 'silver_to_gold'?" in proc.stderr


def test_from_yaml_picks_one_of_several(plugin_manager):
    with pytest.raises(PipelineFileError, match="holds 3 pipelines"):
        Pipeline.from_yaml(HERE / "layers.yaml", plugin_manager=plugin_manager)
    pipe = Pipeline.from_yaml(
        HERE / "layers.yaml", name="bronze_to_silver", plugin_manager=plugin_manager
    )
    run = pipe.run_sync()
    assert run.ok and run.steps["silver"].output == [{"id": i, "amount": i * 10} for i in (1, 2, 3)]


def _spec_view(pipe):
    return [
        (
            s.name,
            s.func,
            s.depends_on,
            dict(s.inputs),
            s.retries,
            s.retry_delay,
            s.retry_max_delay,
            s.retry_on,
            s.timeout,
            s.allow_failure,
            s.trigger,
            s.step_type,
            {k: v for k, v in s.options.items() if k != "transforms"},
            dict(s.resources),
        )
        for s in pipe.spec.steps
    ]


def test_to_yaml_round_trips_a_pipeline_of_importable_steps(tmp_path, plugin_manager):
    import steps_for_tests as st

    from pipectl import Transform

    pipe = Pipeline(
        "round",
        description="round trip",
        max_concurrent=3,
        fail_fast=True,
        plugin_manager=plugin_manager,
    )
    pipe.add_step(
        "numbers",
        st.numbers,
        retries=2,
        retry_delay=0.5,
        retry_max_delay=9,
        retry_on=(ConnectionError,),
        timeout=5,
    )
    pipe.add_step(
        "total",
        st.total,
        depends_on=["numbers"],
        allow_failure=True,
        resources={"GPU": 1, "memory": "2GiB"},
    )
    pipe.add_step("cleanup", st.numbers, depends_on=["total"], trigger="all_done")
    # absolute paths: a relative one means the working directory in Python, the file's
    # folder in a pipeline file
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(tmp_path / "in.csv")},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        transforms=[st.double, Transform(st.silver, per="batch")],
        on_bad_record="skip",
        depends_on=["numbers"],
    )
    path = tmp_path / "round.yaml"
    text = pipe.to_yaml(path)
    assert path.read_text() == text and "run: steps_for_tests:numbers" in text

    again = Pipeline.from_yaml(path, plugin_manager=plugin_manager)

    assert _spec_view(again) == _spec_view(pipe)
    assert (again.spec.max_concurrent, again.spec.fail_fast) == (3, True)
    transforms = again.spec.step("load").options["transforms"]
    assert [t.func if hasattr(t, "func") else t for t in transforms][0] is st.double
    assert again.to_yaml() == text  # stable
    assert again.spec.step("total").resources == {"GPU": 1, "memory": 2 * 2**30}


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"GPU": -1}, "resources.GPU: expected a positive amount"),
        ({"memory": "much"}, "'much' is not a size"),
        ({"": 1}, "a resource name is a non-empty string"),
        (["GPU"], "resources is a mapping of resource name to amount"),
    ],
)
def test_bad_resources_in_the_python_api(plugin_manager, resources, message):
    pipe = Pipeline("res", plugin_manager=plugin_manager)
    with pytest.raises((TypeError, ValueError), match=message):
        pipe.add_step("s", lambda: 1, resources=resources)


def test_to_yaml_refuses_what_a_file_cannot_name(plugin_manager):
    pipe = Pipeline("lambdas", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    with pytest.raises(ValueError, match="step 'a': .* cannot be written to a pipeline file"):
        pipe.to_yaml()


def _schema():
    from pipectl.cli.schema_command import schema_text

    return json.loads(schema_text())


@pytest.mark.parametrize("name", ["good.yaml", "failing.yaml", "layers.yaml", "secret.yaml"])
def test_the_json_schema_accepts_the_example_files(name):
    import jsonschema
    import yaml

    jsonschema.validate(yaml.safe_load((HERE / name).read_text()), _schema())


def test_the_json_schema_rejects_a_misspelled_field():
    import jsonschema
    import yaml

    data = yaml.safe_load((HERE / "good.yaml").read_text())
    data["steps"][0]["retires"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, _schema())


def test_the_json_schema_knows_exactly_the_loaders_fields():
    from pipectl.files import build, steps

    schema = _schema()
    single, multi = schema["oneOf"]
    assert set(schema["$defs"]["step"]["properties"]) == steps.STEP_FIELDS
    assert set(single["properties"]) == build.TOP_FIELDS
    assert set(multi["properties"]) == build.MULTI_FIELDS
    assert set(multi["properties"]["pipelines"]["items"]["properties"]) == build.ONE_OF_MANY


def test_the_shipped_json_schema_steps_are_generated_from_the_step_fields():
    """``$defs.step`` is the declaration of pipectl.files.fields (and the step types'
    FILE_FIELDS): ``python -m pipectl.docgen --schema`` rewrites it."""
    from pipectl.docgen import SCHEMA_PATH, render_schema
    from pipectl.files import fields, steps

    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "pipectl/schema/pipeline.schema.json is stale: python -m pipectl.docgen --schema"
    )
    assert set(fields.step_schema()["properties"]) == steps.STEP_FIELDS
    assert steps.DATA_FIELDS == {f.name for f in steps.TYPE_FIELDS["data"]}


@pytest.mark.slow
def test_pipectl_schema_prints_it():
    proc = _cli("schema", "--format-only")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == _schema()
    full = json.loads(_cli("schema").stdout)  # with the installed components' options
    assert full["oneOf"] == _schema()["oneOf"]
    assert set(full["$defs"]) == set(_schema()["$defs"]) | {"components", "extractor", "output"}


@pytest.mark.slow
def test_a_pipeline_file_in_json_loads_runs_and_fits_the_same_schema(tmp_path):
    import jsonschema
    import yaml

    data = yaml.safe_load((HERE / "good.yaml").read_text())
    path = tmp_path / "good.json"
    path.write_text(json.dumps(data, indent=2))
    jsonschema.validate(json.loads(path.read_text()), _schema())
    import shutil

    shutil.copy(HERE / "steps_for_tests.py", tmp_path / "steps_for_tests.py")
    proc = _cli("run", str(path), "-p", "n=3", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "of 'good': success" in proc.stdout
    # and a JSON file's mistakes are reported by line like YAML's
    path.write_text('{\n  "name": "x",\n  "steps": [\n    {"name": "a", "retires": 2}\n  ]\n}\n')
    proc = _cli("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}:4: steps[0].retires: unknown step field; did you mean 'retries'?" in proc.stderr


@pytest.mark.parametrize(
    "path",
    [
        "examples/quickstart/pipeline.yaml",
        "examples/resilience/pipeline.yaml",
        "examples/layers/pipeline.yaml",
    ],
)
def test_the_json_schema_accepts_the_examples(path):
    import jsonschema
    import yaml

    root = HERE.parent.parent
    jsonschema.validate(yaml.safe_load((root / path).read_text()), _schema())

"""What a run produced, as people see it: each step's output in the summary table of
``pipectl run``, in ``pipectl runs show`` and in the run story; a data step's records read,
written per output and rejected; whole rows in a pipe (``COLUMNS`` honoured); secrets masked.
And three small defects: ``to_yaml`` keeps the params, ``write_story`` takes a PipelineRun,
``from_yaml`` tells a Python caller how a Python caller gives a param."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipectl import Pipeline
from pipectl.files import PipelineFileError
from pipectl.pipeline import load_pipeline
from pipectl.preview import data_counts, fit, preview, preview_summary
from pipectl.story import render_html, render_markdown, run_record, write_story
from pipectl.tracking import summarize

SECRET = "tok-Sesame-4242-open"
LONG_ERROR = "the source refused the request: " + "a very long explanation, " * 12 + "END-OF-ERROR"
LONG_MODE = "full-refresh-of-every-table-in-the-warehouse-" * 3 + "END-OF-MODE"

STEPS = f"""\
LONG_ERROR = {LONG_ERROR!r}


def summary(params):
    return {{"path": "out/summary.csv", "rows": 114, "token": params["token"],
            "note": "n" * 30}}


def numbers():
    return list(range(114))


def broken(numbers):
    raise ValueError(LONG_ERROR)


def after(broken):
    return 1


def guarded(numbers):
    return 2
"""

TRANSFORMS = """\
def parse(row):
    return {"id": int(row["id"]), "qty": int(row["qty"])}
"""

PIPELINE = f'''\
name: produced
params:
  token: {{type: str, secret: true, default: "{SECRET}"}}
  mode: {{type: str, default: daily}}
steps:
  - name: summary
    run: steps_out:summary
  - name: numbers
    run: steps_out:numbers
  - name: load
    extract: {{type: csv, path: rows.csv}}
    transform: [transforms_out:parse]
    load:
      - {{type: jsonl, path: out/rows.jsonl}}
      - {{type: sqlite, path: out/rows.sqlite, table: rows}}
    on_bad_record: dead_letter
    dead_letter: out/rejected.jsonl
  - name: broken
    run: steps_out:broken
    depends_on: [numbers]
  - name: after
    run: steps_out:after
    depends_on: [broken]
  - name: guarded
    run: steps_out:guarded
    depends_on: [numbers]
    when: "params.mode == '{LONG_MODE}'"
'''

SUMMARY_PREVIEW = (
    "dict(4 keys): {'path': 'out/summary.csv', 'rows': 114, 'token': '***', "
    "'note': 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'}"
)
NUMBERS_PREVIEW = "list[114]: [0, 1, 2, 3, 4, …]"
LOAD_COUNTS = "read 5, jsonl 4, sqlite 4, rejected 1"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "steps_out.py").write_text(STEPS, encoding="utf-8")
    (tmp_path / "transforms_out.py").write_text(TRANSFORMS, encoding="utf-8")
    (tmp_path / "rows.csv").write_text("id,qty\n1,3\n2,4\n3,x\n4,5\n5,6\n", encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    return tmp_path


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``pipectl ARGS`` in a real process, its stdout a pipe."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")
    }
    environ.update(PIPECTL_HOME=str(cwd / "home"), TERM="xterm-256color", **env)
    return subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def rows_of(text: str) -> dict[str, str]:
    """The table's lines by step name (the first table of ``text``)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*step\s+status", line))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if set(line.strip()) <= {"─", "-", " "}:
            continue
        rows[line.split()[0]] = line
    return rows


def expected_reason() -> str:
    return f"condition is false: params.mode == '{LONG_MODE}'"


def check_whole_rows(rows: dict[str, str]) -> None:
    assert SUMMARY_PREVIEW in rows["summary"]
    assert NUMBERS_PREVIEW in rows["numbers"]
    assert LOAD_COUNTS in rows["load"]
    assert f"ValueError: {LONG_ERROR}" in rows["broken"]  # whole: not cut at 80 or 100
    assert "upstream step 'broken' failed" in rows["after"]
    assert expected_reason() in rows["guarded"]


# ---------------------------------------------------------------------------------------------
# The command line, in a pipe
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_in_a_pipe_prints_every_row_whole_with_outputs_and_counts(project):
    proc = cli("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].split() == [
        "step",
        "status",
        "duration",
        "attempts",
        "records",
        "output",
        "/",
        "error",
    ]
    rows = rows_of(proc.stdout)
    check_whole_rows(rows)
    assert max(len(line) for line in rows.values()) > 200  # nothing cut the table at 80
    # the secret param's value is shown nowhere
    assert SECRET not in proc.stdout + proc.stderr
    # where the records went is still told under the table
    assert re.search(r"^load -> jsonl .*rows\.jsonl: 4 records$", proc.stdout, re.M)


@pytest.mark.slow
def test_columns_is_honoured_in_a_pipe(project):
    proc = cli("run", "pipeline.yaml", cwd=project, COLUMNS="100")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = rows_of(proc.stdout)
    assert all(len(line) <= 100 for line in rows.values()), rows
    assert rows["broken"].endswith("…") and "END-OF-ERROR" not in rows["broken"]
    assert LOAD_COUNTS in rows["load"]  # short enough to fit
    assert SECRET not in proc.stdout
    # the lines under the table are not a table: they are not cut
    assert f"broken failed on attempt 1 of 1: ValueError: {LONG_ERROR}" in proc.stdout


@pytest.mark.slow
def test_the_coloured_table_forced_into_a_pipe_is_whole_too(project):
    proc = cli("run", "pipeline.yaml", "--progress", cwd=project, NO_COLOR="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = rows_of(ANSI.sub("", proc.stdout))
    check_whole_rows(rows)
    assert SECRET not in proc.stdout + proc.stderr
    narrow = cli("run", "pipeline.yaml", "--progress", cwd=project, NO_COLOR="1", COLUMNS="90")
    rows = rows_of(ANSI.sub("", narrow.stdout))
    assert all(len(line.rstrip()) <= 90 for line in rows.values()), rows
    assert "END-OF-ERROR" not in rows["broken"]


@pytest.mark.slow
def test_on_a_terminal_the_table_shows_outputs_cut_to_its_width(project):
    from test_cli_progress import _env, _in_terminal, _plain  # a 120-column pseudo-terminal

    code, raw = _in_terminal(
        ["run", "pipeline.yaml"], cwd=project, env=_env(PIPECTL_HOME=str(project / "home"))
    )
    assert code == 1
    text = _plain(raw)
    rows = rows_of(text[text.rindex("\nstep ") :])  # the table, after the live display
    assert all(len(line.rstrip()) <= 120 for line in rows.values()), rows
    assert NUMBERS_PREVIEW in rows["numbers"] and LOAD_COUNTS in rows["load"]
    assert "'token': '**" in rows["summary"] and rows["summary"].rstrip().endswith("…")
    assert "END-OF-ERROR" not in rows["broken"]
    assert SECRET not in text


@pytest.mark.slow
def test_runs_show_and_list_in_a_pipe(project):
    run = cli("run", "pipeline.yaml", cwd=project)
    assert run.returncode == 1
    shown = cli("runs", "show", "latest", cwd=project)
    assert shown.returncode == 0, shown.stderr
    rows = rows_of(shown.stdout)
    check_whole_rows(rows)
    assert SECRET not in shown.stdout
    listed = cli("runs", "list", cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert "END-OF-ERROR" in listed.stdout  # the run's error, whole
    narrow = cli("runs", "show", "latest", cwd=project, COLUMNS="100")
    assert all(len(line) <= 100 for line in rows_of(narrow.stdout).values())


@pytest.mark.slow
def test_runs_show_marks_an_allowed_failure(tmp_path):
    (tmp_path / "steps_allowed.py").write_text("def fails():\n    raise RuntimeError('meh')\n")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent("""\
        name: allowed
        steps:
          - name: fails
            run: steps_allowed:fails
            allow_failure: true
        """)
    )
    assert cli("run", "p.yaml", cwd=tmp_path).returncode == 0
    rows = rows_of(cli("runs", "show", "latest", cwd=tmp_path).stdout)
    assert re.search(r"^fails\s+failed \(allowed\)\s", rows["fails"]), rows


@pytest.mark.slow
def test_the_story_of_a_cli_run_shows_outputs_and_counts(project):
    text = PIPELINE.replace("name: produced\n", "name: produced\nstory: story.md\n")
    (project / "pipeline.yaml").write_text(text, encoding="utf-8")
    proc = cli("run", "pipeline.yaml", cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    story = (project / "story.md").read_text(encoding="utf-8")
    assert f"`{LOAD_COUNTS}`" in story
    assert f"`{NUMBERS_PREVIEW}`" in story
    assert "'token': '\\*\\*\\*'" in story or "'token': '***'" in story
    assert SECRET not in story


@pytest.mark.slow
def test_a_missing_required_param_on_the_command_line_says_dash_p(tmp_path):
    (tmp_path / "steps_req.py").write_text("def a(params):\n    return params['day']\n")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent("""\
        name: req
        params:
          day: {type: str}
        steps:
          - name: a
            run: steps_req:a
        """)
    )
    proc = cli("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "params.day: is required: give it with -p day=VALUE" in proc.stderr
    assert "params={" not in proc.stderr
    proc = cli("run", "p.yaml", "-p", "dy=1", cwd=tmp_path)
    assert "-p dy: the pipeline declares no param 'dy'" in proc.stderr


# ---------------------------------------------------------------------------------------------
# The Python API
# ---------------------------------------------------------------------------------------------


def test_preview_shows_type_size_and_a_bounded_repr():
    assert preview(None) == "None"
    assert preview(42) == "42"
    assert preview("done") == "'done'"
    assert (
        preview({"path": "out/a.csv", "rows": 114})
        == "dict(2 keys): {'path': 'out/a.csv', 'rows': 114}"
    )
    assert preview(list(range(114))) == "list[114]: [0, 1, 2, 3, 4, …]"
    assert preview("x" * 1000).startswith("str(1,000 chars): 'xxx")
    assert preview(list(range(10**6)), width=9) == "list[1,0…"
    assert preview(list(range(114)), width=9) == "list[114]"
    big = {str(i): "v" * 1000 for i in range(10_000)}
    assert len(preview(big)) <= 200 and preview(big).startswith("dict(10,000 keys): {'0': 'vvv")
    assert preview(b"\x00" * 10**6).startswith("bytes[1,000,000]: b'\\x00")

    class Thing:
        def __repr__(self) -> str:
            return "Thing(\n  a=1,\n  b=2)"

    assert preview(Thing()) == "Thing( a=1, b=2)"  # one line


def test_preview_masks_secrets_even_where_it_cuts():
    value = {"token": SECRET, "msg": f"sent with {SECRET}!", "n": 4242}
    shown = preview(value, secrets=[SECRET])
    assert SECRET not in shown and "'token': '***'" in shown and "sent with ***!" in shown
    for width in range(5, 80):
        cut = preview(f"abc {SECRET}", width, secrets=[SECRET])
        assert len(cut) <= width
        assert "Sesam" not in cut and "tok-S" not in cut, cut
    assert "tok-S" not in fit(f"{'x' * 20}{SECRET}", 26, [SECRET])


def test_a_recorded_summary_previews_like_the_value():
    for value in (
        {"path": "out/a.csv", "rows": 114},
        list(range(114)),
        "done",
        42,
        None,
        {"a": list(range(100)), "b": "y" * 3000},
    ):
        recorded = json.loads(json.dumps(summarize(value)))
        if not isinstance(value, dict) or "b" not in value:
            assert preview_summary(recorded) == preview(value), value
    assert (
        preview_summary(summarize({"a": list(range(100)), "b": "y" * 3000}))
        == "dict(2 keys): {'a': <list[100]>, 'b': <str(3,000 chars)>}"
    )
    assert preview_summary(summarize("z" * 5000)).startswith("str(5,000 chars): 'zzz")


def _python_pipeline() -> Pipeline:
    pipe = Pipeline("story_py")
    pipe.param("token", SECRET, secret=True)

    @pipe.step("fetch")
    def fetch(params):
        return {"rows": 3, "token": params["token"]}

    @pipe.step("check", depends_on=["fetch"])
    def check(fetch):
        raise RuntimeError("refused " + fetch["token"])

    @pipe.step("report", depends_on=["check"])
    def report(check):
        return 1

    return pipe


def test_write_story_of_a_pipeline_run(tmp_path):
    pipe = _python_pipeline()
    run = pipe.run_sync()
    md = write_story(run, tmp_path / "story.md", pipeline=pipe).read_text(encoding="utf-8")
    assert md.startswith("# Run story: story_py — **failed**")
    assert "| `fetch` | python | success |" in md
    assert "| `check` | python | failed |" in md and "RuntimeError: refused \\*\\*\\*" in md
    assert "| `report` | python | skipped |" in md and "upstream step 'check' failed" in md
    assert "`dict(2 keys): {'rows': 3, 'token': '***'}`" in md
    assert "n0 --> n1" in md and "n1 --> n2" in md  # the DAG, from the pipeline
    assert SECRET not in md
    page = write_story(run, tmp_path / "story.html").read_text(encoding="utf-8")
    assert "story_py" in page and "unknown" not in page.split("<main", 1)[1][:2000]
    assert "RuntimeError: refused ***" in page
    assert "no dependencies between the steps" in page  # no pipeline given: said, not drawn
    assert SECRET not in page
    record = run_record(run, pipe)
    assert record["status"] == "failed" and [s["status"] for s in record["steps"]] == [
        "success",
        "failed",
        "skipped",
    ]
    assert record["steps"][0]["execution_time_ms"] == run.steps["fetch"].duration_ms
    assert render_markdown(run, pipeline=pipe) == md
    assert "story_py" in render_html(run)


def test_write_story_of_something_else_says_what_to_pass(tmp_path):
    with pytest.raises(TypeError, match=r"run record .* or a PipelineRun"):
        write_story(["not", "a", "run"], tmp_path / "story.md")


def test_data_counts_of_a_python_data_step(tmp_path):
    (tmp_path / "in.csv").write_text("id\n1\n2\n3\n", encoding="utf-8")
    pipe = Pipeline("py_data")
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(tmp_path / "in.csv")},
        outputs=[
            {"type": "jsonl", "path": str(tmp_path / "a.jsonl")},
            {"type": "jsonl", "path": str(tmp_path / "b.jsonl")},
        ],
    )
    run = pipe.run_sync()
    assert run.ok
    assert data_counts(run.steps["load"].output) == "read 3, jsonl#0 3, jsonl#1 3"
    assert preview(run.steps["load"].output) == "read 3, jsonl#0 3, jsonl#1 3"


def test_to_yaml_keeps_the_params_and_never_writes_a_secret(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "yaml_steps.py").write_text("def a(params):\n    return params\n")
    from importlib import import_module

    a = import_module("yaml_steps").a
    pipe = Pipeline("params_py")
    pipe.param("day", "2026-01-01", description="the day to load")
    pipe.param("limit", 100)
    pipe.param("ratio", 0.5)
    pipe.param("dry_run", False)
    pipe.param("regions", ["eu", "us"])
    pipe.param("extra", None)
    pipe.param("token", SECRET, secret=True, description="API token")
    pipe.add_step("a", a)
    text = pipe.to_yaml(tmp_path / "p.yaml")
    assert SECRET not in text
    back = Pipeline.from_yaml(tmp_path / "p.yaml", {"token": SECRET})
    for name, spec in pipe.param_specs.items():
        other = back.param_specs[name]
        assert (other.type, other.secret, other.description) == (
            spec.type,
            spec.secret,
            spec.description,
        ), name
        if name != "token":
            assert (other.default, other.required) == (spec.default, spec.required), name
    assert back.param_specs["token"].required  # its value is not in the file: give it again
    assert back.params == pipe.params
    assert back.run_sync().steps["a"].output["token"] == SECRET


def test_to_yaml_of_a_loaded_file_loads_back_the_same(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PIPECTL_TEST_TOKEN", SECRET)
    (tmp_path / "yaml_steps2.py").write_text(
        "class Call:\n    def __init__(self, name, config):\n        self.config = config\n\n"
        "    def run(self, data):\n        return self.config\n"
    )
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent("""\
        name: params_file
        params:
          day: {type: str, required: true, description: the day}
          maybe: {type: str, default: null}
          limit: 7
          token: {type: str, secret: true, default: "${env.PIPECTL_TEST_TOKEN}"}
        steps:
          - name: a
            run: yaml_steps2:Call
            options: {auth: "Bearer ${params.token}", day: "${params.day}"}
        """)
    )
    pipe = load_pipeline(tmp_path / "p.yaml", {"day": "2026-02-03"})
    text = pipe.to_yaml(tmp_path / "again.yaml")
    assert SECRET not in text
    assert "Bearer ${params.token}" in text  # the secret written back as the reference
    back = load_pipeline(tmp_path / "again.yaml", {"day": "2026-02-03"})
    assert back.params == pipe.params
    assert {
        n: (p.type, p.default, p.required, p.secret, p.description)
        for n, p in back.param_specs.items()
    } == {
        n: (p.type, p.default, p.required, p.secret, p.description)
        for n, p in pipe.param_specs.items()
    }
    assert back.steps["a"].options == pipe.steps["a"].options
    assert back.run_sync().steps["a"].output == {"auth": f"Bearer {SECRET}", "day": "2026-02-03"}


def test_from_yaml_tells_a_python_caller_to_pass_params(tmp_path):
    (tmp_path / "req_steps.py").write_text("def a(params):\n    return 1\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: req
        params:
          day: {type: str}
          token: {type: str, secret: true, default: "${env.PIPECTL_SURELY_UNSET_TOKEN}"}
        steps:
          - name: a
            run: req_steps:a
        """)
    )
    with pytest.raises(PipelineFileError) as info:
        Pipeline.from_yaml(path, {"token": "x" * 8})
    assert "params.day: is required: pass it in params={'day': ...}" in str(info.value)
    assert "-p" not in str(info.value)
    with pytest.raises(PipelineFileError) as info:
        Pipeline.from_yaml(path, {"day": "2026-01-01"})
    assert "pass params={'token': ...}" in str(info.value) and "-p" not in str(info.value)
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(path, {"dy": "1", "day": "x"})
    assert "params['dy']: the pipeline declares no param 'dy'" in str(info.value)

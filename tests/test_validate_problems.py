"""`pipectl validate` reports every problem of a file at once, each with file:line, the field
and a hint: component options checked against the schema each component declares
(pipectl.options), conditions on undeclared params, inputs naming unknown steps, outputs that
would write one file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipectl import Pipeline, PipelineValidationError

PIPECTL = [sys.executable, "-m", "pipectl"]

EVERY_PROBLEM = textwrap.dedent("""\
    name: checked
    params:
      day: {type: str, default: "2026-12-01"}
    steps:
      - name: read
        extract: {type: csv, pth: data.csv}
        load:
          - {type: csv, path: out.csv, colums: [id]}
          - {type: sqlite, path: out.sqlite}
          - {type: jsonl, path: out.jsonl, compress: "yes"}
      - name: typed
        extract: {type: jsonl, path: in.jsonl}
        load:
          - {type: sqlite, path: t.sqlite, table: t, columns: {id: "INTEGER); DROP TABLE x; --"}}
      - name: twice
        extract: {type: jsonl, path: in.jsonl}
        load:
          - {type: sqlite, path: same.sqlite, table: orders}
          - {type: sqlite, path: ./same.sqlite, table: orders}
      - name: report
        run: os:getcwd
        when: params.mode == 'full'
      - name: use
        run: os.path:basename
        inputs: {p: steps.nope.output}
    """)


@pytest.mark.slow
def test_validate_reports_every_problem_of_a_file_at_once(tmp_path):
    (tmp_path / "p.yaml").write_text(EVERY_PROBLEM)
    proc = subprocess.run(
        [*PIPECTL, "validate", "p.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    expected = [  # line: field: what, with the hint
        ("p.yaml:6: steps.read.extract.pth:", "unknown option; did you mean 'path'?"),
        ("p.yaml:6: steps.read.extract.path:", "is required"),
        ("p.yaml:8: steps.read.load[0].colums:", "unknown option; did you mean 'columns'?"),
        ("p.yaml:9: steps.read.load[1].table:", "is required; give it: table:"),
        ("p.yaml:10: steps.read.load[2].compress:", "expected true or false, got a string"),
        ("p.yaml:14: steps.typed.load[0]:", "is not an SQL type name"),
        (
            "p.yaml:19: steps.twice.load[1].path:",
            "as load[0] does; two outputs of one step cannot share a file",
        ),
        ("p.yaml:22: steps.report.when:", "params.mode: the pipeline declares no param 'mode'"),
        ("p.yaml:25: steps.use.inputs:", "depends on unknown step 'nope'"),
    ]
    for where, what in expected:
        assert any(
            line.startswith(f"pipectl: error: {where}") and what in line for line in lines
        ), (where, what, proc.stderr)
    assert lines[-1] == "pipectl: 9 problems in p.yaml"
    # run refuses the same file before anything runs, saying the same
    ran = subprocess.run(
        [*PIPECTL, "run", "p.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 2 and ran.stderr == proc.stderr
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / ".pipectl").exists()


def test_the_python_api_gets_the_same_problems_structured(tmp_path):
    pipe = Pipeline("checked")
    pipe.data_step(
        "load",
        extractor={"type": "jsonl", "path": str(tmp_path / "in.jsonl"), "encodng": "utf-8"},
        outputs=[
            {"type": "sqlite", "path": str(tmp_path / "o.sqlite"), "table": "t", "mode": "upsert"}
        ],
    )
    with pytest.raises(PipelineValidationError) as caught:
        pipe.validate()
    problems = {(p.step, p.field): p for p in caught.value.problems}
    assert set(problems) == {("load", "extract.encodng"), ("load", "load[0].mode")}
    assert problems["load", "extract.encodng"].hint.startswith("did you mean 'encoding'?")
    assert "one of 'append', 'replace'" in problems["load", "load[0].mode"].message


def test_an_extractor_without_batch_size_works_and_gets_none(tmp_path):
    """batch_size is really optional: an extractor whose options do not have it is not
    given it (the data step still batches what it yields)."""
    from pipectl.testing import HookRecorder  # noqa: F401 - the kit is importable

    class Few:
        def __init__(self, count: int):
            self.count = count

        def describe(self) -> str:
            return "few"

        def batches(self, ctx):
            yield [{"id": i} for i in range(self.count)]

    from pipectl.plugins import get_plugin_manager

    pm = get_plugin_manager(autoload=False, entry_points=())

    class Plugin:
        @staticmethod
        def pipectl_register_extractors(register):
            register("few", Few, options=Few)

    from pipectl.hookspecs import hookimpl

    Plugin.pipectl_register_extractors = hookimpl(Plugin.pipectl_register_extractors)
    pm.add_plugin(Plugin, "few-plugin")
    pipe = Pipeline("few", plugin_manager=pm)
    pipe.data_step(
        "load",
        extractor={"type": "few", "count": 3},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "o.jsonl")}],
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert [json.loads(x)["id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == [
        0,
        1,
        2,
    ]
    bad = Pipeline("few-bad", plugin_manager=pm)
    bad.data_step(
        "load",
        extractor={"type": "few", "count": "3"},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "o.jsonl")}],
    )
    with pytest.raises(
        PipelineValidationError,
        match="count: extractor 'few'.*expected a whole number, got a string",
    ):
        bad.validate()


@pytest.mark.slow
def test_the_json_schema_holds_every_installed_components_options():
    proc = subprocess.run([*PIPECTL, "schema"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    components = schema["$defs"]["components"]
    csv = components["extractors"]["csv"]
    assert csv["required"] == ["path"] and "delimiter" in csv["properties"]
    assert components["outputs"]["sqlite"]["properties"]["mode"]["enum"] == ["append", "replace"]
    assert csv["additionalProperties"] is False


def test_a_component_reference_is_generated_and_up_to_date():
    from pipectl.docgen import render_components

    doc = Path(__file__).resolve().parent.parent / "docs" / "components.md"
    assert doc.read_text(encoding="utf-8") == render_components(), (
        "docs/components.md is stale: python -m pipectl.docgen --components"
    )

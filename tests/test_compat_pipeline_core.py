"""pipectl.compat.pipeline_core: the Pipeline Core document's code runs on pipectl, and does
what the document says (run status, records_processed, errors, output_config).

tests/test_seed_docs_index.py lists every block of the document with the test running it."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipectl.compat.pipeline_core import Pipeline, PipelineRun, PipelineRunConfig, RunStatus
from pipectl.components.files import CsvOutput, JsonlOutput
from pipectl.components.sqlite import SqliteOutput

# The document's "Constructor" (line 12): a signature, not code that runs (no body)
CONSTRUCTOR = """
def __init__(
    pipeline_id: str,
    extractor: BaseExtractor,
    outputs: List[BaseOutput]
)
"""

# The document's "Example Usage", as written (its top-level ``await`` included)
EXAMPLE = """
# Create pipeline instance
pipeline = Pipeline(
    pipeline_id="weather_api",
    extractor=weather_extractor,
    outputs=[bigquery_output, gcs_output]
)

# Execute pipeline
config = PipelineRunConfig(
    pipeline_id="weather_api",
    parameters={"location_ids": ["NYC", "SF"]}
)
run = await pipeline.execute(config)
"""


class WeatherExtractor:
    """A real extractor: one reading per location named by the run's parameters."""

    def __init__(self, fail_at: str | None = None):
        self.fail_at = fail_at

    def describe(self) -> str:
        return "weather"

    def batches(self, ctx: Any) -> Any:
        for location in ctx.params["location_ids"]:
            if location == self.fail_at:
                raise ConnectionError(f"weather API down at {location}")
            yield [{"location": location, "temp_c": 20.5}]


class FailingOutput:
    """A real output whose writes fail (a warehouse that refuses the load)."""

    guarantee = "transactional"
    name = "warehouse"

    def __init__(self) -> None:
        self.closed = False

    def describe(self) -> str:
        return "warehouse"

    def open(self, ctx: Any) -> None:
        pass

    def write(self, batch: list[dict[str, Any]]) -> None:
        raise PermissionError("quota exceeded")

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def run_example(namespace: dict[str, Any]) -> PipelineRun:
    code = compile(EXAMPLE, "example", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def main() -> None:
        result = eval(code, namespace)  # a coroutine: the example awaits at top level
        if result is not None:
            await result

    asyncio.run(main())
    run: PipelineRun = namespace["run"]
    return run


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_documents_example_runs(tmp_path):
    namespace: dict[str, Any] = {
        "Pipeline": Pipeline,
        "PipelineRunConfig": PipelineRunConfig,
        "weather_extractor": WeatherExtractor(),
        "bigquery_output": SqliteOutput(tmp_path / "warehouse.db", "weather"),
        "gcs_output": JsonlOutput(tmp_path / "bucket" / "weather.jsonl"),
    }
    run = run_example(namespace)
    assert isinstance(run, PipelineRun)
    assert run.status is RunStatus.SUCCESS
    assert run.pipeline_id == "weather_api"
    assert run.run_id and run.start_time <= run.end_time
    assert run.parameters == {"location_ids": ["NYC", "SF"]}
    assert run.records_processed == 2
    assert run.errors == []
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        assert conn.execute("SELECT location FROM weather").fetchall() == [("NYC",), ("SF",)]
    assert [r["location"] for r in lines(tmp_path / "bucket" / "weather.jsonl")] == ["NYC", "SF"]


def test_the_constructor_takes_the_documents_parameters_in_its_order():
    """Section "Constructor" (000, line 12): the signature, completed with a body to be
    parsed, names the parameters of the adapter's Pipeline, in order and without defaults."""
    [func] = ast.parse(CONSTRUCTOR.rstrip() + ": ...").body
    assert isinstance(func, ast.FunctionDef)
    documented = [arg.arg for arg in func.args.args]
    parameters = list(inspect.signature(Pipeline).parameters.values())
    assert [p.name for p in parameters[: len(documented)]] == documented
    assert all(p.default is p.empty for p in parameters[: len(documented)])
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters[: len(documented)])


def test_positional_and_keyword_arguments_are_the_same(tmp_path):
    a = Pipeline("p", WeatherExtractor(), [JsonlOutput(tmp_path / "a.jsonl")])
    b = Pipeline(
        pipeline_id="p",
        extractor=WeatherExtractor(),
        outputs=[{"type": "jsonl", "path": str(tmp_path / "b.jsonl")}],
    )
    assert a.pipeline_id == b.pipeline_id == a.name == "p"
    assert list(a.steps) == list(b.steps) == ["extract_load"]
    config = PipelineRunConfig("p", {"location_ids": ["NYC"]})
    assert asyncio.run(a.execute(config)).records_processed == 1
    assert asyncio.run(b.execute(config)).records_processed == 1
    with pytest.raises(TypeError, match="at least one output"):
        Pipeline("p", WeatherExtractor(), [])
    with pytest.raises(ValueError, match="for pipeline 'other'"):
        asyncio.run(a.execute(PipelineRunConfig("other")))


def test_an_extraction_error_commits_no_output(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text('{"kept": true}\n')
    pipeline = Pipeline(
        "weather_api",
        WeatherExtractor(fail_at="SF"),  # NYC is read and written before SF fails
        [JsonlOutput(old), CsvOutput(tmp_path / "new.csv")],
    )
    run = asyncio.run(
        pipeline.execute(PipelineRunConfig("weather_api", {"location_ids": ["NYC", "SF"]}))
    )
    assert run.status is RunStatus.FAILED
    assert run.records_processed == 0
    assert len(run.errors) == 1 and "weather API down at SF" in run.errors[0]
    assert old.read_text() == '{"kept": true}\n'  # the old file, untouched
    assert not (tmp_path / "new.csv").exists()


def test_one_failing_output_does_not_stop_the_other(tmp_path):
    failing = FailingOutput()
    pipeline = Pipeline(
        "weather_api", WeatherExtractor(), [failing, JsonlOutput(tmp_path / "gcs.jsonl")]
    )
    run = asyncio.run(
        pipeline.execute(PipelineRunConfig("weather_api", {"location_ids": ["NYC", "SF"]}))
    )
    assert run.status is RunStatus.FAILED
    assert [r["location"] for r in lines(tmp_path / "gcs.jsonl")] == ["NYC", "SF"]
    # the records the committed output wrote (issue 17: this was 0)
    assert run.records_processed == 2
    assert len(run.errors) == 1
    assert "output 'warehouse' failed: PermissionError: quota exceeded" in run.errors[0]
    assert failing.closed  # resources cleaned up


def test_output_config_overrides_an_option_for_one_run(tmp_path):
    jsonl = JsonlOutput(tmp_path / "default.jsonl")
    pipeline = Pipeline(
        "weather_api",
        WeatherExtractor(),
        [jsonl, {"type": "csv", "path": str(tmp_path / "default.csv"), "name": "report"}],
    )
    params = {"location_ids": ["NYC"]}
    config = PipelineRunConfig(
        "weather_api",
        params,
        output_config={
            "jsonloutput": {"path": str(tmp_path / "today.jsonl")},  # object: with_options
            "report": {"path": str(tmp_path / "today.csv"), "delimiter": ";"},  # a mapping
        },
    )
    run = asyncio.run(pipeline.execute(config))
    assert run.ok, run.errors
    assert [r["location"] for r in lines(tmp_path / "today.jsonl")] == ["NYC"]
    assert (tmp_path / "today.csv").read_text().splitlines() == ["location;temp_c", "NYC;20.5"]
    assert not (tmp_path / "default.jsonl").exists() and not (tmp_path / "default.csv").exists()
    assert jsonl.path == str(tmp_path / "default.jsonl")  # the pipeline's output is unchanged
    # the next run, without output_config, writes where the pipeline says
    assert asyncio.run(pipeline.execute(PipelineRunConfig("weather_api", params))).ok
    assert (tmp_path / "default.jsonl").exists() and (tmp_path / "default.csv").exists()


def test_output_config_names_outputs_as_the_run_reports_them(tmp_path):
    pipeline = Pipeline(
        "p",
        WeatherExtractor(),
        [JsonlOutput(tmp_path / "a.jsonl"), JsonlOutput(tmp_path / "b.jsonl")],
    )
    config = PipelineRunConfig(
        "p", {"location_ids": ["NYC"]}, {"jsonloutput#1": {"path": str(tmp_path / "c.jsonl")}}
    )
    run = asyncio.run(pipeline.execute(config))
    assert set(run.steps["extract_load"].output.outputs) == {"jsonloutput#0", "jsonloutput#1"}
    assert (tmp_path / "c.jsonl").exists() and not (tmp_path / "b.jsonl").exists()
    with pytest.raises(ValueError, match="names no output 'jsonloutput'"):  # two: ambiguous
        asyncio.run(pipeline.execute(PipelineRunConfig("p", {}, {"jsonloutput": {"path": "x"}})))


@pytest.mark.parametrize(
    ("output_config", "message"),
    [
        ({"warehuose": {"path": "x"}}, r"names no output 'warehuose': did you mean 'warehouse'\?"),
        (
            {"jsonloutput": {"pth": "x"}},
            r"output_config\['jsonloutput'\]: JsonlOutput: unknown option 'pth': did you mean 'path'\?",
        ),
        (
            {"report": {"delimter": ";"}},
            r"output_config\['report'\]: output 'csv': delimter: unknown option; did you mean 'delimiter'\?",
        ),
        ({"report": {"type": "jsonl"}}, r"type cannot be overridden"),
        ({"report": "x.csv"}, r"output_config\['report'\] must be a mapping"),
        (
            {"warehouse": {"path": "x"}},
            r"FailingOutput object, which takes no overrides: give it a with_options",
        ),
    ],
)
def test_a_bad_output_config_raises_before_anything_runs(tmp_path, output_config, message):
    pipeline = Pipeline(
        "p",
        WeatherExtractor(),
        [
            JsonlOutput(tmp_path / "a.jsonl"),
            {"type": "csv", "path": str(tmp_path / "r.csv"), "name": "report"},
            FailingOutput(),
        ],
    )
    with pytest.raises(ValueError, match=message):
        asyncio.run(
            pipeline.execute(PipelineRunConfig("p", {"location_ids": ["NYC"]}, output_config))
        )
    assert list(tmp_path.iterdir()) == []


def test_output_config_on_a_pipeline_of_several_data_steps(tmp_path):
    import pipectl

    pipe = pipectl.Pipeline("two")
    for step in ("a", "b"):
        pipe.data_step(
            step, extractor=WeatherExtractor(), outputs=[SqliteOutput(tmp_path / f"{step}.db", "t")]
        )
    with pytest.raises(
        ValueError, match=r"names outputs of several data steps \(a, b\): write STEP.sqliteoutput"
    ):
        pipe.with_output_config({"sqliteoutput": {"table": "u"}})
    run = pipe.with_output_config({"b.sqliteoutput": {"table": "u"}}).run_sync(
        {"location_ids": ["SF"]}
    )
    assert run.ok, run.errors
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT location FROM u").fetchall() == [("SF",)]
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT location FROM t").fetchall() == [("SF",)]


def test_import_pipectl_does_not_import_compat():
    code = "import sys, pipectl; pipectl.Pipeline; print(any(m.startswith('pipectl.compat') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

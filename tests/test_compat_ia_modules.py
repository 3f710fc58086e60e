"""pipectl.compat.ia_modules (seed 003): the document's code with its imports changed, and
pipelines of ia_modules' own shapes (simple, parallel, conditional; written by hand in
tests/ia_modules/seed_*.json, steps in tests/ia_modules/steps/seed.py) run through
``run_pipeline_from_json`` and through ``pipectl import ia-modules`` + ``pipectl run``."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict  # noqa: UP035 - the document's import

import pytest

from pipectl import Pipeline as CorePipeline
from pipectl.compat.ia_modules import (
    ExecutionTracker,
    GraphPipelineRunner,
    Pipeline,
    ServiceRegistry,
    Step,
    create_step_from_json,
    run_pipeline_from_json,
)
from pipectl.model import StepStatus

HERE = Path(__file__).parent / "ia_modules"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


@pytest.fixture
def ia(tmp_path, monkeypatch):
    """The step classes as the importable package ``ia_steps`` (``ia_steps.seed``)."""
    shutil.copytree(HERE / "steps", tmp_path / "ia_steps")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for name in ("ia_steps", "ia_steps.seed"):
        sys.modules.pop(name, None)
    import ia_steps.seed

    yield ia_steps.seed
    for name in ("ia_steps", "ia_steps.seed"):
        sys.modules.pop(name, None)


# -- the document's code, imports changed ---------------------------------------------------


class Step1(Step):  # the document's step, as written
    async def run(self, input: Dict[str, Any]) -> Dict[str, Any]:  # noqa: UP006
        topic = input.get("topic")
        transformed = f"PROCESSED_{topic.upper()}"
        return {"topic": transformed}


class Step2(Step):
    async def run(self, input: Dict[str, Any]) -> Dict[str, Any]:  # noqa: UP006
        db = self.get_db()
        execution_id = self.services.get("execution_id")
        return {"topic": input["topic"], "stored_in": db.name, "execution_id": execution_id}


class FakeDatabase:
    """The document's DatabaseManager, stubbed."""

    name = "test.db"


def test_the_documents_step_runs_in_a_pipeline_with_services():
    # "Example: Testing Without Database" / "Swapping Databases", with a stub database
    services = ServiceRegistry()
    services.register("database", FakeDatabase())
    name = "simple"
    steps = [Step1("step1", {}), Step2("step2", {})]
    flow = {"start_at": "step1", "paths": [{"from_step": "step1", "to_step": "step2"}]}
    pipeline = Pipeline(name, steps, flow, services)
    result = asyncio.run(pipeline.run({"topic": "machine learning"}))
    assert result["input"] == {"topic": "machine learning"}
    assert [s["step_name"] for s in result["steps"]] == ["step1", "step2"]
    assert result["steps"][0] == {
        "step_name": "step1",
        "step_index": 0,
        "result": {"topic": "PROCESSED_MACHINE LEARNING"},
        "status": "completed",
    }
    run_id = pipeline.last_run.run_id
    assert result["output"] == {
        "topic": "PROCESSED_MACHINE LEARNING",
        "stored_in": "test.db",
        "execution_id": run_id,
    }
    assert services.get("execution_id") == run_id
    assert services.get("execution_tracker") is None  # optional: the pipeline works without


def test_without_a_flow_the_steps_run_in_order_and_a_failure_raises():
    class Boom(Step):
        async def run(self, input):
            raise ValueError(f"bad {input['topic']}")

    pipeline = Pipeline("chain", [Step1("a", {}), Boom("b", {})])
    with pytest.raises(ValueError, match="bad PROCESSED_X"):
        asyncio.run(pipeline.run({"topic": "x"}))
    assert pipeline.last_run.steps["b"].status is StepStatus.FAILED


def test_create_step_from_json_and_the_graph_runner(ia):
    step = create_step_from_json(
        {"id": "step1", "name": "Data Preparation", "step_class": "Prepare",
         "module": "ia_steps.seed", "config": {"x": 1}}
    )  # fmt: skip
    assert (type(step).__name__, step.name, step.config) == ("Prepare", "step1", {"x": 1})
    services = ServiceRegistry()
    graph_runner = GraphPipelineRunner(services)
    config = (HERE / "seed_simple.json").read_text()
    import json

    result = asyncio.run(graph_runner.run_pipeline_from_json(json.loads(config), {"topic": "a"}))
    assert result["output"] == {"topic": "PROCESSED_A_RICH_DONE"}


# -- the three shapes, through run_pipeline_from_json ----------------------------------------

INPUTS: dict[str, dict[str, Any]] = {
    "seed_simple": {"topic": "ml"},
    "seed_parallel": {"items": [1, 2, 3, 4, 5]},
    "seed_conditional": {"rows": [1, None, 3, 4]},  # quality 0.75: the "good" branch
}


def check(name: str, seen: dict[str, Any], outputs: dict[str, Any]) -> None:
    """What each shape's steps must have received and returned."""
    if name == "seed_simple":
        assert seen == {
            "step1": {"topic": "ml"},  # the first step: the pipeline input
            "step2": {"topic": "PROCESSED_ML"},  # then the previous step's result
            "step3": {"topic": "PROCESSED_ML_RICH"},
        }
        assert outputs["step3"] == {"topic": "PROCESSED_ML_RICH_DONE"}
    elif name == "seed_parallel":
        source = {"chunks": [[1, 3, 5], [2, 4]]}
        # both streams get the source's result (ia_modules' runner hands step3 step2's)
        assert seen["step2"] == source and seen["step3"] == source
        # the join of steps that all ran: each one's result by step id
        assert seen["step4"] == {"step2": {"sum": 9, "count": 3}, "step3": {"sum": 6, "count": 2}}
        assert outputs["step4"] == {"total": 15, "streams": ["step2", "step3"]}
    else:
        assert "poor" not in seen  # only the chosen branch runs (ia_modules' runner runs both)
        assert seen["good"] == {"rows": [1, None, 3, 4], "quality": 0.75}
        labelled = [["good", 1], ["good", None], ["good", 3], ["good", 4]]
        rows = [list(r) for r in seen["report"]["rows"]]
        assert rows == labelled  # the join gets the result of the branch that ran
        assert outputs["report"] == {"report": ["good"], "n": 4}


@pytest.mark.parametrize("name", list(INPUTS))
def test_the_shapes_run_through_run_pipeline_from_json(ia, name):
    ia.SEEN.clear()
    result = asyncio.run(run_pipeline_from_json(HERE / f"{name}.json", INPUTS[name]))
    seen = dict(ia.SEEN)
    outputs = {s["step_name"]: s["result"] for s in result["steps"]}
    check(name, seen, outputs)
    assert result["input"] == INPUTS[name]
    assert result["output"] == outputs[result["steps"][-1]["step_name"]]


def test_the_other_branch_when_the_score_is_low(ia):
    result = asyncio.run(
        run_pipeline_from_json(HERE / "seed_conditional.json", {"rows": [1, None]})
    )
    assert [s["step_name"] for s in result["steps"]] == ["score", "poor", "report"]
    assert result["output"] == {"report": ["poor"], "n": 2}


# -- the same shapes imported: pipectl import ia-modules, then run ---------------------------


def imported(tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.yaml"
    proc = subprocess.run(
        [*PIPECTL, "import", "ia-modules", str(HERE / f"{name}.json"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INPUTS))
def test_the_shapes_imported_and_run_in_process(tmp_path, ia, plugin_manager, name):
    path = imported(tmp_path, name)
    text = path.read_text()
    assert "A step that declares no inputs gets its data as in ia_modules" in text
    ia.SEEN.clear()
    run = CorePipeline.from_yaml(path, INPUTS[name], plugin_manager=plugin_manager).run_sync()
    assert run.ok, run.errors
    check(name, dict(ia.SEEN), run.outputs())


@pytest.mark.slow
def test_the_imported_shapes_run_from_the_command_line(tmp_path, ia):
    for name, params in [
        ("seed_simple", ["topic=ml"]),
        ("seed_parallel", ["items=[1, 2, 3, 4, 5]"]),
        ("seed_conditional", ["rows=[1, null, 3, 4]"]),
    ]:
        path = imported(tmp_path, name)
        args = [a for p in params for a in ("-p", p)]
        proc = subprocess.run(
            [*PIPECTL, "run", str(path), *args, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if name == "seed_conditional":
            assert "poor" in proc.stdout and "condition is false" in proc.stdout


def test_compat_is_not_imported_by_import_pipectl():
    code = "import sys, pipectl; pipectl.Pipeline; print('pipectl.compat' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


# -- ExecutionTracker: the design's tracker, on a pipectl SQLite tracker ---------------------


@dataclass
class ConnectionConfig:  # the document's, stubbed: what ExecutionTracker reads of it
    provider: str
    database: str


class DatabaseManager:
    """The document's DatabaseManager, stubbed: a ConnectionConfig and a real SQLite file."""

    def __init__(self, config: ConnectionConfig):
        self.config = config
        self.name = config.database


class PipelineService:
    """The document's pipeline_service.py, stubbed around its own code."""

    def __init__(self, db_manager: DatabaseManager):
        # 1. Setup services (dependency injection)
        self.services = ServiceRegistry()
        self.services.register("database", db_manager)
        # 2. Create tracker with injected database
        self.tracker = ExecutionTracker(db_manager)  # NOT hardcoded!
        # 3. Register tracker in services
        self.services.register("execution_tracker", self.tracker)

    async def execute(self, config, input_data, job_id):
        self.services.register("execution_id", job_id)
        # 4. Execute pipeline
        graph_runner = GraphPipelineRunner(self.services)
        result = await graph_runner.run_pipeline_from_json(config, input_data)
        # Pipeline uses services.get('execution_tracker') internally
        return result

    # NEW: pipeline_service.py
    async def get_execution(self, job_id: str):
        # Always load from database for complete data
        if self.tracker:
            record = await self.tracker.get_execution(job_id)
            step_records = await self.tracker.get_execution_steps(job_id)
            # Return database format with all details
            return {**record, "steps": step_records}


class Seen(Step):
    async def run(self, input):
        tracker = self.services.get("execution_tracker")
        return {"tracker": type(tracker).__name__, "id": self.services.get("execution_id")}


def test_the_service_records_a_run_and_get_execution_reads_it(tmp_path, ia):
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "test.db")))
    service = PipelineService(db)
    try:
        result = asyncio.run(service.execute(HERE / "seed_simple.json", {"topic": "ml"}, "job-1"))
        assert result["output"] == {"topic": "PROCESSED_ML_RICH_DONE"}
        record = asyncio.run(service.get_execution("job-1"))
    finally:
        service.tracker.close()
    assert record["execution_id"] == "job-1"
    assert record["pipeline_name"] == "seed_shaped_chain"  # the JSON's name
    assert record["status"] == "completed"
    assert record["started_at"] and record["completed_at"]
    assert record["input_data"] == {"topic": "ml"}
    assert record["output_data"] == {"topic": "PROCESSED_ML_RICH_DONE"}
    assert (record["total_steps"], record["completed_steps"], record["failed_steps"]) == (3, 3, 0)
    steps = record["steps"]
    assert [(s["step_id"], s["status"]) for s in steps] == [
        ("step1", "completed"),
        ("step2", "completed"),
        ("step3", "completed"),
    ]
    assert steps[1]["input_data"] == {"step1": {"topic": "PROCESSED_ML"}}  # by upstream
    assert steps[1]["output_data"] == {"topic": "PROCESSED_ML_RICH"}
    assert all(s["started_at"] and s["execution_time_ms"] is not None for s in steps)
    assert steps[0]["retry_count"] == 0 and steps[0]["error_message"] is None
    assert asyncio.run(service.tracker.get_execution("no-such-job")) is None


def test_production_with_tracking_and_a_failed_step(tmp_path):
    # "Example: Testing Without Database", the production half; db a stub manager
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "t.db")))

    class Boom(Step):
        async def run(self, input):
            raise ValueError("no such topic")

    services = ServiceRegistry()
    services.register("database", db)
    services.register("execution_tracker", ExecutionTracker(db))
    name, flow = "tracked", {}
    steps = [Seen("seen", {}), Boom("boom", {})]
    pipeline = Pipeline(name, steps, flow, services)
    tracker = services.get("execution_tracker")
    try:
        with pytest.raises(ValueError, match="no such topic"):
            asyncio.run(pipeline.run({"topic": "x"}))
        run_id = services.get("execution_id")
        record = asyncio.run(tracker.get_execution(run_id))
        steps_ = asyncio.run(tracker.get_execution_steps(run_id))
        listed = asyncio.run(tracker.list_executions("tracked", status="failed"))
    finally:
        tracker.close()
    assert pipeline.last_run.steps["seen"].output == {"tracker": "ExecutionTracker", "id": run_id}
    assert record["status"] == "failed"
    assert "no such topic" in record["error_message"]
    assert [(s["step_id"], s["status"]) for s in steps_] == [
        ("seen", "completed"),
        ("boom", "failed"),
    ]
    assert "ValueError: no such topic" in steps_[1]["error_message"]
    assert [r["execution_id"] for r in listed] == [run_id]


def test_swapping_databases_and_recording_by_hand(tmp_path):
    # "Example: Swapping Databases": the SQLite half; then a pipectl tracker URL and object
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "test.db")))
    # Same code works with both!
    tracker = ExecutionTracker(db)
    try:

        async def by_hand() -> str:
            execution_id = await tracker.start_execution("manual", {"n": 1})
            step = await tracker.start_step_execution(execution_id, "load", input_data={"n": 1})
            await tracker.complete_step_execution(step, "completed", output_data={"rows": 2})
            step = await tracker.start_step_execution(execution_id, "save")
            await tracker.complete_step_execution(step, "failed", error_message="disk full")
            await tracker.complete_execution(execution_id, "failed", error_message="disk full")
            return execution_id

        execution_id = asyncio.run(by_hand())
        record = asyncio.run(tracker.get_execution(execution_id))
        steps = asyncio.run(tracker.get_execution_steps(execution_id))
    finally:
        tracker.close()
    assert (record["pipeline_name"], record["status"]) == ("manual", "failed")
    assert record["input_data"] == {"n": 1}
    assert [(s["step_id"], s["step_type"], s["status"]) for s in steps] == [
        ("load", "task", "completed"),
        ("save", "task", "failed"),
    ]
    assert steps[0]["output_data"] == {"rows": 2}
    assert steps[1]["error_message"] == "disk full"
    # the same file through its URL, and a pipectl tracker given as it is
    by_url = ExecutionTracker(f"sqlite:///{tmp_path / 'test.db'}")
    try:
        assert asyncio.run(by_url.get_execution(execution_id))["status"] == "failed"
        again = ExecutionTracker(by_url.tracker)
        assert again.tracker is by_url.tracker
        assert asyncio.run(again.get_execution_steps(execution_id)) == steps
    finally:
        by_url.close()
    with pytest.raises(TypeError, match="tracker URL"):
        ExecutionTracker(object())

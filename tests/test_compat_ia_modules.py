"""pipectl.compat.ia_modules (seed 003): the document's code run as it is written, and
pipelines of ia_modules' own shapes (simple, parallel, conditional; written by hand in
tests/ia_modules/seed_*.json, steps in tests/ia_modules/steps/seed.py) run through
``run_pipeline_from_json`` and through ``pipectl import ia-modules`` + ``pipectl run``.

The document's runnable blocks are kept below as it writes them and run with only their import
line changed (``ia_modules.pipeline.core`` is ``pipectl.compat.ia_modules``), with top-level
``await`` as the document writes it, in a namespace holding the adapter's classes (the blocks
use them without importing them) and small stubs of the document's own objects
(``db_manager``, ``PostgreSQLManager``, ``name``, ``steps``, ``flow``). The blocks of
pipeline_service.py run as the service's code: ``self`` is the service. Its JSON (a step
definition, a flow) goes through ``create_step_from_json`` and ``run_pipeline_from_json``.
tests/test_seed_docs_index.py lists every block of the document with the test running it, or
why none does.
"""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from pipectl.importers.ia_modules import convert
from pipectl.model import StepStatus

HERE = Path(__file__).parent / "ia_modules"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]

# -- the document's blocks, as written ----------------------------------------------------------

# "Constructor" of ExecutionTracker (line 80): the seed's class, run beside the adapter's
TRACKER_CONSTRUCTOR = """
class ExecutionTracker:
    def __init__(self, db_manager: DatabaseManager):
        self.db = db_manager  # Injected dependency
        self.active_executions: Dict[str, ExecutionRecord] = {}
"""

# "Code Example", from pipeline_service.py (line 163): the service's setup and a run
PIPELINE_SERVICE = """
# 1. Setup services (dependency injection)
self.services = ServiceRegistry()
self.services.register('database', db_manager)

# 2. Create tracker with injected database
self.tracker = ExecutionTracker(db_manager)  # NOT hardcoded!

# 3. Register tracker in services
self.services.register('execution_tracker', self.tracker)

# 4. Execute pipeline
graph_runner = GraphPipelineRunner(self.services)
result = await graph_runner.run_pipeline_from_json(config, input_data)
# Pipeline uses services.get('execution_tracker') internally
"""

# "Pipeline In-Memory Format" (line 225) and "ExecutionTracker Database Format" (line 238)
IN_MEMORY_FORMAT = """
{
    "step_name": "step1",
    "step_index": 0,
    "result": {                    # Combined output
        "transformed_topic": "...",
        "additional_data": "..."
    },
    "status": "completed"
}
"""

DATABASE_FORMAT = """
{
    "step_id": "step1",
    "step_name": "Data Preparation",
    "step_type": "task",
    "status": "completed",
    "started_at": "2025-10-24T10:00:00.123456",  # Precise timing
    "completed_at": "2025-10-24T10:00:01.234567",
    "input_data": {                              # Separate input
        "topic": "machine learning"
    },
    "output_data": {                             # Separate output
        "transformed_topic": "PROCESSED_MACHINE_LEARNING"
    },
    "execution_time_ms": 1111,                   # Calculated duration
    "retry_count": 0,                            # Retry tracking
    "error_message": null,
    "metadata": {                                # Additional context
        "source": "user_request",
        "priority": "high"
    }
}
"""

# "Example JSON" (line 290), and the Python file it "Loads" (line 301)
STEP_JSON = """
{
    "id": "step1",
    "name": "Data Preparation",
    "step_class": "Step1",
    "module": "tests.pipelines.simple_pipeline.steps.step1",
    "config": {}
}
"""

STEP1_PY = """
# tests/pipelines/simple_pipeline/steps/step1.py
from ia_modules.pipeline.core import Step

class Step1(Step):
    async def run(self, input: Dict[str, Any]) -> Dict[str, Any]:
        topic = input.get("topic")
        transformed = f"PROCESSED_{topic.upper()}"
        return {"topic": transformed}
"""

# "From JSON flow" (line 343): the flow part of a pipeline's JSON
FLOW_JSON = """
{
    "flow": {
        "start_at": "step1",
        "paths": [
            {"from_step": "step1", "to_step": "step2"},
            {"from_step": "step2", "to_step": "step3"}
        ]
    }
}
"""

# "Example: Testing Without Database" (line 373): two alternatives, run one at a time
TESTING_WITHOUT_DATABASE = """
# Production: With tracking
services = ServiceRegistry()
services.register('database', PostgreSQLManager(...))
services.register('execution_tracker', ExecutionTracker(db))
pipeline = Pipeline(name, steps, flow, services)

# Testing: Without tracking (faster!)
services = ServiceRegistry()
# Don't register tracker - pipeline still works!
pipeline = Pipeline(name, steps, flow, services)
"""
PRODUCTION, TESTING = TESTING_WITHOUT_DATABASE.strip("\n").split("\n\n")

# "Example: Swapping Databases" (line 388), its SQLite half and last line: the PostgreSQL half,
# ``ConnectionConfig(provider=..., port=5432, ...)``, is not Python (``...`` after keywords)
SWAPPING_DATABASES_SQLITE = """
# SQLite (development)
db = DatabaseManager(ConnectionConfig(
    provider="sqlite",
    database="test.db"
))

# Same code works with both!
tracker = ExecutionTracker(db)
"""

# "After Fix" (line 425): the service's get_execution, as written (it ends at its comment)
NEW_GET_EXECUTION = """
# NEW: pipeline_service.py
async def get_execution(self, job_id: str):
    # Always load from database for complete data
    if self.tracker:
        record = await self.tracker.get_execution(job_id)
        step_records = await self.tracker.get_execution_steps(job_id)
        # Return database format with all details
"""

SEED_IMPORT = "from ia_modules.pipeline.core import Step"
# STEP1_PY's import line, and the one its annotations need (the document's file leaves it out)
IMPORT = "from pipectl.compat.ia_modules import Step\nfrom typing import Any, Dict"
ADAPTER = {
    "ServiceRegistry": ServiceRegistry,
    "ExecutionTracker": ExecutionTracker,
    "Pipeline": Pipeline,
    "GraphPipelineRunner": GraphPipelineRunner,
}
"""The adapter's classes, by the names the blocks use (their imports are not in the blocks)."""


def compiled(block: str) -> types.CodeType:
    source = block.replace(SEED_IMPORT, IMPORT)
    return compile(source, "<seed 003>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def run_block(block: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a block of the document in ``namespace`` (its top-level ``await`` too)."""
    result = eval(compiled(block), namespace)  # noqa: S307 - the document's code, the input
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return namespace


async def run_block_in_loop(block: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_block`, from a coroutine (an event loop is running)."""
    result = eval(compiled(block), namespace)  # noqa: S307 - the document's code, the input
    if asyncio.iscoroutine(result):
        await result
    return namespace


def defined(block: str) -> Any:
    """The one function a block defines (a method of the document's, for a class body)."""
    namespace = run_block(block, {})
    (function,) = (v for k, v in namespace.items() if k != "__builtins__")
    return function


def data_format(block: str) -> dict[str, Any]:
    """A format of the document: a Python dict, with JSON's ``null``."""
    value: dict[str, Any] = eval(block, {"null": None})  # noqa: S307 - the document's data
    return value


STEP1_MODULE = "tests.pipelines.simple_pipeline.steps.step1"  # STEP_JSON's "module"
step1_file = types.ModuleType(STEP1_MODULE)
run_block(STEP1_PY, vars(step1_file))
Step1 = step1_file.Step1  # the document's step


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


@pytest.fixture
def step1_py(monkeypatch):
    """The document's step1.py, importable as the module its step JSON names."""
    monkeypatch.setitem(sys.modules, STEP1_MODULE, step1_file)
    return step1_file


# -- the document's code ---------------------------------------------------------------------


class Step2(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        db = self.get_db()
        execution_id = self.services.get("execution_id")
        return {"topic": input["topic"], "stored_in": db.name, "execution_id": execution_id}


class FakeDatabase:
    """The document's DatabaseManager, stubbed."""

    name = "test.db"


def test_the_documents_step_runs_in_a_pipeline_with_services():
    # the document's Step1 (STEP1_PY), with a stub database
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
    # IN_MEMORY_FORMAT: the same fields (its result, "Combined output", is an illustration)
    documented = data_format(IN_MEMORY_FORMAT)
    assert result["steps"][0].keys() == documented.keys()
    assert {k: v for k, v in result["steps"][0].items() if k != "result"} == {
        k: v for k, v in documented.items() if k != "result"
    }
    run_id = pipeline.last_run.run_id
    assert result["output"] == {
        "topic": "PROCESSED_MACHINE LEARNING",
        "stored_in": "test.db",
        "execution_id": run_id,
    }
    assert services.get("execution_id") == run_id
    assert services.get("execution_tracker") is None  # optional: the pipeline works without


def test_testing_without_a_tracker_the_pipeline_still_works():
    # the second half of "Example: Testing Without Database"
    namespace = {**ADAPTER, "name": "simple", "steps": [Step1("step1", {})], "flow": {}}
    run_block(TESTING, namespace)
    services, pipeline = namespace["services"], namespace["pipeline"]
    result = asyncio.run(pipeline.run({"topic": "ml"}))
    assert result["output"] == {"topic": "PROCESSED_ML"}
    assert services.get("execution_tracker") is None
    assert services.get("execution_id") == pipeline.last_run.run_id


def test_without_a_flow_the_steps_run_in_order_and_a_failure_raises():
    class Boom(Step):
        async def run(self, input):
            raise ValueError(f"bad {input['topic']}")

    pipeline = Pipeline("chain", [Step1("a", {}), Boom("b", {})])
    with pytest.raises(ValueError, match="bad PROCESSED_X"):
        asyncio.run(pipeline.run({"topic": "x"}))
    assert pipeline.last_run.steps["b"].status is StepStatus.FAILED


def test_the_documents_step_json_loads_the_documents_step_file(step1_py):
    step = create_step_from_json(json.loads(STEP_JSON))
    assert type(step) is step1_py.Step1
    assert (step.name, step.config) == ("step1", {})
    assert asyncio.run(step.run({"topic": "ml"})) == {"topic": "PROCESSED_ML"}


def test_the_documents_flow_gives_its_execution_order(ia):
    """ "Produces execution order: ["step1", "step2", "step3"]": the flow's, not the order the
    steps are listed in."""
    steps = [
        {"id": "step3", "step_class": "Enrich", "module": "ia_steps.seed", "config": {"suffix": "C"}},
        {"id": "step1", "step_class": "Prepare", "module": "ia_steps.seed", "config": {}},
        {"id": "step2", "step_class": "Enrich", "module": "ia_steps.seed", "config": {"suffix": "B"}},
    ]  # fmt: skip
    config = {"name": "flow", "steps": steps, **json.loads(FLOW_JSON)}
    result = asyncio.run(run_pipeline_from_json(config, {"topic": "ml"}))
    assert [s["step_name"] for s in result["steps"]] == ["step1", "step2", "step3"]
    assert result["output"] == {"topic": "PROCESSED_ML_B_C"}
    # in pipectl's pipeline file (pipectl import ia-modules), each step after the one before
    converted = {s["name"]: s.get("depends_on", []) for s in convert(config)["steps"]}
    assert converted == {"step3": ["step2"], "step1": [], "step2": ["step1"]}


def test_create_step_from_json_and_the_graph_runner(ia):
    step = create_step_from_json(
        {"id": "step1", "name": "Data Preparation", "step_class": "Prepare",
         "module": "ia_steps.seed", "config": {"x": 1}}
    )  # fmt: skip
    assert (type(step).__name__, step.name, step.config) == ("Prepare", "step1", {"x": 1})
    services = ServiceRegistry()
    graph_runner = GraphPipelineRunner(services)
    config = (HERE / "seed_simple.json").read_text()

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


class PostgreSQLManager:
    """The document's, stubbed: nothing is opened (its arguments are elided, ``...``)."""

    def __init__(self, *args: Any) -> None:
        self.args = args


class ReadBack(ExecutionTracker):
    """The adapter's tracker, keeping what it last read back for the service's
    ``get_execution`` (the document's method loads the records and returns nothing)."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.read: dict[str, Any] = {}

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        self.read["record"] = await super().get_execution(execution_id)
        return self.read["record"]

    async def get_execution_steps(self, execution_id: str) -> list[dict[str, Any]]:
        self.read["step_records"] = await super().get_execution_steps(execution_id)
        return self.read["step_records"]


class PipelineService:
    """The document's pipeline_service.py around its blocks: ``execute`` runs PIPELINE_SERVICE
    (``self`` the service; ``db_manager``, ``config`` and ``input_data`` what it was given) and
    ``get_execution`` is NEW_GET_EXECUTION."""

    def __init__(self, db_manager: DatabaseManager):
        self.db_manager = db_manager
        self.services: ServiceRegistry | None = None  # set by the document's code
        self.tracker: ReadBack | None = None

    async def execute(self, config: Any, input_data: dict[str, Any], job_id: str) -> Any:
        class JobRunner(GraphPipelineRunner):
            """The runner, registering the job's id as the run starts (step 2 of the
            document's "Execution Flow": ``services.register('execution_id', job_id)``)."""

            async def run_pipeline_from_json(self, config, input_data=None):
                self.services.register("execution_id", job_id)
                return await super().run_pipeline_from_json(config, input_data)

        namespace = {
            **ADAPTER,
            "ExecutionTracker": ReadBack,
            "GraphPipelineRunner": JobRunner,
            "self": self,
            "db_manager": self.db_manager,
            "config": config,
            "input_data": input_data,
        }
        await run_block_in_loop(PIPELINE_SERVICE, namespace)
        return namespace["result"]

    get_execution = defined(NEW_GET_EXECUTION)


class Seen(Step):
    async def run(self, input):
        tracker = self.services.get("execution_tracker")
        return {"tracker": type(tracker).__name__, "id": self.services.get("execution_id")}


def test_the_trackers_constructor_is_the_documents(tmp_path):
    """The document's ExecutionTracker.__init__ run, and the adapter's: both keep the injected
    database as ``db``, and start with no ``active_executions``."""
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "t.db")))
    seeds = run_block(TRACKER_CONSTRUCTOR, {"DatabaseManager": DatabaseManager})
    documents = seeds["ExecutionTracker"](db)
    tracker = ExecutionTracker(db)
    try:
        assert documents.db is db and tracker.db is db
        assert documents.active_executions == tracker.active_executions == {}
    finally:
        tracker.close()


def test_the_service_records_a_run_and_get_execution_reads_it(tmp_path, ia):
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "test.db")))
    service = PipelineService(db)
    try:
        result = asyncio.run(service.execute(HERE / "seed_simple.json", {"topic": "ml"}, "job-1"))
        assert result["output"] == {"topic": "PROCESSED_ML_RICH_DONE"}
        assert service.services.get("database") is db
        assert service.services.get("execution_tracker") is service.tracker
        # the document's get_execution loads both from the database, and ends at its comment
        assert asyncio.run(service.get_execution("job-1")) is None
        # "Return database format with all details"
        record = {**service.tracker.read["record"], "steps": service.tracker.read["step_records"]}
    finally:
        if service.tracker is not None:
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
    assert steps[0]["input_data"] == {"topic": "ml"}  # what each step received: the input
    assert steps[1]["input_data"] == {"topic": "PROCESSED_ML"}  # then the previous result
    assert steps[1]["output_data"] == {"topic": "PROCESSED_ML_RICH"}
    assert all(s["started_at"] and s["execution_time_ms"] is not None for s in steps)
    assert steps[0]["retry_count"] == 0 and steps[0]["error_message"] is None
    assert asyncio.run(service.tracker.get_execution("no-such-job")) is None


def test_a_step_record_has_the_designs_shape(tmp_path, step1_py):
    """The step record of "ExecutionTracker Database Format": ``step_id`` the JSON's id,
    ``step_name`` its name, the input the step received and the output it returned. The
    step is the document's (STEP_JSON, loading STEP1_PY)."""
    config = {
        "name": "records",
        "parameters": [{"name": "topic", "schema": {"type": "string"}, "required": True}],
        "steps": [json.loads(STEP_JSON)],
        "flow": {"start_at": "step1", "paths": []},
    }
    services = ServiceRegistry()
    tracker = ExecutionTracker(f"sqlite:///{tmp_path / 'runs.db'}")
    services.register("execution_tracker", tracker)
    services.register("execution_id", "job-7")
    try:
        asyncio.run(GraphPipelineRunner(services).run_pipeline_from_json(config, {"topic": "ml"}))
        (step,) = asyncio.run(tracker.get_execution_steps("job-7"))
    finally:
        tracker.close()
    assert (step["step_id"], step["step_name"], step["status"]) == (
        "step1",
        "Data Preparation",
        "completed",
    )
    assert step["input_data"] == {"topic": "ml"}
    assert step["output_data"] == {"topic": "PROCESSED_ML"}
    assert step["retry_count"] == 0 and step["error_message"] is None
    assert step["started_at"] < step["completed_at"] and step["execution_time_ms"] >= 0
    # DATABASE_FORMAT's fields (and the run's execution_id); its step_type is "task", the
    # kind of step of the design, where pipectl gives its own ("python": a step class)
    documented = data_format(DATABASE_FORMAT)
    assert step.keys() - documented.keys() == {"execution_id"}
    assert documented.keys() <= step.keys()
    same = ("step_id", "step_name", "status", "retry_count", "error_message")
    assert {k: step[k] for k in same} == {k: documented[k] for k in same}


def test_production_with_tracking_and_a_failed_step(tmp_path):
    # the first half of "Example: Testing Without Database"; db a stub manager
    db = DatabaseManager(ConnectionConfig(provider="sqlite", database=str(tmp_path / "t.db")))

    class Boom(Step):
        async def run(self, input):
            raise ValueError("no such topic")

    name, flow = "tracked", {}
    steps = [Seen("seen", {}), Boom("boom", {})]
    namespace = {**ADAPTER, "PostgreSQLManager": PostgreSQLManager, "db": db}
    namespace.update(name=name, steps=steps, flow=flow)
    run_block(PRODUCTION, namespace)
    services, pipeline = namespace["services"], namespace["pipeline"]
    assert isinstance(services.get("database"), PostgreSQLManager)
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
    assert tracker.db is db
    assert pipeline.last_run.steps["seen"].output == {"tracker": "ExecutionTracker", "id": run_id}
    assert record["status"] == "failed"
    assert "no such topic" in record["error_message"]
    assert [(s["step_id"], s["status"]) for s in steps_] == [
        ("seen", "completed"),
        ("boom", "failed"),
    ]
    assert "ValueError: no such topic" in steps_[1]["error_message"]
    assert [r["execution_id"] for r in listed] == [run_id]


def test_swapping_databases_and_recording_by_hand(tmp_path, monkeypatch):
    # "Example: Swapping Databases": its SQLite half, in a working folder of the test's; then
    # a pipectl tracker URL and object
    monkeypatch.chdir(tmp_path)
    namespace = {
        **ADAPTER,
        "DatabaseManager": DatabaseManager,
        "ConnectionConfig": ConnectionConfig,
    }
    run_block(SWAPPING_DATABASES_SQLITE, namespace)
    db, tracker = namespace["db"], namespace["tracker"]
    assert db.config == ConnectionConfig(provider="sqlite", database="test.db")
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

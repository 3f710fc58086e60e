"""pipectl.compat.executor: the seed design "PipelineExecutor" runs its own code on pipectl.

The document's code blocks are copied below as they are written there, with only their import
lines changed (``library.components.orchestration.pipeline_executor`` is
``pipectl.compat.executor``). They are run with top-level ``await`` (as the document writes
them), in a namespace holding small real versions of the document's own domain functions
(``fetch_from_api``, ``process``, ``api``, ``flaky_api``...). The tests after them check what
the document says: order by dependencies, parallelism bounded by ``max_concurrent``, retries,
timeouts, ``stop_on_first_failure``, ``skip_on_error``, the results' fields, the levels picture.
tests/test_seed_docs_index.py lists every block of the document with the test running it.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from pipectl import RunStatus, StepStatus
from pipectl.compat.executor import (
    PipelineConfig,
    PipelineExecutor,
    PipelineResults,
    StepResult,
)

SEED_MODULE = "library.components.orchestration.pipeline_executor"

# -- the document's blocks, as written ----------------------------------------------------------

BASIC = """
from library.components.orchestration.pipeline_executor import PipelineExecutor

executor = PipelineExecutor()

@executor.step("extract")
async def extract_data():
    data = await fetch_from_api()
    return data

@executor.step("transform", depends_on=["extract"])
async def transform_data(extract):  # Receives output from "extract"
    return process(extract)

@executor.step("load", depends_on=["transform"])
async def load_data(transform):
    await save_to_database(transform)

# Run pipeline
results = await executor.run()

# Check results
for name, result in results.items():
    print(f"{name}: {result.status} ({result.duration_ms}ms)")
"""

PARALLEL = """
@executor.step("fetch_users")
async def fetch_users():
    return await api.get_users()

@executor.step("fetch_orders")
async def fetch_orders():
    return await api.get_orders()

@executor.step("merge", depends_on=["fetch_users", "fetch_orders"])
async def merge_data(fetch_users, fetch_orders):
    # Both fetches run in parallel, merge runs after both complete
    return combine(fetch_users, fetch_orders)
"""

RETRY = """
@executor.step(
    "unreliable_api",
    retries=3,           # Retry up to 3 times
    retry_delay=2.0,     # Start with 2 second delay
    timeout=30.0,        # 30 second timeout
)
async def call_api():
    return await flaky_api.call()
"""

ERROR_HANDLING = """
@executor.step(
    "optional_step",
    depends_on=["main_step"],
    skip_on_error=True,  # Skip if dependency fails
)
async def optional_enhancement(main_step):
    return enhance(main_step)
"""

PROGRAMMATIC = """
async def my_step(previous_data):
    return process(previous_data)

executor.add_step(
    name="dynamic_step",
    func=my_step,
    depends_on=["source_step"],
    retries=2,
)
"""

VISUALIZE = """
print(executor.visualize())
# Output:
# Pipeline: my-pipeline
# ========================================
# Level 0:
#   - extract
#   - fetch_config
# Level 1:
#   - transform <- [extract, fetch_config]
# Level 2:
#   - load <- [transform]
"""

CONFIGURATION = """
from library.components.orchestration.pipeline_executor import (
    PipelineExecutor,
    PipelineConfig,
)

config = PipelineConfig(
    name="etl-pipeline",
    max_concurrent=5,           # Max parallel steps
    stop_on_first_failure=True, # Stop pipeline on first error
)

executor = PipelineExecutor(config)
"""

# the document's StepResult: the seed's own class, read (not run) for its fields and types
STEP_RESULT = """
@dataclass
class StepResult:
    step_name: str
    status: StepStatus  # PENDING, RUNNING, SUCCESS, FAILED, SKIPPED
    output: Any
    error: Optional[str]
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    retries: int
"""


def run_block(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a block of the document (its imports pointed at pipectl.compat.executor), with
    top-level ``await`` as the document writes it, in ``namespace``."""
    source = source.replace(SEED_MODULE, "pipectl.compat.executor")
    code = compile(source, "<seed 001>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - the document's own code, as the test's input
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return namespace


class Gauge:
    """How many steps are inside ``async with gauge`` at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def __aenter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    async def __aexit__(self, *exc: object) -> None:
        self.now -= 1


def run(executor: PipelineExecutor) -> PipelineResults:
    return asyncio.run(executor.run())


# -- the document's examples -----------------------------------------------------------------


def test_basic_pipeline_runs_in_dependency_order_and_prints_its_results(capsys):
    saved: list[Any] = []

    async def fetch_from_api() -> list[int]:
        await asyncio.sleep(0)
        return [1, 2, 3]

    async def save_to_database(rows: list[int]) -> None:
        saved.append(rows)

    ns = run_block(
        BASIC,
        {
            "fetch_from_api": fetch_from_api,
            "process": lambda rows: [r * 10 for r in rows],
            "save_to_database": save_to_database,
        },
    )
    results = ns["results"]
    assert saved == [[10, 20, 30]]  # extract -> transform -> load, each given the last's output
    assert list(results) == ["extract", "transform", "load"]
    assert results["transform"].output == [10, 20, 30]
    extract, transform, load = (results[n] for n in ("extract", "transform", "load"))
    assert extract.finished_at <= transform.started_at
    assert transform.finished_at <= load.started_at
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "extract: success",
        "transform: success",
        "load: success",
    ]
    assert all(line.endswith("ms)") for line in lines)
    assert results.status is RunStatus.SUCCESS and results.success


def test_parallel_fetches_run_at_once_and_merge_runs_after_both():
    gauge = Gauge()
    finished: list[str] = []

    async def fetch(what: str) -> list[str]:
        async with gauge:
            await asyncio.sleep(0.05)
        finished.append(what)
        return [what]

    api = SimpleNamespace(get_users=lambda: fetch("users"), get_orders=lambda: fetch("orders"))

    def combine(users: list[str], orders: list[str]) -> dict[str, Any]:
        finished.append("merge")
        return {"users": users, "orders": orders}

    ns = {"executor": PipelineExecutor(), "api": api, "combine": combine}
    run_block(PARALLEL, ns)
    results = run(ns["executor"])
    assert gauge.peak == 2  # both fetches were running at the same time
    assert finished[-1] == "merge"
    assert results["merge"].output == {"users": ["users"], "orders": ["orders"]}


class FlakyApi:
    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return "ok"


def test_retry_configuration_is_pipectls_retries_delay_and_timeout():
    flaky_api = FlakyApi(failures=0)
    ns = run_block(RETRY, {"executor": PipelineExecutor(), "flaky_api": flaky_api})
    spec = ns["executor"].steps["unreliable_api"]
    assert (spec.retries, spec.retry_delay, spec.timeout) == (3, 2.0, 30.0)
    assert spec.retry_backoff == 2.0  # "start with 2 second delay": exponential backoff
    results = run(ns["executor"])
    assert results["unreliable_api"].output == "ok"
    assert results["unreliable_api"].retries == 0


@pytest.mark.slow
def test_retry_configuration_waits_its_two_seconds_and_counts_the_retry():
    flaky_api = FlakyApi(failures=1)
    ns = run_block(RETRY, {"executor": PipelineExecutor(), "flaky_api": flaky_api})
    started = time.monotonic()
    results = run(ns["executor"])
    elapsed = time.monotonic() - started
    assert results["unreliable_api"].status is StepStatus.SUCCESS
    assert results["unreliable_api"].retries == 1 and flaky_api.calls == 2
    assert 1.7 <= elapsed < 10  # 2 s, shortened by at most pipectl's 10 % jitter


def error_handling_executor(main_fails: bool) -> PipelineExecutor:
    executor = PipelineExecutor()

    @executor.step("main_step")
    async def main_step() -> str:
        if main_fails:
            raise RuntimeError("main failed")
        return "main"

    run_block(ERROR_HANDLING, {"executor": executor, "enhance": lambda x: f"{x}+enhanced"})
    return executor


def test_error_handling_optional_step_runs_after_its_dependency():
    results = run(error_handling_executor(main_fails=False))
    assert results["optional_step"].output == "main+enhanced"


def test_error_handling_optional_step_is_skipped_when_its_dependency_fails():
    results = run(error_handling_executor(main_fails=True))
    assert results["main_step"].status is StepStatus.FAILED
    assert results["optional_step"].status is StepStatus.SKIPPED
    assert results["optional_step"].reason == "upstream step 'main_step' failed"


def test_programmatic_step_gets_its_single_upstream_whatever_its_parameter_is_called():
    executor = PipelineExecutor()

    @executor.step("source_step")
    def source() -> list[int]:
        return [1, 2]

    ns = run_block(PROGRAMMATIC, {"executor": executor, "process": lambda xs: sum(xs)})
    assert executor.steps["dynamic_step"].retries == 2
    assert executor.steps["dynamic_step"].func is ns["my_step"]
    assert run(executor)["dynamic_step"].output == 3


def test_visualize_draws_the_documents_levels(capsys):
    executor = PipelineExecutor(PipelineConfig(name="my-pipeline"))
    for name, deps in [
        ("extract", []),
        ("fetch_config", []),
        ("transform", ["extract", "fetch_config"]),
        ("load", ["transform"]),
    ]:
        executor.add_step(name=name, func=lambda: None, depends_on=deps)
    run_block(VISUALIZE, {"executor": executor})
    expected = [line[2:] for line in VISUALIZE.splitlines() if line.startswith("# ")][1:]
    assert capsys.readouterr().out.splitlines() == expected


def test_configuration_is_the_pipelines_name_max_concurrent_and_fail_fast():
    ns = run_block(CONFIGURATION, {})
    spec = ns["executor"].pipeline.spec
    assert ns["config"] == PipelineConfig("etl-pipeline", 5, True)
    assert (spec.name, spec.max_concurrent, spec.fail_fast) == ("etl-pipeline", 5, True)


def step_result_fields() -> dict[str, str]:
    """The document's StepResult fields (line 137), name -> annotation, in order."""
    [cls] = ast.parse(STEP_RESULT).body
    assert isinstance(cls, ast.ClassDef)
    return {
        node.target.id: ast.unparse(node.annotation)
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def test_step_result_has_the_documents_fields_and_types():
    """Section "StepResult" (001, line 137): pipectl's StepResult has each field of the document's,
    of the document's type, and StepStatus the statuses its comment lists."""
    executor = PipelineExecutor()
    executor.add_step(name="one", func=lambda: 1)
    executor.add_step(name="two", func=lambda: 1 / 0, retries=1, retry_delay=0.001)
    results = run(executor)
    types: dict[str, Any] = {
        "str": str,
        "StepStatus": StepStatus,
        "Any": object,
        "Optional[str]": (str, type(None)),
        "datetime": datetime,
        "float": float,
        "int": int,
    }
    fields = step_result_fields()
    assert list(fields) == [
        "step_name",
        "status",
        "output",
        "error",
        "started_at",
        "finished_at",
        "duration_ms",
        "retries",
    ]
    for result in results.values():
        assert isinstance(result, StepResult)
        for field, annotation in fields.items():
            assert isinstance(getattr(result, field), types[annotation]), (field, annotation)
    one, two = results["one"], results["two"]
    assert one.step_name == "one" and one.status is StepStatus.SUCCESS
    assert one.output == 1 and one.error is None and one.retries == 0
    assert one.started_at <= one.finished_at and one.duration_ms >= 0
    assert two.status is StepStatus.FAILED and two.retries == 1
    assert two.error == "ZeroDivisionError: division by zero"
    listed = re.search(r"# (.*)", STEP_RESULT).group(1).split(", ")  # type: ignore[union-attr]
    assert listed == ["PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED"]
    assert {s.name for s in StepStatus} >= set(listed)


# -- what the document says it does ----------------------------------------------------------


def test_max_concurrent_bounds_how_many_steps_run_at_once():
    executor = PipelineExecutor(PipelineConfig(name="bounded", max_concurrent=3))
    gauge = Gauge()

    async def work() -> None:
        async with gauge:
            await asyncio.sleep(0.02)

    for i in range(10):
        executor.add_step(name=f"s{i}", func=work)
    results = run(executor)
    assert results.success
    assert gauge.peak == 3


def test_retries_are_counted_and_exhausted_retries_fail_the_step():
    executor = PipelineExecutor()
    twice, always = FlakyApi(failures=2), FlakyApi(failures=100)
    executor.add_step(name="twice", func=twice.call, retries=3, retry_delay=0.001)
    executor.step("always", retries=2, retry_delay=0.001)(always.call)
    results = run(executor)
    assert (results["twice"].status, results["twice"].retries, twice.calls) == (
        StepStatus.SUCCESS,
        2,
        3,
    )
    assert results["always"].status is StepStatus.FAILED
    assert results["always"].retries == 2 and always.calls == 3
    assert results["always"].error == "ConnectionError: failure 3"
    assert results.status is RunStatus.FAILED


def test_a_timeout_fails_the_step():
    executor = PipelineExecutor()

    @executor.step("slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(5)

    started = time.monotonic()
    results = run(executor)
    assert time.monotonic() - started < 2
    assert results["slow"].status is StepStatus.FAILED
    assert "timed out after 0.05s" in (results["slow"].error or "")


def failing_pipeline(stop_on_first_failure: bool) -> PipelineExecutor:
    executor = PipelineExecutor(
        PipelineConfig(name="stop", max_concurrent=2, stop_on_first_failure=stop_on_first_failure)
    )

    @executor.step("bad")
    async def bad() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("bad data")

    @executor.step("long")
    async def long() -> str:
        await asyncio.sleep(0.1)
        return "done"

    @executor.step("later", depends_on=["long"])
    async def later(long: str) -> str:
        return long + " later"

    @executor.step("after_bad", depends_on=["bad"])
    async def after_bad(bad: object) -> None: ...

    return executor


def test_stop_on_first_failure_stops_the_rest():
    results = run(failing_pipeline(stop_on_first_failure=True))
    assert results["bad"].status is StepStatus.FAILED
    assert results["after_bad"].status is StepStatus.SKIPPED
    assert results["long"].status is StepStatus.CANCELLED  # running: cancelled
    assert results["later"].status is StepStatus.CANCELLED  # not started
    assert results.status is RunStatus.FAILED


def test_without_stop_on_first_failure_independent_steps_go_on():
    results = run(failing_pipeline(stop_on_first_failure=False))
    assert results["bad"].status is StepStatus.FAILED
    assert results["after_bad"].status is StepStatus.SKIPPED
    assert results["later"].output == "done later"
    assert results.status is RunStatus.FAILED


def test_skip_on_error_lets_dependents_run_and_the_run_succeed():
    executor = PipelineExecutor(PipelineConfig(stop_on_first_failure=True))

    @executor.step("enrich", skip_on_error=True)
    def enrich() -> dict[str, int]:
        raise KeyError("no enrichment today")

    @executor.step("report", depends_on=["enrich"])
    def report(enrichment: dict[str, int] | None) -> str:
        return f"report ({enrichment or 'not enriched'})"

    @executor.step("other")
    async def other() -> str:
        await asyncio.sleep(0.02)
        return "ran"

    results = run(executor)
    assert results["enrich"].status is StepStatus.SKIPPED
    assert results["enrich"].error == "KeyError: 'no enrichment today'"
    assert results["enrich"].reason.startswith("skip_on_error")
    assert results["report"].output == "report (not enriched)"
    assert results["other"].output == "ran"  # stop_on_first_failure did not stop the run
    assert results.status is RunStatus.SUCCESS


def test_results_are_a_mapping_of_the_run():
    executor = PipelineExecutor(PipelineConfig(name="fields"))
    executor.add_step(name="a", func=lambda: 1)
    executor.add_step(name="b", func=lambda a: a + 1, depends_on=["a"])
    results = run(executor)
    assert isinstance(results, Mapping) and len(results) == 2
    assert dict(results.items()) == dict(results.run.steps)
    assert results.outputs() == {"a": 1, "b": 2}
    assert results.run.pipeline_id == "fields"
    assert results.duration_ms is not None and results.errors == []
    assert "'b': 'success'" in repr(results)


def test_parameters_named_after_steps_are_filled_by_name():
    executor = PipelineExecutor()
    executor.add_step(name="a", func=lambda: 1)
    executor.add_step(name="b", func=lambda: 2)
    executor.add_step(name="sum", func=lambda a, b: a + b, depends_on=["a", "b"])
    executor.add_step(name="one", func=lambda params: params["x"], depends_on=["a"])
    results = asyncio.run(executor.run(params={"x": "from params"}))
    assert results["sum"].output == 3
    assert results["one"].output == "from params"  # ``params`` is pipectl's, not the upstream


def test_import_pipectl_does_not_import_compat():
    code = (
        "import sys, pipectl; pipectl.Pipeline; pipectl.StepResult;"
        "print([m for m in sys.modules if m.startswith('pipectl.compat')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

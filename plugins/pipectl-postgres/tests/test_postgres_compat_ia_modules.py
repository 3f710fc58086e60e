"""``pipectl.compat.ia_modules.ExecutionTracker`` on PostgreSQL: the seed design's "Swapping
Databases" example (``ExecutionTracker(DatabaseManager(ConnectionConfig(provider="postgresql",
...)))``), a pipeline recorded through it and read back in the design's shapes, and a run
recorded by hand; the rows are in the server's ``pipeline_executions`` and
``step_executions``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from pipectl.compat.ia_modules import ExecutionTracker, Pipeline, ServiceRegistry, Step
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict


@dataclass
class ConnectionConfig:  # the design's, stubbed: what ExecutionTracker reads of it
    provider: str
    host: str = "localhost"
    port: int = 5432
    database: str = ""
    username: str = ""
    password: str = ""
    schema: str = ""


class DatabaseManager:  # the design's, stubbed: it holds its ConnectionConfig
    def __init__(self, config: ConnectionConfig):
        self.config = config


class Prepare(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        return {"topic": f"PROCESSED_{input['topic'].upper()}"}


class Record(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        tracker = self.services.get("execution_tracker")
        return {**input, "tracked_by": type(tracker).__name__}


class Broken(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"no table for {input['topic']}")


@pytest.fixture
def db(pg_dsn: str, schema: str) -> DatabaseManager:
    """The design's PostgreSQL DatabaseManager, on the test server, in the test's schema."""
    p = conninfo_to_dict(pg_dsn)
    return DatabaseManager(
        ConnectionConfig(
            provider="postgresql",
            host=str(p.get("host") or "localhost"),
            port=int(p.get("port") or 5432),
            database=str(p["dbname"]),
            username=str(p.get("user") or ""),
            password=str(p.get("password") or ""),
            schema=schema,
        )
    )


def test_a_pipeline_recorded_on_postgresql_reads_back_in_the_designs_shape(
    db: DatabaseManager, pg: psycopg.Connection[Any], schema: str
) -> None:
    # Same code works with both!
    tracker = ExecutionTracker(db)
    services = ServiceRegistry()
    services.register("execution_tracker", tracker)
    services.register("execution_id", "job-pg-1")
    try:
        pipeline = Pipeline(
            "pg_chain", [Prepare("prepare", {}), Record("record", {})], {}, services
        )
        result = asyncio.run(pipeline.run({"topic": "ml"}))
        assert result["output"] == {"topic": "PROCESSED_ML", "tracked_by": "ExecutionTracker"}
        record = asyncio.run(tracker.get_execution("job-pg-1"))
        steps = asyncio.run(tracker.get_execution_steps("job-pg-1"))

        failing = Pipeline(
            "pg_broken", [Prepare("prepare", {}), Broken("broken", {})], {}, services
        )
        services.register("execution_id", "job-pg-2")
        with pytest.raises(ValueError, match="no table for PROCESSED_X"):
            asyncio.run(failing.run({"topic": "x"}))
        failed = asyncio.run(tracker.get_execution("job-pg-2"))
        listed = asyncio.run(tracker.list_executions("pg_broken", status="failed"))
    finally:
        tracker.close()
    assert (record["execution_id"], record["pipeline_name"], record["status"]) == (
        "job-pg-1",
        "pg_chain",
        "completed",
    )
    assert record["input_data"] == {"topic": "ml"}
    assert (record["total_steps"], record["completed_steps"], record["failed_steps"]) == (2, 2, 0)
    assert [(s["step_id"], s["status"]) for s in steps] == [
        ("prepare", "completed"),
        ("record", "completed"),
    ]
    assert steps[0]["input_data"] == {"topic": "ml"}  # what each step received
    assert steps[1]["input_data"] == {"topic": "PROCESSED_ML"}
    assert steps[1]["output_data"] == {"topic": "PROCESSED_ML", "tracked_by": "ExecutionTracker"}
    assert failed["status"] == "failed" and "no table for PROCESSED_X" in failed["error_message"]
    assert [r["execution_id"] for r in listed] == ["job-pg-2"]
    # the design's tables, on the server, in the schema the ConnectionConfig named
    rows = pg.execute(
        sql.SQL(
            "SELECT e.execution_id, e.status, count(s.*) FROM {}.pipeline_executions e "
            "JOIN {}.step_executions s USING (execution_id) GROUP BY 1, 2 ORDER BY 1"
        ).format(sql.Identifier(schema), sql.Identifier(schema))
    ).fetchall()
    assert rows == [("job-pg-1", "success", 2), ("job-pg-2", "failed", 2)]


def test_a_run_recorded_by_hand_on_postgresql(db: DatabaseManager) -> None:
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
    assert [(s["step_id"], s["status"]) for s in steps] == [
        ("load", "completed"),
        ("save", "failed"),
    ]
    assert steps[0]["output_data"] == {"rows": 2}
    assert steps[1]["error_message"] == "disk full"

"""The ``postgresql`` tracker is a ``BrowsableTracker`` too (pipectl's SQL reads through its
dialect): pages of runs, filters and search, related runs, run versions, and step logs,
also read by ``pipectl runs logs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pipectl import Pipeline
from pipectl.testing import check_browsable_tracker
from pipectl.tracking import BrowsableTracker
from psycopg.conninfo import conninfo_to_dict

from pipectl_postgres.tracker import PostgresTracker


@pytest.fixture
def url(pg_dsn: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracker URL of the test's schema on the test server."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    dsn = pg_dsn
    if "://" not in dsn:  # key/value settings: the same as the parameters of a URL
        dsn = "postgresql://?" + urlencode(conninfo_to_dict(dsn))
    return dsn + ("&" if "?" in dsn else "?") + urlencode({"schema": schema})


@pytest.mark.slow
def test_the_postgresql_tracker_is_browsable(url: str, plugin_manager: Any) -> None:
    check_browsable_tracker(lambda: PostgresTracker(url), plugin_manager=plugin_manager)


def test_step_logs_are_kept_and_read_back(
    url: str, plugin_manager: Any, registries: Any, run_cli: Any
) -> None:
    calls = {"n": 0}

    def talk(params: Any) -> None:
        calls["n"] += 1
        print(f"attempt {calls['n']} with {params['token']}")
        if calls["n"] == 1:
            raise ConnectionError("again")

    pipe = Pipeline("pg-logs", plugin_manager=plugin_manager)
    pipe.param("token", "pg-secret-value", secret=True)
    pipe.add_step("talk", talk, retries=1, retry_delay=0, retry_jitter=0)
    tracker = PostgresTracker(url)
    tracker.migrate()
    try:
        assert isinstance(tracker, BrowsableTracker)
        run = pipe.run_sync(tracker=tracker)
        assert run.ok, run.errors
        lines = tracker.step_logs(run.run_id, "talk")
        said = [(r["attempt"], r["message"]) for r in lines if r["stream"] == "stdout"]
        assert said == [(1, "attempt 1 with ***"), (2, "attempt 2 with ***")]
        assert tracker.prune(older_than=0, pipeline="pg-logs") == [run.run_id]
        remaining = tracker._query("SELECT COUNT(*) AS n FROM step_logs", ())
        assert remaining[0]["n"] == 0  # a pruned run's logs go with it
    finally:
        tracker.close()
    again = pipe.run_sync(tracker=url)
    result = run_cli("runs", "logs", again.run_id[:12], "talk", "--json", "--tracker", url)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [r["message"] for r in shown if r["stream"] == "stdout"] == ["attempt 3 with ***"]
    assert "pg-secret-value" not in result.output


def test_a_cached_step_hits_with_the_postgresql_tracker(
    url: str, plugin_manager: Any, registries: Any
) -> None:
    from pipectl import Pipeline

    calls: list[int] = []
    pipe = Pipeline("pg-cached", plugin_manager=plugin_manager)
    pipe.add_step("source", lambda: [1, 2, 3])
    pipe.add_step(
        "total", lambda source: calls.append(1) or sum(source), depends_on="source", cache=True
    )
    first = pipe.run_sync(tracker=url)
    second = pipe.run_sync(tracker=url)
    assert first.ok and second.ok
    assert calls == [1]
    assert second.steps["total"].cached_from == first.run_id
    tracker = PostgresTracker(url)
    try:
        tracker.migrate()
        step = next(s for s in tracker.get_run(second.run_id)["steps"] if s["step_id"] == "total")
    finally:
        tracker.close()
    assert step["cached_from"] == first.run_id and step["attempts"] == 0

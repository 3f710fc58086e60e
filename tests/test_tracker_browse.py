"""The reads a web UI needs (``BrowsableTracker``) on the SQLite tracker: pages of runs at any
depth, filters and search, pipeline histories, related runs, step logs, run versions (real
SQLite files, runs recorded through the tracker's events and through ``Pipeline.run``)."""

from __future__ import annotations

import time

import pytest

from pipectl import Pipeline
from pipectl.testing import check_browsable_tracker
from pipectl.tracking import (
    BrowsableTracker,
    SqliteTracker,
    TrackerError,
    require_browse,
)


@pytest.fixture
def url(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.mark.slow
def test_the_sqlite_tracker_is_browsable(url, plugin_manager):
    """2,000 runs paged through, each exactly once in order, with every filter (the suite
    plugin trackers run too)."""
    check_browsable_tracker(lambda: SqliteTracker(url), plugin_manager=plugin_manager)


def test_a_small_store_passes_the_browse_suite(url, plugin_manager):
    check_browsable_tracker(lambda: SqliteTracker(url), plugin_manager=plugin_manager, runs=120)


def test_a_deep_page_costs_what_the_first_does(url, plugin_manager):
    """Keyset paging: the query of page N starts at its cursor (no OFFSET). Checked by what
    SQLite plans, not by timing: the index on (started_at, execution_id) is searched."""
    store = SqliteTracker(url)
    store.migrate()
    pipe = Pipeline("deep", plugin_manager=plugin_manager)
    pipe.add_step("one", lambda: 1)
    for _ in range(5):
        pipe.run_sync(tracker=store)
    cursor = store.page_runs(limit=2)["next"]
    assert cursor is not None
    conn = store._reader()
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT execution_id FROM pipeline_executions WHERE started_at <= ? "
        "AND (started_at < ? OR execution_id < ?) ORDER BY started_at DESC, execution_id DESC "
        "LIMIT 51",
        ("x", "x", "y"),
    ).fetchall()
    text = " ".join(str(row[-1]) for row in plan)
    assert "ix_pipeline_executions_page" in text and "TEMP B-TREE" not in text, text
    store.close()


def test_a_live_run_changes_its_version_as_steps_end(url, plugin_manager):
    import threading

    release = threading.Event()
    store = SqliteTracker(url)
    store.migrate()
    pipe = Pipeline("live", plugin_manager=plugin_manager)
    pipe.add_step("first", lambda: 1)
    pipe.add_step("wait", lambda first: release.wait(10), depends_on=["first"])
    done = {}
    runner = threading.Thread(target=lambda: done.update(run=pipe.run_sync(tracker=store)))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        version = None
        while version is None and time.monotonic() < deadline:
            rows = store.page_runs(pipeline="live", status="running")["runs"]
            if rows:
                version = store.run_version(rows[0]["execution_id"])
                run_id = rows[0]["execution_id"]
            time.sleep(0.01)
        assert version is not None
        while time.monotonic() < deadline:  # the writer commits the steps as they go
            state = store.get_run(run_id)["steps"]
            if [s["status"] for s in state] == ["success", "running"]:
                break
            time.sleep(0.01)
        running = store.run_version(run_id)
        release.set()
        runner.join(10)
        assert done["run"].ok
        ended = store.run_version(run_id)
        assert len({running, ended}) == 2 and ended == store.run_version(run_id)
    finally:
        release.set()
        runner.join(10)
        store.close()


def test_a_tracker_without_the_reads_is_refused_by_name(url):
    class Minimal:
        results = None

        def __getattr__(self, name):
            if name in ("page_runs", "step_logs") or name.startswith("_"):
                raise AttributeError(name)
            return lambda *a, **k: None

    store = SqliteTracker(url)
    assert isinstance(store, BrowsableTracker) and require_browse(store) is store
    with pytest.raises(TrackerError, match="cannot be browsed .*page_runs, step_logs"):
        require_browse(Minimal())


def test_runs_list_offers_the_statuses_runs_are_listed_by():
    """``pipectl runs list --status`` names its choices without importing the reads (start-up):
    they are the reads' own."""
    from pipectl.cli.runs_command import runs
    from pipectl.tracking.reads import LISTED_STATUSES

    status = next(p for p in runs.commands["list"].params if p.name == "status")
    assert tuple(status.type.choices) == LISTED_STATUSES

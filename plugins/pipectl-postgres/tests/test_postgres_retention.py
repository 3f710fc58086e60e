"""``pipectl runs prune`` on the ``postgresql`` tracker: the same rules as on SQLite (the SQL is
pipectl's own), against the real server: keep, older-than, dry run, a running run and a resume
chain; rows deleted in the server, result files under ``$PIPECTL_HOME/results``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from pipectl import Pipeline, RunStatus
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; the limit only keeps a broken test from hanging."""
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def url(pg_dsn: str, schema: str) -> str:
    """The tracker URL of the test's schema on the test server."""
    dsn = pg_dsn
    if "://" not in dsn:  # key/value settings: the same as the parameters of a URL
        dsn = "postgresql://?" + urlencode(conninfo_to_dict(dsn))
    return dsn + ("&" if "?" in dsn else "?") + urlencode({"schema": schema})


class Tracked:
    """Runs of small pipelines on the test's PostgreSQL tracker, and what the server holds."""

    def __init__(
        self, root: Path, pg: psycopg.Connection[Any], schema: str, url: str, plugin_manager: Any
    ):
        self.root, self.pg, self.schema, self.url = root, pg, schema, url
        self.results = root / "home" / "results"
        self.fixed = True
        self.pipes: dict[str, Pipeline] = {}
        for name in ("pg_orders", "pg_other"):
            pipe = Pipeline(name, plugin_manager=plugin_manager)
            pipe.add_step("numbers", lambda: list(range(10)))
            pipe.add_step("total", self._total, inputs={"numbers": "numbers"})
            self.pipes[name] = pipe
        self.gate = threading.Event()
        self.gate.set()

    def _total(self, numbers: list[int]) -> int:
        self.gate.wait(300)
        if not self.fixed:
            raise RuntimeError("total is broken today")
        return sum(numbers)

    def run(self, name: str = "pg_orders", **kwargs: Any) -> str:
        return self.pipes[name].run_sync(tracker=self.url, **kwargs).run_id

    def query(self, text: str, params: tuple = ()) -> list[tuple]:
        return self.pg.execute(
            sql.SQL(text).format(s=sql.Identifier(self.schema)), params
        ).fetchall()

    def run_ids(self, pipeline: str | None = None) -> list[str]:
        where = "WHERE pipeline_name = %s" if pipeline else ""
        return [
            r[0]
            for r in self.query(
                f"SELECT execution_id FROM {{s}}.pipeline_executions {where} ORDER BY started_at",
                (pipeline,) if pipeline else (),
            )
        ]

    def step_rows(self, run_id: str) -> int:
        return self.query(
            "SELECT count(*) FROM {s}.step_executions WHERE execution_id = %s", (run_id,)
        )[0][0]

    def stored(self, run_id: str) -> list[str]:
        folder = self.results / run_id
        return sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir()) if folder.exists() else []

    def set_started(self, run_id: str, ago: timedelta) -> None:
        self.query(
            "UPDATE {s}.pipeline_executions SET started_at = %s WHERE execution_id = %s "
            "RETURNING 1",
            ((datetime.now(UTC) - ago).isoformat(), run_id),
        )

    def prune(self, *args: str) -> list[str]:
        """``pipectl runs prune ARGS --tracker URL``: the run ids it lists."""
        proc = subprocess.run(
            [*PIPECTL, "runs", "prune", *args, "--tracker", self.url],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        return [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]


@pytest.fixture
def tracked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registries: Any,
    plugin_manager: Any,
    pg: psycopg.Connection[Any],
    schema: str,
    url: str,
) -> Tracked:
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return Tracked(tmp_path, pg, schema, url, plugin_manager)


@pytest.mark.slow
def test_prune_keep_older_than_and_dry_run_on_postgresql(tracked: Tracked):
    orders = [tracked.run() for _ in range(5)]
    other = [tracked.run("pg_other") for _ in range(3)]
    assert all(tracked.stored(r) == ["numbers", "total"] for r in orders + other)

    assert tracked.prune("--keep", "2", "--pipeline", "pg_orders", "--dry-run") == orders[:3]
    assert tracked.run_ids("pg_orders") == orders
    assert all(tracked.stored(r) for r in orders)

    assert tracked.prune("--keep", "2", "--pipeline", "pg_orders") == orders[:3]
    assert tracked.run_ids("pg_orders") == orders[3:]
    assert tracked.run_ids("pg_other") == other  # left alone
    for run_id in orders[:3]:
        assert tracked.step_rows(run_id) == 0 and not (tracked.results / run_id).exists()
    assert all(tracked.stored(r) == ["numbers", "total"] for r in orders[3:] + other)

    tracked.set_started(other[0], timedelta(days=40))
    tracked.set_started(other[1], timedelta(days=10))
    # both rules: beyond the 2 latest of pg_other and older than 30 days
    assert tracked.prune("--keep", "2", "--older-than", "30d") == other[:1]
    assert tracked.prune("--keep", "2", "--older-than", "1w") == []  # other[1] is 2nd latest
    assert tracked.prune("--older-than", "1w") == other[1:2]
    assert tracked.run_ids() == [*orders[3:], other[2]]
    assert sorted(p.name for p in tracked.results.iterdir()) == sorted([*orders[3:], other[2]])


@pytest.mark.slow
def test_a_running_run_and_a_resume_chain_on_postgresql(tracked: Tracked):
    r1 = tracked.run()
    tracked.fixed = False
    r2 = tracked.run()  # fails at total
    r3 = tracked.run(resume="latest")  # fails again: a chain r2 <- r3
    assert tracked.query(
        "SELECT resumed_from FROM {s}.pipeline_executions WHERE execution_id = %s", (r3,)
    ) == [(r2,)]
    # --keep 1: the latest run, r3, keeps the run it resumed
    assert tracked.prune("--keep", "1") == [r1]
    assert tracked.run_ids() == [r2, r3]
    assert tracked.query("SELECT execution_id, claimed_by FROM {s}.resume_claims") == [(r2, r3)]

    # a run still running (in this process, held in its step `total`) is never deleted
    tracked.fixed = True
    tracked.gate.clear()
    outcome: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(run=tracked.pipes["pg_orders"].run_sync(tracker=tracked.url))
    )
    thread.start()
    try:
        wait_until(
            lambda: (
                len(tracked.run_ids()) == 3 and tracked.stored(tracked.run_ids()[-1]) == ["numbers"]
            ),
            "the run to be recorded",
        )
        live = tracked.run_ids()[-1]
        tracked.set_started(live, timedelta(days=400))
        # everything that ended goes: the chain, claims too; not the running run
        assert sorted(tracked.prune("--older-than", "0s")) == sorted([r2, r3])
        assert tracked.run_ids() == [live]
        assert tracked.query("SELECT count(*) FROM {s}.resume_claims") == [(0,)]
    finally:
        tracked.gate.set()
        thread.join(timeout=300)
    assert outcome["run"].status is RunStatus.SUCCESS
    assert tracked.query("SELECT status FROM {s}.pipeline_executions") == [("success",)]
    assert tracked.stored(live) == ["numbers", "total"]
    assert sorted(p.name for p in tracked.results.iterdir()) == [live]

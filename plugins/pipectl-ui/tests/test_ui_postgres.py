"""The UI over the PostgreSQL tracker (pipectl-postgres): the checks of the SQLite tests (the
runs page, a failed run's page, a step's logs, a step turning to success live, the JSON API)
against a real PostgreSQL server, in the browser (Playwright driving Debian's chromium) and
with httpx.

The server is the one named by ``PIPECTL_TEST_POSTGRES_DSN`` (``.ci/run`` sets it); without it
the module is skipped, with that reason. Each test works in a schema of its own (the tracker
URL's ``?schema=NAME``), dropped after it.
"""

from __future__ import annotations

import html
import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from test_ui_browser_logs import check_step_logs

from pipectl_ui_testkit import (
    HOSTILE_ERROR,
    SECRET,
    WaitingRun,
    fill_tracker,
    serve,
    step_turns_to_success_live,
)

DSN_VARIABLE = "PIPECTL_TEST_POSTGRES_DSN"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get(DSN_VARIABLE),
        reason=f"{DSN_VARIABLE} is not set: set it to the DSN of a PostgreSQL server "
        "(postgresql://user@host:5432/dbname) to run the UI's tests against the PostgreSQL tracker",
    ),
]


def tracker_url(dsn: str, schema: str) -> str:
    """The tracker URL of ``schema`` on the server of ``dsn`` (a URL or key/value settings)."""
    if "://" not in dsn:
        from urllib.parse import urlencode

        from psycopg.conninfo import conninfo_to_dict

        dsn = "postgresql://?" + urlencode(conninfo_to_dict(dsn))
    return dsn + ("&" if "?" in dsn else "?") + f"schema={quote(schema, safe='')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The tracker URL of a new schema with a random name, dropped after the test."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pipectl-postgres)")
    from psycopg import sql

    dsn = os.environ[DSN_VARIABLE]
    name = f"pipectl_ui_test_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield tracker_url(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")  # a session left open fails, not hangs
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_filled(pg_url: str) -> dict[str, Any]:
    """The runs of ``fill_tracker`` (a succeeded and a failed run) in the PostgreSQL tracker.

    They run on a thread of their own: the browser (Playwright's sync API, started first, for
    the module) keeps an event loop running on this one, where ``run_sync`` refuses to run."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        runs = thread.submit(fill_tracker, pg_url).result()
    return {"url": pg_url, **runs}


@pytest.fixture
def pg_ui(pg_filled: dict[str, Any]) -> Iterator[Any]:
    """The UI over ``pg_filled``'s tracker."""
    with serve(pg_filled["url"]) as server:
        assert "postgresql" in server.server.config.app.state.reads.display
        yield server


def get(ui: Any, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(ui.url + path, timeout=10, **kwargs)


def test_the_runs_page_lists_the_runs(pg_ui, pg_filled, tab):
    text = get(pg_ui, "/").text
    assert text.index(pg_filled["failed"][:12]) < text.index(pg_filled["ok"][:12])  # newest first
    tab.goto(pg_ui.url + "/")
    rows = tab.locator("#runs tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-run") == pg_filled["failed"]
    assert rows.nth(1).get_attribute("data-run") == pg_filled["ok"]
    assert tab.locator(f'[data-run-status="{pg_filled["failed"]}"]').inner_text() == "failed"
    tab.select_option("select[name=status]", "success")
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"status=success"))
    assert tab.locator("#runs tbody tr").count() == 1
    assert tab.locator("#runs tbody tr").get_attribute("data-run") == pg_filled["ok"]
    assert tab.problems == []


def test_a_failed_runs_page_shows_the_error_and_a_dag_node_per_step(pg_ui, pg_filled, tab):
    tab.goto(pg_ui.url + f"/runs/{pg_filled['failed']}")
    assert HOSTILE_ERROR in tab.locator("#errors").inner_text()
    nodes = tab.locator("#dag svg g.node")
    assert nodes.count() == len(pg_filled["steps"])
    labels = [nodes.nth(i).locator("text.label").text_content() for i in range(nodes.count())]
    for label, step in zip(labels, pg_filled["steps"], strict=True):  # a long name is cut
        assert step.startswith(label.rstrip("…"))
    assert "s-failed" in nodes.nth(2).get_attribute("class")
    assert "Traceback (most recent call last)" in tab.locator("#errors").inner_text()
    assert tab.problems == []
    assert html.escape(HOSTILE_ERROR) in get(pg_ui, f"/runs/{pg_filled['failed']}").text


def test_a_steps_logs_show_a_line_the_step_printed(pg_ui, pg_filled, tab):
    check_step_logs(tab, pg_ui.url, pg_filled["ok"])


def test_a_step_turns_to_success_within_2_s_of_finishing_without_a_reload(
    pg_url: str, tmp_path: Path, tab: Any
) -> None:
    waiting = WaitingRun(tmp_path, pg_url, after_seconds=1.5)
    try:
        with serve(pg_url) as ui:
            run_id = waiting.run_id(ui.server.config.app.state.reads.tracker)
            took = step_turns_to_success_live(tab, ui.url, run_id, waiting)
            print(f"the step showed as success {took:.3f} s after it was released (PostgreSQL)")
    finally:
        assert waiting.finish() == 0


def test_the_json_api(pg_ui, pg_filled):
    ok, failed = pg_filled["ok"], pg_filled["failed"]
    runs = get(pg_ui, "/api/runs").json()
    assert [r["execution_id"] for r in runs["runs"]] == [failed, ok] and runs["next"] is None
    first = get(pg_ui, "/api/runs", params={"limit": 1}).json()
    second = get(pg_ui, "/api/runs", params={"limit": 1, "cursor": first["next"]}).json()
    assert [r["execution_id"] for r in first["runs"] + second["runs"]] == [failed, ok]
    only = get(pg_ui, "/api/runs", params={"status": "failed", "search": "steal"}).json()
    assert [r["execution_id"] for r in only["runs"]] == [failed]
    run = get(pg_ui, f"/api/runs/{failed}").json()
    assert run["run_id"] == failed and run["status"] == "failed"
    assert [s["step_id"] for s in run["steps"]] == pg_filled["steps"]
    assert set(run["related"]) == {"resumed_from", "resumes", "parent", "children"}
    assert run["params"]["token"] == "***"
    assert len(get(pg_ui, f"/api/runs/{failed[:10]}/steps").json()["steps"]) == 3
    logs = get(pg_ui, f"/api/runs/{ok}/steps/extract/logs").json()
    assert logs["available"] is True
    assert ("stdout", "extracting with ***") in [(x["stream"], x["message"]) for x in logs["logs"]]
    orders = get(pg_ui, "/api/pipelines/orders").json()
    assert orders["success_rate"] == 1.0 and orders["latest_run_id"] == ok
    names = [p["name"] for p in get(pg_ui, "/api/pipelines").json()["pipelines"]]
    assert names == sorted(["orders", pg_filled["failed_pipeline"]])
    missing = get(pg_ui, "/api/runs/does-not-exist")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == 404
    with httpx.stream("GET", pg_ui.url + f"/api/runs/{ok}/events", timeout=10) as answer:
        body = "".join(answer.iter_text())
    assert "event: state" in body and "event: end" in body
    for path in ("/", f"/runs/{ok}", f"/runs/{ok}/steps/extract", f"/api/runs/{ok}"):
        assert SECRET not in get(pg_ui, path).text, path

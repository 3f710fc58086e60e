"""The pages and the JSON API of the real server over a real tracker, requested with httpx."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pipectl_ui_testkit import HOSTILE, HOSTILE_ERROR, HOSTILE_STEP, SECRET

pytestmark = pytest.mark.slow  # a tracker filled by real runs, a server started


def get(ui: Any, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(ui.url + path, timeout=10, **kwargs)


def test_the_runs_page_lists_the_runs_newest_first(ui, filled):
    page = get(ui, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert filled["ok"][:12] in text and filled["failed"][:12] in text
    assert text.index(filled["failed"][:12]) < text.index(filled["ok"][:12])  # newest first
    assert 'data-run-status="' + filled["failed"] + '">failed<' in text


def test_the_runs_page_filters(ui, filled):
    only_ok = get(ui, "/", params={"status": "success"}).text
    assert filled["ok"][:12] in only_ok and filled["failed"][:12] not in only_ok
    by_pipeline = get(ui, "/", params={"pipeline": "orders"}).text
    assert filled["ok"][:12] in by_pipeline and filled["failed"][:12] not in by_pipeline
    searched = get(ui, "/", params={"search": filled["failed"][:10]}).text
    assert filled["failed"][:12] in searched and filled["ok"][:12] not in searched
    future = get(ui, "/", params={"since": "2999-01-01"}).text
    assert filled["ok"][:12] not in future and "match these filters" in future
    recent = get(ui, "/", params={"since": "1h"}).text
    assert filled["ok"][:12] in recent
    assert get(ui, "/", params={"since": "yesterday-ish"}).status_code == 400
    assert get(ui, "/", params={"status": "nope"}).status_code == 400


def test_paging_by_cursor(ui, filled):
    first = get(ui, "/api/runs", params={"limit": 1}).json()
    assert [r["execution_id"] for r in first["runs"]] == [filled["failed"]]
    assert first["next"]
    second = get(ui, "/api/runs", params={"limit": 1, "cursor": first["next"]}).json()
    assert [r["execution_id"] for r in second["runs"]] == [filled["ok"]]
    page = get(ui, "/", params={"limit": 1}).text
    assert 'rel="next"' in page and filled["ok"][:12] not in page
    next_url = html.unescape(re.search(r'rel="next" href="([^"]+)"', page).group(1))
    assert filled["ok"][:12] in get(ui, next_url).text


def test_a_failed_run_page_shows_the_error_and_a_dag_node_per_step(ui, filled):
    page = get(ui, f"/runs/{filled['failed']}")
    assert page.status_code == 200
    text = page.text
    assert html.escape(HOSTILE_ERROR) in text
    assert "Traceback (most recent call last)" in text
    nodes = re.findall(r'<g class="node s-([a-z_]+)">', text)
    assert sorted(nodes) == ["failed", "success", "success"]
    for step in filled["steps"]:
        assert html.escape(step) in text
    assert 'id="timeline"' in text and 'id="steps"' in text and 'id="params"' in text
    # each step links to its page
    assert f'href="/runs/{filled["failed"]}/steps/{quote(HOSTILE_STEP, safe="")}"' in text
    assert "data-events" not in text  # finished: no live updates


def test_a_run_prefix_redirects_to_the_full_id(ui, filled):
    answer = get(ui, f"/runs/{filled['ok'][:10]}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/runs/{filled['ok']}"


def test_unknown_runs_are_404_as_json_on_the_api_and_a_page_otherwise(ui):
    api = get(ui, "/api/runs/does-not-exist")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/json"
    assert (
        api.json()["error"]["status"] == 404 and "does-not-exist" in api.json()["error"]["message"]
    )
    page = get(ui, "/runs/does-not-exist")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert get(ui, "/api/runs/does-not-exist/events").status_code == 404
    assert get(ui, "/api/pipelines/no-such-pipeline").status_code == 404


def test_a_step_page_shows_its_attempts_and_log_lines(ui, filled):
    text = get(ui, f"/runs/{filled['ok']}/steps/extract").text
    assert "Attempt 1" in text
    assert "extracting with ***" in text  # what the step printed, the secret masked
    one = get(ui, f"/runs/{filled['ok']}/steps/extract", params={"attempt": 1})
    assert one.status_code == 200 and "Attempt 1" in one.text
    assert get(ui, f"/runs/{filled['ok']}/steps/no-such-step").status_code == 404
    assert (
        get(ui, f"/runs/{filled['ok']}/steps/extract", params={"attempt": "x"}).status_code == 400
    )


def test_the_pipeline_page_charts_its_runs(ui, filled):
    text = get(ui, "/pipelines/orders").text
    assert text.count('<rect class="bar s-success"') == 1
    assert "100%" in text  # success rate
    assert '<g class="node s-' in text  # its graph
    pipelines = get(ui, "/pipelines").text
    assert 'href="/pipelines/orders"' in pipelines
    hostile = get(ui, "/pipelines/" + quote(filled["failed_pipeline"], safe="")).text
    assert '<rect class="bar s-failed"' in hostile and HOSTILE not in hostile


def test_names_params_and_errors_holding_html_are_escaped(ui, filled):
    pages = [
        "/",
        f"/runs/{filled['failed']}",
        f"/runs/{filled['failed']}/steps/{quote(HOSTILE_STEP, safe='')}",
        "/pipelines",
        "/pipelines/" + quote(filled["failed_pipeline"], safe=""),
    ]
    for path in pages:
        text = get(ui, path).text
        for raw in (HOSTILE, HOSTILE_STEP, "<b>value</b>", "<script>steal()</script>"):
            assert raw not in text, (path, raw)
        assert "<script>" not in text.replace('<script src="/static/ui.js', ""), path
    run = get(ui, f"/runs/{filled['failed']}").text
    assert html.escape(HOSTILE, quote=True) in run  # the param, shown escaped
    assert html.escape(HOSTILE_STEP, quote=True) in run


def test_the_json_api_shapes(ui, filled):
    runs = get(ui, "/api/runs").json()
    assert set(runs) == {"runs", "next"} and runs["next"] is None
    row = runs["runs"][-1]
    assert {"execution_id", "pipeline_name", "status", "started_at", "execution_time_ms"} <= set(
        row
    )
    run = get(ui, f"/api/runs/{filled['failed']}").json()
    assert run["run_id"] == filled["failed"] and run["status"] == "failed"
    assert set(run["related"]) == {"resumed_from", "resumes", "parent", "children"}
    assert [s["step_id"] for s in run["steps"]] == filled["steps"]
    assert run["params"]["token"] == "***"
    steps = get(ui, f"/api/runs/{filled['failed']}/steps").json()
    assert steps["run_id"] == filled["failed"] and len(steps["steps"]) == 3
    logs = get(ui, f"/api/runs/{filled['ok']}/steps/extract/logs").json()
    assert {"run_id", "step", "attempt", "available", "logs"} == set(logs)
    if logs["available"]:
        assert {"attempt", "seq", "logged_at", "stream", "level", "message"} <= set(logs["logs"][0])
        assert any(line["message"] == "extracting with ***" for line in logs["logs"])
    one = get(ui, f"/api/runs/{filled['ok']}/steps/extract/logs", params={"attempt": 1}).json()
    assert one["attempt"] == 1
    pipelines = get(ui, "/api/pipelines").json()["pipelines"]
    names = [p["name"] for p in pipelines]
    assert "orders" in names and filled["failed_pipeline"] in names
    orders = get(ui, "/api/pipelines/orders").json()
    assert orders["success_rate"] == 1.0 and orders["latest_run_id"] == filled["ok"]
    assert [r["execution_id"] for r in orders["runs"]] == [filled["ok"]]
    assert set(orders["graph"]) == set(filled["steps"])


def test_a_finished_runs_events_send_its_state_then_end(ui, filled):
    with httpx.stream("GET", ui.url + f"/api/runs/{filled['ok']}/events", timeout=10) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        body = "".join(answer.iter_text())
    events = [e for e in body.split("\n\n") if e.startswith("event:")]
    assert [e.splitlines()[0] for e in events] == ["event: state", "event: end"]
    assert '"status":"success"' in events[0] and '"finished":true' in events[0]


def test_no_secret_value_in_any_page_or_api_answer(ui, filled):
    paths = ["/", "/pipelines", "/api/runs", "/api/pipelines"]
    for name in ("orders", filled["failed_pipeline"]):
        quoted = quote(name, safe="")
        paths += [f"/pipelines/{quoted}", f"/api/pipelines/{quoted}"]
    for run_id in (filled["ok"], filled["failed"]):
        paths += [f"/runs/{run_id}", f"/api/runs/{run_id}", f"/api/runs/{run_id}/steps"]
        paths.append(f"/api/runs/{run_id}/events")
        for step in filled["steps"]:
            quoted = quote(step, safe="")
            paths += [f"/runs/{run_id}/steps/{quoted}", f"/api/runs/{run_id}/steps/{quoted}/logs"]
    for path in paths:
        answer = get(ui, path)
        assert answer.status_code == 200, path
        assert SECRET not in answer.text, path
        assert SECRET[:8] not in answer.text, path


def test_security_headers(ui):
    answer = get(ui, "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"
    assert "<style" not in answer.text  # the CSS comes as files
    for name in ("story.css", "ui.css", "ui.js"):
        static = get(ui, f"/static/{name}")
        assert static.status_code == 200 and static.content
    assert get(ui, "/static/../pyproject.toml").status_code == 404
    assert get(ui, "/static/nope.js").status_code == 404


def test_a_host_that_is_not_loopback_is_refused_without_a_token(ui):
    """A DNS rebinding (a page of another site pointed at 127.0.0.1) gets no answer."""
    answer = get(ui, "/api/runs", headers={"Host": "evil.example:8765"})
    assert answer.status_code == 403
    assert get(ui, "/api/runs", headers={"Host": f"localhost:{ui.port}"}).status_code == 200


def test_only_get_routes_the_ui_is_read_only(ui, filled):
    assert httpx.post(ui.url + "/api/runs", timeout=10).status_code == 405
    assert httpx.post(ui.url + f"/runs/{filled['ok']}", timeout=10).status_code == 405


class OlderTracker:
    """A tracker without the reads of a browsable tracker (``page_runs``, ...): what a tracker
    plugin written before them has."""

    HIDDEN = frozenset(
        ("page_runs", "pipeline_names", "pipeline_runs", "related_runs", "step_logs", "run_version")
    )

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        if name in self.HIDDEN:
            raise AttributeError(name)
        return getattr(self._tracker, name)


def test_a_tracker_without_the_browsing_reads_still_serves(filled):
    from pipectl.plugins import get_plugin_manager
    from pipectl.tracking import open_tracker

    from pipectl_ui_testkit import Server

    tracker = open_tracker(filled["url"], get_plugin_manager().registries)
    try:
        with Server(OlderTracker(tracker)) as ui:
            text = get(ui, "/").text
            assert filled["ok"][:12] in text and filled["failed"][:12] in text
            first = get(ui, "/api/runs", params={"limit": 1}).json()
            assert [r["execution_id"] for r in first["runs"]] == [filled["failed"]]
            second = get(ui, "/api/runs", params={"limit": 1, "cursor": first["next"]}).json()
            assert [r["execution_id"] for r in second["runs"]] == [filled["ok"]]
            assert second["next"] is None
            found = get(ui, "/api/runs", params={"search": filled["ok"][:8]}).json()["runs"]
            assert [r["execution_id"] for r in found] == [filled["ok"]]
            run = get(ui, f"/runs/{filled['failed']}").text
            assert html.escape(HOSTILE_ERROR) in run
            step = get(ui, f"/runs/{filled['ok']}/steps/extract").text
            assert "keeps no step logs" in step and SECRET not in step
            logs = get(ui, f"/api/runs/{filled['ok']}/steps/extract/logs").json()
            assert logs["available"] is False and logs["logs"] == []
            assert get(ui, "/pipelines/orders").status_code == 200
            assert [p["name"] for p in get(ui, "/api/pipelines").json()["pipelines"]] == sorted(
                ["orders", filled["failed_pipeline"]]
            )
            with httpx.stream("GET", ui.url + f"/api/runs/{filled['ok']}/events") as answer:
                body = "".join(answer.iter_text())
            assert "event: state" in body and "event: end" in body
    finally:
        tracker.close()


def test_a_run_links_to_the_run_it_resumed_and_back(tmp_path):
    from pipectl import Pipeline

    from pipectl_ui_testkit import serve

    url = f"sqlite:///{tmp_path / 'pipectl.db'}"
    ready = tmp_path / "ready"
    pipe = Pipeline("resumable")

    @pipe.step("first")
    def first():
        return 1

    @pipe.step("second", depends_on=["first"])
    def second(first):
        if not ready.exists():
            raise RuntimeError("not ready yet")
        return first + 1

    failed = pipe.run_sync(tracker=url)
    ready.write_text("yes")
    resumed = pipe.run_sync(tracker=url, resume=failed.run_id)
    assert not failed.ok and resumed.ok
    with serve(url) as ui:
        related = get(ui, f"/api/runs/{resumed.run_id}").json()["related"]
        assert related["resumed_from"]["execution_id"] == failed.run_id
        back = get(ui, f"/api/runs/{failed.run_id}").json()["related"]
        assert [r["execution_id"] for r in back["resumes"]] == [resumed.run_id]
        page = get(ui, f"/runs/{failed.run_id}").text
        assert f'Resumed by <a class="mono" href="/runs/{resumed.run_id}">' in page
        page = get(ui, f"/runs/{resumed.run_id}").text
        assert f'Resumed from <a class="mono" href="/runs/{failed.run_id}">' in page


def test_a_cache_hit_shows_as_its_own_outcome(tmp_path):
    from pipectl import Pipeline

    from pipectl_ui_testkit import serve

    url = f"sqlite:///{tmp_path / 'pipectl.db'}"
    pipe = Pipeline("cached")
    pipe.add_step("source", lambda: [1, 2])
    pipe.add_step("total", lambda source: sum(source), depends_on=["source"], cache=True)
    first = pipe.run_sync(tracker=url)
    second = pipe.run_sync(tracker=url)
    assert second.steps["total"].cached_from == first.run_id
    with serve(url) as ui:
        page = get(ui, f"/runs/{second.run_id}").text
        nodes = re.findall(r'<g class="node s-([a-z_]+)">', page)
        assert sorted(nodes) == ["cached", "success"]
        assert f"from the cache: stored by run {first.run_id}" in page
        record = get(ui, f"/api/runs/{second.run_id}").json()
        total = next(s for s in record["steps"] if s["step_name"] == "total")
        assert total["cached_from"] == first.run_id
        first_page = get(ui, f"/runs/{first.run_id}").text
        assert sorted(re.findall(r'<g class="node s-([a-z_]+)">', first_page)) == [
            "success",
            "success",
        ]

"""The UI in a real browser: Playwright for Python driving Debian's chromium (/usr/bin/chromium,
installed by .ci/run). Skipped, with the reason, where there is no chromium binary."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipectl_ui_testkit import HOSTILE_ERROR, WaitingRun, serve, step_turns_to_success_live

pytestmark = pytest.mark.slow


@pytest.fixture
def page(tab: Any) -> Any:
    """A page of Debian's chromium (conftest.py's ``tab``; skipped without one)."""
    return tab


def test_the_runs_page_lists_the_runs_of_a_real_tracker(ui, filled, page):
    page.goto(ui.url + "/")
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-run") == filled["failed"]
    assert rows.nth(1).get_attribute("data-run") == filled["ok"]
    assert page.locator(f'[data-run-status="{filled["failed"]}"]').inner_text() == "failed"
    page.select_option("select[name=status]", "success")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"status=success"))
    assert page.locator("#runs tbody tr").count() == 1
    assert page.problems == []


def test_a_failed_runs_page_shows_the_error_and_a_dag_node_per_step(ui, filled, page):
    page.goto(ui.url + f"/runs/{filled['failed']}")
    assert HOSTILE_ERROR in page.locator("#errors").inner_text()
    nodes = page.locator("#dag svg g.node")
    assert nodes.count() == len(filled["steps"])
    labels = [nodes.nth(i).locator("text.label").text_content() for i in range(nodes.count())]
    for label, step in zip(labels, filled["steps"], strict=True):  # a long name is cut to fit
        assert step.startswith(label.rstrip("…"))
    assert "s-failed" in nodes.nth(2).get_attribute("class")
    assert page.locator("script:not([src])").count() == 0
    # the hostile param is text, not markup: no script ran, no element was made of it
    assert "<script>alert('x')</script>" in page.locator("#params").inner_text()
    assert page.problems == []  # nothing refused by the Content-Security-Policy


def test_a_step_turns_to_success_within_2_s_of_finishing_without_a_reload(tmp_path, page):
    url = f"sqlite:///{tmp_path / 'pipectl.db'}"
    waiting = WaitingRun(tmp_path, url, after_seconds=1.5)
    try:
        with serve(url) as ui:
            run_id = waiting.run_id(ui.server.config.app.state.reads.tracker)
            runs = page.context.new_page()  # the runs page follows the running run too
            runs.goto(ui.url + "/")
            listed = runs.locator(f'#runs [data-run-status="{run_id}"]')
            assert listed.inner_text() == "running"
            badge = page.locator(f'#run-header [data-run-status="{run_id}"]')
            took = step_turns_to_success_live(page, ui.url, run_id, waiting)
            print(f"the step showed as success {took:.3f} s after it was released")
            row = page.locator("#steps tbody tr", has=page.locator("a.step-name", has_text="wait"))
            assert "success" in row.locator(".badge").inner_text()
            assert badge.inner_text() == "success"
            runs.wait_for_function(
                f"() => document.querySelector('#runs [data-run-status=\"{run_id}\"]')"
                ".textContent === 'success'",
                timeout=10_000,
            )
    finally:
        assert waiting.finish() == 0

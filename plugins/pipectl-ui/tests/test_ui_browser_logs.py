"""A step's logs in a real browser (Playwright driving Debian's chromium, over the SQLite
tracker of ``filled``): the line a step printed, and what it logged, reached from the run's
page. Skipped, with the reason, where there is no chromium binary."""

from __future__ import annotations

from typing import Any

import pytest

from pipectl_ui_testkit import SECRET

pytestmark = pytest.mark.slow


def check_step_logs(tab: Any, base_url: str, run_id: str) -> None:
    """From the run's page, the step ``extract``'s page shows the line it printed and the
    warning it logged, the secret in them masked; shared with test_ui_postgres.py."""
    tab.goto(f"{base_url}/runs/{run_id}")
    tab.locator("#steps a.step-name", has_text="extract").click()
    tab.wait_for_url(f"{base_url}/runs/{run_id}/steps/extract")
    printed = tab.locator("#logs tr.log-stdout td.log-msg")
    assert printed.first.inner_text() == "extracting with ***"  # what the step printed
    logged = tab.locator("#logs tr.log-logging td.log-msg")
    assert logged.all_inner_texts() == ["pipectl_ui_test: token is ***"]
    assert tab.locator("#attempt-1 h3").inner_text().startswith("Attempt 1")
    assert SECRET not in tab.content()
    assert tab.problems == []


def test_a_steps_logs_show_a_line_the_step_printed(ui, filled, tab):
    check_step_logs(tab, ui.url, filled["ok"])

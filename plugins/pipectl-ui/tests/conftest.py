"""Fixtures of pipectl-ui's tests: a real SQLite tracker filled by real runs, and the real UI
server over it (see pipectl_ui_testkit)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from pipectl_ui_testkit import Server, fill_tracker, serve


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SQLite tracker with a succeeded and a failed run (``url``, ``ok``, ``failed``, ...)."""
    folder = tmp_path_factory.mktemp("tracker")
    url = f"sqlite:///{folder / 'pipectl.db'}"
    return {"url": url, **fill_tracker(url)}


@pytest.fixture(scope="module")
def ui(filled: dict[str, Any]) -> Iterator[Server]:
    """The UI over ``filled``'s tracker, without a token (loopback)."""
    with serve(filled["url"]) as server:
        yield server


# -- a real browser (the browser tests) -------------------------------------------------------


def chromium_executable() -> str | None:
    """Debian's chromium (``chromium`` on PATH, or /usr/bin/chromium), or None."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright for Python; skipped, with the reason, without a
    chromium binary or without Playwright."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium binary (install Debian's chromium: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium: Any) -> Iterator[Any]:
    """A page of ``chromium``; ``tab.problems``: the console errors and page errors it had
    (a style or script the Content-Security-Policy refused, a failed script)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    yield page
    context.close()

"""The run story (pipectl.story): HTML and Markdown reports of a run record.

The fixtures in story_fixtures/ are run records as ``pipectl runs show --json`` prints them: a
failed run with retries, skipped dependents, a data step with two outputs and a failed rollback;
a successful run; an interrupted run from an older tracker with fields missing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pipectl import story

FIXTURES = Path(__file__).parent / "story_fixtures"
RECORDS = ("failed_run", "success_run", "interrupted_run")
HOSTILE = "<script>alert(1)</script>"
BROWSER_TIMEOUT = 60  # seconds: generous, for a loaded 2-core machine


def _record(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _step_names(record: dict[str, Any]) -> list[str]:
    return [s["step_name"] for s in record["steps"]]


def _failed_step(record: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in record["steps"] if s["status"] == "failed")


def _hostile_record() -> dict[str, Any]:
    """A run whose names, params and errors try to break out of the markup."""
    record = _record("failed_run")
    record["pipeline"] = f"{HOSTILE} & co"
    record["description"] = '"><img src=x onerror=alert(2)> # - not a heading'
    record["params"]["evil"] = "</td></tr></table><script>alert(3)</script>"
    record["params"]['"quoted" & <key>'] = "`code` | pipe"
    step = _failed_step(record)
    step["step_name"] = step["step_id"] = HOSTILE
    step["error_message"] = "</pre><script>alert(4)</script>"
    step["traceback"] = "Traceback:\n```\n</pre></details><b>boom</b>\n"
    record["graph"][HOSTILE] = record["graph"].pop("enrich_orders")
    record["graph"]["publish_report"] = [HOSTILE]
    return record


class _TagChecker(HTMLParser):
    """Records tags that close something else than the innermost open tag."""

    VOID = frozenset(
        {
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.seen: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen[tag] = self.seen.get(tag, 0) + 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen[tag] = self.seen.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.problems.append(f"</{tag}> at {self.getpos()} closes {self.stack[-1:]}")


def _check_tags(page: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.problems == []
    assert checker.stack == []
    return checker


class _AssetFinder(HTMLParser):
    """Finds what a browser would fetch from the network: URLs in attributes and in CSS.

    Text is not looked at: a URL shown as (escaped) text, say a parameter's value, fetches
    nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        if tag in ("link", "iframe", "object", "embed") or (
            tag == "script" and dict(attrs).get("src")
        ):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if value and re.search(r"(?i)(https?:|^\s*//)", value):
                self.found.append(f"{tag} {name}={value}")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and re.search(r"(?i)(url\(|@import|https?:)", data):
            self.found.append(f"style: {data[:80]}")


def _network_assets(page: str) -> list[str]:
    finder = _AssetFinder()
    finder.feed(page)
    finder.close()
    return finder.found


def _outside_code(markdown: str) -> str:
    """The Markdown without its fenced code blocks and code spans (which show text literally)."""
    without_fences = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1\s*$", "", markdown)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", without_fences)


# ---------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORDS)
def test_both_formats_show_every_step(name: str) -> None:
    record = _record(name)
    page, markdown = story.render_html(record), story.render_markdown(record)
    for step in _step_names(record):
        assert html.escape(step) in page
        assert f"`{step}`" in markdown
    assert html.escape(record["pipeline"]) in page
    assert record["run_id"] in page and record["run_id"] in markdown
    assert "```mermaid\nflowchart LR\n" in markdown


def test_failed_run_shows_errors_tracebacks_and_rollback() -> None:
    record = _record("failed_run")
    page, markdown = story.render_html(record), story.render_markdown(record)
    failed = _failed_step(record)
    assert html.escape(failed["error_message"]) in page
    assert f"<pre>{html.escape(failed['traceback'])}</pre>" in page
    assert failed["error_message"] in markdown
    assert failed["traceback"].rstrip("\n") in markdown
    for error in record["errors"]:
        assert html.escape(error) in page
        assert error in markdown
    rollback_error = next(s for s in record["steps"] if s["rollback"])["rollback"]["error"]
    assert html.escape(rollback_error) in page and rollback_error in markdown
    retried = next(s for s in record["steps"] if s["step_name"] == "fetch_customers")
    for attempt in retried["attempt_history"]:
        if attempt["error"]:
            assert html.escape(attempt["error"]) in page and attempt["error"] in markdown
    assert "×3" in page and "×2" in page  # retries in the DAG and the timeline
    assert 'class="att-fail"' in page and 'class="att-tick"' in page
    for reason in (s["reason"] for s in record["steps"] if s["reason"]):
        assert html.escape(reason) in page


def test_params_are_shown_as_given_with_secrets_redacted() -> None:
    record = _record("failed_run")
    page, markdown = story.render_html(record), story.render_markdown(record)
    assert '<td class="key">token</td><td class="mono"><span class="redacted">***</span>' in page
    assert "| `token` | `***` |" in markdown and "| `db_password` | `***` |" in markdown
    url = record["params"]["api_url"]
    assert html.escape(url) in page and f"`{url}`" in markdown  # shown as text, escaped
    assert '{"dedupe":true,"keys":["order_id"],"currency":"EUR"}' in markdown
    assert "… (222 chars)" in markdown and "… (222 chars)" in page  # long values are cut


def test_data_step_outputs_and_skip_reasons_in_steps_table() -> None:
    markdown = story.render_markdown(_record("failed_run"))
    row = next(
        line for line in markdown.splitlines() if line.startswith("| `load_warehouse` | data")
    )
    assert "`sqlite` → sqlite out/orders.sqlite table orders: 1,187 written (committed)" in row
    assert "`csv` → csv out/orders_clean.csv: 1,187 written (committed)" in row
    assert "upstream step 'enrich_orders' failed" in markdown
    assert "17 bad records → .pipectl/dead_letters/clean_orders.jsonl" in markdown


def test_interrupted_run_without_end_times() -> None:
    record = _record("interrupted_run")
    page, markdown = story.render_html(record), story.render_markdown(record)
    assert 'class="bar open"' in page and "no end" in page
    assert "(no end)" in markdown
    assert "No parameters." in page and "No parameters." in markdown
    assert html.escape(record["error"]) in page and f"- `{record['error']}`" in markdown


def test_steps_reused_from_an_earlier_run_say_so() -> None:
    record = _record("success_run")
    note = f"reused from run {record['resumed_from']}"
    assert note in story.render_html(record) and note in story.render_markdown(record)
    assert "No errors recorded." in story.render_markdown(record)


# ---------------------------------------------------------------------------------------------
# Well-formed, self-contained, escaped
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORDS)
def test_html_is_well_formed(name: str) -> None:
    seen = _check_tags(story.render_html(_record(name))).seen
    for tag in ("html", "head", "body", "main", "header", "table", "svg"):
        assert seen.get(tag), tag
    assert seen["section"] == 5


@pytest.mark.parametrize("name", RECORDS)
def test_html_fetches_nothing_from_the_network(name: str) -> None:
    page = story.render_html(_record(name))
    assert _network_assets(page) == []
    assert "<script" not in page
    # the check itself finds what it is meant to find
    assert _network_assets('<img src="https://cdn.example/x.png"><link href="//x/y.css">')
    assert _network_assets("<style>@font-face{src:url(https://x/f.woff)}</style>")


def test_hostile_names_are_escaped() -> None:
    record = _hostile_record()
    page, markdown = story.render_html(record), story.render_markdown(record)
    _check_tags(page)
    assert "<script" not in page and "<img" not in page and "<b>boom" not in page
    assert html.escape(HOSTILE) in page
    assert _network_assets(page) == []
    assert html.escape(record["params"]['"quoted" & <key>']) in page
    outside = _outside_code(markdown)
    assert "\\<script\\>alert(1)\\</script\\> \\& co" in outside  # backslash escapes
    for raw in ("<script", "<img", "</pre>", "</td>", "<b>"):
        assert not re.search(r"(?<!\\)" + re.escape(raw), outside), raw
    mermaid = markdown.split("```mermaid", 1)[1].split("```", 1)[0]
    assert "<" not in mermaid and "#60;script#62;alert(1)#60;/script#62;" in mermaid
    assert f"`{HOSTILE}`" in markdown  # a code span: shown literally
    assert "````pytb\nTraceback:\n```\n" in markdown  # the fence outgrows the backticks inside
    assert "| `` `code` \\| pipe `` |" in markdown


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"steps": None, "graph": None, "params": None, "errors": None, "status": None},
        {
            "status": 3,
            "params": [1, 2],
            "errors": "boom",
            "started_at": "yesterday",
            "duration_ms": "long",
            "records_processed": {"n": 1},
            "graph": {"a": None, "b": ["a", "ghost"], "c": "b"},
            "steps": [
                None,
                1,
                "x",
                {
                    "status": 5,
                    "started_at": "not a date",
                    "attempts": "3",
                    "outputs": [1],
                    "rollback": "no",
                    "attempt_history": [None, {}],
                },
                {
                    "step_name": "b",
                    "started_at": "2026-01-01T00:00:00",
                    "completed_at": "2026-01-01T00:00:01+00:00",
                    "attempts": True,
                    "attempt_history": [{"started_at": 1, "error": None}],
                },
            ],
        },
        {"graph": {"a": ["b"], "b": ["a"], "c": ["c"]}, "steps": [{"step_name": "a"}]},
    ],
    ids=["empty", "nulls", "wrong-types", "cycle"],
)
def test_missing_and_malformed_fields_do_not_crash(record: dict[str, Any]) -> None:
    page, markdown = story.render_html(record), story.render_markdown(record)
    _check_tags(page)
    assert markdown.startswith("# Run story: ")


def test_large_dag_draws_the_first_200_steps() -> None:
    names = [f"step_{i:03d}" for i in range(250)]
    record = {
        "pipeline": "wide",
        "status": "success",
        "graph": {n: [names[i - 1]] if i % 10 else [] for i, n in enumerate(names)},
        "steps": [{"step_name": n, "status": "success"} for n in names],
    }
    page, markdown = story.render_html(record), story.render_markdown(record)
    assert page.count('<g class="node ') == story.MAX_DRAWN
    assert "50 more steps are not drawn" in page and "50 more steps are not drawn" in markdown
    assert markdown.count('"]:::success') == story.MAX_DRAWN


def test_layers_follow_the_longest_path() -> None:
    layers = story._layers({"a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["d"]})
    assert [sorted(layer) for layer in layers] == [["a", "d"], ["b", "e"], ["c"]]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def test_write_story_picks_the_format_and_writes_atomically(tmp_path: Path) -> None:
    record = _record("success_run")
    page = story.write_story(record, tmp_path / "out" / "story.html")
    markdown = story.write_story(record, str(tmp_path / "story.md"))
    forced = story.write_story(record, tmp_path / "story.txt", format="md")
    assert page.read_text(encoding="utf-8") == story.render_html(record)
    assert markdown.read_text(encoding="utf-8") == story.render_markdown(record)
    assert forced.read_text(encoding="utf-8") == story.render_markdown(record)
    story.write_story(_record("failed_run"), page)  # replaces the old story
    assert "enrich_orders" in page.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="unknown story format"):
        story.write_story(record, tmp_path / "story.pdf")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _headless(browser: str, profile: Path, *args: str) -> subprocess.Popen[str]:
    profile.mkdir()
    return subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
    )


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        out, err = process.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    return out


@pytest.mark.slow
def test_story_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (install Debian's chromium: apt-get install -y chromium)")
    record = _record("failed_run")
    url = story.write_story(record, tmp_path / "story.html").as_uri()
    png = tmp_path / "story.png"
    # both at once: the DOM as the browser built it and a screenshot of the page
    dump = _headless(browser, tmp_path / "profile-dom", "--dump-dom", url)
    shot = _headless(
        browser, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,2000", url
    )
    dom, _ = _finish(dump), _finish(shot)
    for step in _step_names(record):
        assert html.escape(step, quote=False) in dom
    assert html.escape(_failed_step(record)["error_message"], quote=False) in dom
    assert dom.count("<svg") == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------


def test_the_templates_autoescape_what_they_show() -> None:
    record = _record("success_run")
    record["steps"][0]["step_name"] = HOSTILE
    context = story.html_context(record)
    # rendered alone, a partial escapes a step name: the escaping is the template's, not ours
    partial = story.environment().get_template("story/_steps.html").render(context)
    assert html.escape(HOSTILE) in partial and HOSTILE not in partial
    page = story.render_html(record)
    assert html.escape(HOSTILE) in page and HOSTILE not in page
    assert story.environment().autoescape("story/run.html")
    assert not story.environment().autoescape("story/story.css")


def test_jinja2_is_imported_only_when_a_story_is_written(tmp_path: Path) -> None:
    fixture = FIXTURES / "success_run.json"
    code = (
        "import json, sys\n"
        "import pipectl.story as story\n"
        "print('jinja2' in sys.modules)\n"
        f"record = json.loads(open({str(fixture)!r}, encoding='utf-8').read())\n"
        f"story.write_story(record, {str(tmp_path / 'story.md')!r})\n"
        "print('jinja2' in sys.modules)\n"
        f"story.write_story(record, {str(tmp_path / 'story.html')!r})\n"
        "print('jinja2' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True"]
    assert (tmp_path / "story.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_the_templates_ship_as_package_data() -> None:
    """Every template the story uses is matched by pyproject's package-data, so a wheel (and
    a fresh clone installed editable) has them."""
    import fnmatch
    import tomllib

    root = Path(__file__).parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-data"]["pipectl"]
    folder = Path(story.__file__).parent / "templates"
    files = [p.relative_to(folder.parent).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert "templates/story/run.html" in files and "templates/story/story.css" in files
    for name in files:
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns), name

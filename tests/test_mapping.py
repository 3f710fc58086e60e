"""Dynamic mapping: ``map: NAME`` on a step runs it once per item of the upstream list bound to
its parameter NAME, each item a tracked instance ``step[i]`` with its own attempts, retries,
timeout and status, under ``max_concurrent`` and the step's pools; the step's output is the
list of the items' outputs in item order; resume runs only the items that did not succeed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import Gauge

import pipectl
from pipectl import MapItemFailed, Pipeline
from pipectl.errors import PipelineValidationError
from pipectl.files import PipelineFileError
from pipectl.model import RunStatus, StepStatus

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PIPECTL_HOME": str(cwd / ".pipectl")},
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def item_rows(db: Path, step: str = "fetch") -> dict[str, tuple[str, int, str]]:
    """step_id -> (status, retry_count, metadata) of the items of ``step`` in the tracker."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:  # never creates it
        rows = conn.execute(
            "SELECT step_id, status, retry_count, metadata FROM step_executions "
            "WHERE step_id LIKE ?",
            (step + "[%",),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def mapped_pipeline(items, func, **options) -> Pipeline:
    pipe = Pipeline("mapped", max_concurrent=options.pop("max_concurrent", None))
    pipe.add_step("list_urls", lambda: items)
    pipe.add_step("fetch", func, inputs={"url": "list_urls"}, map="url", **options)
    pipe.add_step("report", lambda fetch: fetch, depends_on=["fetch"])
    return pipe


# -- the engine ---------------------------------------------------------------------------------


def test_ten_thousand_items_each_tracked_with_its_own_status_results_in_order(tmp_path):
    db = tmp_path / "runs.db"
    n = 10_000
    # store_output=False: the rows are the point here; the result store (one fsynced file per
    # stored output, as for any step) is what the resume test below exercises
    pipe = mapped_pipeline(list(range(n)), lambda url: url * 2, store_output=False)
    run = pipe.run_sync(tracker=f"sqlite:///{db}")
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["report"].output == [i * 2 for i in range(n)]
    assert list(run.steps) == ["list_urls", "fetch", "report"]  # items live under their step
    items = run.steps["fetch"].items
    assert [r.step_name for r in items[:3]] == ["fetch[0]", "fetch[1]", "fetch[2]"]
    assert all(r.status is StepStatus.SUCCESS and r.attempts == 1 for r in items)
    rows = item_rows(db)
    assert len(rows) == n
    assert set(rows) == {f"fetch[{i}]" for i in range(n)}
    assert {status for status, _, _ in rows.values()} == {"success"}
    with sqlite3.connect(db) as conn:
        (parent,) = conn.execute(
            "SELECT status FROM step_executions WHERE step_id = 'fetch'"
        ).fetchone()
    assert parent == "success"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_an_item_that_fails_twice_then_succeeds_is_retried_alone(tmp_path, is_async):
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def count(url: str) -> int:
        with lock:
            calls[url] = calls.get(url, 0) + 1
            return calls[url]

    def fetch(url):
        if count(url) < 3 and url == "u3":
            raise ConnectionError(f"flaky {url}")
        return url.upper()

    async def afetch(url):
        await asyncio.sleep(0)
        return fetch(url)

    urls = [f"u{i}" for i in range(8)]
    db = tmp_path / "runs.db"
    pipe = mapped_pipeline(urls, afetch if is_async else fetch, retries=2, retry_delay=0.01)
    run = pipe.run_sync(tracker=f"sqlite:///{db}")
    assert run.status is RunStatus.SUCCESS, run.errors
    assert calls == {u: 3 if u == "u3" else 1 for u in urls}
    assert run.steps["report"].output == [u.upper() for u in urls]
    assert [r.attempts for r in run.steps["fetch"].items] == [1, 1, 1, 3, 1, 1, 1, 1]
    rows = item_rows(db)
    assert rows["fetch[3]"][:2] == ("success", 2)  # two retries recorded on the item's row
    assert all(rows[f"fetch[{i}]"][:2] == ("success", 0) for i in range(8) if i != 3)


def test_a_failed_item_fails_the_step_and_skips_downstream():
    def fetch(url):
        if url == 2:
            raise ValueError("bad url 2")
        return url

    pipe = mapped_pipeline([0, 1, 2, 3], fetch)
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    fetch_result = run.steps["fetch"]
    assert fetch_result.status is StepStatus.FAILED
    assert "1 of 4 items failed (fetch[2])" in fetch_result.error
    assert "ValueError: bad url 2" in fetch_result.error
    assert [r.status for r in fetch_result.items] == [
        StepStatus.SUCCESS,
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.SUCCESS,
    ]
    assert run.steps["report"].status is StepStatus.SKIPPED


def test_with_allow_failure_the_failed_slot_holds_a_marker_and_downstream_runs():
    def fetch(url):
        if url in (1, 3):
            raise ValueError(f"bad url {url}")
        return url * 10

    pipe = mapped_pipeline([0, 1, 2, 3], fetch, allow_failure=True)
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    out = run.steps["report"].output
    assert out[0] == 0 and out[2] == 20
    assert out[1] == MapItemFailed(1, "ValueError: bad url 1")
    assert isinstance(out[3], pipectl.MapItemFailed) and out[3].index == 3
    assert "bad url 3" in out[3].error
    assert run.steps["fetch"].status is StepStatus.SUCCESS
    assert run.steps["fetch"].reason == "2 of 4 items failed (allowed)"


def test_an_empty_list_gives_an_empty_list():
    calls = []
    pipe = mapped_pipeline([], lambda url: calls.append(url))
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS
    assert run.steps["fetch"].output == [] and run.steps["report"].output == []
    assert run.steps["fetch"].items == ()
    assert calls == []


def test_a_tuple_is_mapped_as_a_list_and_other_values_fail_the_step_clearly():
    run = mapped_pipeline(("a", "b"), lambda url: url.upper()).run_sync()
    assert run.steps["report"].output == ["A", "B"]
    for value, type_name in (("abc", "str"), (42, "int"), ({"a": 1}, "dict")):
        run = mapped_pipeline(value, lambda url: url).run_sync()
        assert run.status is RunStatus.FAILED
        error = run.steps["fetch"].error
        assert "step 'fetch'" in error and "'url'" in error and f"got {type_name}" in error


def test_the_other_arguments_are_the_same_for_each_item_and_ctx_names_the_item():
    pipe = Pipeline("args")
    pipe.add_step("prefix", lambda: "p-")
    pipe.add_step("names", lambda: ["a", "b", "c"])
    pipe.add_step(
        "join",
        lambda prefix, name, params, ctx: f"{prefix}{name}{params['s']}@{ctx.step}",
        inputs={"name": "names"},
        depends_on=["prefix"],
        map="name",
    )
    run = pipe.run_sync(params={"s": "!"})
    assert run.steps["join"].output == ["p-a!@join[0]", "p-b!@join[1]", "p-c!@join[2]"]


def gauged(gauge: Gauge) -> tuple:
    """A sync and an async item function, each counted by ``gauge`` while it runs (20 ms)."""

    def work(url):
        gauge.enter()
        try:
            time.sleep(0.02)
        finally:
            gauge.leave()
        return url

    async def awork(url):
        gauge.enter()
        try:
            await asyncio.sleep(0.02)
        finally:
            gauge.leave()
        return url

    return work, awork


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_max_concurrent_is_respected_by_items(tmp_path, asynchronous):
    gauge = Gauge(tmp_path / "gauge")
    work, awork = gauged(gauge)

    pipe = mapped_pipeline(list(range(12)), awork if asynchronous else work, max_concurrent=3)
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["report"].output == list(range(12))
    assert gauge.entered == 12
    assert gauge.peak == 3


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_each_item_counts_one_in_the_steps_pool(tmp_path, asynchronous):
    gauge = Gauge(tmp_path / "gauge")
    work, awork = gauged(gauge)

    pipe = Pipeline("pooled", max_concurrent=8, pools={"db": 2})
    pipe.add_step("list_urls", lambda: list(range(10)))
    pipe.add_step(
        "fetch", awork if asynchronous else work, inputs={"url": "list_urls"}, map="url", pool="db"
    )
    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["fetch"].output == list(range(10))
    assert gauge.entered == 10
    assert gauge.peak == 2


def test_each_item_has_its_own_timeout():
    async def fetch(url):
        await asyncio.sleep(5 if url == 1 else 0)
        return url

    pipe = mapped_pipeline([0, 1, 2], fetch, timeout=0.2, allow_failure=True)
    started = time.monotonic()
    run = pipe.run_sync()
    assert time.monotonic() - started < 4
    items = run.steps["fetch"].items
    assert [r.status for r in items] == [StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SUCCESS]
    assert "StepTimeout" in items[1].error
    assert run.steps["report"].output[0] == 0 and run.steps["report"].output[2] == 2
    assert isinstance(run.steps["report"].output[1], MapItemFailed)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_failed_item_under_fail_fast_cancels_the_items_not_started(asynchronous):
    started: list[int] = []

    def fetch(url):
        started.append(url)
        if url == 0:
            raise ValueError("first item fails")
        time.sleep(0.05)
        return url

    async def afetch(url):
        started.append(url)
        if url == 0:
            raise ValueError("first item fails")
        await asyncio.sleep(0.05)
        return url

    pipe = mapped_pipeline(list(range(40)), afetch if asynchronous else fetch, max_concurrent=2)
    run = pipe.run_sync(fail_fast=True)
    assert run.status is RunStatus.FAILED
    statuses = [r.status for r in run.steps["fetch"].items]
    assert statuses[0] is StepStatus.FAILED
    assert statuses.count(StepStatus.CANCELLED) >= 35
    assert len(started) <= 4
    assert run.steps["fetch"].status is StepStatus.FAILED
    assert run.steps["report"].status is not StepStatus.SUCCESS


def test_cancelling_the_run_cancels_the_items():
    pipe = mapped_pipeline(list(range(50)), lambda url: time.sleep(0.05), max_concurrent=2)

    async def main():
        task = asyncio.ensure_future(pipe.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(pipectl.RunCancelled) as caught:
            await task
        return caught.value.run

    run = asyncio.run(main())
    assert run.status is RunStatus.CANCELLED
    statuses = [r.status for r in run.steps["fetch"].items]
    assert StepStatus.CANCELLED in statuses and statuses[0] is StepStatus.SUCCESS
    assert run.steps["fetch"].status is StepStatus.CANCELLED


def test_lifecycle_hooks_fire_for_each_item_with_an_item_spec():
    seen: list[tuple[str, str, str | None, int | None, int | None]] = []

    class Recorder:
        @pipectl.hookimpl
        def pipectl_step_start(self, run, step, attempt):
            seen.append(("start", step.name, step.map_of, step.map_index, step.map_count))

        @pipectl.hookimpl
        def pipectl_step_retry(self, run, step, attempt, error, delay):
            seen.append(("retry", step.name, step.map_of, step.map_index, step.map_count))

        @pipectl.hookimpl
        def pipectl_step_finish(self, run, step, result):
            seen.append(("finish", step.name, step.map_of, step.map_index, step.map_count))

    tries: dict[int, int] = {}

    def fetch(url):
        tries[url] = tries.get(url, 0) + 1
        if url == 1 and tries[url] == 1:
            raise ValueError("once")
        return url

    pipe = mapped_pipeline([0, 1], fetch, retries=1, retry_delay=0, max_concurrent=1)
    run = pipe.run_sync(listeners=[Recorder()])
    assert run.ok
    items = [s for s in seen if s[1].startswith("fetch[")]
    assert sorted(items) == sorted(
        [
            ("start", "fetch[0]", "fetch", 0, 2),
            ("finish", "fetch[0]", "fetch", 0, 2),
            ("start", "fetch[1]", "fetch", 1, 2),
            ("retry", "fetch[1]", "fetch", 1, 2),
            ("start", "fetch[1]", "fetch", 1, 2),
            ("finish", "fetch[1]", "fetch", 1, 2),
        ]
    )
    assert ("finish", "fetch", None, None, None) in seen
    assert seen.index(("finish", "fetch[1]", "fetch", 1, 2)) < seen.index(
        ("finish", "fetch", None, None, None)
    )


def test_the_python_api_validates_map():
    pipe = Pipeline("bad")
    pipe.add_step("list_urls", lambda: [1])
    pipe.add_step("fetch", lambda url, params: url, inputs={"url": "list_urls"}, map="urls")
    with pytest.raises(PipelineValidationError, match="'urls' is not a parameter of the step"):
        pipe.validate()
    pipe = Pipeline("bad2")
    pipe.add_step("fetch", lambda params: params, map="params")
    with pytest.raises(PipelineValidationError, match="receives the run's params"):
        pipe.validate()
    with pytest.raises(ValueError, match="map is the name of one of the step's parameters"):
        Pipeline("bad3").add_step("x", lambda: 1, map="not a name")


# -- pipeline files -----------------------------------------------------------------------------

STEPS_MODULE = """
import os

def list_urls(n=5):
    return [f"u{i}" for i in range(int(n))]

def fetch(url):
    if url == os.environ.get("FAIL_URL"):
        raise ValueError(f"cannot fetch {url}")
    return url.upper()

def report(fetch):
    return fetch
"""

PIPELINE = """
name: mapped
steps:
  - name: list_urls
    run: mapsteps:list_urls
  - name: fetch
    run: mapsteps:fetch
    inputs: {url: list_urls}
    map: url
    retries: 2
    retry_delay: 0
  - name: report
    run: mapsteps:report
    depends_on: [fetch]
"""


def test_a_pipeline_file_maps_and_writes_map_back(tmp_path):
    from pipectl.files import to_yaml

    write(tmp_path / "mapsteps.py", STEPS_MODULE)
    write(tmp_path / "pipeline.yaml", PIPELINE)
    done = cli("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    pipe = Pipeline.from_yaml(tmp_path / "pipeline.yaml")
    assert pipe.steps["fetch"].map == "url"
    assert "map: url" in to_yaml(pipe)


def test_a_failed_item_fails_pipectl_run_and_the_summary_names_it(tmp_path):
    write(tmp_path / "mapsteps.py", STEPS_MODULE)
    write(tmp_path / "pipeline.yaml", PIPELINE)
    env_run = subprocess.run(
        [*PIPECTL, "run", "pipeline.yaml", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "FAIL_URL": "u3", "PIPECTL_HOME": str(tmp_path / ".pipectl")},
    )
    assert env_run.returncode == 1, env_run.stdout + env_run.stderr
    out = env_run.stdout + env_run.stderr
    assert "1 of 5 items failed (fetch[3]); fetch[3]: ValueError: cannot fetch u3" in out
    assert "fetch[3] failed on attempt 3 of 3: ValueError: cannot fetch u3" in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("urls", "'urls' is not a parameter of the step bound to an upstream value"),
        ("3", "expected the name of one of the step's parameters"),
    ],
)
def test_a_bad_map_in_a_file_is_reported_with_file_and_line(tmp_path, value, expected):
    write(tmp_path / "mapsteps.py", STEPS_MODULE)
    write(tmp_path / "pipeline.yaml", PIPELINE.replace("map: url", f"map: {value}"))
    for command in ("run", "validate"):
        done = cli(command, "pipeline.yaml", cwd=tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "pipeline.yaml:9: steps.fetch.map:" in done.stderr
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises((PipelineFileError, PipelineValidationError)):
        Pipeline.from_yaml(tmp_path / "pipeline.yaml").validate()


# -- resume -------------------------------------------------------------------------------------

KILL_STEPS = """
import os, time

def list_urls():
    return list(range(20))

def fetch(url):
    with open("calls.log", "a") as f:
        f.write(f"start {url}\\n")
    time.sleep(0.15)
    with open("calls.log", "a") as f:
        f.write(f"end {url}\\n")
    return url * 100

def report(fetch):
    with open("report.json", "w") as f:
        f.write(__import__("json").dumps(fetch))
    return len(fetch)
"""

KILL_PIPELINE = """
name: killed
max_concurrent: 2
steps:
  - name: list_urls
    run: killsteps:list_urls
  - name: fetch
    run: killsteps:fetch
    inputs: {url: list_urls}
    map: url
  - name: report
    run: killsteps:report
    depends_on: [fetch]
"""


def _calls(path: Path) -> tuple[list[int], list[int]]:
    lines = path.read_text().split("\n") if path.exists() else []
    started = [int(line.split()[1]) for line in lines if line.startswith("start ")]
    ended = [int(line.split()[1]) for line in lines if line.startswith("end ")]
    return started, ended


def test_sigkill_mid_map_then_resume_runs_only_the_unfinished_items(tmp_path):
    write(tmp_path / "killsteps.py", KILL_STEPS)
    write(tmp_path / "pipeline.yaml", KILL_PIPELINE)
    db = tmp_path / ".pipectl" / "pipectl.db"
    victim = subprocess.Popen(
        [*PIPECTL, "run", "pipeline.yaml", "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "PIPECTL_HOME": str(tmp_path / ".pipectl")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:  # kill it once the tracker recorded some items as done, mid-map
        assert victim.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline
        try:
            done = [k for k, v in item_rows(db).items() if v[0] == "success"]
        except sqlite3.Error:
            done = []
        if len(done) >= 6:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    first_started, _ = _calls(tmp_path / "calls.log")
    recorded = {int(k[6:-1]) for k, v in item_rows(db).items() if v[0] == "success"}
    assert 6 <= len(recorded) < 20

    resumed = cli("run", "pipeline.yaml", "--resume", "latest", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    started, ended = _calls(tmp_path / "calls.log")
    second = started[len(first_started) :]
    # only the items without a recorded success ran again, each once
    assert sorted(second) == sorted(set(range(20)) - recorded)
    # every item ran once overall, but those the kill caught: mid-call (at most max_concurrent,
    # 2) or, rarely, returned in the instant before the kill but not yet recorded
    twice = [i for i in range(20) if started.count(i) == 2]
    assert all(started.count(i) in (1, 2) for i in range(20))
    assert len(twice) <= 3 and set(twice) <= set(first_started) - recorded
    assert json.loads((tmp_path / "report.json").read_text()) == [i * 100 for i in range(20)]
    shown = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path).stdout)
    steps = {s["step_id"]: s for s in shown["steps"]}
    assert shown["status"] == "success"
    assert all(steps[f"fetch[{i}]"]["status"] == "success" for i in range(20))


# -- the DAG picture and the story --------------------------------------------------------------


def test_pipectl_graph_shows_the_mapped_step(tmp_path):
    write(tmp_path / "mapsteps.py", STEPS_MODULE)
    write(tmp_path / "pipeline.yaml", PIPELINE)
    text = cli("graph", "pipeline.yaml", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "  - fetch (map: url) <- [list_urls]" in text.stdout
    mermaid = cli("graph", "pipeline.yaml", "--format", "mermaid", cwd=tmp_path).stdout
    assert '["fetch (map: url)"]' in mermaid and '["report"]' in mermaid
    dot = cli("graph", "pipeline.yaml", "--format", "dot", cwd=tmp_path).stdout
    assert 'p0_s1 [label="fetch (map: url)"];' in dot
    assert "p0_s0 -> p0_s1;" in dot and "p0_s1 -> p0_s2;" in dot


def test_the_story_shows_the_mapped_step_with_its_count(tmp_path):
    from pipectl.story import render_html, render_markdown

    def fetch(url):
        if url == 4:
            raise ValueError("bad item")
        return url

    pipe = mapped_pipeline(list(range(7)), fetch, allow_failure=True)
    db = tmp_path / "runs.db"
    run = pipe.run_sync(tracker=f"sqlite:///{db}")
    from pipectl.tracking import SqliteTracker

    tracker = SqliteTracker(f"sqlite:///{db}")
    record = tracker.get_run(run.run_id)
    tracker.close()
    assert sum(1 for s in record["steps"] if s["step_id"].startswith("fetch[")) == 7
    for source in (record, run):  # a tracker's record, and the run itself
        md = render_markdown(source, pipeline=pipe)
        assert "mapped over 7 items (6 success, 1 failed)" in md
        assert "fetch[3]" not in md  # items are counted under their step, not listed
        page = render_html(source, pipeline=pipe)
        assert "7 items" in page and "mapped over 7 items" in page


# -- with the rest of the engine ----------------------------------------------------------------


def test_each_item_runs_through_the_wrap_step_middleware(plugin_manager, register_plugin):
    wrapped: list[str] = []

    class Wrap:
        @pipectl.hookimpl
        def pipectl_wrap_step(self, step, context):
            wrapped.append(step.name)
            if step.map_of is None:
                return None

            async def middleware(call_next, attempt):
                return f"<{await call_next()}>"

            return middleware

    register_plugin(Wrap(), "wrap")
    pipe = Pipeline("wrapped", plugin_manager=plugin_manager)
    pipe.add_step("list_urls", lambda: ["a", "b", "c"])
    pipe.add_step("fetch", lambda url: url, inputs={"url": "list_urls"}, map="url")
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.steps["fetch"].output == ["<a>", "<b>", "<c>"]
    assert sorted(wrapped) == ["fetch[0]", "fetch[1]", "fetch[2]", "list_urls"]


def test_a_mapped_step_maps_over_an_inputs_reference_and_honours_when():
    pipe = Pipeline("refs")
    pipe.add_step("listing", lambda: {"urls": ["x", "y"], "go": True})
    pipe.add_step(
        "fetch",
        lambda url: url * 2,
        inputs={"url": "steps.listing.output.urls"},
        map="url",
        when="steps.listing.output.go",
    )
    pipe.add_step(
        "never",
        lambda url: url,
        inputs={"url": "steps.listing.output.urls"},
        map="url",
        when="not steps.listing.output.go",
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.steps["fetch"].output == ["xx", "yy"]
    assert run.steps["never"].status is StepStatus.SKIPPED
    assert run.steps["never"].items is None


def test_the_live_display_counts_items_apart_and_prints_only_failed_ones():
    import io
    import re

    from rich.console import Console

    from pipectl.cli import progress

    console = Console(
        file=io.StringIO(), width=100, height=40, force_terminal=True, color_system=None
    )

    def fetch(url):
        if url == 7:
            raise ValueError("item 7 fails")
        return url

    pipe = mapped_pipeline(list(range(300)), fetch, allow_failure=True)
    with progress.LiveProgress(pipe.name, total=3, console=console) as display:
        run = pipe.run_sync(listeners=[display])
        text = display.render()
    assert run.ok, run.errors
    console.print(text)
    out = console.file.getvalue()
    assert re.search(r"mapped\s+3/3 done\s+300 items done", out), out
    assert "fetch[7]" in out and "item 7 fails" in out  # the failed item has its line
    assert "fetch[8]" not in out and "fetch[299]" not in out  # the others are only counted

"""Step logs on dask workers: what a step prints, writes to stderr, logs with ``logging`` and
pipectl's events on its worker land in the tracker for its attempt, as with ``local`` (real
LocalClusters, real SQLite trackers)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import Pipeline, step_logs  # noqa: E402
from pipectl.tracking import SqliteTracker  # noqa: E402

from pipectl_dask.executor import DaskOutput  # noqa: E402

# the step functions below travel to the workers by value, not as an import of this file
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@pytest.fixture
def url(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'runs.db'}"


def on(cluster, **extra):
    return {
        "executor": "dask",
        "executor_options": {"scheduler": cluster.scheduler_address, "announce": False, **extra},
    }


def lines_of(url: str, run_id: str, step: str, attempt: int | None = None) -> list[dict]:
    store = SqliteTracker(url)
    store.migrate()
    try:
        return store.step_logs(run_id, step, attempt)
    finally:
        store.close()


def texts(rows: list[dict], stream: str | None = None) -> list[str]:
    return [r["message"] for r in rows if stream is None or r["stream"] == stream]


def stamp(row: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(row["logged_at"]).timestamp()


def chatty_pipeline(pm) -> Pipeline:
    """``load`` (retried once; its output stays on the cluster, ``total`` consumes it) and
    ``total`` (a result of the run: its output comes to the driver)."""

    def load(ctx):
        print(f"loading, attempt {ctx.attempt}")
        print("half a line", end="")
        print(" and its end")
        sys.stderr.write("a warning on stderr\n")
        logging.getLogger("loader").warning("%d rows look odd", 3)
        ctx.logger.info("loader_progress", rows=3)  # pipectl's event: captured only
        time.sleep(0.3)  # the lines keep the time they were written on the worker
        if ctx.attempt == 1:
            raise ConnectionError("warehouse busy")
        return [1, 2, 3]

    async def total(load):
        print(f"summing {len(load)} numbers")
        await asyncio.sleep(0)
        return sum(load)

    pipe = Pipeline("logs", plugin_manager=pm)
    pipe.add_step("load", load, retries=1, retry_delay=0, retry_jitter=0)
    pipe.add_step("total", total, depends_on=["load"])
    return pipe


def test_worker_lines_land_in_each_attempts_logs(pm, cluster, url):
    run = chatty_pipeline(pm).run_sync(tracker=url, **on(cluster))
    assert run.ok, run.errors
    assert run.steps["total"].output == 6
    assert isinstance(run.steps["load"].output, DaskOutput)  # it stayed on its worker
    first = lines_of(url, run.run_id, "load", 1)
    second = lines_of(url, run.run_id, "load", 2)
    assert [(r["stream"], r["level"], r["message"]) for r in first] == [
        ("event", "info", "step_started attempt=1"),
        ("stdout", None, "loading, attempt 1"),
        ("stdout", None, "half a line and its end"),
        ("stderr", None, "a warning on stderr"),
        ("logging", "WARNING", "loader: 3 rows look odd"),
        ("event", "info", "loader_progress rows=3"),
        (
            "event",
            "info",
            "step_retry attempt=1 error='ConnectionError: warehouse busy' delay_s=0.0",
        ),
    ]
    assert [(r["stream"], r["message"]) for r in second] == [
        ("event", "step_started attempt=2"),
        ("stdout", "loading, attempt 2"),
        ("stdout", "half a line and its end"),
        ("stderr", "a warning on stderr"),
        ("logging", "loader: 3 rows look odd"),
        ("event", "loader_progress rows=3"),
    ]
    # written on the worker 0.3 s before the attempt failed, not when they reached the driver
    assert stamp(first[-1]) - stamp(first[1]) >= 0.25
    assert stamp(first[0]) <= stamp(first[1])
    assert texts(lines_of(url, run.run_id, "total")) == [
        "step_started attempt=1",
        "summing 3 numbers",
    ]
    assert [a for a, _ in run.steps["load"].logs] == [1, 2]


def test_concurrent_steps_on_one_workers_threads_do_not_mix_their_lines(pm, url):
    def talker(ctx):
        started = time.time()
        for i in range(30):
            print(f"{ctx.step} line {i}")
            logging.getLogger("talk").warning("%s record %d", ctx.step, i)
            ctx.logger.info("talk_event", step_name=ctx.step, i=i)
            time.sleep(0.005)
        return (started, time.time())

    async def async_talker(ctx):
        started = time.time()
        for i in range(30):
            print(f"{ctx.step} line {i}")
            logging.getLogger("talk").warning("%s record %d", ctx.step, i)
            ctx.logger.info("talk_event", step_name=ctx.step, i=i)
            await asyncio.sleep(0.005)
        return (started, time.time())

    pipe = Pipeline("mixed", plugin_manager=pm)
    names = []
    for k in range(2):
        pipe.add_step(f"sync{k}", talker)
        pipe.add_step(f"async{k}", async_talker)
        names += [f"sync{k}", f"async{k}"]
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=4, dashboard_address=":0"
    ) as one_worker:
        run = pipe.run_sync(tracker=url, **on(one_worker))
    assert run.ok, run.errors
    spans = [run.steps[name].output for name in names]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # they ran at the same time
    for name in names:
        rows = lines_of(url, run.run_id, name)
        assert texts(rows, "stdout") == [f"{name} line {i}" for i in range(30)], name
        assert texts(rows, "logging") == [f"talk: {name} record {i}" for i in range(30)], name
        events = texts(rows, "event")[1:]
        assert events == [f"talk_event step_name={name} i={i}" for i in range(30)], name


def test_bounds_secrets_and_a_failure_the_executor_raises(pm, cluster, url):
    secret = "s3cr3t-value-123"

    def chatty():
        for i in range(3000):
            print(f"line {i}")
        return "done"

    def leak(params):
        print(f"connecting with {params['token']}")
        logging.getLogger("db").warning("password=%s", params["token"])
        return "ok"

    def unpicklable():
        print("about to return a lock")
        import threading

        return threading.Lock()  # fails the step on its worker (UnpicklableOutput)

    pipe = Pipeline("bounded", plugin_manager=pm)
    pipe.param("token", secret, secret=True)
    pipe.add_step("chatty", chatty)
    pipe.add_step("leak", leak)
    pipe.add_step("unpicklable", unpicklable)
    run = pipe.run_sync(tracker=url, **on(cluster))
    assert run.steps["chatty"].output == "done" and run.steps["leak"].output == "ok"
    assert run.steps["unpicklable"].status.value == "failed"

    rows = lines_of(url, run.run_id, "chatty")
    kept = texts(rows, "stdout")
    assert len(kept) <= step_logs.MAX_LINES and kept[0] == "line 0"
    assert kept == [f"line {i}" for i in range(len(kept))]
    note = rows[-1]
    assert note["stream"] == "event" and note["level"] == "warning"
    assert f"lines_left_out={3000 - len(kept)} " in note["message"]

    rows = lines_of(url, run.run_id, "leak")
    assert texts(rows, "stdout") == ["connecting with ***"]
    assert texts(rows, "logging") == ["db: password=***"]
    assert secret not in json.dumps(rows)

    assert texts(lines_of(url, run.run_id, "unpicklable"), "stdout") == ["about to return a lock"]


def test_untracked_runs_capture_nothing_on_the_workers(pm, cluster, url):
    def look():
        return (step_logs.installed(), step_logs.CURRENT.get() is None, type(sys.stdout).__name__)

    pipe = Pipeline("look", plugin_manager=pm)
    pipe.add_step("look", look)
    untracked = pipe.run_sync(**on(cluster))
    assert untracked.ok, untracked.errors
    installed, no_current, stdout_type = untracked.steps["look"].output
    assert not installed and no_current and stdout_type != "Tee"
    assert untracked.steps["look"].logs is None
    # tracked: installed for the step, and taken away after it
    tracked = pipe.run_sync(tracker=url, **on(cluster))
    assert tracked.ok, tracked.errors
    assert tracked.steps["look"].output == (True, False, "Tee")
    with distributed.Client(cluster) as client:
        assert set(client.run(step_logs.installed).values()) == {False}
    # the chatty pipeline untracked: the same outputs, nothing recorded
    run = chatty_pipeline(pm).run_sync(**on(cluster))
    assert run.ok, run.errors
    assert run.steps["total"].output == 6
    assert run.steps["load"].logs is None

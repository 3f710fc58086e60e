"""A mapped step (``map:``) on a real LocalCluster: each item is a task of its own on the
workers, retried alone, and the results arrive downstream in item order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import MapItemFailed, Pipeline, hookimpl  # noqa: E402

# the step functions below travel to the workers by value, not as an import of this file
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def mapped(pm, marker_dir: Path) -> Pipeline:
    pipe = Pipeline("mapped", plugin_manager=pm, max_concurrent=4)

    @pipe.step("list_urls")
    def list_urls():
        return [f"u{i}" for i in range(12)]

    @pipe.step("fetch", inputs={"url": "list_urls"}, map="url", retries=2, retry_delay=0.01)
    def fetch(url, ctx):
        marker = Path(marker_dir) / f"{url}.tried"
        if url == "u5" and not marker.exists():  # u5's first attempt fails
            marker.write_text("1")
            raise ConnectionError("first attempt of u5 fails")
        with open(Path(marker_dir) / "calls.log", "a") as f:
            f.write(f"{ctx.step} {os.getpid()}\n")
        return (url.upper(), os.getpid())

    @pipe.step("report", depends_on=["fetch"])
    def report(fetch):
        return [name for name, _ in fetch]

    return pipe


def test_items_run_as_tasks_on_the_workers_and_arrive_in_order(pm, cluster, tmp_path):
    keys: list[str] = []
    driver = os.getpid()

    class Keys:
        @hookimpl
        def pipectl_step_start(self, run, step, attempt):
            if step.map_of == "fetch":
                keys.append(f"{step.name}/{attempt}")

    run = mapped(pm, tmp_path).run_sync(
        executor="dask",
        executor_options={"scheduler": cluster.scheduler_address},
        listeners=[Keys()],
    )
    assert run.status.value == "success", run.errors
    assert run.steps["report"].output == [f"U{i}" for i in range(12)]
    items = run.steps["fetch"].items
    assert [r.step_name for r in items] == [f"fetch[{i}]" for i in range(12)]
    assert [r.attempts for r in items] == [2 if i == 5 else 1 for i in range(12)]
    pids = {pid for _, pid in run.steps["fetch"].output}
    assert driver not in pids  # each item ran on a worker process
    calls = (tmp_path / "calls.log").read_text().split()
    assert sorted(calls[::2]) == sorted(f"fetch[{i}]" for i in range(12))  # once each
    assert sorted(keys) == sorted([f"fetch[{i}]/1" for i in range(12)] + ["fetch[5]/2"])


def test_a_failed_item_on_dask_holds_its_slot_under_allow_failure(pm, cluster):
    pipe = Pipeline("allowed", plugin_manager=pm)
    pipe.add_step("numbers", lambda: [1, 0, 2])
    pipe.add_step("invert", lambda n: 1 / n, inputs={"n": "numbers"}, map="n", allow_failure=True)
    run = pipe.run_sync(executor="dask", executor_options={"scheduler": cluster.scheduler_address})
    assert run.status.value == "success", run.errors
    out = run.steps["invert"].output
    assert out[0] == 1.0 and out[2] == 0.5
    assert isinstance(out[1], MapItemFailed) and "ZeroDivisionError" in out[1].error

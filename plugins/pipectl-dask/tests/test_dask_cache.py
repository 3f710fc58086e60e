"""Step caching on a dask cluster: the lookup is made in the driver (a hit submits no task),
and a cached step's output comes back to the driver to be stored (real LocalCluster, real
SQLite tracker)."""

from __future__ import annotations

import sys

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import Pipeline  # noqa: E402

# the step functions below travel to the workers by value, not as an import of this file
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def on(cluster):
    return {
        "executor": "dask",
        "executor_options": {"scheduler": cluster.scheduler_address, "announce": False},
    }


def build(pm, calls, factor: int = 10) -> Pipeline:
    def source():
        return [1, 2, 3]

    def expensive(source, ctx):
        with open(calls, "a") as f:  # on a worker process: a file counts the calls
            f.write(f"{ctx.params.get('tag', '')}\n")
        return sum(source) * 10

    def total(expensive):
        return expensive + 1

    pipe = Pipeline("cached", plugin_manager=pm)
    pipe.add_step("source", source)
    pipe.add_step("expensive", expensive, depends_on="source", cache=True)
    pipe.add_step("total", total, depends_on="expensive")
    return pipe


def test_a_cached_step_hits_on_a_dask_cluster(pm, cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls = tmp_path / "calls"
    first = build(pm, calls).run_sync(tracker=url, **on(cluster))
    assert first.ok, first.errors
    assert first.steps["expensive"].output == 60  # came back to the driver to be stored
    second = build(pm, calls).run_sync(tracker=url, **on(cluster))
    assert second.ok, second.errors
    assert calls.read_text().splitlines() == [""]  # called once, in the first run
    assert second.steps["expensive"].cached_from == first.run_id
    assert second.steps["total"].output == 61  # the cached value went to a worker task
    # a param the step can read (it takes ctx) changed: a miss; --no-cache: a miss
    third = build(pm, calls).run_sync({"tag": "b"}, tracker=url, **on(cluster))
    assert third.steps["expensive"].cached_from is None
    fourth = build(pm, calls).run_sync({"tag": "b"}, tracker=url, cache=False, **on(cluster))
    assert fourth.steps["expensive"].cached_from is None
    assert calls.read_text().splitlines() == ["", "b", "b"]

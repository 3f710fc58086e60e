"""Resource pools on a dask cluster: the engine bounds a pool for the whole run in the driver
(whatever the workers offer), and a pool named like a resource the workers offer is also asked
of a worker, weight for weight, so each worker bounds it too (real LocalClusters)."""

from __future__ import annotations

import fcntl
import os
import sys
import time

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


def gauged(path: str):
    """A step that counts, in a file under a lock, how many run at once and where."""

    def update(delta: int) -> None:
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            lines = f.read().split()
            current = int(lines[-1].split(":")[0]) if lines else 0
            f.write(f"{current + delta}:{os.getpid()}:{delta}\n")

    def work() -> int:
        update(1)
        try:
            time.sleep(0.3)
        finally:
            update(-1)
        return os.getpid()

    return work


def peaks(path) -> tuple[int, dict[str, int]]:
    """(the most running at once, the most running at once per worker process)."""
    overall = 0
    per: dict[str, int] = {}
    now: dict[str, int] = {}
    for line in path.read_text().split():
        current, pid, delta = line.split(":")
        overall = max(overall, int(current))
        now[pid] = now.get(pid, 0) + int(delta)
        per[pid] = max(per.get(pid, 0), now[pid])
    return overall, per


def build(pm, path, pool_size: int) -> Pipeline:
    pipe = Pipeline("pooled", plugin_manager=pm, max_concurrent=8, pools={"db": pool_size})
    for i in range(8):
        pipe.add_step(f"q{i}", gauged(str(path)), pool="db")
    return pipe


def test_the_engine_bounds_a_pool_on_dask(pm, cluster, tmp_path):
    path = tmp_path / "gauge"
    run = build(pm, path, 1).run_sync(**on(cluster))  # 2 workers, 1 thread each
    assert run.ok, run.errors
    overall, _ = peaks(path)
    assert overall == 1


def test_a_pool_the_workers_offer_as_a_resource_is_bounded_per_worker(pm, tmp_path):
    with distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=3,
        dashboard_address=":0",
        resources={"db": 1},
    ) as cluster:
        path = tmp_path / "gauge"
        # the pool lets 4 run at once; the workers offer db=1 each: one per worker, 2 in all
        run = build(pm, path, 4).run_sync(**on(cluster))
        assert run.ok, run.errors
        overall, per_worker = peaks(path)
        assert overall == 2
        assert sorted(per_worker.values()) == [1, 1]
        # without the worker resource, 3 threads a worker: the pool's 4 run at once
        path2 = tmp_path / "gauge2"
        other = Pipeline("free", plugin_manager=pm, max_concurrent=8, pools={"api": 4})
        for i in range(8):
            other.add_step(f"q{i}", gauged(str(path2)), pool="api")
        assert other.run_sync(**on(cluster)).ok
        assert peaks(path2)[0] > 2  # more than one a worker: no per-worker bound

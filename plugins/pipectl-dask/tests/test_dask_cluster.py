"""CPU-bound steps on 2 worker processes, and a worker killed in the middle of a step."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import Pipeline  # noqa: E402

from pipectl_dask.executor import DaskOutput  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow

PAYLOAD = 4_000_000  # bytes each CPU step returns beside its result


def burn(seconds: float) -> int:
    """About ``seconds`` of pure Python work (holds the GIL all along)."""
    total, end = 0, time.thread_time() + seconds
    while time.thread_time() < end:
        for i in range(10_000):
            total += i * i % 7
    return total


def cpu_pipeline(pm, steps: int = 8, seconds: float = 1.0) -> Pipeline:
    pipe = Pipeline("cpu", plugin_manager=pm)
    for i in range(steps):

        def work(seconds=seconds, i=i):
            return {
                "step": i,
                "pid": os.getpid(),
                "value": burn(seconds),
                "payload": b"x" * PAYLOAD,
            }

        pipe.add_step(f"cpu{i}", work)

    def combine(**parts):
        return {
            "pids": sorted({p["pid"] for p in parts.values()}),
            "steps": sorted(p["step"] for p in parts.values()),
            "payload": sum(len(p["payload"]) for p in parts.values()),
            "pid": os.getpid(),
        }

    pipe.add_step("combine", combine, depends_on=[f"cpu{i}" for i in range(steps)])
    return pipe


def test_cpu_bound_steps_run_faster_on_two_workers_and_stay_there(plugin_manager, register_plugin):
    import pipectl_dask.plugin as dask_plugin

    register_plugin(dask_plugin, name="dask")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        options = {"scheduler": cluster.scheduler_address, "announce": False}
        cpu_pipeline(plugin_manager, 2, 0.05).run_sync(
            executor="dask", executor_options=options
        )  # warm up
        t0 = time.perf_counter()
        local = cpu_pipeline(plugin_manager).run_sync(executor="local")
        local_s = time.perf_counter() - t0
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            remote = cpu_pipeline(plugin_manager).run_sync(
                executor="dask", executor_options=options
            )
            dask_s = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with distributed.Client(cluster) as client:
            workers = set(client.run(os.getpid).values())
    assert local.status.value == "success" and remote.status.value == "success", remote.errors
    combined = remote.steps["combine"].output  # fetched at the end: the value
    # the eight outputs lived on the two workers, were combined there, never in this process
    assert combined["steps"] == list(range(8)) and combined["payload"] == 8 * PAYLOAD
    assert len(combined["pids"]) == 2 and os.getpid() not in combined["pids"]
    assert combined["pid"] != os.getpid()
    assert set(combined["pids"]) == workers  # both worker processes did some of the work
    for i in range(8):
        handle = remote.steps[f"cpu{i}"].output
        assert isinstance(handle, DaskOutput) and not handle.fetched
    assert peak < PAYLOAD, f"the driver held {peak} bytes at its peak"
    # 8 s of GIL-bound work: serial on local, two at a time on two processes
    assert dask_s < local_s, f"dask {dask_s:.2f} s, local {local_s:.2f} s"
    print(
        f"8 x 1 s CPU-bound steps: local {local_s:.2f} s, dask (2 workers) {dask_s:.2f} s, "
        f"speed-up {local_s / dask_s:.2f}x"
    )


def loader(db: str, marker_dir: str, records: int):
    """Writes ``records`` rows in one transaction; the first attempt anywhere announces its
    worker's pid and dawdles so that the test can kill it in the middle."""

    def load():
        marker = Path(marker_dir) / "first"
        first = not marker.exists()
        if first:
            marker.write_text(str(os.getpid()))
        con = sqlite3.connect(db, timeout=30)
        try:
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER, pid INTEGER)")
                for i in range(records):
                    con.execute("INSERT INTO items VALUES (?, ?)", (i, os.getpid()))
                    if first and i == records // 2:
                        (Path(marker_dir) / "halfway").write_text("1")
                        time.sleep(30)  # killed here
        finally:
            con.close()
        return {"rows": records, "pid": os.getpid()}

    return load


def test_a_worker_killed_mid_step_the_step_runs_again_elsewhere_once(
    plugin_manager, register_plugin, tmp_path
):
    import pipectl_dask.plugin as dask_plugin

    register_plugin(dask_plugin, name="dask")
    db = str(tmp_path / "out.db")
    pipe = Pipeline("killed", plugin_manager=plugin_manager)
    pipe.add_step("load", loader(db, str(tmp_path), 1000), retries=2, retry_delay=0.1)

    def count(load):
        return load["rows"]

    pipe.add_step("count", count, depends_on=["load"])
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "halfway").exists():
            time.sleep(0.05)
        pid = int((tmp_path / "first").read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        run = pipe.run_sync(
            executor="dask",
            executor_options={
                "scheduler": cluster.scheduler_address,
                "announce": False,
                "fetch": "all",
            },
        )
        thread.join(5)
    assert killed, "the worker was never killed"
    assert run.status.value == "success", run.errors
    out = run.steps["load"].output
    value = out.result() if isinstance(out, DaskOutput) else out
    assert value["pid"] != killed[0]
    assert run.steps["count"].output == 1000
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, COUNT(*) FROM items GROUP BY id").fetchall()
    pids = {p for (p,) in con.execute("SELECT DISTINCT pid FROM items")}
    con.close()
    assert len(rows) == 1000 and all(n == 1 for _, n in rows)  # each record exactly once
    assert killed[0] not in pids  # nothing of the killed attempt was kept

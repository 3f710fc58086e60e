"""Resource pools: ``pools: {db: 2}`` on a pipeline, ``pool: db`` / ``pools: {db: 1}`` on
steps; never more steps (weighted) in a pool at once than its size, FIFO among waiters, all
or nothing, validation with file and line, and the file round trip."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import Gauge

from pipectl import Pipeline
from pipectl.errors import PipelineValidationError
from pipectl.files import PipelineFileError
from pipectl.model import PipelineSpec, StepSpec

# -- the limit, with a file-based gauge -----------------------------------------------------


def _sync_worker(gauge: Gauge, seconds: float = 0.02):
    def work() -> None:
        gauge.enter()
        try:
            time.sleep(seconds)
        finally:
            gauge.leave()

    return work


def _async_worker(gauge: Gauge, seconds: float = 0.02):
    async def work() -> None:
        gauge.enter()
        try:
            await asyncio.sleep(seconds)
        finally:
            gauge.leave()

    return work


@pytest.mark.parametrize("make", [_sync_worker, _async_worker], ids=["sync", "async"])
def test_never_more_than_the_pool_size_under_a_higher_max_concurrent(tmp_path, make):
    gauge = Gauge(tmp_path / "gauge")
    other = Gauge(tmp_path / "other")
    pipe = Pipeline("p", max_concurrent=8, pools={"db": 2})
    for i in range(10):
        pipe.add_step(f"db{i}", make(gauge, 0.01), pool="db")
    for i in range(4):  # steps outside the pool run beside them
        pipe.add_step(f"free{i}", make(other, 0.01))
    run = pipe.run_sync()
    assert run.status.value == "success", run.errors
    assert gauge.peak == 2
    assert gauge.entered == 10
    assert gauge.current == 0
    assert other.peak >= 2  # the pool does not hold back the others


def test_the_step_decorator_and_pipe_pool(tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    pipe = Pipeline("p").pool("db", 1)
    for i in range(4):
        pipe.step(f"s{i}", pools={"db": 1})(_async_worker(gauge, 0.01))
    assert pipe.spec.pools == {"db": 1}
    assert pipe.run_sync().status.value == "success"
    assert gauge.peak == 1


def test_weighted_pools_count_their_weight():
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def weigh(weight: int):
        def work() -> None:
            with lock:
                now[0] += weight
                peak[0] = max(peak[0], now[0])
            time.sleep(0.01)
            with lock:
                now[0] -= weight

        return work

    pipe = Pipeline("p", max_concurrent=10, pools={"db": 3})
    for i in range(6):
        pipe.add_step(f"heavy{i}", weigh(2), pools={"db": 2})
        pipe.add_step(f"light{i}", weigh(1), pool="db")
    assert pipe.run_sync().status.value == "success"
    assert peak[0] <= 3
    assert now[0] == 0


def test_waiters_start_first_come_first_served_even_when_a_later_one_fits():
    """Pool of 2: ``a`` (weight 1) runs; ``heavy`` (weight 2) starts waiting, then ``light``
    (weight 1) which would fit: it waits behind ``heavy``."""
    started: list[str] = []

    def step(name: str, seconds: float):
        async def work() -> None:
            started.append(name)
            await asyncio.sleep(seconds)

        return work

    pipe = Pipeline("p", pools={"db": 2})
    pipe.add_step("a", step("a", 0.15), pool="db")
    pipe.add_step("t1", step("t1", 0.02))
    pipe.add_step("t2", step("t2", 0.05))
    pipe.add_step("heavy", step("heavy", 0.01), pools={"db": 2}, depends_on=["t1"])
    pipe.add_step("light", step("light", 0.01), pool="db", depends_on=["t2"])
    run = pipe.run_sync()
    assert run.status.value == "success"
    order = [n for n in started if n in ("a", "heavy", "light")]
    assert order == ["a", "heavy", "light"]
    assert run.steps["light"].started_at >= run.steps["heavy"].finished_at


def test_fifo_among_waiters_of_one_pool():
    started: list[str] = []

    def step(name: str):
        def work() -> None:
            started.append(name)
            time.sleep(0.005)

        return work

    pipe = Pipeline("p", max_concurrent=20, pools={"db": 1})
    names = [f"s{i}" for i in range(12)]
    for name in names:
        pipe.add_step(name, step(name), pool="db")
    assert pipe.run_sync().status.value == "success"
    assert started == names


def test_two_pools_are_taken_all_or_nothing_without_deadlock(tmp_path):
    db, api = Gauge(tmp_path / "db"), Gauge(tmp_path / "api")

    def both(seconds: float):
        async def work() -> None:
            db.enter()
            api.enter()
            await asyncio.sleep(seconds)
            api.leave()
            db.leave()

        return work

    pipe = Pipeline("p", max_concurrent=16, pools={"db": 1, "api": 1})
    for i in range(8):  # the same two pools, declared in both orders
        pipe.add_step(f"x{i}", both(0.005), pools={"db": 1, "api": 1})
        pipe.add_step(f"y{i}", both(0.005), pools={"api": 1, "db": 1})
        pipe.add_step(f"d{i}", _async_worker(db, 0.002), pool="db")
        pipe.add_step(f"a{i}", _async_worker(api, 0.002), pool="api")

    async def main():
        return await asyncio.wait_for(pipe.run(), 20)

    run = asyncio.run(main())
    assert run.status.value == "success"
    assert db.peak == 1 and api.peak == 1
    assert db.entered == 24 and api.entered == 24


def test_retries_keep_the_pool(tmp_path):
    gauge = Gauge(tmp_path / "gauge")
    tries = {"n": 0}

    def flaky() -> None:
        gauge.enter()
        try:
            tries["n"] += 1
            time.sleep(0.01)
            if tries["n"] < 3:
                raise ConnectionError("try again")
        finally:
            gauge.leave()

    pipe = Pipeline("p", max_concurrent=4, pools={"db": 1})
    pipe.add_step("flaky", flaky, pool="db", retries=3, retry_delay=0.01, retry_jitter=0)
    for i in range(3):
        pipe.add_step(f"s{i}", _sync_worker(gauge, 0.005), pool="db")
    run = pipe.run_sync()
    assert run.status.value == "success"
    assert run.steps["flaky"].attempts == 3
    assert gauge.peak == 1


def test_fail_fast_cancels_the_steps_waiting_for_a_pool():
    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("no")

    async def slow() -> None:
        await asyncio.sleep(0.05)

    pipe = Pipeline("p", pools={"db": 1}, fail_fast=True)
    pipe.add_step("boom", boom, pool="db")
    for i in range(4):
        pipe.add_step(f"w{i}", slow, pool="db")
    pipe.add_step("cleanup", slow, pool="db", trigger="all_done", depends_on=["boom"])
    run = pipe.run_sync()
    assert run.status.value == "failed"
    assert {run.steps[f"w{i}"].status.value for i in range(4)} == {"cancelled"}
    assert run.steps["cleanup"].status.value == "success"


def test_pools_declared_but_unused_cost_no_pool_work():
    from pipectl.engine import scheduler as scheduler_module

    seen = []
    original = scheduler_module.Scheduler.start_roots

    def spy(self):
        seen.append(self.pools)
        return original(self)

    pipe = Pipeline("p", pools={"db": 2})
    pipe.add_step("a", lambda: 1)
    scheduler_module.Scheduler.start_roots = spy
    try:
        assert pipe.run_sync().status.value == "success"
    finally:
        scheduler_module.Scheduler.start_roots = original
    assert seen == [None]


# -- validation -------------------------------------------------------------------------------


def test_python_validation_names_the_step_and_suggests():
    pipe = Pipeline("p", pools={"db": 2})
    pipe.add_step("a", lambda: 1, pool="dbb")
    pipe.add_step("b", lambda: 1, pools={"db": 3})
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    text = str(info.value)
    assert "step 'a': pools.dbb: the pipeline declares no pool 'dbb'" in text
    assert "did you mean 'db'?" in text
    assert "step 'b': pools.db: weight 3 is more than the size of pool 'db' (2)" in text


@pytest.mark.parametrize(
    "make",
    [
        lambda: StepSpec("a", pools={"db": 0}),
        lambda: StepSpec("a", pools={"db": "1"}),
        lambda: StepSpec("a", pools=["db"]),
        lambda: PipelineSpec("p", pools={"db": 0}),
        lambda: PipelineSpec("p", pools={"db": True}),
        lambda: Pipeline("p", pools={"": 1}),
        lambda: Pipeline("p").add_step("a", lambda: 1, pool=3),
        lambda: Pipeline("p").add_step("a", lambda: 1, pool="db", pools={"db": 1}),
    ],
)
def test_bad_types_in_python(make):
    with pytest.raises((TypeError, ValueError)):
        make()


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pool_steps_mod.py").write_text("def noop():\n    return 1\n")
    path = tmp_path / "pools.yaml"
    path.write_text(text)
    return path


RUN = "    run: pool_steps_mod:noop\n"


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        (
            "name: p\npools: {db: 2}\nsteps:\n  - name: a\n" + RUN + "    pool: dbb\n",
            6,
            ["steps.a.pool", "no pool 'dbb'", "did you mean 'db'?"],
        ),
        (
            "name: p\npools:\n  db: 2\nsteps:\n  - name: a\n" + RUN + "    pools:\n      db: 3\n",
            8,
            ["steps.a.pools.db", "weight 3 is more than the size of pool 'db' (2)"],
        ),
        (
            "name: p\npools:\n  db: two\nsteps:\n  - name: a\n" + RUN,
            3,
            ["pools.db", "expected an integer >= 1, got 'two'"],
        ),
        (
            "name: p\npools: [db]\nsteps:\n  - name: a\n" + RUN,
            2,
            ["pools", "expected a mapping of pool name to size"],
        ),
        (
            "name: p\npools: {db: 2}\nsteps:\n  - name: a\n" + RUN + "    pool: [db]\n",
            6,
            ["steps.a.pool", "expected the name of one of the pipeline's pools"],
        ),
        (
            "name: p\npools: {db: 2}\nsteps:\n  - name: a\n" + RUN + "    pools: {db: 0}\n",
            6,
            ["steps.a.pools.db", "expected an integer >= 1"],
        ),
        (
            "name: p\npools: {db: 2}\nsteps:\n  - name: a\n" + RUN + "    pool: db\n"
            "    pools: {db: 1}\n",
            7,
            ["steps.a.pools", "not both"],
        ),
        (
            "name: p\nsteps:\n  - name: a\n" + RUN + "    pool: db\n",
            5,
            ["steps.a.pool", "no pool 'db'", "declared: none"],
        ),
    ],
)
def test_file_validation_errors_name_file_line_and_field(tmp_path, text, line, fragments):
    path = _write(tmp_path, text)
    with pytest.raises(PipelineFileError) as info:
        Pipeline.from_yaml(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.slow
def test_pipectl_validate_exits_2_with_the_line(tmp_path):
    path = _write(
        tmp_path, "name: p\npools: {db: 2}\nsteps:\n  - name: a\n" + RUN + "    pool: dbb\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout
    assert f"{path.name}:6" in proc.stderr or f"{path}:6" in proc.stderr, proc.stderr
    assert "did you mean 'db'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_runs_with_pools_and_a_pipelines_file_declares_them_per_pipeline(tmp_path):
    path = _write(
        tmp_path,
        "name: p\npools: {db: 1, api: 2}\nsteps:\n  - name: a\n" + RUN + "    pool: db\n"
        "  - name: b\n" + RUN + "    pools: {db: 1, api: 2}\n",
    )
    pipe = Pipeline.from_yaml(path)
    assert pipe.spec.pools == {"db": 1, "api": 2}
    assert pipe.steps["a"].pools == {"db": 1}
    assert pipe.steps["b"].pools == {"db": 1, "api": 2}
    assert pipe.run_sync().status.value == "success"
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        "pipelines:\n  - name: one\n    pools: {db: 1}\n    steps:\n      - name: a\n"
        "        run: pool_steps_mod:noop\n        pool: db\n"
        "  - name: two\n    steps:\n      - name: a\n        run: pool_steps_mod:noop\n"
    )
    assert Pipeline.from_yaml(multi, name="one").spec.pools == {"db": 1}
    assert Pipeline.from_yaml(multi, name="two").spec.pools == {}


def test_to_yaml_round_trip(tmp_path):
    path = _write(
        tmp_path,
        "name: p\npools: {db: 2, api: 3}\nsteps:\n  - name: a\n" + RUN + "    pool: db\n"
        "  - name: b\n" + RUN + "    pools: {db: 1, api: 2}\n  - name: c\n" + RUN,
    )
    pipe = Pipeline.from_yaml(path)
    text = pipe.to_yaml()
    assert "pools:\n  db: 2\n  api: 3\n" in text
    assert "  pool: db\n" in text
    assert "pools:\n    db: 1\n    api: 2\n" in text
    again = tmp_path / "again.yaml"
    again.write_text(text)
    back = Pipeline.from_yaml(again)
    assert back.spec.pools == pipe.spec.pools
    assert [s.pools for s in back.spec.steps] == [s.pools for s in pipe.spec.steps]
    assert back.to_yaml() == text

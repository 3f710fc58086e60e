"""The local executor's threads: a run never has more of its sync steps on threads at once than
its ``max_threads``, even after an earlier run in the process grew the shared thread pool."""

from __future__ import annotations

import threading
import time

import pytest

from pipectl import Pipeline


class Concurrency:
    """How many steps are inside :meth:`hold` at once, and the most there ever were."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def hold(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1


def _sleepers(
    pipe: Pipeline, count: int, gauge: Concurrency, seconds: float, **options: object
) -> None:
    for n in range(count):
        pipe.add_step(f"sleep{n}", lambda: gauge.hold(seconds), **options)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"timeout": 30}], ids=["lane", "task"])
def test_max_threads_holds_after_an_earlier_run_grew_the_pool(plugin_manager, options):
    first = Concurrency()
    wide = Pipeline("wide", plugin_manager=plugin_manager)
    _sleepers(wide, 8, first, 0.3, **options)
    assert wide.run_sync(executor_options={"max_threads": 8}).ok
    assert first.peak > 2  # the pool grew past what the second run may use

    second = Concurrency()
    narrow = Pipeline("narrow", plugin_manager=plugin_manager)
    _sleepers(narrow, 6, second, 0.1, **options)
    started = time.perf_counter()
    assert narrow.run_sync(executor_options={"max_threads": 2}).ok
    assert second.peak <= 2
    assert time.perf_counter() - started >= 0.3  # 6 steps of 0.1 s, two at a time


@pytest.mark.slow
def test_max_threads_from_the_run_config_holds_too(plugin_manager):
    wide = Pipeline("wide", plugin_manager=plugin_manager)
    _sleepers(wide, 6, Concurrency(), 0.2)
    assert wide.run_sync(max_threads=6).ok

    gauge = Concurrency()
    narrow = Pipeline("narrow", plugin_manager=plugin_manager)
    _sleepers(narrow, 4, gauge, 0.1)
    assert narrow.run_sync(max_threads=1).ok
    assert gauge.peak == 1

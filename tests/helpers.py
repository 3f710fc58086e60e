"""Helpers of the kernel's tests that hold across processes (steps may run on dask workers)."""

from __future__ import annotations

import os
from pathlib import Path

from pipectl import hookimpl


class CallLog:
    """Counts calls of a step function in a file, so calls on another process count too.

    ``log.record(value)`` appends one line (one ``write`` on an ``O_APPEND`` file: atomic for
    short lines); ``log.calls`` is the list of recorded values, in order."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        Path(self.path).touch()

    def record(self, value: object = "") -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
        return len(self.calls)

    @property
    def calls(self) -> list[str]:
        return Path(self.path).read_text().splitlines()

    def __len__(self) -> int:
        return len(self.calls)

    # a list's reading side, so an ``events`` list of a test can become a log
    append = record

    def index(self, value: str) -> int:
        return self.calls.index(value)

    def count(self, value: str) -> int:
        return self.calls.count(value)

    def __iter__(self):
        return iter(self.calls)

    def __contains__(self, value: object) -> bool:
        return value in self.calls

    def __eq__(self, other: object) -> bool:
        return self.calls == list(other) if isinstance(other, (list, tuple)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


EventLog = CallLog


class Flag:
    """A flag across processes (a file): ``set()``, ``is_set()``, ``wait(timeout)``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)

    def set(self) -> None:
        Path(self.path).touch()

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while not self.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.is_set()


class Rendezvous:
    """Steps that must run at the same time wait here for each other, across processes:
    ``await rv.arrive_async(name)`` or ``rv.arrive(name)`` returns once every name of
    ``names`` arrived, and raises AssertionError after ``timeout`` seconds otherwise."""

    def __init__(self, directory: str | os.PathLike[str], names: list[str], timeout: float = 10.0):
        self.directory = str(directory)
        self.names = list(names)
        self.timeout = timeout
        Path(self.directory).mkdir(parents=True, exist_ok=True)

    def _mark(self, name: str) -> None:
        Path(self.directory, name).touch()

    def _all_here(self) -> bool:
        return all(Path(self.directory, n).exists() for n in self.names)

    def _waiting(self, name: str, deadline: float) -> bool:
        """True while someone is missing; AssertionError once ``deadline`` passed."""
        import time

        if self._all_here():
            return False
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name}: the others never arrived: they did not run at the same time"
            )
        return True

    def arrive(self, name: str) -> None:
        import time

        self._mark(name)
        deadline = time.monotonic() + self.timeout
        while self._waiting(name, deadline):
            time.sleep(0.002)

    async def arrive_async(self, name: str) -> None:
        import asyncio
        import time

        self._mark(name)
        deadline = time.monotonic() + self.timeout
        while self._waiting(name, deadline):
            await asyncio.sleep(0.002)


class Gauge:
    """Counts steps running at once, across threads and processes (a file under a lock):
    ``enter()`` / ``leave()`` around the work; ``peak`` and ``entered`` read the counts."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        Path(self.path).write_text("0 0 0")

    def _update(self, delta: int) -> None:
        import fcntl

        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            current, peak, entered = map(int, f.read().split())
            current += delta
            if delta > 0:
                entered += 1
                peak = max(peak, current)
            f.seek(0)
            f.write(f"{current} {peak} {entered}")
            f.truncate()

    def enter(self) -> None:
        self._update(1)

    def leave(self) -> None:
        self._update(-1)

    def _read(self) -> list[int]:
        return list(map(int, Path(self.path).read_text().split()))

    @property
    def current(self) -> int:
        return self._read()[0]

    @property
    def peak(self) -> int:
        return self._read()[1]

    @peak.setter
    def peak(self, value: int) -> None:
        current, _, entered = self._read()
        Path(self.path).write_text(f"{current} {value} {entered}")

    @property
    def entered(self) -> int:
        return self._read()[2]


class RaisingListener:
    """A listener of every lifecycle hook that raises in each (``calls`` counts them)."""

    def __init__(self):
        self.calls = 0

    def _boom(self, hook):
        self.calls += 1
        raise RuntimeError(f"listener bug in {hook}")

    @hookimpl
    def pipectl_run_start(self, run):
        self._boom("run_start")

    @hookimpl
    def pipectl_run_planned(self, run, plan):
        self._boom("run_planned")

    @hookimpl
    def pipectl_step_start(self, run, step, attempt):
        self._boom("step_start")

    @hookimpl
    def pipectl_step_retry(self, run, step, attempt, error, delay):
        self._boom("step_retry")

    @hookimpl
    def pipectl_output_finish(self, run, step, attempt, report):
        self._boom("output_finish")

    @hookimpl
    def pipectl_step_finish(self, run, step, result):
        self._boom("step_finish")

    @hookimpl
    def pipectl_step_cache(self, run, step, event):
        self._boom("step_cache")

    @hookimpl
    def pipectl_rollback_start(self, run, step, result):
        self._boom("rollback_start")

    @hookimpl
    def pipectl_rollback_finish(self, run, step, result, error):
        self._boom("rollback_finish")

    @hookimpl
    def pipectl_run_finish(self, run):
        self._boom("run_finish")


class FlakyStore:
    """A transactional output whose first ``fail_attempts`` attempts fail on write."""

    guarantee = "transactional"

    def __init__(self, name, fail_attempts=0):
        self.name, self.fail_attempts = name, fail_attempts
        self.attempts, self.rows, self.pending = 0, [], []

    def describe(self):
        return f"store {self.name}"

    def open(self, ctx):
        self.attempts += 1
        self.pending = []

    def write(self, batch):
        if self.attempts <= self.fail_attempts:
            raise OSError(f"{self.name}: disk full")
        self.pending.extend(batch)

    def commit(self):
        self.rows.extend(self.pending)

    def abort(self):
        self.pending = []

    def close(self):
        pass

"""Helpers of the kernel's tests that hold across processes (steps may run on dask workers)."""

from __future__ import annotations

import os
from pathlib import Path


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

    def __iter__(self):
        return iter(self.calls)

    def __contains__(self, value: object) -> bool:
        return value in self.calls

    def __eq__(self, other: object) -> bool:
        return self.calls == list(other) if isinstance(other, (list, tuple)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


EventLog = CallLog


class Rendezvous:
    """Steps that must run at the same time wait here for each other, across processes:
    ``await rv.arrive_async(name)`` or ``rv.arrive(name)`` returns once every name of
    ``names`` arrived, and raises AssertionError after ``timeout`` seconds otherwise."""

    def __init__(self, directory: str | os.PathLike[str], names: list[str],
                 timeout: float = 10.0):
        self.directory = str(directory)
        self.names = list(names)
        self.timeout = timeout
        Path(self.directory).mkdir(parents=True, exist_ok=True)

    def _mark(self, name: str) -> None:
        Path(self.directory, name).touch()

    def _all_here(self) -> bool:
        return all(Path(self.directory, n).exists() for n in self.names)

    def arrive(self, name: str) -> None:
        import time

        self._mark(name)
        deadline = time.monotonic() + self.timeout
        while not self._all_here():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: the others never arrived: they did not run "
                                     "at the same time")
            time.sleep(0.002)

    async def arrive_async(self, name: str) -> None:
        import asyncio
        import time

        self._mark(name)
        deadline = time.monotonic() + self.timeout
        while not self._all_here():
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: the others never arrived: they did not run "
                                     "at the same time")
            await asyncio.sleep(0.002)

"""The executor contract (where a step attempt runs) and the local executor's thread pool.

The engine owns the semantics (dependencies, retries, timeouts, skips, cancellation, hooks); an
executor only runs one attempt of one step and returns its output. The built-in ``local``
executor runs async steps on the event loop and sync steps on :class:`StepThreads`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipectl.context import StepContext
from pipectl.model import PipelineRun, RunConfig, StepSpec

__all__ = [
    "Executor", "Invocation", "LocalExecutor", "StepThreads", "call_through_middleware",
    "shared_pool",
]

Middleware = Callable[[Callable[[], Any], int], Any]


class Invocation:
    """One attempt of one step, as the engine hands it to an executor."""

    __slots__ = (
        "attempt",
        "context",
        "driver_reads",
        "final",
        "func",
        "is_async",
        "kwargs",
        "middleware",
        "step",
    )

    def __init__(
        self,
        step: StepSpec,
        func: Callable[..., Any],
        is_async: bool,
        kwargs: dict[str, Any],
        middleware: Sequence[Middleware],
        context: StepContext,
        attempt: int,
        driver_reads: bool = False,
        final: bool = False,
    ):
        self.step = step
        self.func = func
        self.is_async = is_async
        self.kwargs = kwargs
        self.middleware = middleware
        self.context = context
        self.attempt = attempt
        #: the engine reads this step's output itself (a ``when`` condition or an ``inputs``
        #: reference names it, or the step has a rollback): an executor that keeps outputs
        #: away from the driver (pipectl-dask) returns the value of this one
        self.driver_reads = driver_reads
        #: no step of the run consumes this step's output: it is a result of the run, which
        #: the user reads from ``run.steps`` (pipectl-dask brings these to the driver)
        self.final = final


class Executor(Protocol):
    """What ``pipectl_register_executors`` factories return.

    Optional: ``framework_paths``, directories whose frames a failed step's traceback leaves
    out (the executor's own package is left out anyway), such as a distributed library's.

    A step function with ``runs_in_driver = True`` (the sub-pipeline step, which orchestrates a
    child run) must run in the engine's process: an executor that places steps elsewhere runs
    that one where it is."""

    async def start(self, run: PipelineRun, config: RunConfig, max_concurrent: int | None) -> None:
        """Called once before the first step of a run."""

    async def execute(self, invocation: Invocation) -> Any:
        """Run one attempt (the middleware chain around the step function); return its output
        or raise its exception. Cancelling the awaiting task abandons the attempt."""

    async def shutdown(self) -> None:
        """Called once after the last step of the run, whatever happened."""


async def call_through_middleware(
    invocation: Invocation, call: Callable[[Invocation], Any]
) -> Any:
    """Run ``call(invocation)`` inside the invocation's middleware chain, first one outermost."""
    chain = invocation.middleware
    attempt = invocation.attempt

    def link(index: int) -> Callable[[], Any]:
        if index == len(chain):
            return lambda: call(invocation)
        middleware = chain[index]
        inner = link(index + 1)
        return lambda: middleware(inner, attempt)

    return await link(0)()


class _Call:
    """The hand-shake between an awaited thread call and its abandonment (see
    :meth:`StepThreads.abandon`): both sides update it under the pool's lock."""

    __slots__ = ("done", "lent")

    def __init__(self) -> None:
        self.done = False
        self.lent = False


def _run_for_future(pool: StepThreads, call: _Call, future: asyncio.Future,
                    loop: asyncio.AbstractEventLoop, func: Callable[..., Any],
                    kwargs: dict[str, Any], context: contextvars.Context) -> None:
    try:
        if future.cancelled():  # timed out or cancelled while it waited: never run it
            return
        try:
            value = context.run(func, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
            deliver, result = _reject, exc
        else:
            deliver, result = _resolve, value
        try:
            loop.call_soon_threadsafe(deliver, future, result)
        except RuntimeError:  # loop closed: the run is gone
            pass
    finally:
        pool.finished(call)


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class StepThreads:
    """Threads for sync step functions, grown on demand up to ``max_threads``.

    A sync step never blocks the event loop, and the pool does not cap a pipeline's parallelism
    at the default executor's ``min(32, cpus + 4)``. It starts up to one thread per core at
    once; beyond that it grows only while work is waiting and no thread finished a job for a
    millisecond (the threads are blocked: sleeping, waiting on I/O), by as many threads as jobs
    wait. Short CPU-bound steps so stay on a few threads instead of fighting over the GIL, and
    steps that block get a thread each. The hand-off is one queue put (and, for the engine's
    awaited calls, one ``call_soon_threadsafe``), much cheaper than ``asyncio.to_thread``.
    """

    GROW_AFTER = 0.001  # seconds without progress, with jobs waiting, before the pool grows

    def __init__(self, max_threads: int, eager: int | None = None):
        self.max_threads = max_threads
        self.eager = eager if eager is not None else max(2, os.cpu_count() or 2)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._backlog = threading.Condition(self._lock)
        self._free = 0  # idle threads minus jobs waiting to be taken
        self._done = 0  # jobs finished, for the monitor's "no progress" test
        self._threads: list[threading.Thread] = []
        self._monitor: threading.Thread | None = None

    def submit(self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any],
               kwargs: dict[str, Any]) -> tuple[asyncio.Future, _Call]:
        """Run ``func(**kwargs)`` on a thread; the returned future (of ``loop``) gets its result.

        If the awaiting side gives up on the future, it calls :meth:`abandon` with the call."""
        future = loop.create_future()
        call = _Call()
        self.call(_run_for_future, self, call, future, loop, func, kwargs,
                  contextvars.copy_context())
        return future, call

    def abandon(self, call: _Call) -> None:
        """The awaiting side gave up on a call (timeout, cancel): while the function still runs
        it holds a thread, so the pool may grow by one until it returns."""
        with self._lock:
            if not call.done:
                call.lent = True
                self.max_threads += 1

    def finished(self, call: _Call) -> None:
        with self._lock:
            call.done = True
            if call.lent:
                self.max_threads -= 1

    def call(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on a thread, fire and forget (``func`` handles its own errors)."""
        self._jobs.put((func, args))
        spawn = False
        with self._lock:
            self._free -= 1
            if self._free < 0:
                size = len(self._threads)
                if size < self.eager and size < self.max_threads:
                    spawn = True
                    self._free += 1
                elif size < self.max_threads:
                    if self._monitor is None:
                        self._monitor = self._start(self._watch, "pipectl-step-pool")
                    self._backlog.notify()
        if spawn:
            self._threads.append(self._start(self._work, f"pipectl-step-{len(self._threads)}"))

    @staticmethod
    def _start(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            func, args = jobs.get()
            try:
                func(*args)
            except BaseException:  # noqa: BLE001 - never let a worker die
                import traceback

                traceback.print_exc()
            del func, args
            with lock:
                self._free += 1
                self._done += 1

    def _watch(self) -> None:
        """Grow the pool while jobs wait and no thread makes progress."""
        while True:
            with self._lock:
                while not (self._free < 0 and len(self._threads) < self.max_threads):
                    self._backlog.wait()
                done = self._done
            time.sleep(self.GROW_AFTER)
            with self._lock:
                if self._done != done or self._free >= 0:
                    continue  # jobs are moving: more threads would only contend for the GIL
                grow = min(-self._free, self.max_threads - len(self._threads))
                self._free += grow
            for _ in range(grow):
                self._threads.append(self._start(self._work,
                                                 f"pipectl-step-{len(self._threads)}"))

    def reserve(self, threads: int) -> None:
        """A run starts: let the pool grow by its ``threads`` (runs at once add up)."""
        with self._lock:
            self.max_threads += threads

    def release(self, threads: int) -> None:
        """A run ended: give its share back (idle threads stay, for the next run)."""
        with self._lock:
            self.max_threads -= threads

    def lend(self) -> None:
        """A job was abandoned (timeout, cancel) but still holds its thread: allow one more."""
        with self._lock:
            self.max_threads += 1

    def reclaim(self) -> None:
        """An abandoned job returned: take back the thread :meth:`lend` allowed."""
        with self._lock:
            self.max_threads -= 1


_pool: StepThreads | None = None
_pool_lock = threading.Lock()


def shared_pool() -> StepThreads:
    """The process's one pool of step threads, kept from run to run (threads start once, not
    per run). Each run using it reserves its share of threads (:meth:`StepThreads.reserve`)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = StepThreads(0)
        return _pool


DEFAULT_MAX_THREADS = 64


class LocalExecutor:
    """Runs every step in this process: async steps on the loop, sync steps on threads."""

    name = "local"

    def __init__(self, max_threads: int | None = None):
        self.max_threads = max_threads
        self.threads: StepThreads | None = None
        self._share = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, run: PipelineRun, config: RunConfig, max_concurrent: int | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._share = (self.max_threads or config.max_threads or max_concurrent
                       or DEFAULT_MAX_THREADS)
        self.threads = shared_pool()
        self.threads.reserve(self._share)

    async def execute(self, invocation: Invocation) -> Any:
        if invocation.middleware:
            return await call_through_middleware(invocation, self._call)
        if invocation.is_async:
            return await invocation.func(**invocation.kwargs)
        return await self._call_sync(invocation)

    async def _call(self, invocation: Invocation) -> Any:
        if invocation.is_async:
            return await invocation.func(**invocation.kwargs)
        return await self._call_sync(invocation)

    async def _call_sync(self, invocation: Invocation) -> Any:
        assert self.threads is not None and self._loop is not None
        future, call = self.threads.submit(self._loop, invocation.func, invocation.kwargs)
        try:
            value = await future
        except asyncio.CancelledError:
            # a timeout or cancellation abandons the call, but its thread stays busy until the
            # function returns: let the pool grow by one so the steps after it are not held back
            self.threads.abandon(call)
            raise
        if inspect.isawaitable(value):  # a sync callable that returned a coroutine
            value = await value
        return value

    async def shutdown(self) -> None:
        """Give the run's share of threads back; the threads stay for the next run."""
        if self.threads is not None and self._share:
            self.threads.release(self._share)
            self._share = 0

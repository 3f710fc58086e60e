"""The executor contract (where a step attempt runs) and the local executor's thread pool.

The engine owns the semantics (dependencies, retries, timeouts, skips, cancellation, hooks); an
executor only runs one attempt of one step and returns its output. The built-in ``local``
executor runs async steps on the event loop and sync steps on :class:`StepThreads`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
import threading
from typing import Any, Callable, Protocol, Sequence

from pipectl.context import StepContext
from pipectl.model import PipelineRun, RunConfig, StepSpec

__all__ = ["Executor", "Invocation", "LocalExecutor", "StepThreads", "call_through_middleware"]

Middleware = Callable[[Callable[[], Any], int], Any]


class Invocation:
    """One attempt of one step, as the engine hands it to an executor."""

    __slots__ = ("step", "func", "is_async", "kwargs", "middleware", "context", "attempt")

    def __init__(
        self,
        step: StepSpec,
        func: Callable[..., Any],
        is_async: bool,
        kwargs: dict[str, Any],
        middleware: Sequence[Middleware],
        context: StepContext,
        attempt: int,
    ):
        self.step = step
        self.func = func
        self.is_async = is_async
        self.kwargs = kwargs
        self.middleware = middleware
        self.context = context
        self.attempt = attempt


class Executor(Protocol):
    """What ``pipectl_register_executors`` factories return."""

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


def _run_for_future(future: asyncio.Future, loop: asyncio.AbstractEventLoop,
                    func: Callable[..., Any], kwargs: dict[str, Any],
                    context: contextvars.Context) -> None:
    if future.cancelled():  # timed out or cancelled while it waited for a thread: never run it
        return
    try:
        value = context.run(func, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting step
        try:
            loop.call_soon_threadsafe(_reject, future, exc)
        except RuntimeError:  # loop closed: the run is gone
            pass
    else:
        try:
            loop.call_soon_threadsafe(_resolve, future, value)
        except RuntimeError:
            pass


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class StepThreads:
    """Threads for sync step functions, grown on demand up to ``max_threads``.

    A sync step never blocks the event loop, and the pool does not cap a pipeline's parallelism
    at the default executor's ``min(32, cpus + 4)``: it grows to as many threads as steps run at
    once (bounded by ``max_threads``). The hand-off is one queue put and one
    ``call_soon_threadsafe``, much cheaper than ``asyncio.to_thread``.
    """

    def __init__(self, max_threads: int):
        self.max_threads = max_threads
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._free = 0  # idle threads minus jobs waiting to be taken
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any],
               kwargs: dict[str, Any]) -> asyncio.Future:
        """Run ``func(**kwargs)`` on a thread; the returned future (of ``loop``) gets its result."""
        future = loop.create_future()
        self.call(_run_for_future, future, loop, func, kwargs, contextvars.copy_context())
        return future

    def call(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on a thread, fire and forget (``func`` handles its own errors)."""
        self._jobs.put((func, args))
        with self._lock:
            self._free -= 1
            spawn = self._free < 0 and len(self._threads) < self.max_threads
            if spawn:
                self._free += 1
        if spawn:
            thread = threading.Thread(target=self._work, name=f"pipectl-step-{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            job = jobs.get()
            if job is None:
                return
            func, args = job
            try:
                func(*args)
            except BaseException:  # noqa: BLE001 - never let a worker die
                import traceback

                traceback.print_exc()
            del job, func, args
            with lock:
                self._free += 1

    def close(self) -> None:
        """Let idle threads exit; threads still running an abandoned step exit when it returns."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)

    @property
    def size(self) -> int:
        return len(self._threads)


DEFAULT_MAX_THREADS = 64


class LocalExecutor:
    """Runs every step in this process: async steps on the loop, sync steps on threads."""

    name = "local"

    def __init__(self, max_threads: int | None = None):
        self.max_threads = max_threads
        self.threads: StepThreads | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, run: PipelineRun, config: RunConfig, max_concurrent: int | None) -> None:
        self._loop = asyncio.get_running_loop()
        size = self.max_threads or config.max_threads or max_concurrent or DEFAULT_MAX_THREADS
        self.threads = StepThreads(size)

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
        future = self.threads.submit(self._loop, invocation.func, invocation.kwargs)
        try:
            value = await future
        except asyncio.CancelledError:
            # a timeout or cancellation abandons the call, but its thread stays busy until the
            # function returns: let the pool grow by one so the steps after it are not held back
            self.threads.max_threads += 1
            raise
        if inspect.isawaitable(value):  # a sync callable that returned a coroutine
            value = await value
        return value

    async def shutdown(self) -> None:
        if self.threads is not None:
            self.threads.close()

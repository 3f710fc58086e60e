"""The built-in ``local`` executor: every step in this process, async steps on the event loop,
sync steps on threads.

- :class:`StepThreads`: the process's one pool of step threads (:func:`shared_pool`), grown on
  demand and kept from run to run.
- :class:`ThreadShare`: one run's share of that pool; at most its ``limit`` of the run's jobs
  hold a thread at once, however large earlier runs grew the pool.
- :class:`LocalLanes`: what :meth:`LocalExecutor.open_lanes` lends the engine (see
  :class:`pipectl.executors.Lanes`): sync steps run as lane jobs, *instant* ones (their calls
  take under a millisecond, by the process-wide call-time cache :func:`call_time`) one after
  another on a quick-lane thread, the others on a thread each.
- :class:`LocalExecutor`: the executor itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import queue
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipectl.executors import Invocation, LaneJob, call_through_middleware
from pipectl.model import PipelineRun, RunConfig

__all__ = [
    "DEFAULT_MAX_THREADS",
    "INSTANT",
    "LocalExecutor",
    "LocalLanes",
    "StepThreads",
    "ThreadShare",
    "call_time",
    "record_call_time",
    "shared_pool",
]

Job = tuple[Callable[..., Any], tuple[Any, ...]]


class _Call:
    """The hand-shake between an awaited thread call and its abandonment (see
    :meth:`ThreadShare.abandon`): both sides update it under the share's lock."""

    __slots__ = ("done", "lent")

    def __init__(self) -> None:
        self.done = False
        self.lent = False


def _run_for_future(
    share: ThreadShare,
    call: _Call,
    future: asyncio.Future[Any],
    loop: asyncio.AbstractEventLoop,
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    context: contextvars.Context,
) -> None:
    try:
        if future.cancelled():  # timed out or cancelled while it waited: never run it
            return
        deliver: Callable[[asyncio.Future[Any], Any], None]
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
        share.finished(call)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
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

    ``max_threads`` bounds the pool's size, not a run's use of it: that is its
    :class:`ThreadShare`'s ``limit``.
    """

    GROW_AFTER = 0.001  # seconds without progress, with jobs waiting, before the pool grows

    def __init__(self, max_threads: int, eager: int | None = None):
        self.max_threads = max_threads
        self.eager = eager if eager is not None else max(2, os.cpu_count() or 2)
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._backlog = threading.Condition(self._lock)
        self._free = 0  # idle threads minus jobs waiting to be taken
        self._done = 0  # jobs finished, for the monitor's "no progress" test
        self._threads: list[threading.Thread] = []
        self._monitor: threading.Thread | None = None

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
                self._threads.append(self._start(self._work, f"pipectl-step-{len(self._threads)}"))

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
        self.reserve(1)

    def reclaim(self) -> None:
        """An abandoned job returned: take back the thread :meth:`lend` allowed."""
        self.release(1)


_pool: StepThreads | None = None
_pool_lock = threading.Lock()


def shared_pool() -> StepThreads:
    """The process's one pool of step threads, kept from run to run (threads start once, not
    per run). Each run using it takes a :class:`ThreadShare` of it."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = StepThreads(0)
        return _pool


class ThreadShare:
    """One run's share of a :class:`StepThreads` pool: at most ``limit`` of its jobs on threads
    at once.

    The pool keeps its idle threads from run to run, so its size says nothing of what a run may
    use: a run after one that grew the pool to 64 threads would otherwise run 64 steps at once
    whatever its own ``max_threads``. Jobs beyond the limit wait here, and a thread that ends
    one of the run's jobs goes on with the next waiting one (no hand-off)."""

    def __init__(self, pool: StepThreads, limit: int):
        self.pool = pool
        self.limit = limit
        self.running = 0
        self._waiting: deque[Job] = deque()
        self._lock = threading.Lock()
        self._reserved = limit
        pool.reserve(limit)

    def call(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on a thread of the pool, once the share has one free."""
        with self._lock:
            if self.running >= self.limit:
                self._waiting.append((func, args))
                return
            self.running += 1
        self.pool.call(self._job, func, args)

    def _job(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        lock = self._lock
        while True:
            try:
                func(*args)
            except BaseException:  # noqa: BLE001 - the jobs waiting behind it must still run
                traceback.print_exc()
            with lock:
                if not self._waiting or self.running > self.limit:
                    self.running -= 1
                    return
                func, args = self._waiting.popleft()

    def lend(self) -> None:
        """A job was abandoned (timeout, cancel) but still holds its thread: allow one more."""
        with self._lock:
            self.limit += 1
            job = self._waiting.popleft() if self._waiting and self.running < self.limit else None
            if job is not None:
                self.running += 1
        self.pool.lend()
        if job is not None:
            self.pool.call(self._job, *job)

    def reclaim(self) -> None:
        """An abandoned job returned: take back the thread :meth:`lend` allowed."""
        with self._lock:
            self.limit -= 1
        self.pool.reclaim()

    def close(self) -> None:
        """The run ended: give its reservation back to the pool (idle threads stay; jobs of
        the run still waiting, such as cancelled steps' lane jobs, still run and end at once)."""
        with self._lock:
            reserved, self._reserved = self._reserved, 0
        if reserved:
            self.pool.release(reserved)

    def submit(
        self, loop: asyncio.AbstractEventLoop, func: Callable[..., Any], kwargs: dict[str, Any]
    ) -> tuple[asyncio.Future[Any], _Call]:
        """Run ``func(**kwargs)`` on a thread; the returned future (of ``loop``) gets its result.

        If the awaiting side gives up on the future, it calls :meth:`abandon` with the call."""
        future = loop.create_future()
        call = _Call()
        self.call(
            _run_for_future, self, call, future, loop, func, kwargs, contextvars.copy_context()
        )
        return future, call

    def abandon(self, call: _Call) -> None:
        """The awaiting side gave up on a call (timeout, cancel): while the function still runs
        it holds a thread, so the share may use one more until it returns."""
        with self._lock:
            lend = not call.done
            call.lent = lend
        if lend:
            self.lend()

    def finished(self, call: _Call) -> None:
        with self._lock:
            call.done = True
            lent = call.lent
        if lent:
            self.reclaim()


# -- the call-time cache: which sync functions are instant ---------------------------------------

INSTANT = 0.001
"""Seconds: a sync function whose calls take less is *instant*. Instant steps share one worker
thread (the quick lane) instead of a thread each, which would only fight over the GIL."""

STUCK = 0.005
"""Seconds a quick-lane runner may spend in one call, while instant steps wait, before another
runner is added."""

_durations: dict[weakref.ref[Any], float] = {}
"""Call times by weak reference to the function: found with a plain ``weakref.ref(func)``
(CPython hands out a function's one callback-less reference), in C calls only; the key stored
is a reference whose callback drops the entry when the function dies."""


def _forget(key: weakref.ref[Any]) -> None:
    _durations.pop(key, None)


def call_time(func: Any) -> float | None:
    """The running average of ``func``'s call time in seconds (process-wide), None before its
    first call; 1.0 for a function that cannot be weakly referenced or hashed (never instant)."""
    try:
        return _durations.get(weakref.ref(func))
    except TypeError:
        return 1.0


def record_call_time(func: Any, seconds: float) -> None:
    """Add one call of ``func`` to its running average."""
    try:
        key = weakref.ref(func)
        previous = _durations.get(key)
        if previous is None:
            _durations[weakref.ref(func, _forget)] = seconds
        else:
            _durations[key] = previous * 0.7 + seconds * 0.3
    except TypeError:
        pass


class LocalLanes:
    """The local executor's :class:`~pipectl.executors.Lanes` for one run.

    When a lane step is launched, its function's call time decides where it runs:

    - a function never called before is *probed*: its first call gets a thread of its own;
    - a function whose calls take :data:`INSTANT` or more gets a thread of its own;
    - an instant function joins the quick lane: one runner thread drains a queue of such steps
      one after another (and the steps they claim, while those are instant too). Steps of a
      function whose probe is still running wait for it at most :data:`INSTANT`.

    While instant steps wait, a watch on the event loop adds a runner every :data:`STUCK`
    seconds in which every runner is stuck in one call, so the steps behind a call that blocks
    still run in parallel."""

    def __init__(
        self,
        share: ThreadShare,
        job: LaneJob,
        functions: Sequence[Any],
        loop: asyncio.AbstractEventLoop,
    ):
        self.share = share
        self.job = job
        self.functions = functions
        self.loop = loop
        self.context = contextvars.copy_context()  # the run's (its log context), per job
        self._lock = threading.Lock()
        self._quick: deque[int] = deque()  # instant steps waiting for a quick-lane runner
        self._runners = 0
        self._busy: dict[int, float] = {}  # runner thread -> when its current step began
        self._watched = False
        self._closed = False
        self._probing: dict[Any, threading.Event] = {}  # functions whose first call runs

    def launch(self, step: int) -> None:
        func = self.functions[step]
        speed = call_time(func)
        if speed is not None and speed >= INSTANT:
            self.share.call(self._own_thread, step)
            return
        with self._lock:
            if speed is None and func not in self._probing:
                self._probing[func] = threading.Event()  # its first call tells its speed
                probe = True
            else:  # instant (or waiting for its function's first call to tell)
                probe = False
                self._quick.append(step)
                add = self._runners == 0
                if add:
                    self._runners += 1
                watch = not add and not self._watched  # a runner is busy: watch it stays instant
                if watch:
                    self._watched = True
        if probe:
            self.share.call(self._own_thread, step)
        elif add:
            self.share.call(self._quick_runner)
        elif watch:
            self.loop.call_soon_threadsafe(self.loop.call_later, STUCK, self._watch)

    def call(self, func: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
        called = time.perf_counter()
        try:
            return func(**kwargs)
        finally:
            record_call_time(func, time.perf_counter() - called)
            probe = self._probing.pop(func, None)
            if probe is not None:
                probe.set()

    def lend(self) -> None:
        self.share.lend()

    def reclaim(self) -> None:
        self.share.reclaim()

    def close(self) -> None:
        self._closed = True

    def _own_thread(self, step: int) -> None:
        """A thread's job: run ``step`` and every lane step it then claims."""
        self.context.copy().run(self._chain, step)

    def _chain(self, step: int | None) -> None:
        job = self.job
        while step is not None:
            step = job(step)

    def _quick_runner(self) -> None:
        """A quick-lane runner's job: the queued instant steps, one after another."""
        self.context.copy().run(self._drain)

    def _drain(self) -> None:
        me = threading.get_ident()
        functions, job, busy = self.functions, self.job, self._busy
        while True:
            with self._lock:
                if not self._quick:
                    self._runners -= 1
                    return
                step: int | None = self._quick.popleft()
            assert step is not None
            func = functions[step]
            if call_time(func) is None:  # its first call is under way: instant means done by now
                probe = self._probing.get(func)
                if probe is not None:
                    probe.wait(INSTANT)
            try:
                while step is not None:
                    speed = call_time(functions[step])
                    if speed is None or speed >= INSTANT:  # not instant: a thread of its own
                        self.share.call(self._own_thread, step)
                        break
                    busy[me] = time.perf_counter()
                    step = job(step)
            finally:
                busy.pop(me, None)

    def _watch(self) -> None:
        """On the loop, every few ms while instant steps wait: if every runner is stuck in one
        call (an instant function that blocks this time), add a runner."""
        with self._lock:
            if not self._quick or self._closed:
                self._watched = False
                return
            now = time.perf_counter()
            busy = list(self._busy.values())
            add = len(busy) >= self._runners and all(now - t > STUCK for t in busy)
            if add:
                self._runners += 1
        if add:
            self.share.call(self._quick_runner)
        self.loop.call_later(STUCK, self._watch)


DEFAULT_MAX_THREADS = 64


class LocalExecutor:
    """Runs every step in this process: async steps on the loop, sync steps on threads.

    A run's share of the process's thread pool is ``max_threads``, else
    ``RunConfig.max_threads``, else ``max_concurrent`` when the engine passes it, else
    :data:`DEFAULT_MAX_THREADS`: never more of its steps on threads at once."""

    name = "local"

    def __init__(self, max_threads: int | None = None):
        self.max_threads = max_threads
        self.threads: ThreadShare | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, run: PipelineRun, config: RunConfig, max_concurrent: int | None) -> None:
        self._loop = asyncio.get_running_loop()
        share = self.max_threads or config.max_threads or max_concurrent or DEFAULT_MAX_THREADS
        self.threads = ThreadShare(shared_pool(), share)

    def open_lanes(self, job: LaneJob, functions: Sequence[Any]) -> LocalLanes | None:
        """Lanes on this run's threads; None for a subclass that overrides :meth:`execute`
        (it wants to see every attempt) or before :meth:`start`."""
        if (
            type(self).execute is not LocalExecutor.execute
            or self.threads is None
            or self._loop is None
        ):
            return None
        return LocalLanes(self.threads, job, functions, self._loop)

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
            # function returns: let the share grow by one so the steps after it are not held back
            self.threads.abandon(call)
            raise
        if inspect.isawaitable(value):  # a sync callable that returned a coroutine
            value = await value
        return value

    async def shutdown(self) -> None:
        """Give the run's share of threads back; the threads stay for the next run."""
        if self.threads is not None:
            self.threads.close()

"""The executor contract: where one attempt of a step runs.

The engine owns the semantics (dependencies, retries, timeouts, skips, cancellation, hooks); an
executor only runs one attempt of one step and returns its output. This module is the whole
contract a ``pipectl_register_executors`` factory's object meets:

- :class:`Executor`: ``start``, ``execute`` (one :class:`Invocation`), ``shutdown``;
- :func:`call_through_middleware`: how an executor runs an attempt inside its middleware chain;
- optional: ``framework_paths`` and ``open_lanes`` (:class:`Lanes`), described on
  :class:`Executor`.

The built-in ``local`` executor lives in :mod:`pipectl.components.local_executor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pipectl.context import StepContext
from pipectl.model import PipelineRun, RunConfig, StepSpec

__all__ = [
    "Executor",
    "Invocation",
    "LaneJob",
    "Lanes",
    "Middleware",
    "call_through_middleware",
]

Middleware = Callable[[Callable[[], Any], int], Any]
"""What a ``pipectl_wrap_step`` hook returns: ``middleware(call_next, attempt)``."""

LaneJob = Callable[[int], int | None]
"""The engine's job for a lane step: ``job(step_index)`` runs every attempt of that sync step
on the calling thread, records its result, and returns the index of the next lane step it
claimed (one its end unblocked), which the same thread should run next, or None."""


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

    Optional attributes, which the engine looks up with ``getattr``:

    - ``framework_paths``: directories whose frames a failed step's traceback leaves out (the
      executor's own package is left out anyway), such as a distributed library's.
    - ``open_lanes(job, functions) -> Lanes | None``: for an executor that runs steps in the
      engine's own process and threads. Called once per run, after :meth:`start`, and only when
      no plugin wraps steps (``pipectl_wrap_step``). Returning :class:`Lanes` lets the engine
      call steps without a timeout itself, bypassing :meth:`execute`: async ones on the event
      loop, sync ones as ``job(i)`` on the lanes' threads (``functions[i]`` is step ``i``'s
      function, for the lanes to place it). Returning None (an executor that wants to see
      every attempt, such as a subclass overriding ``execute``) keeps every attempt on
      :meth:`execute`.

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


class Lanes(Protocol):
    """What ``open_lanes`` returns: the executor's threads, lent to the engine for one run.

    A lane step is a sync step the engine runs without a task or a future: a thread of the
    lanes calls the engine's :data:`LaneJob`, which runs the step's attempts (calling the
    function through :meth:`call`), records the result and hands back the next lane step it
    unblocked, so a chain of sync steps costs no thread switch per step. The engine calls
    :meth:`launch` with its lock held: it must not block."""

    def launch(self, step: int) -> None:
        """Run ``job(step)`` (and the steps it claims) on a thread, fire and forget."""

    def call(self, func: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
        """Call a lane step's function on the current (lane) thread; return or raise as it
        does. The place to time the call, to place the function's later steps."""

    def lend(self) -> None:
        """A running lane step was recorded as cancelled: its thread stays busy until the
        function returns, so allow one more thread meanwhile."""

    def reclaim(self) -> None:
        """The function of a step given up with :meth:`lend` returned: take the thread back."""

    def close(self) -> None:
        """The run ended: nothing more is launched (late lane threads may still return)."""


async def call_through_middleware(invocation: Invocation, call: Callable[[Invocation], Any]) -> Any:
    """Run ``call(invocation)`` inside the invocation's middleware chain, first one outermost.

    ``call`` returns an awaitable (an executor's own coroutine function running the step), and
    so does each middleware: ``middleware(call_next, attempt)``."""
    chain = invocation.middleware
    attempt = invocation.attempt

    def link(index: int) -> Callable[[], Any]:
        if index == len(chain):
            return lambda: call(invocation)
        middleware = chain[index]
        inner = link(index + 1)
        return lambda: middleware(inner, attempt)

    return await link(0)()

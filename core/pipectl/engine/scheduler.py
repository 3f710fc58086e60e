"""The scheduler: which step runs when, and what a step's end decides for the others.

A step starts the moment its own dependencies are done (no level barrier), up to
``max_concurrent`` at once, first come first served. The worklist (:meth:`Scheduler.complete`)
counts each step's unfinished dependencies; when a count reaches zero :meth:`Scheduler.decide`
applies the trigger rules (``all_success``, ``none_failed``, ``one_success``, ``all_done``), the
``when`` condition, skip propagation and the ``fail_fast`` stop. Every method that touches the
bookkeeping runs with the run's lock held.

A started step runs in a step task (an :class:`asyncio.Task`) or, when the executor lent lanes
(:class:`pipectl.executors.Lanes`) and the step is sync without a timeout, as a lane job on one
of its threads. Either way the runner that ends a step records it and *claims* the first step
of its own kind that the end lets start, so a chain runs in one task or one thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from pipectl.engine.attempts import AttemptRunner
from pipectl.engine.pools import Pools
from pipectl.engine.state import RunState, now, records_of
from pipectl.model import StepResult, StepStatus, Trigger
from pipectl.planning import Node

__all__ = ["Scheduler"]

_OK = StepStatus.SUCCESS
_FAILED = StepStatus.FAILED
_SKIPPED = StepStatus.SKIPPED
_CANCELLED = StepStatus.CANCELLED
_ALL_DONE = Trigger.ALL_DONE
_ALL_SUCCESS = Trigger.ALL_SUCCESS
_ONE_SUCCESS = Trigger.ONE_SUCCESS
_MISSING = object()


def _resolve_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Scheduler:
    """The worklist of one run (see the module's docstring); ``all_done`` resolves when every
    step has a terminal result."""

    def __init__(self, state: RunState, attempts: AttemptRunner):
        self.state = state
        self.attempts = attempts
        nodes = state.nodes
        n = len(nodes)
        # the run's shared lists and objects, as attributes: the worklist's hot path
        self.nodes = nodes
        self.run = state.run
        self.hooks = state.hooks
        self.logger = state.logger
        self.lock = state.lock
        self.loop = state.loop
        self.loop_thread = state.loop_thread
        self.outputs = state.outputs
        self.status = state.status
        self.completed = state.completed
        self.lane_progress = state.lane_progress
        self.limit = state.limit
        self.log_info = state.log_info
        self.log_debug = state.log_debug
        # the scheduler's own bookkeeping
        self.remaining = [len(node.deps) for node in nodes]
        self.branch_skip = [False] * n  # skipped by a condition, not because of a failure
        # steps a dependency count reaching zero does not decide: resumed ones (outputs from
        # an earlier run) and mapped steps whose items were made (gathered when those end)
        self.preloaded: set[int] = set()
        self.ready: deque[int] = deque()
        self.tasks: dict[int, asyncio.Task[None] | None] = {}
        self.lane = [False] * n  # decided in start_roots(), once the executor has started
        self.lane_running: set[int] = set()
        self.lent: set[int] = set()  # cancelled lane steps whose thread the lanes lent
        self.active = 0
        self.finished = 0
        self._index_of: dict[str, int] | None = None
        # resource pools: only when a step of the run takes one (None: no pool work at all)
        self.pools: Pools | None = None
        plan = state.plan
        if plan.spec.pools:
            needs = plan.pool_needs  # each step's (pool, weight) pairs
            if needs is None:  # once per plan; () when no step takes a pool
                made = [tuple(node.spec.pools.items()) for node in nodes]
                needs = plan.pool_needs = made if any(made) else ()
            if needs:  # a run's own copy: a mapped step's items are appended to it
                self.pools = Pools(plan.spec.pools, list(needs))
        # dynamic mapping: only when a step of the run is mapped (None: no mapping work)
        self.mapped: frozenset[int] | None = None
        self.mapping: dict[int, tuple[int, int, datetime, float]] = {}  # first, n, start, t0
        self.lane_functions: list[Any] = []
        if state.plan.mapped:
            self.mapped = frozenset(state.plan.mapped)
            # items are appended to the run's own list of nodes: the plan's stays as it is
            self.nodes = state.nodes = list(nodes)
        self.all_done: asyncio.Future[None] = self.loop.create_future()

    # -- starting -------------------------------------------------------------------------

    def start_roots(self) -> None:
        """Ask the executor for lanes, record resumed steps, and start the root steps."""
        state = self.state
        open_lanes = getattr(state.executor, "open_lanes", None)
        # lanes bypass execute(), so the middleware too: not when a plugin wraps steps
        if open_lanes is not None and not self.hooks.wraps_steps:
            # a list the engine keeps: a mapped step's items are appended to it
            self.lane_functions = [node.func for node in self.nodes]
            state.lanes = open_lanes(self.run_lane_step, self.lane_functions)
            if state.lanes is not None:
                self.lane = [not node.is_async and node.spec.timeout is None for node in self.nodes]
        with self.lock:
            if state.config.resume:
                self._preload()
            for node in state.plan.nodes:  # (not the items _preload's end may have made)
                if not node.deps and self.status[node.index] is None:
                    decided = self.decide(node.index) if node.spec.when is not None else None
                    if decided is None and node.spec.map is not None:
                        self._start_mapped(node.index)  # mapped over a params reference
                    elif decided is None:
                        self._schedule(node.index)
                    else:
                        self.complete(node.index, decided, ran=False)
            if not self.nodes:
                self.all_done.set_result(None)

    def _preload(self) -> None:
        """Resume: record the steps whose outputs come from an earlier run as succeeded, in
        plan order, without running them; what they unblock starts as usual."""
        config = self.state.config
        resume = config.resume
        source = config.resumed_from
        index = {node.spec.name: node.index for node in self.nodes}
        self.preloaded.update(index[n] for n in resume if n in index)
        at = now()
        for i in sorted(self.preloaded):
            name = self.nodes[i].spec.name
            self.outputs[i] = resume[name]
            self.complete(
                i,
                StepResult(
                    name,
                    _OK,
                    output=resume[name],
                    started_at=at,
                    finished_at=at,
                    reason=f"output from run {source} (resumed)",
                    resumed_from=source,
                    records=records_of(resume[name]),
                ),
                ran=False,
            )

    def _schedule(self, i: int) -> None:
        pools = self.pools
        if pools is not None and pools.needs[i] and not pools.acquire(i):
            self._log_pool_wait(i)
            return  # waits for its pools (holding no slot): complete() hands them over
        if self.active < self.limit:
            self.active += 1
            self._launch(i)
        else:
            self.ready.append(i)

    def _log_pool_wait(self, i: int) -> None:
        if self.log_debug:
            pools = self.pools
            assert pools is not None
            self.logger.debug(
                "step_waiting_for_pool",
                run_id=self.run.run_id,
                step=self.nodes[i].spec.name,
                pools=dict(pools.needs[i]),
                free={name: pools.free[name] for name, _ in pools.needs[i]},
                waiting=len(pools.waiting),
            )

    def _launch(self, i: int) -> None:
        """Start step ``i`` (its slot already counted) as a lane job or in a task of its own."""
        if self.lane[i]:
            self.lane_running.add(i)
            lanes = self.state.lanes
            assert lanes is not None
            lanes.launch(i)
        elif threading.get_ident() == self.loop_thread:
            self.tasks[i] = self.loop.create_task(self._step_task(i))
        else:
            self.tasks[i] = None
            self.loop.call_soon_threadsafe(self._start_task, i)

    def _start_task(self, i: int) -> None:
        with self.lock:
            if i in self.tasks and self.tasks[i] is None:
                self.tasks[i] = self.loop.create_task(self._step_task(i))

    # -- the runners: a step task, a lane job ---------------------------------------------

    async def _step_task(self, i: int) -> None:
        """Run step ``i``, then every step its end lets this task claim (a chain: no new task)."""
        chained = 0
        run_step = self.attempts.run
        while True:
            result = await run_step(i)
            with self.lock:
                if self.status[i] is not None:  # settled meanwhile (cancelled)
                    return
                if result.status is _OK:
                    self.outputs[i] = result.output
                nxt = self.complete(i, result, ran=True, claim="task")
            if nxt is None:
                return
            i = nxt
            chained += 1
            if chained % 64 == 0:
                await asyncio.sleep(0)  # let the loop breathe in a long chain of instant steps

    def run_lane_step(self, i: int) -> int | None:
        """The lane job (:data:`pipectl.executors.LaneJob`): run sync step ``i`` on this
        thread, record it, and return the next lane step it claimed."""
        result: StepResult | None = None
        if self.status[i] is None:
            try:
                result = self.attempts.run_in_thread(i)
            except BaseException as exc:  # noqa: BLE001 - a bug must not lose the step
                result = self.attempts.failed(self.nodes[i].spec, exc, None, time.perf_counter(), 0)
        with self.lock:
            if self.status[i] is not None:  # recorded as cancelled (before or while it ran)
                if i in self.lent:
                    self.lent.discard(i)
                    lanes = self.state.lanes
                    assert lanes is not None
                    lanes.reclaim()
                return None
            assert result is not None
            if result.status is _OK:
                self.outputs[i] = result.output
            self.lane_progress.pop(i, None)
            return self.complete(i, result, ran=True, claim="lane")

    # -- deciding ---------------------------------------------------------------------------

    def decide(self, i: int) -> StepResult | None:
        """Once all of step ``i``'s dependencies ended: None to run it, or its terminal result.

        A step skipped by its ``when`` condition, and the ``all_success`` steps after it, are
        *branch* skips (``branch_skip``): ``none_failed`` and ``one_success`` steps still run
        after them, while a skip caused by a failure skips those too."""
        node = self.nodes[i]
        spec = node.spec
        state = self.state
        if state.interrupted:
            return StepResult(spec.name, _CANCELLED, reason="the run was cancelled")
        trigger = spec.trigger
        if trigger is not _ALL_DONE:
            decided = (
                self._all_success(node)
                if trigger is _ALL_SUCCESS
                else self._none_failed(node, trigger is _ONE_SUCCESS)
            )
            if decided is not None:
                return decided
            if state.stopping is not None:
                return StepResult(spec.name, _CANCELLED, reason=f"not started: {state.stopping}")
        if spec.when is not None:
            return self._condition(node)
        return None

    def _all_success(self, node: Node) -> StepResult | None:
        spec = node.spec
        cancelled_dep = None
        for d in node.deps:
            status = self.status[d]
            if status is _OK:
                continue
            if status is _FAILED:
                if self.nodes[d].spec.allow_failure:
                    continue
                return StepResult(
                    spec.name, _SKIPPED, reason=f"upstream step {self.nodes[d].spec.name!r} failed"
                )
            if status is _SKIPPED:
                self.branch_skip[node.index] = self.branch_skip[d]
                return StepResult(
                    spec.name, _SKIPPED, reason=self.run.steps[self.nodes[d].spec.name].reason
                )
            cancelled_dep = cancelled_dep or self.nodes[d].spec.name
        if cancelled_dep is not None:
            return StepResult(
                spec.name, _CANCELLED, reason=f"upstream step {cancelled_dep!r} was cancelled"
            )
        return None

    def _none_failed(self, node: Node, one_success: bool) -> StepResult | None:
        spec = node.spec
        succeeded = False
        cancelled_dep = None
        for d in node.deps:
            status = self.status[d]
            name = self.nodes[d].spec.name
            if status is _OK:
                succeeded = True
            elif status is _FAILED:
                if not self.nodes[d].spec.allow_failure:
                    return StepResult(spec.name, _SKIPPED, reason=f"upstream step {name!r} failed")
            elif status is _SKIPPED:
                if not self.branch_skip[d]:
                    return StepResult(spec.name, _SKIPPED, reason=self.run.steps[name].reason)
            else:
                cancelled_dep = cancelled_dep or name
        if cancelled_dep is not None:
            return StepResult(
                spec.name, _CANCELLED, reason=f"upstream step {cancelled_dep!r} was cancelled"
            )
        if one_success and not succeeded and node.deps:
            self.branch_skip[node.index] = True
            return StepResult(
                spec.name, _SKIPPED, reason="no upstream step succeeded (trigger one_success)"
            )
        return None

    def _condition(self, node: Node) -> StepResult | None:
        """Evaluate the step's ``when``: None to run it, SKIPPED when false, FAILED when it
        cannot be evaluated."""
        from pipectl.binding import make_scope
        from pipectl.expr import ExpressionError

        spec = node.spec
        when = spec.when
        assert when is not None
        scope = make_scope(self.index_of, self.outputs, self.state.params, self.status)
        try:
            value = when.holds(scope)
        except ExpressionError as exc:
            at = now()
            return StepResult(
                spec.name, _FAILED, error=f"when: {when.text}: {exc}", started_at=at, finished_at=at
            )
        if value:
            return None
        self.branch_skip[node.index] = True
        values = when.explain(scope)
        return StepResult(
            spec.name,
            _SKIPPED,
            reason=f"condition is false: {when.text}" + (f" ({values})" if values else ""),
        )

    @property
    def index_of(self) -> dict[str, int]:
        if self._index_of is None:
            self._index_of = {node.spec.name: node.index for node in self.nodes}
        return self._index_of

    # -- the worklist -------------------------------------------------------------------------

    def complete(
        self, i: int, result: StepResult, ran: bool, claim: str | None = None
    ) -> int | None:
        """Record step ``i``'s terminal result and start what its end unblocks.

        With ``claim`` ("task" from a step task, "lane" from a lane job) the caller keeps
        the first unblocked step of its own kind and gets its index back, to run it next
        without a new task or thread hand-off (a chain runs in one task or one thread).
        """
        claimed: int | None = None
        if ran and self.tasks.pop(i, _MISSING) is _MISSING:
            self.lane_running.discard(i)
        if ran:
            self.active -= 1
        work = [(i, result)]
        run = self.run
        lane = self.lane
        claim_lane = claim == "lane"
        state = self.state
        pools = self.pools
        mapped = self.mapped
        while work:
            j, res = work.pop()
            node = self.nodes[j]
            spec = node.spec
            self.status[j] = res.status
            run.steps[spec.name] = res
            self.finished += 1
            if res.status is _OK:
                self.completed.append(j)
            if pools is not None and j in pools.holding:  # its pools go to the waiters
                granted = pools.release(j)
                if granted:
                    self.ready.extend(granted)
            self.hooks.step_finish(run=run, step=spec, result=res)
            if self.log_info:
                extra = {
                    k: v
                    for k, v in (
                        ("error", res.error),
                        ("reason", res.reason),
                        ("records", res.records),
                        ("cached_from", res.cached_from),
                    )
                    if v is not None
                }
                self.logger.info(
                    "step_finished",
                    run_id=run.run_id,
                    step=spec.name,
                    status=str(res.status),
                    attempts=res.attempts,
                    duration_ms=round(res.duration_ms, 3),
                    **extra,
                )
            if res.status is _FAILED and state.fail_fast and not spec.allow_failure:
                self.stop(f"fail_fast stopped the run after step {spec.name!r} failed")
            for k in node.dependents:
                self.remaining[k] -= 1
                if self.remaining[k] == 0:
                    if k in self.preloaded:  # resumed, or a mapped step: its last item ended
                        if mapped is not None and k in self.mapping:
                            work.append((k, self._gather(k)))
                        continue
                    decided = self.decide(k)
                    if decided is not None:
                        work.append((k, decided))
                    elif mapped is not None and k in mapped:
                        self._expand(k, work)  # its items join ``ready`` (or their pools)
                    elif pools is not None and pools.needs[k] and not pools.acquire(k):
                        self._log_pool_wait(k)  # waits for its pools, holding no slot
                    else:  # first come, first served: behind the steps already waiting
                        self.ready.append(k)
                        if self.log_debug:
                            self.logger.debug(
                                "step_ready",
                                run_id=run.run_id,
                                step=self.nodes[k].spec.name,
                                after=spec.name,
                                running=self.active,
                                limit=self.limit,
                                waiting=len(self.ready),
                            )
        while self.ready and self.active < self.limit:
            k = self.ready.popleft()
            self.active += 1
            if claim is not None and claimed is None and lane[k] is claim_lane:
                claimed = k
            else:
                self._launch(k)
        if claimed is not None:
            if claim_lane:
                self.lane_running.add(claimed)
            else:
                self.tasks[claimed] = asyncio.current_task()
        if self.finished == len(self.nodes) and not self.all_done.done():
            if threading.get_ident() == self.loop_thread:
                self.all_done.set_result(None)
            else:
                self.loop.call_soon_threadsafe(_resolve_none, self.all_done)
        return claimed

    # -- dynamic mapping (see pipectl.engine.mapping) ---------------------------------------------

    def _start_mapped(self, i: int) -> None:
        """A mapped step that is a root (mapped over a params reference): make its items,
        record what that ends (an empty list, a value that is not a list), start the rest."""
        work: list[tuple[int, StepResult]] = []
        self._expand(i, work)
        for j, res in work:
            self.complete(j, res, ran=False)
        while self.ready and self.active < self.limit:
            k = self.ready.popleft()
            self.active += 1
            self._launch(k)

    def _expand(self, i: int, work: list[tuple[int, StepResult]]) -> None:
        """The dependencies of mapped step ``i`` ended: make one node per item of its list,
        each depending on nothing and with ``i`` as its one dependent, and queue them like
        unblocked steps (``ready``, or their pools). Items an earlier run completed (resume)
        and the step's own end, when it has no item or its list is not one, go on ``work``."""
        from pipectl.engine.mapping import ItemBinder, ItemSpecs, context_names, items_of
        from pipectl.planning import Node

        node = self.nodes[i]
        spec = node.spec
        param = spec.map
        assert param is not None
        started_at = now()
        t0 = time.perf_counter()
        try:
            base = node.binder.bind(self.outputs, self.state.params, None, self.status)
        except Exception as exc:  # noqa: BLE001 - an inputs reference could not be read
            work.append((i, self.attempts.failed(spec, exc, started_at, t0, 0)))
            return
        items = items_of(spec, base.get(param))
        if isinstance(items, str):
            at = now()
            work.append(
                (i, StepResult(spec.name, _FAILED, error=items, started_at=at, finished_at=at))
            )
            return
        n = len(items)
        first = len(self.nodes)
        self.mapping[i] = (first, n, started_at, t0)
        self.preloaded.add(i)  # gathered, not decided, when its last item ends
        if n == 0:
            work.append((i, self._gather(i)))
            return
        self.remaining[i] = n
        specs = ItemSpecs(spec, n)
        contexts = context_names(node.binder)
        hidden = getattr(node.binder, "hidden", ())
        for name in contexts:
            base.pop(name, None)
        func = node.func
        is_async_ = node.is_async
        lane = self.lane[i]
        dependents = (i,)
        nodes, status, outputs = self.nodes, self.status, self.outputs
        assert isinstance(nodes, list)  # the run's own list (see __init__)
        remaining, branch_skip, lanes = self.remaining, self.branch_skip, self.lane
        pools = self.pools
        need = pools.needs[i] if pools is not None else ()
        needs: list[Any] = []
        if pools is not None:
            assert isinstance(pools.needs, list)
            needs = pools.needs
        resumed = self._resumed_items(spec.name, n)
        source = self.state.config.resumed_from
        for k, item in enumerate(items):
            j = first + k
            item_node = Node(
                j,
                specs.make(k),
                func,
                ItemBinder(base, param, item, contexts, hidden),  # type: ignore[arg-type]
                (),
                is_async_,
                dependents,
            )
            item_node.driver_reads = True  # the mapped step's result is made in the driver
            nodes.append(item_node)
            status.append(None)
            outputs.append(None)
            remaining.append(0)
            branch_skip.append(False)
            lanes.append(lane)
            if self.lane_functions:
                self.lane_functions.append(func)
            if pools is not None:
                needs.append(need)
            if k in resumed:
                value = resumed[k]
                outputs[j] = value
                at = now()
                work.append(
                    (
                        j,
                        StepResult(
                            item_node.spec.name,
                            _OK,
                            output=value,
                            started_at=at,
                            finished_at=at,
                            reason=f"output from run {source} (resumed)",
                            resumed_from=source,
                        ),
                    )
                )
            elif need and pools is not None and not pools.acquire(j):
                self._log_pool_wait(j)
            else:
                self.ready.append(j)
        if self.log_info:
            self.logger.info(
                "step_mapped",
                run_id=self.run.run_id,
                step=spec.name,
                items=n,
                resumed=len(resumed) or None,
            )

    def _resumed_items(self, name: str, n: int) -> dict[int, Any]:
        """The items of mapped step ``name`` an earlier run completed (resume), when it had
        the same number of items: index -> output."""
        found = self.state.shared_state.pop(("map-items", name), None)
        if not found:
            return {}
        count, outputs = found
        return outputs if count == n else {}

    def _gather(self, i: int) -> StepResult:
        """Mapped step ``i``'s result, once each of its items ended."""
        from pipectl.engine.mapping import gather

        first, n, started_at, t0 = self.mapping[i]
        steps = self.run.steps
        nodes = self.nodes
        items = [steps[nodes[j].spec.name] for j in range(first, first + n)]
        result = gather(
            self.nodes[i].spec,
            items,
            self.outputs[first : first + n],
            started_at,
            now(),
            (time.perf_counter() - t0) * 1000.0,
            self.state.stopping,
        )
        if result.status is _OK:
            self.outputs[i] = result.output
        return result

    # -- stopping -------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Start nothing new (but ``all_done`` steps) and cancel every running step."""
        state = self.state
        if state.stopping is not None:
            return
        state.stopping = reason
        state.stop_event.set()
        current = asyncio.current_task() if threading.get_ident() == self.loop_thread else None
        for i, task in list(self.tasks.items()):
            if task is not None and task is not current:
                self.loop.call_soon_threadsafe(self._cancel_task, i, task)
        # a sync step cannot be interrupted: it is recorded as cancelled now, and its thread's
        # result is dropped when it returns
        for k in list(self.lane_running):
            self.loop.call_soon_threadsafe(self._cancel_lane, k)
        waiting, self.ready = list(self.ready), deque()
        if self.pools is not None:  # and those waiting for their pools
            waiting += self.pools.drop_waiting()
        for k in waiting:
            self.loop.call_soon_threadsafe(self._cancel_waiting, k)

    def interrupt(self) -> None:
        """The run was cancelled (Ctrl-C): stop, and cancel even ``all_done`` steps."""
        with self.lock:
            self.state.interrupted = True
            self.stop("the run was cancelled")

    def _cancel_task(self, i: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(i) is not task or self.status[i] is not None:
            return  # the task moved on (or ended) since the stop was decided
        task.cancel()
        # a task cancelled before its first step never enters it: settle it when it ends
        task.add_done_callback(lambda _t: self._settle_cancelled(i))

    def _settle_cancelled(self, i: int) -> None:
        with self.lock:
            if self.status[i] is None:
                self.complete(
                    i,
                    StepResult(self.nodes[i].spec.name, _CANCELLED, reason=self.state.stopping),
                    ran=True,
                )

    def _cancel_lane(self, k: int) -> None:
        with self.lock:
            if self.status[k] is None and k in self.lane_running:
                # its thread stays busy until the function returns: the lanes lend one more
                lanes = self.state.lanes
                assert lanes is not None
                lanes.lend()
                self.lent.add(k)
                progress: Any = self.lane_progress.get(k, (None, None, 0))
                started_at, t0, attempts = progress
                self.complete(
                    k,
                    StepResult(
                        self.nodes[k].spec.name,
                        _CANCELLED,
                        started_at=started_at,
                        finished_at=now() if started_at else None,
                        duration_ms=(time.perf_counter() - t0) * 1000.0 if t0 else 0.0,
                        attempts=attempts,
                        reason=self.state.stopping,
                    ),
                    ran=True,
                )

    def _cancel_waiting(self, k: int) -> None:
        with self.lock:
            if self.status[k] is None:
                decided = self.decide(k)
                if decided is None:  # an all_done step: it still runs
                    self._schedule(k)
                else:
                    self.complete(k, decided, ran=False)

"""Resource pools: never more steps (weighted) in a pool at once than its size.

A pipeline declares pools (``PipelineSpec.pools``: name -> size) and a step takes some while it
runs (``StepSpec.pools``: name -> weight). :class:`Pools` is one run's bookkeeping, used by the
:class:`~pipectl.engine.scheduler.Scheduler` under the run's lock, and only when a step of the
run takes a pool: a run without one never builds it, and its hot path does no pool work.

- A step whose dependencies ended first takes its pools, then a ``max_concurrent`` slot: a step
  waiting for a pool holds no slot, and one holding its pools waits only for a slot, which a
  running step always frees (no deadlock).
- All or nothing: a step takes every pool it needs at once, or none, so two steps wanting
  ``db`` and ``api`` cannot each hold one and wait for the other.
- First come, first served per pool: a waiter is served before any later one wanting one of
  the same pools, even a later one that would fit (no starvation of heavy steps); waiters on
  other pools go on.
- A step keeps its pools across its retries (and their backoff waits) and gives them back when
  it ends, whatever its outcome.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

__all__ = ["Pools"]

_NONE: list[int] = []  # what release() returns when it lets no waiter in (never changed)


class Pools:
    """One run's pools: ``free`` room per pool, the steps ``waiting`` (in order) and those
    ``holding`` their pools. ``needs[i]``: step ``i``'s pools as ``(name, weight)`` pairs
    (empty: it takes none)."""

    __slots__ = ("free", "holding", "needs", "waiters_on", "waiting")

    def __init__(self, sizes: Mapping[str, int], needs: Sequence[tuple[tuple[str, int], ...]]):
        self.free: dict[str, int] = dict(sizes)
        self.needs = needs
        self.waiting: deque[int] = deque()
        self.waiters_on: dict[str, int] = dict.fromkeys(sizes, 0)
        self.holding: set[int] = set()

    def _fits(self, need: tuple[tuple[str, int], ...]) -> bool:
        free = self.free
        for name, weight in need:
            if free[name] < weight:
                return False
        return True

    def _take(self, i: int, need: tuple[tuple[str, int], ...]) -> None:
        free = self.free
        for name, weight in need:
            free[name] -= weight
        self.holding.add(i)

    def acquire(self, i: int) -> bool:
        """Take step ``i``'s pools now (True), or queue it behind the earlier waiters (False:
        :meth:`release` hands them over later)."""
        holding = self.holding
        if i in holding:
            return True
        need = self.needs[i]
        free = self.free
        waiters_on = self.waiters_on
        if len(need) == 1:  # one pool (most steps): no second loop
            name, weight = need[0]
            if waiters_on[name] or free[name] < weight:
                self.waiting.append(i)
                waiters_on[name] += 1
                return False
            free[name] -= weight
            holding.add(i)
            return True
        for name, weight in need:  # plain loops: this runs once per step of a pool
            if waiters_on[name] or free[name] < weight:
                break
        else:
            for name, weight in need:
                free[name] -= weight
            self.holding.add(i)
            return True
        self.waiting.append(i)
        for name, _ in need:
            waiters_on[name] += 1
        return False

    def release(self, i: int) -> list[int]:
        """Give back step ``i``'s pools (if it holds them); return the waiting steps that
        took theirs as a result, in the order they waited."""
        if i not in self.holding:
            return _NONE
        self.holding.discard(i)
        free = self.free
        for name, weight in self.needs[i]:
            free[name] += weight
        return self._grant() if self.waiting else _NONE

    def _grant(self) -> list[int]:
        granted: list[int] = []
        if not self.waiting:
            return granted
        free = self.free
        blocked: set[str] = set()  # pools an earlier waiter is still waiting for (FIFO)
        room = {name for name, left in free.items() if left > 0}
        waiters_on = self.waiters_on
        for i in self.waiting:
            if not room - blocked:
                break  # nothing left that a later waiter could take
            need = self.needs[i]
            if any(name in blocked for name, _ in need) or not self._fits(need):
                blocked.update(name for name, _ in need)
                continue
            self._take(i, need)
            granted.append(i)
            for name, _ in need:
                waiters_on[name] -= 1
                if free[name] <= 0:
                    room.discard(name)
        for i in granted:
            if self.waiting[0] == i:
                self.waiting.popleft()
            else:
                self.waiting.remove(i)
        return granted

    def drop_waiting(self) -> list[int]:
        """Empty the queue (the run stops): the steps that were waiting, in order."""
        waiting = list(self.waiting)
        self.waiting.clear()
        for name in self.waiters_on:
            self.waiters_on[name] = 0
        return waiting

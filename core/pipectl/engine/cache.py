"""The step cache: a cached step's output taken from an earlier run instead of calling it.

A step with a cache policy (:class:`~pipectl.model.Cache`, ``cache:`` in a file) is looked up
just before its first attempt, once its arguments are bound. Its *cache key* is an HMAC,
under the result store's key (:meth:`pipectl.tracking.ResultStore.cache_key`), of:

- the step's name and fingerprint (:func:`pipectl.tracking.resume.fingerprint`: its type,
  code, options, dependencies, inputs and condition);
- what it is called with: its bound arguments but ``ctx`` and ``params``, pickled with sets
  sorted (so a set of strings hashes the same in every process); or, with a ``key``
  function, that function's value for ``(inputs, params)`` instead;
- the params it can see: all the run's params when it takes ``ctx`` or ``params`` (it may
  read any of them), else none but those bound to its arguments (already in its inputs).

An entry of the store under that key (authenticated before it is unpickled, never older than
the policy's ``expires``) is a *hit*: the step is not called and ends ``success`` with the
entry's output and :attr:`~pipectl.model.StepResult.cached_from` set to the run that stored
it. Otherwise it is a *miss*: the step runs, and when it succeeds its output is stored under
the key (not when it cannot be pickled or holds a secret param's value). ``--no-cache``
(``RunConfig.cache=False``) neither looks up nor stores; ``--refresh STEP`` runs the step and
stores its new output. Each lookup and store is a ``pipectl_step_cache`` event.

The cache lives in the run's tracker's result store (``RunConfig.result_store``): a run
without a tracker, or whose tracker's store cannot cache, runs its cached steps every time
(their misses say why).
"""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipectl.model import CacheEvent, StepResult, StepStatus

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.engine.state import RunState
    from pipectl.planning import Node

__all__ = ["StepCache", "input_bytes"]

_OK = StepStatus.SUCCESS


_EMPTY_SET, _FROZENSET = pickle.EMPTY_SET, pickle.FROZENSET


def _canonical(value: Any) -> Any:
    """``value`` with every set and frozenset (inside lists, tuples and dicts) made a sorted
    tuple: a set's order follows string hashing, which changes from one process to the next."""
    kind = type(value)
    if kind is set or kind is frozenset:
        items = [_canonical(v) for v in value]
        items.sort(key=lambda v: pickle.dumps(v, protocol=5))
        return ("<set>" if kind is set else "<frozenset>", tuple(items))
    if kind is list or kind is tuple:
        return kind([_canonical(v) for v in value])
    if kind is dict:
        return {k: _canonical(v) for k, v in value.items()}
    return value


def input_bytes(value: Any) -> bytes:
    """``value`` as bytes that are the same for equal values in any process: its pickle, or,
    when that may hold a set (their order changes from one process to the next), the pickle of
    its :func:`_canonical` form. Raises what pickling raises for a value that cannot be
    pickled. (Sets inside other objects keep their order: at worst a cache miss.)"""
    data = pickle.dumps(value, protocol=5)
    if _EMPTY_SET in data or _FROZENSET in data:  # a set, or bytes that look like one
        data = pickle.dumps(_canonical(value), protocol=5)
    return data


class StepCache:
    """The cache of one run's steps (see the module's docstring); made only when a step of the
    run has a cache policy."""

    def __init__(self, state: RunState):
        config = state.config
        self.state = state
        self.enabled = config.cache
        self.refresh = frozenset(config.refresh)
        store = config.result_store if config.cache else None
        if store is not None and not all(
            hasattr(store, name) for name in ("cache_key", "get_cached", "put_cached")
        ):
            store = None
            self.unavailable = (
                f"the tracker's result store ({type(config.result_store).__name__}) cannot cache"
            )
        else:
            self.unavailable = (
                "no cache (--no-cache)"
                if not config.cache
                else "no result store to cache in (the run has no tracker)"
            )
        self.store = store
        # each step's fingerprint, kept with the plan: made once per definition, not per run
        plan = state.plan
        found = plan.cache_fingerprints
        if found is None:
            found = plan.cache_fingerprints = {}
        self.fingerprints: dict[Any, str] = found

    def lookup(
        self, node: Node, kwargs: dict[str, Any], started_at: datetime, t0: float
    ) -> tuple[StepResult | None, str | None]:
        """(the step's result when the cache holds its output, else None; the key to store its
        output under when it succeeds, else None)."""
        spec = node.spec
        store = self.store
        if store is None:
            self.event(node, CacheEvent("miss", reason=self.unavailable))
            return None, None
        policy = spec.cache
        assert policy is not None
        inputs = node.binder.received(kwargs)
        params = self.state.params if node.binder.hidden else {}
        try:
            if policy.key is not None:
                value = policy.key(dict(inputs), dict(self.state.params))
                if value is None:
                    self.event(node, CacheEvent("miss", reason="the key function returned None"))
                    return None, None
                what = input_bytes(("key", value))
            else:
                what = input_bytes(("inputs", inputs))
            material = b"\x1f".join(
                (
                    b"pipectl-step-cache-v1",
                    spec.name.encode("utf-8", "surrogatepass"),
                    self.fingerprint(node).encode(),
                    what,
                    input_bytes(dict(params)) if params else b"",
                )
            )
            key = store.cache_key(material)
        except Exception as exc:  # noqa: BLE001 - unhashable inputs: the step just runs
            why = f"{type(exc).__name__}: {exc}"
            reason = (
                f"the key function failed ({why})"
                if policy.key is not None
                else f"its inputs cannot be hashed ({why}); give its cache a key function"
            )
            self.event(node, CacheEvent("miss", reason=reason))
            return None, None
        if spec.name in self.refresh:
            self.event(node, CacheEvent("miss", key=key, reason="refresh"))
            return None, key
        try:
            found, output, header = store.get_cached(key)
        except Exception as exc:  # noqa: BLE001 - an unreadable entry: the step runs
            self.event(
                node,
                CacheEvent("miss", key=key, reason=f"unreadable: {type(exc).__name__}: {exc}"),
            )
            return None, key
        if not found:
            self.event(node, CacheEvent("miss", key=key, reason="not cached yet"))
            return None, key
        stored = float(header.get("stored_at") or 0.0)
        stored_at = datetime.fromtimestamp(stored, UTC)
        source = str(header.get("run_id") or "")
        if policy.expires is not None and time.time() - stored > policy.expires:
            self.event(
                node,
                CacheEvent(
                    "miss", key=key, reason="expired", cached_from=source, stored_at=stored_at
                ),
            )
            return None, key
        self.event(node, CacheEvent("hit", key=key, cached_from=source, stored_at=stored_at))
        from pipectl.engine.state import now, records_of

        return StepResult(
            spec.name,
            _OK,
            output=output,
            started_at=started_at,
            finished_at=now(),
            duration_ms=(time.perf_counter() - t0) * 1000.0,
            attempts=0,
            records=records_of(output),
            cached_from=source,
            received=inputs,
        ), key

    def store_output(self, node: Node, key: str, output: Any) -> None:
        """Store a cached step's output under ``key`` (after it succeeded); an output that
        cannot be pickled, holds a secret, or that the store cannot take is not stored (the
        next run calls the step again) and the event says why."""
        store = self.store
        assert store is not None
        state = self.state
        try:
            blob = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            self.event(
                node,
                CacheEvent(
                    "miss",
                    key=key,
                    reason=f"not stored: its output cannot be pickled: {type(exc).__name__}",
                ),
            )
            return
        secrets = state.secrets
        if secrets and any(v.encode("utf-8", "surrogatepass") in blob for v in secrets):
            self.event(
                node,
                CacheEvent("miss", key=key, reason="not stored: its output holds a secret"),
            )
            return
        try:
            stored = store.put_cached(key, blob, run_id=state.run.run_id, step=node.spec.name)
        except Exception as exc:  # noqa: BLE001 - a full disk: the step's result stands
            self.event(
                node,
                CacheEvent("miss", key=key, reason=f"not stored: {type(exc).__name__}: {exc}"),
            )
            return
        from pipectl import faults

        faults.reach("cache.after-store")
        self.event(
            node,
            CacheEvent(
                "stored",
                key=key,
                cached_from=state.run.run_id,
                stored_at=datetime.fromtimestamp(stored, UTC),
            ),
        )

    def fingerprint(self, node: Node) -> str:
        """The step's fingerprint, memoised with the plan: by index for the plan's steps, by
        mapped step for the items of one (made at run time, their indices vary; every item of a
        step has the same fingerprint: their specs differ only in name and index)."""
        spec = node.spec
        memo: Any = node.index if spec.map_of is None else ("items", spec.map_of)
        found = self.fingerprints.get(memo)
        if found is None:
            from pipectl.tracking.resume import fingerprint

            found = self.fingerprints[memo] = fingerprint(spec)
        return found

    def event(self, node: Node, event: CacheEvent) -> None:
        """``pipectl_step_cache`` and the log line of a lookup or a store."""
        state = self.state
        hooks = state.hooks
        if hooks.step_cache_listened:
            with state.lock:
                hooks.step_cache(run=state.run, step=node.spec, event=event)
        logger = state.logger
        if event.kind == "hit":
            if state.log_info:
                logger.info(
                    "step_cache_hit",
                    run_id=state.run.run_id,
                    step=node.spec.name,
                    cached_from=event.cached_from,
                )
        elif state.log_debug:
            logger.debug(
                f"step_cache_{event.kind}",
                run_id=state.run.run_id,
                step=node.spec.name,
                reason=event.reason,
            )

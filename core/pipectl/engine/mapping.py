"""Dynamic mapping: a step with ``map: NAME`` runs once per item of the list bound to its
parameter ``NAME``.

The :class:`~pipectl.engine.scheduler.Scheduler` owns the semantics; this module holds what
it builds for them, so the scheduler's hot path stays as it was for runs without a mapped step:

- :func:`items_of`: the value mapped over, checked and made a list (or an error message);
- :class:`ItemSpecs`: the :class:`~pipectl.model.StepSpec` of each item (``fetch[3]``, with
  ``map_of``, ``map_index`` and ``map_count`` set), made by copying the mapped step's slots:
  a tenth of what ``attrs.evolve`` costs, for 10,000 items;
- :class:`ItemBinder`: an item's arguments, those of the mapped step bound once, the item in
  the mapped parameter, the item's own ``ctx``;
- :func:`gather`: the mapped step's result once every item ended (its output the items'
  outputs in item order; failed items fail it, or hold a :class:`~pipectl.model.MapItemFailed`
  under ``allow_failure``).

Each item is a node of its own, appended to the run's nodes when the mapped step's
dependencies ended: it has no dependency, and the mapped step is its one dependent. So items
take ``max_concurrent`` slots, pools, lanes or tasks, retries, timeouts, hooks and tracking as
steps do, and the mapped step ends when its last item does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any

import attrs

from pipectl.binding import CTX
from pipectl.model import MapItemFailed, StepResult, StepSpec, StepStatus

__all__ = ["ItemBinder", "ItemSpecs", "context_names", "gather", "items_of"]

_OK = StepStatus.SUCCESS
_FAILED = StepStatus.FAILED
_CANCELLED = StepStatus.CANCELLED

# the slots of StepSpec, with their descriptors' setters (copying an item's spec)
_SLOTS = tuple(a.name for a in attrs.fields(StepSpec))


def items_of(spec: StepSpec, value: Any) -> list[Any] | str:
    """The items of ``value`` (what the mapped parameter is bound to) as a list, or the error
    message when it is not a list (a tuple or another sized iterable is made a list; a string,
    bytes or a mapping are refused: mapping over one is almost always a mistake)."""
    if type(value) is list:
        return value
    if (
        isinstance(value, Sized)
        and isinstance(value, Iterable)
        and not isinstance(value, (str, bytes, bytearray, Mapping))
    ):
        return list(value)
    return (
        f"step {spec.name!r} maps over its parameter {spec.map!r}, which must be a list "
        f"(or a tuple), got {type(value).__name__}"
    )


class ItemSpecs:
    """Makes the specs of one mapped step's items (see the module's docstring)."""

    __slots__ = ("count", "name", "setters")

    def __init__(self, spec: StepSpec, count: int):
        values = {name: getattr(spec, name) for name in _SLOTS}
        # what an item does not inherit: it is not mapped itself, its condition was decided by
        # the mapped step, and rollbacks are the mapped step's business
        values.update(map=None, when=None, rollback=None, map_of=spec.name, map_count=count)
        del values["name"], values["map_index"]
        members = StepSpec.__dict__
        self.setters = tuple((members[name].__set__, value) for name, value in values.items())
        self.name = spec.name
        self.count = count

    def make(self, index: int) -> StepSpec:
        item = object.__new__(StepSpec)
        for setter, value in self.setters:
            setter(item, value)
        object.__setattr__(item, "name", f"{self.name}[{index}]")
        object.__setattr__(item, "map_index", index)
        return item


class ItemBinder:
    """An item's arguments: the mapped step's, bound once, with the item in the mapped
    parameter and the item's own ``ctx`` (the :class:`~pipectl.binding.Binder` interface the
    attempt runner uses)."""

    __slots__ = ("base", "contexts", "hidden", "item", "param", "refs")

    def __init__(
        self, base: dict[str, Any], param: str, item: Any, contexts: tuple[str, ...], hidden: Any
    ):
        self.base = base
        self.param = param
        self.item = item
        self.contexts = contexts
        self.hidden = hidden
        self.refs = ()

    def bind(
        self, outputs: list[Any], params: Any, ctx: Any, status: list[Any] | None = None
    ) -> dict[str, Any]:
        kwargs = self.base.copy()
        kwargs[self.param] = self.item
        for name in self.contexts:
            kwargs[name] = ctx
        return kwargs

    def received(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        hidden = self.hidden
        return kwargs if not hidden else {k: v for k, v in kwargs.items() if k not in hidden}


def context_names(binder: Any) -> tuple[str, ...]:
    """The parameters of a step that receive its ``ctx``."""
    return tuple(name for name, kind, _ in getattr(binder, "plan", ()) if kind == CTX)


def gather(
    spec: StepSpec,
    items: list[StepResult],
    outputs: list[Any],
    started_at: datetime,
    finished_at: datetime,
    duration_ms: float,
    stopping: str | None,
) -> StepResult:
    """The mapped step's result once each of its ``items`` ended (``outputs``: theirs, in
    order): SUCCESS with the list of outputs; FAILED when an item failed (naming the items
    and the first error) unless the step allows failure, then SUCCESS with a
    :class:`~pipectl.model.MapItemFailed` in each failed item's slot; CANCELLED when an item
    was cancelled (the run stopped) and none failed."""
    n = len(items)
    failed = [r for r in items if r.status is not _OK and r.status is not _CANCELLED]
    cancelled = [r for r in items if r.status is _CANCELLED]
    every = tuple(items)

    def result(status: StepStatus, **fields: Any) -> StepResult:
        return StepResult(
            spec.name,
            status,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=duration_ms,
            items=every,
            **fields,
        )

    if failed and not spec.allow_failure:
        first = failed[0]
        names = ", ".join(r.step_name for r in failed[:5]) + (
            f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        )
        error = f"{len(failed)} of {n} items failed ({names}); {first.step_name}: {first.error}"
        return result(
            _FAILED,
            error=error,
            exception=first.exception,
            traceback=first.traceback,
        )
    if cancelled:
        return result(
            _CANCELLED,
            reason=f"{len(cancelled)} of {n} items cancelled"
            + (f": {stopping}" if stopping else ""),
        )
    if failed:  # allowed to fail: the failed items' slots say so
        output = list(outputs)
        for r in failed:
            index = r.step_name.rpartition("[")[2][:-1]
            output[int(index)] = MapItemFailed(int(index), r.error or str(r.status))
        return result(
            _OK,
            output=output,
            reason=f"{len(failed)} of {n} items failed (allowed)",
        )
    return result(_OK, output=list(outputs))

"""What a step function can ask for besides upstream outputs: ``params`` and ``ctx``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Services", "StepContext"]


class Services:
    """A registry of services for dependency injection (connections, clients, the tracker).

    ``services.register("db", db)`` registers an object as it is;
    ``services.register_factory("db", make_db)`` calls the zero-argument factory on first use,
    once per run. Steps reach them as ``ctx.services["db"]``.
    """

    __slots__ = ("_factories", "_items", "_lock")

    def __init__(self, items: Mapping[str, Any] | None = None):
        self._items: dict[str, Any] = dict(items or {})
        self._factories: dict[str, Callable[[], Any]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, service: Any) -> None:
        self._items[name] = service
        self._factories.pop(name, None)

    def register_factory(self, name: str, factory: Callable[[], Any]) -> None:
        self._factories[name] = factory
        self._items.pop(name, None)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            pass
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(sorted({*self._items, *self._factories})) or "none"
            raise KeyError(f"no service named {name!r} (registered: {known})") from None
        with self._lock:  # sync steps run on several threads: create the service once
            if name not in self._items:
                self._items[name] = factory()
            return self._items[name]

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter({**self._factories, **self._items})

    def __len__(self) -> int:
        return len({*self._items, *self._factories})

    def child(self) -> Services:
        """A copy for one run: the same registrations, its own lazily created instances."""
        new = Services(self._items)
        new._factories = dict(self._factories)
        return new


class StepContext:
    """The ``ctx`` a step function receives: who is running, with what, and how to log."""

    __slots__ = (
        "_lock",
        "_logger",
        "_results",
        "_runner",
        "attempt",
        "components",
        "params",
        "pipeline_id",
        "run_id",
        "services",
        "state",
        "step",
    )

    def __init__(
        self,
        run_id: str,
        pipeline_id: str,
        step: str,
        params: Mapping[str, Any],
        services: Services,
        results: Mapping[str, Any],
        state: dict[str, Any],
        lock: Any = None,
        components: Any = None,
        runner: Any = None,
    ):
        self.run_id = run_id
        self.pipeline_id = pipeline_id
        self.step = step
        self.params = params
        self.services = services
        self.attempt = 0
        self._results = results
        self._lock = lock
        self.components = components  # the run's component registries (extractors, outputs...)
        self.state = state
        self._logger: Any = None
        self._runner = runner

    async def run_pipeline(self, pipeline: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Run ``pipeline`` (a :class:`~pipectl.Pipeline`) as a sub-pipeline of this step and
        return its :class:`~pipectl.model.PipelineRun` (``parent_run_id`` is this run): the
        same plugins and executor, its own params (``params`` over the pipeline's own), its
        steps seen by listeners as steps of the child run. Cancelling this step cancels it."""
        if self._runner is None:
            raise RuntimeError("this context cannot run sub-pipelines (not created by a run)")
        return await self._runner(pipeline, dict(params or {}), self.step)

    @property
    def results(self) -> dict[str, Any]:
        """The :class:`~pipectl.model.StepResult` of every step finished so far, by name (a
        copy: other steps finish meanwhile, on other threads)."""
        if self._lock is None:
            return dict(self._results)
        with self._lock:
            return dict(self._results)

    @property
    def logger(self) -> Any:
        """A structlog logger bound to ``run_id`` and ``step``."""
        if self._logger is None:
            from pipectl import log

            self._logger = log.get_logger().bind(run_id=self.run_id, step=self.step)
        return self._logger

    def __repr__(self) -> str:
        return f"StepContext(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt})"


def frozen_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))

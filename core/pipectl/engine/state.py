"""What one run owns and every part of the engine reads: the plan, the run record, the hooks,
the steps' outputs and statuses, the lock, and whether (and why) the run is stopping.

Nothing here outlives the run or is shared with another. The scheduler
(:mod:`pipectl.engine.scheduler`) decides, the attempt runner
(:mod:`pipectl.engine.attempts`) runs steps, :mod:`pipectl.engine.rollback` undoes them; all
three work on one :class:`RunState`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipectl.context import Services, frozen_params
from pipectl.executors import Lanes
from pipectl.hooks import Hooks
from pipectl.model import PipelineRun, RunConfig, StepStatus
from pipectl.planning import Node, Plan

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.engine.cache import StepCache

__all__ = ["RunState", "now", "records_of"]


def now() -> datetime:
    return datetime.now(UTC)


def records_of(output: Any) -> int | None:
    """How many records a step's output says it processed (a data step's), else None."""
    if output is None:
        return None
    records = getattr(output, "records_processed", None)
    return records if isinstance(records, int) else None


class RunState:
    """One run's shared state, by step index (``plan.nodes[i]``).

    The bookkeeping may be updated from the event loop thread or from a lane thread (see
    :class:`pipectl.executors.Lanes`), so it is guarded by ``lock``; lifecycle hooks are called
    under it too: listeners are never called concurrently (but may be called from a worker
    thread)."""

    def __init__(
        self,
        plan: Plan,
        config: RunConfig,
        hooks: Hooks,
        executor: Any,
        run: PipelineRun,
        services: Services,
        logger: Any,
        components: Any = None,
    ):
        spec = plan.spec
        n = len(plan.nodes)
        self.plan = plan
        self.nodes: Sequence[Node] = plan.nodes
        self.config = config
        self.hooks = hooks
        self.executor = executor
        self.run = run
        self.logger = logger
        self.components = components
        self.pm: Any = None  # the plugin manager, for sub-pipelines (set by execute())
        self.secrets: tuple[str, ...] = ()  # secret param values, set by execute()
        self.capture_logs = False  # capture step logs (pipectl.step_logs), set by execute()
        self.cache: StepCache | None = (
            None  # the StepCache (pipectl.engine.cache), when a step is cached
        )
        self.params = frozen_params(config.params)
        self.services = services
        self.shared_state: dict[Any, Any] = {
            **config.resume_state,
            "extractor_state": dict(config.extractor_state),
        }
        run.extractor_state = self.shared_state["extractor_state"]
        limit = config.max_concurrent if config.max_concurrent is not None else spec.max_concurrent
        self.limit: int = limit if limit is not None else n + 1
        self.fail_fast: bool = config.fail_fast if config.fail_fast is not None else spec.fail_fast
        self.outputs: list[Any] = [None] * n
        self.status: list[StepStatus | None] = [None] * n
        self.completed: list[int] = []  # steps that succeeded, in the order they did (rollback)
        self.stopping: str | None = None  # why nothing new starts (fail_fast or interrupt)
        self.stop_event = threading.Event()  # set with ``stopping``: ends a lane retry's wait
        self.interrupted = False
        self.lanes: Lanes | None = None  # the executor's, when it lends them (start_roots)
        self.lane_progress: dict[int, tuple[datetime, float, int]] = {}  # started, t0, attempt
        self.rng = random.Random()
        self.lock = threading.RLock()
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        enabled = getattr(logger, "is_enabled_for", None)
        self.log_info: bool = enabled(logging.INFO) if enabled is not None else True
        self.log_debug: bool = enabled(logging.DEBUG) if enabled is not None else False

"""The model: what a pipeline is, how a run is configured, and what a run produced.

Everything that crosses a boundary (specs, results) is a frozen attrs class; ``PipelineRun`` is
the one mutable record, filled in by the engine while the run goes on (listeners read it).
"""

from __future__ import annotations

import enum
import inspect
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "Cache",
    "CacheEvent",
    "MapItemFailed",
    "PipelineRun",
    "PipelineRunConfig",
    "PipelineSpec",
    "RunConfig",
    "RunPlan",
    "RunStatus",
    "StepResult",
    "StepSpec",
    "StepStatus",
    "Trigger",
]


class StepStatus(str, enum.Enum):
    """Where a step is: PENDING and RUNNING while the run goes on, the others are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


class RunStatus(str, enum.Enum):
    """The outcome of a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    """The run failed and every completed step with a rollback was undone."""
    ROLLBACK_FAILED = "rollback_failed"
    """The run failed and some rollback failed too: ``errors`` names what was not undone."""

    def __str__(self) -> str:
        return self.value


class Trigger(str, enum.Enum):
    """When a step runs, once all its dependencies ended.

    * ``all_success`` (the default): every dependency succeeded (or failed with
      ``allow_failure``). A failed dependency makes the step SKIPPED; so does a skipped one.
    * ``all_done``: whatever they did (clean-up steps).
    * ``none_failed``: no dependency failed or was skipped because of a failure; dependencies
      skipped by a ``when`` condition (a branch not taken) are fine.
    * ``one_success``: as ``none_failed``, and at least one dependency succeeded: the join of
      branches of which only one runs.
    """

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    NONE_FAILED = "none_failed"
    ONE_SUCCESS = "one_success"

    def __str__(self) -> str:
        return self.value


def _inputs(value: Any, step: Any) -> dict[str, Any]:
    if not value:  # most steps: nothing to parse (and no import to look up)
        return {}
    from pipectl.expr import ExpressionError, parse_input

    out = {}
    for name, source in dict(value or {}).items():
        try:
            out[str(name)] = parse_input(source)
        except ExpressionError as exc:
            raise ExpressionError(f"step {step.name!r}: inputs.{name}: {exc}") from None
    return out


def _condition(value: Any, step: Any) -> Any:
    if value is None:
        return None
    from pipectl.expr import ExpressionError, parse

    try:
        return parse(value)
    except ExpressionError as exc:
        raise ExpressionError(f"step {step.name!r}: when: {exc}") from None


def _trigger(value: Any) -> Trigger:
    return value if type(value) is Trigger else Trigger(value)


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _dict(value: Any) -> dict[Any, Any]:
    """``dict`` as a converter: attrs inspects a converter's signature, and a builtin's costs
    the compiling of tokenize's patterns at import (milliseconds of every command)."""
    return dict(value)


def _tuple(value: Any) -> tuple[Any, ...]:
    """``tuple`` as a converter (see :func:`_dict`)."""
    return tuple(value)


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    if value is None:
        return ()
    if isinstance(value, type):
        value = (value,)
    types = tuple(value)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"retry_on takes exception classes, got {t!r}")
    return types


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> float:
    """``"4GB"``, ``"512 MiB"``, ``"1.5e9"`` as a number of bytes; raises ValueError."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (such as 4GB, 512MiB or a number of bytes)")
    return float(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_resources(value: Any) -> dict[str, float]:
    """What a step asks of the machine it runs on: ``{"GPU": 1, "memory": "4GB"}``; sizes
    in text become numbers of bytes."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"resources is a mapping of resource name to amount, such as "
            f"{{'GPU': 1, 'memory': '4GB'}}, got {value!r}"
        )
    out: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"resources: a resource name is a non-empty string, got {name!r}")
        if isinstance(amount, str):
            amount = parse_size(amount)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise ValueError(
                f"resources.{name}: expected a positive amount (a number, or a "
                f"size such as '4GB'), got {amount!r}"
            )
        out[name] = amount
    return out


def parse_pool_sizes(value: Any) -> dict[str, int]:
    """A pipeline's resource pools: ``{"db": 2}``, each a name and a size (an integer >= 1):
    never more steps (weighted) in a pool at once than its size."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"pools is a mapping of pool name to size, such as {{'db': 2}}, got {value!r}"
        )
    out: dict[str, int] = {}
    for name, size in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"pools: a pool name is a non-empty string, got {name!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"pools.{name}: expected a size (an integer >= 1), got {size!r}")
        out[name] = size
    return out


def parse_step_pools(value: Any) -> dict[str, int]:
    """The pools a step takes while it runs: a name (``"db"``: weight 1), or a mapping of
    name to weight (``{"db": 1, "api": 2}``, each an integer >= 1)."""
    if not value:
        return {}
    if isinstance(value, str):
        return {value: 1}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"pools is a pool name or a mapping of pool name to weight, such as "
            f"{{'db': 1, 'api': 2}}, got {value!r}"
        )
    out: dict[str, int] = {}
    for name, weight in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"pools: a pool name is a non-empty string, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"pools.{name}: expected a weight (an integer >= 1), got {weight!r}")
        out[name] = weight
    return out


def _expires(value: Any) -> float | None:
    if value is None:
        return None
    from pipectl.tracking.retention import parse_duration

    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expires is a duration above 0 (such as '1h' or 3600), got {value!r}")
    return seconds


def _cache_key(value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"cache key is a function (inputs, params) -> value, got {value!r}")
    return value


@attrs.frozen
class Cache:
    """A step's cache policy (``cache=True`` is ``Cache()``): when the step's fingerprint (its
    code and definition), the inputs it is called with and the params it can see are those of
    an earlier successful run's, its output is taken from the tracker's result store instead of
    calling it (a *cache hit*, see :mod:`pipectl.engine.cache`).

    ``expires``: a time to live (seconds, or a duration such as ``"1h"``, ``"7d"``); an entry
    older than that is not used (the step runs, and its new output is stored). ``key``: a
    function ``key(inputs, params)`` whose value stands for the inputs in the cache key (for
    inputs that cannot be pickled, or are too big to hash, or that name something whose
    content is what matters); returning None, the step is not cached that time.
    """

    expires: float | None = attrs.field(default=None, converter=_expires)
    key: Callable[..., Any] | None = attrs.field(default=None, converter=_cache_key, eq=False)


def parse_cache(value: Any) -> Cache | None:
    """A step's ``cache``: True (``Cache()``), False or None (no caching), a :class:`Cache`,
    or a mapping of its fields (``{"expires": "1h", "key": func}``)."""
    if value is None or value is False:
        return None
    if value is True:
        return Cache()
    if isinstance(value, Cache):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"expires", "key"})
        if unknown:
            raise ValueError(f"cache: unknown field {unknown[0]!r} (fields: expires, key)")
        return Cache(**value)
    raise TypeError(
        f"cache is true, false, a pipectl.Cache or a mapping such as {{'expires': '1h'}}, "
        f"got {value!r}"
    )


@attrs.frozen
class CacheEvent:
    """What a cached step's lookup found, or that its output was stored
    (``pipectl_step_cache``).

    ``kind``: ``"hit"`` (the output came from the cache: the step was not called), ``"miss"``
    (it runs; ``reason`` says why: ``"not cached yet"``, ``"expired"``, ``"refresh"``, ``"no
    cache"``, ``"the key function returned None"``, or why its inputs could not be hashed) or
    ``"stored"`` (its output was stored for later runs). ``key``: the cache key (hex), None when
    there is none. ``cached_from``, ``stored_at``: the run that stored the entry found or
    stored, and when (hits and stores).
    """

    kind: str
    key: str | None = None
    reason: str | None = None
    cached_from: str | None = None
    stored_at: datetime | None = None


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 (or None for no limit), got {value!r}")


def _map_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.isidentifier()):
        raise ValueError(f"map is the name of one of the step's parameters, got {value!r}")


class MapItemFailed:
    """The slot of a failed item in the output of a mapped step with ``allow_failure``: the
    item's ``index`` and its ``error`` (``"ValueError: bad url"``)."""

    __slots__ = ("error", "index")

    def __init__(self, index: int, error: str | None):
        self.index = index
        self.error = error

    def __repr__(self) -> str:
        return f"MapItemFailed(index={self.index}, error={self.error!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MapItemFailed)
            and other.index == self.index
            and other.error == self.error
        )

    def __hash__(self) -> int:
        return hash((MapItemFailed, self.index, self.error))

    def __reduce__(self) -> Any:
        return (MapItemFailed, (self.index, self.error))


@attrs.frozen
class StepSpec:
    """One step of a pipeline.

    ``func`` is the callable a ``python`` step runs (sync or async); steps of other types build
    their callable from ``options`` through the step type registered under ``step_type``.
    ``inputs`` maps a parameter name of the function to the step whose output it receives, or
    to a reference (``steps.NAME.output.FIELD``, ``params.NAME``, alternatives joined by ``|``:
    see :mod:`pipectl.expr`); the steps it names are dependencies too. ``when`` is a condition
    in the same language: false, the step is SKIPPED (a branch not taken); the steps it names
    are dependencies too.
    """

    name: str
    func: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    # mypy's attrs plugin takes no attrs.Converter (python/mypy#15736): __init__ gets Any
    inputs: Mapping[str, Any] = attrs.field(
        factory=dict,
        converter=attrs.Converter(_inputs, takes_self=True),  # type: ignore[misc]
        hash=False,
    )
    retries: int = attrs.field(default=0, validator=_non_negative)
    retry_delay: float = attrs.field(default=1.0, validator=_non_negative)
    retry_backoff: float = attrs.field(default=2.0, validator=_non_negative)
    retry_max_delay: float | None = attrs.field(default=60.0, validator=_non_negative)
    retry_jitter: float = attrs.field(default=0.1)
    retry_on: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    allow_failure: bool = False
    trigger: Trigger = attrs.field(default=Trigger.ALL_SUCCESS, converter=_trigger)
    step_type: str = "python"
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    description: str = ""
    rollback: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    when: Any = attrs.field(  # attrs.Converter: as for inputs
        default=None,
        converter=attrs.Converter(_condition, takes_self=True),  # type: ignore[misc]
    )
    resources: Mapping[str, float] = attrs.field(
        factory=dict, converter=parse_resources, hash=False
    )
    """What the step needs of the machine it runs on (``{"GPU": 1, "memory": "4GB"}``), for
    executors that place steps on machines: pipectl-dask maps them to dask worker resources.
    The ``local`` executor runs every step in its one process and does not look at them."""
    pools: Mapping[str, int] = attrs.field(factory=dict, converter=parse_step_pools, hash=False)
    """The pipeline's resource pools the step takes while it runs (all its attempts), by
    name with a weight (``{"db": 1}``; ``add_step(pool="db")`` is ``{"db": 1}``). The engine
    starts the step only when every one of them has room, all at once (see
    :mod:`pipectl.engine.pools`)."""
    cache: Cache | None = attrs.field(default=None, converter=parse_cache)
    """The step's cache policy (:class:`Cache`; ``True`` for the default one), or None: not
    cached. A data step (whose effect is its load) or a sub-pipeline step is cached only when
    it says so too."""
    store_output: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    """False: the step's output is never pickled nor written to the tracker's result store
    (too big, not worth keeping, or not to be kept on disk). The tracker still records the
    step's row and its output summary; a resume that needs the output runs the step again."""
    map: str | None = attrs.field(default=None, validator=_map_name)
    """Dynamic mapping: the name of one of the step's parameters bound to an upstream value
    (by name or through ``inputs``). At run time the step runs once per item of that value (a
    list), each item its own instance ``NAME[i]`` with its own attempts, retries, timeout and
    status; the step's output is the list of the items' outputs, in item order (see
    :mod:`pipectl.engine.mapping`)."""
    # an item of a mapped step (set by the engine on the specs it makes of the items: never
    # given by users, not arguments of __init__)
    map_of: str | None = attrs.field(default=None, init=False)
    """Set on an item's spec (``fetch[3]``): the name of the mapped step (``fetch``)."""
    map_index: int | None = attrs.field(default=None, init=False)
    """Set on an item's spec: the item's index in the list mapped over (0-based)."""
    map_count: int | None = attrs.field(default=None, init=False)
    """Set on an item's spec: how many items the mapped step has in this run."""

    @retry_jitter.validator
    def _check_jitter(self, attribute: attrs.Attribute[Any], value: float) -> None:
        if not 0 <= value <= 1:
            raise ValueError(f"retry_jitter is a fraction between 0 and 1, got {value!r}")

    @property
    def all_dependencies(self) -> tuple[str, ...]:
        """``depends_on`` plus the steps named in ``inputs`` and ``when``, each once, in order."""
        if not self.inputs and self.when is None:
            depends_on = self.depends_on
            if len(depends_on) < 2 or len(set(depends_on)) == len(depends_on):
                return depends_on
            return tuple(dict.fromkeys(depends_on))
        seen = dict.fromkeys(self.depends_on)
        for source in self.inputs.values():
            if isinstance(source, str):
                seen[source] = None
            else:
                seen.update(dict.fromkeys(source.steps))
        if self.when is not None:
            seen.update(dict.fromkeys(self.when.steps))
        return tuple(seen)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def backoff_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``retry_delay * retry_backoff ** (attempt - 1)``, capped at ``retry_max_delay``, then
        reduced by a random fraction of at most ``retry_jitter`` (so it never exceeds the cap).
        """
        base = self.retry_delay * (self.retry_backoff ** (attempt - 1))
        if self.retry_max_delay is not None:
            base = min(base, self.retry_max_delay)
        if self.retry_jitter:
            base *= 1.0 - (rng or random).random() * self.retry_jitter
        return base

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a failed attempt number ``attempt`` is followed by another."""
        if attempt >= self.max_attempts:
            return False
        return not self.retry_on or isinstance(error, self.retry_on)


@attrs.frozen
class PipelineSpec:
    """A named DAG of steps plus the run defaults the pipeline declares."""

    name: str
    steps: tuple[StepSpec, ...] = attrs.field(default=(), converter=_tuple)
    description: str = ""
    max_concurrent: int | None = attrs.field(default=None, validator=_positive_or_none)
    fail_fast: bool = False
    executor: str = "local"
    tracker: str | None = None
    pools: Mapping[str, int] = attrs.field(factory=dict, converter=parse_pool_sizes, hash=False)
    """Resource pools by name with their size: never more steps (weighted by their ``pools``)
    in one at once than its size. Each run has its own."""

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


@attrs.frozen
class RunConfig:
    """How one run goes: params and overrides of the pipeline's defaults (None keeps them)."""

    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    max_concurrent: int | None = attrs.field(default=None, validator=_positive_or_none)
    fail_fast: bool | None = None
    executor: str | None = None
    executor_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    tracker: str | None = None
    only: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    skip: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    """Steps left out of the run with everything downstream of them (``--skip``)."""
    run_id: str | None = None
    services: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    max_threads: int | None = attrs.field(default=None, validator=_positive_or_none)
    """Threads for sync steps; default: ``max_concurrent``, or 64 when that is unlimited."""
    extractor_state: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    """Incremental state of data steps' extractors from an earlier run, by step name."""
    secrets: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    """Names of params whose values are secret: shown as ``***`` in the run's record, its
    errors and tracebacks, and pipectl's log events."""
    secret_values: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    """Further values that are secret, masked as the secret params' are: those of a pipeline
    file's connections (passwords, tokens, header values), which are not params."""
    parent_run_id: str | None = None
    """Set when the run is a sub-pipeline's, started by a step of that run."""
    resume: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    """Outputs of steps that are not run again, by step name (resume; see ``resumed_from``)."""
    resumed_from: str | None = None
    """The run this one resumes."""
    resume_state: Mapping[Any, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    """The run state (``ctx.state``) to start from when resuming: which outputs of the data
    steps that will run again had committed."""
    rollback: bool = False
    """When the run fails, run the rollbacks of its completed steps in reverse order."""
    capture_logs: bool = True
    """Capture step logs when a listener asks for them (the tracker's listener does; see
    :mod:`pipectl.step_logs`); False never does."""
    cache: bool = True
    """False: no step's output is taken from the cache nor stored in it (``--no-cache``)."""
    refresh: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    """Cached steps that run whatever the cache holds, their new output stored (``--refresh``)."""
    result_store: Any = attrs.field(default=None, eq=False, hash=False)
    """The result store of the run's tracker when it stores outputs (``put(run_id, step,
    bytes)``), else None. An executor that keeps outputs away from the driver may store them
    there itself and mark them stored (``pipectl_stored = True`` on the output object), so a
    resume finds them (see :class:`pipectl.tracking.TrackingListener`)."""


@attrs.frozen
class PipelineRunConfig:
    """The seed design's run request: ``Pipeline.execute(PipelineRunConfig(...))``."""

    pipeline_id: str | None = None
    parameters: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)
    output_config: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict, hash=False)


@attrs.frozen
class StepResult:
    """What became of one step in one run."""

    step_name: str
    status: StepStatus
    output: Any = attrs.field(default=None, eq=False, repr=False)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float = 0.0
    attempts: int = 0
    reason: str | None = None
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    traceback: str | None = attrs.field(default=None, eq=False, repr=False)
    records: int | None = None
    resumed_from: str | None = None
    """Set when the step did not run: its output came from this earlier run (resume)."""
    cached_from: str | None = None
    """Set on a cache hit: the step was not called, its output came from the cache, stored by
    this earlier run (see :class:`Cache`). The step's status is ``success``."""
    rollback: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    """What the step's rollback did, when one ran: status, error, started_at, finished_at."""
    received: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    """What the step was called with: its keyword arguments (upstream outputs, ``inputs``
    references, ``*`` for a step class's whole data) but ``ctx`` and ``params``; None when it
    did not run. Trackers record a bounded summary of it, secrets masked."""
    logs: tuple[tuple[int, tuple[tuple[float, str, str | None, str], ...]], ...] | None = (
        attrs.field(default=None, eq=False, repr=False)
    )
    """What each attempt logged and printed, when the run captured step logs (a tracker is
    attached): ``(attempt, lines)`` per attempt, each line ``(logged_at, stream, level,
    message)`` (see :mod:`pipectl.step_logs`), bounded, secret values masked; else None."""
    items: tuple[StepResult, ...] | None = attrs.field(default=None, eq=False, repr=False)
    """A mapped step's (``StepSpec.map``): the result of each of its items, in item order
    (``fetch[0]``, ``fetch[1]``, ...); None for other steps and for a mapped step that did not
    get to its items (skipped, or its list was not one)."""

    @property
    def retries(self) -> int:
        """Attempts beyond the first (the seed designs' ``retries`` field)."""
        return max(self.attempts - 1, 0)

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.SUCCESS


@attrs.frozen
class RunPlan:
    """The DAG one run executes, as ``pipectl_run_planned`` gets it."""

    steps: tuple[StepSpec, ...]
    """Every step of the run (after ``only`` and ``skip``), in topological order."""
    edges: tuple[tuple[str, str], ...]
    """``(upstream, downstream)`` step names: each step after the steps it depends on."""
    left_out: tuple[str, ...] = ()
    """The steps ``skip`` left out (with everything downstream of them): not in ``steps``."""
    resumed: tuple[str, ...] = ()
    """Steps whose outputs come from the run being resumed: they end ``success`` unrun."""

    @property
    def names(self) -> tuple[str, ...]:
        """The step names, in topological order."""
        return tuple(step.name for step in self.steps)


@attrs.define(eq=False)
class PipelineRun:
    """One execution of a pipeline. Filled in by the engine; listeners read it."""

    run_id: str
    pipeline_id: str
    status: RunStatus = RunStatus.PENDING
    start_time: datetime | None = None
    end_time: datetime | None = None
    parameters: dict[str, Any] = attrs.field(factory=dict)
    records_processed: int = 0
    errors: list[str] = attrs.field(factory=list)
    steps: dict[str, StepResult] = attrs.field(factory=dict)
    extractor_state: dict[str, Any] = attrs.field(factory=dict)
    """The incremental state (a cursor such as ``updated_since``) of each data step's extractor
    after this run, by step name: hand it to the next run (``extractor_state=``)."""
    parent_run_id: str | None = None
    """The run of the pipeline whose step ran this one as a sub-pipeline, if any."""
    resumed_from: str | None = None
    """The run this one resumed: its succeeded steps were not run again."""
    cancelled_by: str | None = None
    """The signal (``"SIGINT"`` or ``"SIGTERM"``) that cancelled the run, when
    :meth:`Pipeline.run_sync` caught one; ``None`` otherwise."""
    left_out: list[str] = attrs.field(factory=list)
    """The steps the run's ``skip`` left out (those named and everything downstream of them),
    in pipeline order: not run, and not in ``steps``."""

    def __repr__(self) -> str:
        # short and O(1) on purpose: asyncio reprs a run_sync task's result on every run
        # (CPython 3.11's signal handling), and a run of 100,000 steps must not print them all
        return (
            f"PipelineRun(run_id={self.run_id!r}, pipeline_id={self.pipeline_id!r}, "
            f"status={self.status.value}, steps={len(self.steps)})"
        )

    @property
    def duration_ms(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds() * 1000.0

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCESS

    def outputs(self) -> dict[str, Any]:
        """The output of every step that succeeded, by step name."""
        return {n: r.output for n, r in self.steps.items() if r.status is StepStatus.SUCCESS}


def callable_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}:{qualname}"


def is_async_callable(func: Callable[..., Any]) -> bool:
    while hasattr(func, "func") and not inspect.isfunction(func):  # functools.partial
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object whose __call__ is async def
    )

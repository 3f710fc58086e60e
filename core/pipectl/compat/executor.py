"""The seed system "PipelineExecutor" (an async DAG of steps) as a thin layer on :class:`Pipeline`.

.. code-block:: python

    from pipectl.compat.executor import PipelineConfig, PipelineExecutor

    executor = PipelineExecutor(PipelineConfig(name="etl", max_concurrent=5))

    @executor.step("extract")
    async def extract(): ...

    @executor.step("load", depends_on=["extract"], retries=3, retry_delay=2.0, timeout=30.0)
    async def load(rows): ...  # one parameter, one upstream step: it gets extract's output

    results = await executor.run()  # step name -> pipectl's StepResult

Every step is a pipectl step and every run a pipectl run: ``stop_on_first_failure`` is
``fail_fast``, ``max_concurrent`` the same, ``retries``/``retry_delay``/``timeout`` pipectl's
(exponential backoff from ``retry_delay``), and ``skip_on_error`` is ``allow_failure``: the
step's own error does not fail the run, its dependents run (given None for its output), and its
result reads SKIPPED with the error kept. A step whose dependency failed is SKIPPED, as in
pipectl. ``executor.pipeline`` is the :class:`~pipectl.Pipeline` underneath.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from pipectl.binding import CONTEXT_NAMES
from pipectl.model import PipelineRun, RunStatus, StepResult, StepSpec, StepStatus
from pipectl.pipeline import Pipeline

__all__ = ["PipelineConfig", "PipelineExecutor", "PipelineResults", "StepResult", "StepStatus"]

F = TypeVar("F", bound=Callable[..., Any])

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@attrs.frozen
class PipelineConfig:
    """The executor's settings: the pipeline's ``name``, ``max_concurrent`` (None: no limit)
    and ``stop_on_first_failure`` (pipectl's ``fail_fast``)."""

    name: str = "pipeline"
    max_concurrent: int | None = None
    stop_on_first_failure: bool = False


class PipelineResults(Mapping[str, StepResult]):
    """What ``await executor.run()`` returns: step name -> :class:`~pipectl.model.StepResult`
    (``status``, ``output``, ``error``, ``started_at``, ``finished_at``, ``duration_ms``,
    ``retries``), in pipeline order; ``run`` is the whole :class:`~pipectl.model.PipelineRun`."""

    def __init__(self, run: PipelineRun, skip_on_error: Iterable[str] = ()):
        self.run = run
        skipping = set(skip_on_error)
        self._results = {
            name: _skipped(result)
            if name in skipping and result.status is StepStatus.FAILED
            else result
            for name, result in run.steps.items()
        }

    def __getitem__(self, name: str) -> StepResult:
        return self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def success(self) -> bool:
        return self.run.ok

    @property
    def duration_ms(self) -> float | None:
        return self.run.duration_ms

    @property
    def errors(self) -> list[str]:
        return self.run.errors

    def outputs(self) -> dict[str, Any]:
        """The output of every step that succeeded, by step name."""
        return self.run.outputs()

    def __repr__(self) -> str:
        return f"PipelineResults({ {n: str(r.status) for n, r in self.items()} })"


class PipelineExecutor:
    """Steps added with :meth:`step` or :meth:`add_step`, run by ``await executor.run()``.

    ``options`` go to the :class:`~pipectl.Pipeline` (``tracker=``, ``services=``...).
    """

    def __init__(self, config: PipelineConfig | None = None, **options: Any):
        self.config = config if config is not None else PipelineConfig()
        self.pipeline = Pipeline(
            self.config.name,
            max_concurrent=self.config.max_concurrent,
            fail_fast=self.config.stop_on_first_failure,
            **options,
        )
        self._skip_on_error: set[str] = set()

    def step(
        self,
        name: str | None = None,
        *,
        depends_on: Iterable[str] | str = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        skip_on_error: bool = False,
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator adding the function as a step (``name`` defaults to the function's);
        ``options`` are pipectl's other step options (``retry_backoff``, ``retry_on``...)."""
        if callable(name):
            raise TypeError("@executor.step needs a name or parentheses: @executor.step('load')")

        def decorate(func: F) -> F:
            self.add_step(
                name or func.__name__,
                func,
                depends_on=depends_on,
                retries=retries,
                retry_delay=retry_delay,
                timeout=timeout,
                skip_on_error=skip_on_error,
                **options,
            )
            return func

        return decorate

    def add_step(
        self,
        name: str,
        func: Callable[..., Any],
        depends_on: Iterable[str] | str = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        skip_on_error: bool = False,
        **options: Any,
    ) -> StepSpec:
        """Add ``func`` as the step ``name``. A parameter named after an upstream step gets its
        output; a function of one parameter with one upstream step gets that step's output,
        whatever the parameter is called."""
        deps = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on)
        if "inputs" not in options:
            options["inputs"] = _single_input(func, deps)
        if skip_on_error:
            options["allow_failure"] = True
            self._skip_on_error.add(name)
        return self.pipeline.add_step(
            name,
            func,
            depends_on=deps,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            **options,
        )

    async def run(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> PipelineResults:
        """Run every step once; ``kwargs`` are :meth:`pipectl.Pipeline.run`'s."""
        return PipelineResults(await self.pipeline.run(params, **kwargs), self._skip_on_error)

    def visualize(self, format: str = "text") -> str:
        """The DAG by levels (``text``), or ``mermaid``/``dot``."""
        return self.pipeline.visualize(format)

    @property
    def steps(self) -> dict[str, StepSpec]:
        return self.pipeline.steps


def _single_input(func: Callable[..., Any], deps: tuple[str, ...]) -> dict[str, str]:
    """``{param: upstream}`` for a function of one named parameter and one upstream step,
    unless the parameter already names that step (or asks for ``params`` or the context)."""
    if len(deps) != 1:
        return {}
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return {}
    if len(params) != 1 or params[0].kind not in _NAMED:
        return {}
    name = params[0].name
    if name in (deps[0], "params", *CONTEXT_NAMES):
        return {}
    return {name: deps[0]}


def _skipped(result: StepResult) -> StepResult:
    return attrs.evolve(
        result, status=StepStatus.SKIPPED, reason=f"skip_on_error: the step failed: {result.error}"
    )

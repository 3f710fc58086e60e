"""The Python API: ``Pipeline``, its ``@pipe.step`` decorator, ``add_step`` and ``run``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

from pipectl.context import Services
from pipectl.graph import Graph
from pipectl.hookspecs import hookimpl
from pipectl.model import PipelineRun, PipelineSpec, RunConfig, StepSpec

if TYPE_CHECKING:  # asyncio is imported by running, not by building or validating
    import asyncio
    import os

    from pipectl.files import LoadedPipeline, Origin, ParamSpec
    from pipectl.project import Project

__all__ = ["Pipeline", "load_pipeline", "load_pipelines"]

F = TypeVar("F", bound=Callable[..., Any])

_STEP_OPTIONS = frozenset(
    {a.name for a in attrs.fields(StepSpec) if a.init and a.name not in ("name", "func")} | {"pool"}
)


class Pipeline:
    """A DAG of steps, defined in Python and run on the engine.

    .. code-block:: python

        pipe = Pipeline("etl", max_concurrent=5)

        @pipe.step("extract", retries=3, retry_delay=2.0, timeout=30.0)
        async def extract(): ...

        @pipe.step("transform", depends_on=["extract"])
        def transform(extract): ...

        run = pipe.run_sync(params={"day": "2026-11-23"})

    The object holds the definition only: every run has its own state, so the same pipeline
    runs again, or twice at once, without one run seeing the other's results.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        pipeline_id: str | None = None,
        description: str = "",
        max_concurrent: int | None = None,
        fail_fast: bool = False,
        executor: str = "local",
        tracker: str | None = None,
        pools: Mapping[str, int] | None = None,
        services: Services | Mapping[str, Any] | None = None,
        plugin_manager: Any = None,
        extractor: Any = None,
        outputs: Iterable[Any] | None = None,
        transforms: Iterable[Any] = (),
    ):
        name = name or pipeline_id
        if not name:
            raise TypeError("Pipeline needs a name: Pipeline('etl')")
        self._head = PipelineSpec(  # the pipeline's settings; steps are kept in _steps
            name=name,
            description=description,
            max_concurrent=max_concurrent,
            fail_fast=fail_fast,
            executor=executor,
            tracker=tracker,
            pools=pools or {},
        )
        self._steps: list[StepSpec] = []
        self._spec: PipelineSpec | None = None  # built on demand (adding a step stays O(1))
        self.services = services if isinstance(services, Services) else Services(services)
        self.params: dict[str, Any] = {}  # defaults for run(params=...); a pipeline file's
        self.param_specs: dict[str, ParamSpec] = {}
        self._origin: Origin | None = None  # the pipeline file it was loaded from, if any
        self.plugin_manager = plugin_manager
        self._graph: Graph | None = None
        self._plans: dict[tuple[Any, ...], Any] = {}
        self._on_step_complete: list[Callable[[Any], Any]] = []
        self._fingerprints: dict[str, str] | None = None
        if extractor is not None or outputs is not None:
            # the seed design "Pipeline Core": one extractor, many outputs, as one data step
            if extractor is None or not outputs:
                raise TypeError("Pipeline(extractor=..., outputs=[...]) needs both")
            self.data_step(
                "extract_load", extractor=extractor, outputs=list(outputs), transforms=transforms
            )

    # -- definition ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._head.name

    @property
    def source(self) -> str | None:
        """The pipeline file it was loaded from (None: defined in Python)."""
        return self._origin.source if self._origin is not None else None

    @property
    def source_lines(self) -> Mapping[str, int]:
        """``"steps.NAME[.field]"`` -> its line in the pipeline file (empty: not from a file)."""
        return self._origin.lines if self._origin is not None else {}

    @property
    def nested(self) -> bool:
        """A step of another pipeline of its file runs it (a sub-pipeline)."""
        return self._origin is not None and self._origin.nested

    @property
    def story(self) -> str | None:
        """The pipeline file's story: written after each run of the CLI."""
        return self._origin.story if self._origin is not None else None

    @property
    def file_secrets(self) -> Mapping[str, str]:
        """The secret values of its pipeline file's connections (passwords, tokens, header
        values; masked in everything a run shows or records), each with how a file written
        back refers to it (``${env.NAME}``, else ``***``). Empty: none."""
        return self._origin.secrets if self._origin is not None else {}

    @property
    def spec(self) -> PipelineSpec:
        """The whole definition as a frozen :class:`~pipectl.model.PipelineSpec`."""
        if self._spec is None:
            self._spec = attrs.evolve(self._head, steps=tuple(self._steps))
        return self._spec

    @property
    def steps(self) -> dict[str, StepSpec]:
        return {s.name: s for s in self._steps}

    @overload
    def step(self, name: F) -> F: ...

    @overload
    def step(self, name: str | None = None, **options: Any) -> Callable[[F], F]: ...

    def step(self, name: Any = None, **options: Any) -> Any:
        """Decorator adding the function as a step; ``name`` defaults to the function's name.

        Options are :class:`~pipectl.model.StepSpec` fields: ``depends_on``, ``inputs``,
        ``retries``, ``retry_delay``, ``retry_backoff``, ``retry_max_delay``, ``retry_jitter``,
        ``retry_on``, ``timeout``, ``allow_failure``, ``trigger``, ``rollback``, ``description``,
        ``resources``, ``store_output`` (False: the output is never written to the tracker's
        result store; a resume runs the step again), ``pool`` (the name of one of the
        pipeline's pools, weight 1) or ``pools`` (``{name: weight}``), ``map`` (the name of a
        parameter bound to an upstream list: the step runs once per item, ``NAME[i]``, and its
        output is the list of the items' outputs). The function is returned unchanged.
        """
        if callable(name):  # @pipe.step without parentheses
            self.add_step(name.__name__, name)
            return name

        def decorate(func: F) -> F:
            self.add_step(name or func.__name__, func, **options)
            return func

        return decorate

    def add_step(
        self, name: str, func: Callable[..., Any] | None = None, **options: Any
    ) -> StepSpec:
        """Add a step running ``func`` (or built by the step type ``step_type=``); returns its
        spec. ``options`` are those of :meth:`step` (``store_output=False`` among them)."""
        unknown = sorted(set(options) - _STEP_OPTIONS)
        if unknown:
            import difflib

            hints = []
            for u in unknown:
                close = difflib.get_close_matches(u, _STEP_OPTIONS, n=1)
                hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(f"step {name!r}: unknown option {', '.join(hints)}")
        if "pool" in options:
            pool = options.pop("pool")
            if options.get("pools"):
                raise TypeError(f"step {name!r}: give pool= or pools=, not both")
            if pool is not None:
                if not isinstance(pool, str) or not pool:
                    raise TypeError(f"step {name!r}: pool is a pool's name, got {pool!r}")
                options["pools"] = {pool: 1}
        return self.add(StepSpec(name=name, func=func, **options))

    def pool(self, name: str, size: int) -> Pipeline:
        """Declare the resource pool ``name`` of ``size`` (or change its size): never more
        steps in it at once than ``size`` (each step counting its weight). Returns the
        pipeline, so that calls chain."""
        self._head = attrs.evolve(self._head, pools={**self._head.pools, name: size})
        self._spec = None
        self._plans.clear()
        return self

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        plugin_manager: Any = None,
    ) -> Pipeline:
        """Load a pipeline file (YAML or JSON; ``name`` picks one of several); raises
        :class:`~pipectl.files.PipelineFileError` naming the file, line and field."""
        return load_pipeline(path, params, plugin_manager=plugin_manager, name=name)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The pipeline as a pipeline file (YAML), written to ``path`` when given. Every step
        function must be importable by name (``module:function``); ``from_yaml`` reads it back."""
        from pipectl.files.writer import to_yaml

        return to_yaml(self, path)

    def param(
        self, name: str, default: Any = None, *, secret: bool = False, description: str = ""
    ) -> None:
        """Declare a param: its ``default`` (what ``run`` uses unless ``params=`` gives it)
        and whether it is ``secret``: a secret's value is shown as ``***`` in the run's
        record, logs, errors, tracebacks and stories, and an output holding it is not stored
        for resume (the step runs again)."""
        from pipectl.files.params import ParamSpec

        type_name = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(
            type(default), "json"
        )
        self.params[name] = default
        self.param_specs[name] = ParamSpec(name, type_name, default, False, secret, description)

    def data_step(
        self,
        name: str,
        *,
        extractor: Any,
        outputs: Iterable[Any],
        transforms: Iterable[Any] = (),
        batch_size: int | None = None,
        buffer_size: int | None = None,
        on_bad_record: str = "fail",
        dead_letter: str | None = None,
        max_bad_records: int | str | None = None,
        **step_options: Any,
    ) -> StepSpec:
        """Add a data step: ``extractor`` streamed through ``transforms`` into every output.

        Extractors and outputs are objects, or ``{"type": "csv", **options}`` mappings naming
        registered components. Transforms are callables taking a record (return a record, None
        to drop it, or a list to split it), or :class:`pipectl.data.Transform` for per-batch
        ones. ``max_bad_records`` (a count, or a percentage like ``"5%"``) fails the step, with
        nothing committed, when more records are bad; rejecting every record always fails.
        Other options (``depends_on``, ``retries``, ``timeout``, ``store_output``...) are the
        step's.
        """
        options: dict[str, Any] = {
            "extract": extractor,
            "load": list(outputs),
            "transforms": list(transforms),
            "on_bad_record": on_bad_record,
        }
        if batch_size is not None:
            options["batch_size"] = batch_size
        if buffer_size is not None:
            options["buffer_size"] = buffer_size
        if dead_letter is not None:
            options["dead_letter"] = dead_letter
        if max_bad_records is not None:
            options["max_bad_records"] = max_bad_records
        return self.add_step(name, step_type="data", options=options, **step_options)

    async def execute(self, config: Any = None) -> PipelineRun:
        """Run with a :class:`~pipectl.model.PipelineRunConfig` (the seed designs' entry point):
        its ``parameters`` are the run's params, its ``output_config`` overrides options of
        the data steps' outputs for this run (see :meth:`with_output_config`)."""
        if config is None:
            return await self.run()
        if config.pipeline_id not in (None, self.name):
            raise ValueError(
                f"PipelineRunConfig is for pipeline {config.pipeline_id!r}, this is {self.name!r}"
            )
        pipe = self.with_output_config(config.output_config) if config.output_config else self
        return await pipe.run(params=config.parameters)

    def with_output_config(self, output_config: Mapping[str, Any]) -> Pipeline:
        """A copy of this pipeline whose data steps' outputs have the options of
        ``output_config`` overridden: ``{output name: {option: value}}``. This pipeline is
        unchanged. An output's name is the one its step reports it under (a mapping's
        ``name``, else ``TYPE#INDEX``; an object's ``name``, else ``CLASS#INDEX``; or the
        type alone when one output of the step has it), ``STEP.NAME`` to pick a step; see
        :mod:`pipectl.output_config`. Raises :class:`ValueError` for a name that names no
        output, an unknown option, or an output object without ``with_options``."""
        import copy

        from pipectl.output_config import apply_output_config

        steps = apply_output_config(self._steps, output_config, self._plugins().registries)
        twin = copy.copy(self)
        twin._steps = steps
        twin._spec = twin._graph = twin._fingerprints = None
        twin._plans = {}
        return twin

    def add_subpipeline(
        self,
        pipeline: Pipeline,
        name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> StepSpec:
        """Add a step that runs ``pipeline`` as a sub-pipeline: its run is nested in this one's
        (``parent_run_id``), with ``params`` over its own, the same plugins and executor. The
        step fails if the sub-pipeline's run fails; its output maps each of the sub-pipeline's
        steps to its output. ``name`` defaults to the sub-pipeline's; other options
        (``depends_on``, ``when``, ``retries``...) are the step's."""
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"add_subpipeline() takes a Pipeline, got {type(pipeline).__name__}")
        if pipeline is self:
            raise ValueError(f"pipeline {self.name!r} cannot run itself as a sub-pipeline")
        step_options = {"pipeline": pipeline, "params": dict(params or {})}
        return self.add_step(
            name or pipeline.name, step_type="pipeline", options=step_options, **options
        )

    def on_step_complete(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Call ``callback(result)`` with the :class:`~pipectl.model.StepResult` of every step
        of this pipeline's runs as it ends (success, failure, skip or cancel). It is a
        ``pipectl_step_finish`` run listener (see :meth:`run`): it runs under the run's lock,
        possibly on a worker thread, so keep it short; an exception in it is logged and does
        not affect the run. Returns ``callback``, so it also works as a decorator."""
        if not callable(callback):
            raise TypeError(f"on_step_complete() takes a callable, got {type(callback).__name__}")
        self._on_step_complete.append(callback)
        return callback

    def fingerprints(self) -> dict[str, str]:
        """Each step's :func:`pipectl.tracking.fingerprint` (what resume compares), computed
        once per definition of the pipeline."""
        if self._fingerprints is None:
            from pipectl.tracking import fingerprint

            steps = self._steps
            if self.file_secrets:  # a hash of a password is not stored (nor changed by a new one)
                from pipectl.files.connections import masked_options

                steps = [masked_options(s, self.file_secrets) for s in steps]
            self._fingerprints = {s.name: fingerprint(s) for s in steps}
        return self._fingerprints

    def add(self, spec: StepSpec) -> StepSpec:
        """Add a ready-made :class:`~pipectl.model.StepSpec`."""
        self._steps.append(spec)
        self._spec = None
        self._fingerprints = None
        self._graph = None
        self._plans.clear()
        return spec

    def _plan(self, pm: Any, only: tuple[str, ...], skip: tuple[str, ...] = ()) -> Any:
        """The validated run plan, cached until the steps or the step types change."""
        from pipectl.planning import plan_run

        registries = pm.registries
        step_types = registries.step_types
        key = (
            id(step_types),
            step_types.version,
            registries.extractors.version,
            registries.outputs.version,
            only,
            skip,
        )
        cached = self._plans.get(key)
        if cached is None or cached[0] is not step_types:
            # the DAG is built once: by loading a pipeline file or ``graph``, or here
            plan = plan_run(self.spec, step_types, only, registries, skip, graph=self._graph)
            if self._graph is None and not only and not skip:
                self._graph = plan.graph
            cached = self._plans[key] = (step_types, plan)
        return cached[1]

    def plan(self, only: Iterable[str] = (), skip: Iterable[str] = ()) -> Any:
        """The :class:`~pipectl.model.RunPlan` a run with ``only=`` and ``skip=`` would make:
        ``plan.nodes`` (the steps to run), ``plan.left_out``, ``plan.graph``; what ``pipectl
        run --dry-run`` prints. Raises :class:`~pipectl.errors.PipelineValidationError` for a
        pipeline that cannot run."""
        return self._plan(self._plugins(), tuple(only), tuple(skip))

    # -- the graph -------------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """The validated DAG (raises :class:`~pipectl.errors.PipelineValidationError`)."""
        if self._graph is None:
            self._graph = Graph(self.name, self._steps)
        return self._graph

    def validate(self) -> None:
        """Check the graph, every step function's parameters and the components the steps
        name, and that the pipeline's executor is installed; raise listing every problem."""
        from pipectl.errors import PipelineValidationError, UnknownComponentError

        pm = self._plugins()
        problems: list[str] = []
        try:
            self.graph  # noqa: B018 - unknown names and cycles first
        except PipelineValidationError as exc:
            problems.extend(exc.problems)
            problems.extend(self._step_problems(pm))  # what else, without a plan
        else:
            try:
                self._plan(pm, ())
            except PipelineValidationError as exc:
                problems.extend(exc.problems)
        problems.extend(self._param_problems())
        try:
            pm.registries.executors.get(self._head.executor)
        except UnknownComponentError as exc:
            problems.append(f"executor: {exc}")
        if problems:
            raise PipelineValidationError(self.name, problems)

    def _step_problems(self, pm: Any) -> list[str]:
        """Each step's own problems (its type, its options), found by its step type's factory
        as planning would: for a pipeline whose graph cannot be planned."""
        from pipectl.errors import UnknownComponentError
        from pipectl.planning import takes_components

        problems: list[str] = []
        for step in self._steps:
            try:
                factory = pm.registries.step_types.get(step.step_type).factory
                if takes_components(factory):
                    factory(step, components=pm.registries)
                elif step.step_type != "python":  # a function's binding needs the graph
                    factory(step)
            except UnknownComponentError as exc:
                problems.append(f"step {step.name!r}: {exc}")
            except Exception as exc:  # noqa: BLE001 - reported as a problem of the step
                found = getattr(exc, "problems", None)
                if found and all(hasattr(p, "in_step") for p in found):
                    problems.extend(p.in_step(step.name) for p in found)
                else:
                    problems.append(f"step {step.name!r}: {exc}")
        return problems

    def _param_problems(self) -> list[str]:
        """Conditions and inputs naming a param the pipeline does not declare: checked for a
        pipeline loaded from a file (which declares every param it takes) or one that
        declared its params with :meth:`param`."""
        if not (self.source or self.param_specs):
            return []
        from pipectl.options import Problem

        declared = set(self.param_specs) | set(self.params)
        problems: list[str] = []
        for step in self._steps:
            sources = [("when", step.when)] if step.when is not None else []
            sources += [(f"inputs.{k}", v) for k, v in (step.inputs or {}).items()]
            for field, expr in sources:
                for name in getattr(expr, "params", ()):
                    if name not in declared:
                        import difflib

                        close = difflib.get_close_matches(name, sorted(declared), n=1)
                        problems.append(
                            Problem(
                                field,
                                f"params.{name}: the pipeline declares no param {name!r}",
                                (f"did you mean {close[0]!r}? " if close else "")
                                + "declare it under params"
                                + (
                                    f" (declared: {', '.join(sorted(declared))})"
                                    if declared
                                    else ""
                                ),
                                step=step.name,
                            )
                        )
        return problems

    def visualize(self, format: str = "text") -> str:
        """The DAG as text levels (``text``), ``mermaid`` or ``dot``."""
        if format == "text":
            return self.graph.visualize()
        if format == "mermaid":
            return self.graph.to_mermaid()
        if format == "dot":
            return self.graph.to_dot()
        raise ValueError(f"unknown format {format!r}: use text, mermaid or dot")

    # -- running ---------------------------------------------------------------------------

    def _plugins(self, plugin_manager: Any = None) -> Any:
        pm = plugin_manager or self.plugin_manager
        if pm is None:
            from pipectl.plugins import default_plugin_manager

            pm = default_plugin_manager()
        return pm

    async def run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        only: Iterable[str] | str | None = None,
        skip: Iterable[str] | str | None = None,
        max_concurrent: int | None = None,
        fail_fast: bool | None = None,
        executor: str | None = None,
        executor_options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        services: Mapping[str, Any] | None = None,
        max_threads: int | None = None,
        extractor_state: Mapping[str, Any] | None = None,
        plugin_manager: Any = None,
        parent_run_id: str | None = None,
        tracker: Any = None,
        rollback: bool = False,
        resume: str | None = None,
        force: bool = False,
        listeners: Iterable[Any] = (),
        capture_logs: bool = True,
        cache: bool = True,
        refresh: Iterable[str] | str | None = None,
    ) -> PipelineRun:
        """Run the pipeline once and return the finished :class:`~pipectl.model.PipelineRun`.

        ``only`` runs the named steps and what they depend on, nothing else. ``skip`` leaves
        the named steps out of the run, and everything downstream of them: they do not run and
        are not in ``run.steps``; ``run.left_out`` lists them. With both, the steps ``only``
        selects run, minus the skipped ones and what is downstream of them. A name that is not
        a step of the pipeline raises :class:`~pipectl.errors.PipelineValidationError` (with
        the nearest names) before anything runs. Arguments left None keep the pipeline's
        defaults. A failed step does not raise: look at ``run.status``
        and ``run.steps``. An invalid pipeline raises
        :class:`~pipectl.errors.PipelineValidationError` before anything runs.

        ``tracker`` records the run: a URL (``sqlite:///runs.db``, ``postgresql://...``; or
        ``"none"``), or an open tracker; default: the pipeline's ``tracker``, else none. With a
        tracker, ``extractor_state`` defaults to the state its last successful run left (a data
        step whose outputs keep load markers starts from the cursor committed with their last
        load, see :mod:`pipectl.loads`; a given ``extractor_state`` wins over both), and
        ``resume="latest"`` (or a run id) runs again only what that run did not finish (see
        :func:`pipectl.tracking.resume_outputs`; ``force`` takes the outputs of changed steps
        anyway): ``latest`` is the latest run that ended (or whose process died), and the old
        run is claimed for this one before anything runs, so a second resume of it at the same
        time raises :class:`~pipectl.tracking.ResumeClaimed` (a run still running:
        :class:`~pipectl.tracking.RunInProgress`). ``rollback=True``: when the run fails, the
        rollbacks of its completed steps run in reverse order of completion; the run ends
        ``rolled_back`` or ``rollback_failed``.

        ``listeners``: objects with ``@hookimpl`` lifecycle methods (``pipectl_step_finish``...)
        that listen to this run only, and to its sub-pipeline runs: unlike plugins, they are
        not registered on the plugin manager, so another run in the same process (concurrent,
        or later) does not call them. They are called like plugins registered after all the
        others (pluggy calls the latest first: before the plugins of the same
        ``tryfirst``/``trylast`` rank), an exception in one logged as ``plugin_hook_failed``.
        A listener implementing a hook a run does not call, or an argument its hook does not
        have, raises before the run starts.

        Step logs: with a tracker (or a listener with a true ``wants_step_logs``), what each
        attempt of a step prints to stdout and stderr, logs with ``logging`` and pipectl's log
        events for it are captured (bounded, secrets masked; see :mod:`pipectl.step_logs`)
        into ``StepResult.logs`` and the tracker, while still shown. ``capture_logs=False``
        captures nothing.

        Cached steps (``cache=``, see :class:`~pipectl.model.Cache`) take their output from the
        tracker's result store when an earlier run stored it for the same code, inputs and
        params (``StepResult.cached_from`` says which run). ``cache=False`` neither looks up
        nor stores; ``refresh`` names cached steps that run anyway, their new output stored.
        """
        import uuid

        from pipectl.engine import RunCancelled, execute

        pm = self._plugins(plugin_manager)
        only, skip = _names(only), _names(skip)
        plan = self._plan(pm, only, skip)
        refresh = _names(refresh)
        if refresh:
            _check_refresh(self, refresh)
        tracker_obj, owned = self._open_tracker(tracker, pm, parent_run_id)
        run_id = run_id or uuid.uuid4().hex  # known before the resume is claimed for it
        claimed = None  # the run whose resume this run claimed, until this run has started
        try:
            resumed_from: str | None = None
            outputs: dict[str, Any] = {}
            run_state: dict[str, Any] = {}
            if resume is not None:
                if tracker_obj is None:
                    from pipectl.tracking import TrackerError

                    raise TrackerError(
                        "resume needs a tracker: the runs to resume are read "
                        "from it (tracker='sqlite:///...' or the pipeline's)"
                    )
                from pipectl.tracking import resume_outputs

                resumed_from, outputs, run_state = resume_outputs(
                    tracker_obj, self.spec, resume, force=force, claim_for=run_id
                )
                claimed = resumed_from
            if extractor_state is not None:  # given: it wins over the cursors in the outputs
                run_state = {**run_state, "extractor_state_explicit": True}
            elif tracker_obj is not None:
                extractor_state = tracker_obj.extractor_states(self.name)

            config = RunConfig(
                params={**self.params, **(params or {})},
                only=only,
                skip=skip,
                max_concurrent=max_concurrent,
                fail_fast=fail_fast,
                executor=executor,
                executor_options=executor_options or {},
                run_id=run_id,
                services=services or {},
                max_threads=max_threads,
                extractor_state=extractor_state or {},
                secrets=[
                    n for n, spec in self.param_specs.items() if getattr(spec, "secret", False)
                ],
                secret_values=tuple(self.file_secrets),
                parent_run_id=parent_run_id,
                resume=outputs,
                resumed_from=resumed_from,
                resume_state=run_state,
                rollback=rollback,
                capture_logs=capture_logs,
                cache=cache,
                refresh=refresh,
                result_store=tracker_obj.results if tracker_obj is not None else None,
            )
            # the run's own listeners: never registered on the (shared) plugin manager
            run_listeners: list[Any] = list(listeners)
            if self._on_step_complete:
                run_listeners.append(_StepCompleteListener(self._on_step_complete, config.run_id))
            if tracker_obj is not None:
                from pipectl.tracking import TrackingListener

                run_listeners.append(
                    TrackingListener(
                        tracker_obj,
                        run_id,
                        self.spec,
                        resumed_from=resumed_from,
                        pipeline_file=self.source,
                        executor=executor or self.spec.executor,
                        fingerprints=self.fingerprints(),
                    )
                )
            try:
                finished = await execute(
                    self.spec,
                    config,
                    pm,
                    services=self.services,
                    plan=plan,
                    listeners=tuple(run_listeners),
                )
                claimed = None  # the run's record says how its resume went: the claim stays
                return finished
            except RunCancelled:
                claimed = None  # recorded as cancelled: a later resume may take the claim over
                raise
            finally:
                if tracker_obj is not None:
                    tracker_obj.flush()
        finally:
            try:
                if claimed is not None:  # the run never started (or broke): let go of it
                    try:
                        tracker_obj.release_resume(claimed, run_id)
                    except Exception:  # noqa: BLE001 - the error on its way out matters more
                        pass  # (a claim whose process is gone is taken over anyway)
            finally:
                if owned:
                    tracker_obj.close()

    def _open_tracker(self, tracker: Any, pm: Any, parent_run_id: str | None) -> tuple[Any, bool]:
        """(the tracker to record with or None, whether this run opened it and closes it)."""
        if tracker is None:
            if parent_run_id is not None:  # a sub-pipeline: the parent's tracker records it
                return None, False
            tracker = self.spec.tracker
        if tracker is None or not isinstance(tracker, str):
            return tracker, False
        from pipectl.tracking import open_tracker

        opened = open_tracker(tracker, pm.registries)
        return opened, opened is not None

    def run_sync(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> PipelineRun:
        """:meth:`run` from plain (non-async) code, with the same arguments (``only=``,
        ``skip=``, ...). Ctrl-C (SIGINT) or SIGTERM ends the run as
        ``cancelled`` and returns it, with the signal's name in ``run.cancelled_by``; a second
        one raises ``KeyboardInterrupt``."""
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run_sync() called from a running event loop: use `await pipe.run()`"
            )
        from pipectl.engine import RunCancelled

        async def main() -> PipelineRun:
            caught = _catch_signals(asyncio.current_task())  # type: ignore[arg-type]
            try:
                return await self.run(params, **kwargs)
            except RunCancelled as cancelled:
                if caught:
                    cancelled.run.cancelled_by = caught[0]
                return cancelled.run
            except asyncio.CancelledError:
                if caught:  # a signal before the run began: no run to return, as a 2nd signal
                    raise KeyboardInterrupt from None
                raise

        return asyncio.run(main())

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={len(self._steps)})"


def load_pipelines(
    path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    plugin_manager: Any = None,
    project: Project | None = None,
    check_graph: bool = True,
) -> tuple[dict[str, Pipeline], dict[str, list[str]]]:
    """Every pipeline of the file at ``path`` by name, and what each depends on.

    A file holds one pipeline (``name`` and ``steps`` at the top) or several (``pipelines:``, a
    list of ``name``/``steps``/``depends_on`` mappings sharing the file's ``params``). The
    pipelines come in an order where each follows those it depends on.

    Relative paths in the file (``path`` params' defaults, components' path options,
    ``dead_letter``, ``story``, a ``sqlite:///`` tracker) resolve against the file's folder.
    ``project`` (a :class:`pipectl.project.Project`) gives defaults for the params the file
    declares. ``check_graph=False`` leaves each pipeline's steps' graph (unknown dependencies,
    cycles) to :meth:`Pipeline.validate`, which reports it with every other problem
    (``pipectl validate`` and ``run`` do). The file is read by :mod:`pipectl.files`
    (:func:`~pipectl.files.read_pipelines`); every problem in it is a
    :class:`~pipectl.files.PipelineFileError` naming line and field.
    """
    from pipectl.files.build import read_pipelines

    loaded, depends = read_pipelines(
        path,
        params,
        env=env,
        plugin_manager=plugin_manager,
        project=project,
        check_graph=check_graph,
    )
    made: dict[int, Pipeline] = {}
    return (
        {name: _from_file(each, plugin_manager, made) for name, each in loaded.items()},
        depends,
    )


def load_pipeline(
    path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    plugin_manager: Any = None,
    name: str | None = None,
    project: Project | None = None,
) -> Pipeline:
    """Load one pipeline from the file at ``path`` (``name`` picks one of several): a
    :class:`Pipeline` whose ``params`` (the declared defaults, overridden by ``params``) are
    ready for :meth:`Pipeline.run`.

    Raises :class:`~pipectl.files.PipelineFileError` for anything wrong in the file, naming
    line and field.
    """
    from pipectl.files.build import read_pipeline

    loaded = read_pipeline(
        path, params, env=env, plugin_manager=plugin_manager, name=name, project=project
    )
    return _from_file(loaded, plugin_manager, {})


def _from_file(loaded: LoadedPipeline, plugin_manager: Any, made: dict[int, Pipeline]) -> Pipeline:
    """The :class:`Pipeline` of a pipeline loaded from a file, its sub-pipelines' too (each
    made once: ``made`` by the loaded pipeline's id)."""
    pipe = made.get(id(loaded))
    if pipe is not None:
        return pipe
    from pipectl.files.build import LoadedPipeline

    head = loaded.spec
    pipe = made[id(loaded)] = Pipeline(
        head.name,
        description=head.description,
        max_concurrent=head.max_concurrent,
        fail_fast=head.fail_fast,
        executor=head.executor,
        tracker=head.tracker,
        pools=head.pools,
        plugin_manager=plugin_manager,
    )
    graph = loaded.graph
    for step in head.steps:
        child = step.options.get("pipeline") if step.step_type == "pipeline" else None
        if isinstance(child, LoadedPipeline):
            step = attrs.evolve(
                step, options={**step.options, "pipeline": _from_file(child, plugin_manager, made)}
            )
            graph = None  # a graph holds its steps: built again, from these, when needed
        pipe.add(step)
    pipe.params, pipe.param_specs = loaded.params, loaded.param_specs
    pipe._origin = loaded.origin
    pipe._graph = graph  # validated by the loading (check_graph), or None
    return pipe


def _check_refresh(pipe: Pipeline, names: tuple[str, ...]) -> None:
    """``refresh=`` names cached steps of ``pipe``; else PipelineValidationError."""
    import difflib

    from pipectl.errors import PipelineValidationError

    steps = {step.name: step for step in pipe.spec.steps}
    problems = []
    for name in names:
        step = steps.get(name)
        if step is None:
            close = difflib.get_close_matches(name, list(steps), n=1)
            problems.append(
                f"refresh: no step {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
            )
        elif step.cache is None:
            problems.append(
                f"refresh: step {name!r} is not cached (it runs every time): give it cache: true"
            )
    if problems:
        raise PipelineValidationError(pipe.name, problems)


def _names(value: Iterable[str] | str | None) -> tuple[str, ...]:
    """``only=`` or ``skip=`` as a tuple of step names: one name, any iterable of names, or
    None; duplicates dropped, order kept."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(dict.fromkeys(value))


class _StepCompleteListener:
    """The lifecycle listener behind :meth:`Pipeline.on_step_complete`, for one run (a run
    listener: it also hears the run's sub-pipeline runs, and keeps to its own)."""

    plugin_name = "on_step_complete"

    def __init__(self, callbacks: list[Callable[[Any], Any]], run_id: str | None):
        self.callbacks = list(callbacks)
        self.run_id = run_id

    @hookimpl
    def pipectl_step_finish(self, run: PipelineRun, step: StepSpec, result: Any) -> None:
        if run.run_id == self.run_id:
            for callback in self.callbacks:
                callback(result)


def _catch_signals(task: asyncio.Task[Any]) -> list[str]:
    """Ctrl-C (SIGINT) and SIGTERM cancel the run's task; the names of the signals caught go
    into the list returned. A second signal of either kind raises KeyboardInterrupt, so a run
    stuck cleaning up can still be ended. SIGTERM is what ``kill``, systemd, Docker, Kubernetes
    and CI runners send: handled so, it ends the run recorded and with its outputs rolled back.

    This goes through the loop's own signal handling: it also sets the signal wake-up fd, so the
    loop wakes even when the signal lands on one of pipectl's worker threads while the loop
    waits with no timer due (asyncio.run's default handler would then leave it asleep). Only the
    main thread can install handlers; a signal ignored on purpose (nohup, a parent's choice) is
    left ignored; the handlers in place before are put back when the task ends."""
    import asyncio
    import signal
    import threading

    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        return caught
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def on_signal(signum: int) -> None:
        caught.append(signal.Signals(signum).name)
        if len(caught) == 1 and not task.done():
            task.cancel()
            return
        _restore(loop, previous)
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN:
            continue
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not available: leave it
            continue
        previous[signum] = handler
    if previous:
        task.add_done_callback(lambda _t: _restore(loop, previous))
    return caught


def _restore(loop: asyncio.AbstractEventLoop, previous: dict[int, Any]) -> None:
    """Remove :func:`_catch_signals`' handlers and put back the ones they replaced (an
    application's own SIGTERM handler stays its own after the run)."""
    import signal

    while previous:
        signum, handler = previous.popitem()
        try:
            loop.remove_signal_handler(signum)
            if handler is not None:  # None: a handler not set from Python, cannot be put back
                signal.signal(signum, handler)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

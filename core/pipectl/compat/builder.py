"""The seed system "Pipeline Builder" (seed 004) as a thin layer on :class:`pipectl.Pipeline`.

.. code-block:: python

    from pipectl.compat.builder import Pipeline

    pipeline = Pipeline("my-pipeline", description="...")
    pipeline.add_step(
        "stage-data",
        stage_all_command,
        raw_root=Path("data/01_raw"),  # keywords that are not the step's own: the command's
        retry_count=2,
        rollback_fn=lambda: shutil.rmtree("data/02_stage"),
    )
    result = pipeline.execute(stop_on_error=True, enable_rollback=True)
    print(result.success, result.total_time, result.step_times)

Each :meth:`Pipeline.execute` builds a :class:`pipectl.Pipeline` of the steps and runs it once
on pipectl's engine (``pipeline.pipeline`` shows what it builds):

- steps run in the order they were added: each depends on the step added before it, unless
  ``depends_on=[...]`` names its dependencies (``[]``: none; steps no order ties run at once);
  ``add_parallel_group([step1, step2])`` adds :class:`PipelineStep` objects that run at the
  same time (each after what was added before them), the step added next after all of them;
- ``add_subpipeline(other)`` adds a step running another builder :class:`Pipeline` as a
  pipectl sub-pipeline (:meth:`pipectl.Pipeline.add_subpipeline`: a nested run); the step fails
  when a step of it fails; with ``enable_rollback`` a completed sub-pipeline is undone like a
  step (the ``rollback_fn`` of its completed steps, last completed first), and a failing one
  rolls back its own completed steps before the steps before it are;
- ``retry_count``/``retry_delay`` are ``retries``/``retry_delay``: exponential backoff (the
  delay doubles after each failed attempt, shortened by up to 10% of jitter);
- ``stop_on_error=True`` (the default) is ``fail_fast``: the first failure stops the run and
  the steps after it do not run (``skipped``); ``False``: every step runs once the steps before
  it ended, whatever their outcome (``trigger="all_done"``); a failure still fails the run;
- ``skip_on_error=True`` is ``allow_failure``: the step's failure neither stops nor fails the
  run; its result reads ``skipped`` with the error kept;
- ``condition``: a callable called with no arguments when :meth:`execute` starts (before any
  step runs); false, the step is ``skipped`` and the steps after it run;
- ``enable_rollback=True`` is ``run(rollback=True)``: when the run fails, the ``rollback_fn`` of
  every step that completed in this run is called, last completed first. ``rollback_fn`` gets,
  by parameter name, the arguments its command was called with (the step's keywords and the
  command's defaults), and pipectl's ``output``, ``result``, ``params``, ``ctx``;
- a command raising ``SystemExit`` with code 0 or None succeeded (CLI commands); another code
  fails the step.

Checkpoints are this module's own small JSON files (the document's format): each
:meth:`~Pipeline.execute` writes ``CHECKPOINT_DIR/NAME_EXECUTIONID.json`` after every step that
ends (written whole, then renamed into place), and once more when the run ended (with rollback
statuses and the run's ``status``). A step added with ``checkpoint=False`` is left out of it, so
a resume runs it again. ``resume_from`` is ``"latest"`` (the latest checkpoint of this pipeline,
unless that execution succeeded: then there is nothing to resume and every step runs), an
execution id, a checkpoint file's path, or a step's name (the steps added before it do not run).
Resumed steps are ``skipped`` here (not run, not rolled back) and are carried into the new
checkpoint as ``success``. Why not pipectl's tracker and result store: the steps' work is their
side effects, not outputs to keep; the document promises a readable JSON file in a directory
and resuming from a step's name; and pipectl's resume compares the steps' code, which a
command's keyword arguments are not part of.

``to_yaml(path)`` and ``Pipeline.from_yaml(path, command_registry)`` use the document's YAML
(``name``, ``description``, ``steps`` with ``name``, ``command``, ``kwargs``, ``retry_count``,
``retry_delay``, ``skip_on_error``, ``checkpoint``, ``depends_on``: written where a step does
not simply follow the one added before it, as in a parallel group); ``${VAR}`` (and
``${VAR:-default}``) in strings is the environment's value, a placeholder that is the whole
value read as YAML reads a scalar (``67`` an int). ``rollback_fn`` and ``condition`` are
functions: YAML has no place for them and ``to_yaml`` leaves them out.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from pipectl.binding import is_async
from pipectl.engine.rollback import rollback_kwargs
from pipectl.hookspecs import hookimpl
from pipectl.model import PipelineRun, RunStatus, StepResult, StepStatus
from pipectl.pipeline import Pipeline as _Pipeline

__all__ = [
    "DEFAULT_CHECKPOINT_DIR",
    "Pipeline",
    "PipelineResult",
    "PipelineStep",
    "StepResult",
    "StepStatus",
]

DEFAULT_CHECKPOINT_DIR = Path("data/.pipeline_checkpoints")
"""The document's checkpoint location, relative to the working directory."""

_ROLLBACK_NAMES = frozenset({"output", "result", "params", "ctx", "context"})
_YAML_STEP_FIELDS = (
    "name",
    "command",
    "kwargs",
    "retry_count",
    "retry_delay",
    "skip_on_error",
    "checkpoint",
    "depends_on",
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@attrs.frozen
class PipelineStep:
    """One step as added: its command and the keyword arguments it is called with."""

    name: str
    command: Callable[..., Any] = attrs.field(eq=False)
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    retry_count: int = 0
    retry_delay: float = 1.0
    rollback_fn: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    checkpoint: bool = True
    skip_on_error: bool = False
    condition: Callable[[], Any] | None = attrs.field(default=None, eq=False)
    depends_on: tuple[str, ...] | None = None
    """None: after the step added before it."""
    command_name: str | None = None
    """The command's name in YAML (default: the function's ``__name__``)."""
    subpipeline: Pipeline | None = attrs.field(default=None, eq=False)
    """A step of :meth:`Pipeline.add_subpipeline`: the pipeline it runs (``command`` is its
    ``execute``, for show: the sub-pipeline runs nested in the run, not by calling it)."""

    def arguments(self) -> dict[str, Any]:
        """What the command is called with: its defaults, then the step's keywords."""
        try:
            parameters = inspect.signature(self.command).parameters.values()
        except (TypeError, ValueError):
            return dict(self.kwargs)
        defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        return {**defaults, **self.kwargs}


@attrs.frozen
class PipelineResult:
    """What :meth:`Pipeline.execute` returns: ``success``, ``total_time`` (seconds),
    ``step_times`` (seconds by step), ``steps`` (step name -> pipectl's
    :class:`~pipectl.model.StepResult`), ``errors``, the checkpoint written, and ``run``."""

    run: PipelineRun
    steps: dict[str, StepResult]
    execution_id: str | None = None
    checkpoint_path: Path | None = None

    @property
    def success(self) -> bool:
        return self.run.ok

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def total_time(self) -> float:
        return (self.run.duration_ms or 0.0) / 1000.0

    @property
    def step_times(self) -> dict[str, float]:
        return {name: result.duration_ms / 1000.0 for name, result in self.steps.items()}

    @property
    def errors(self) -> list[str]:
        return self.run.errors


class Pipeline:
    """Steps added with :meth:`add_step` (or read by :meth:`from_yaml`), run by :meth:`execute`.

    ``checkpoint_dir`` None writes no checkpoint; ``options`` go to each run's
    :class:`pipectl.Pipeline` (``tracker=``, ``services=``, ``max_concurrent=``...)."""

    def __init__(
        self,
        name: str,
        description: str = "",
        checkpoint_dir: str | os.PathLike[str] | None = DEFAULT_CHECKPOINT_DIR,
        **options: Any,
    ):
        self.name = name
        self.description = description
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.options = options
        self._steps: dict[str, PipelineStep] = {}
        self._groups: dict[str, tuple[str, ...]] = {}  # step -> its parallel group
        self._callbacks: list[Callable[[Any], Any]] = []

    @property
    def steps(self) -> dict[str, PipelineStep]:
        return dict(self._steps)

    def add_step(
        self,
        name: str,
        command: Callable[..., Any],
        *,
        retry_count: int = 0,
        retry_delay: float = 1.0,
        rollback_fn: Callable[..., Any] | None = None,
        checkpoint: bool = True,
        skip_on_error: bool = False,
        condition: Callable[[], Any] | None = None,
        depends_on: Iterable[str] | str | None = None,
        **kwargs: Any,
    ) -> PipelineStep:
        """Add a step calling ``command(**kwargs)``; returns it."""
        deps = (depends_on,) if isinstance(depends_on, str) else depends_on
        return self.add(
            PipelineStep(
                name,
                command,
                kwargs,
                retry_count,
                retry_delay,
                rollback_fn,
                checkpoint,
                skip_on_error,
                condition,
                None if deps is None else tuple(deps),
            )
        )

    def add(self, step: PipelineStep) -> PipelineStep:
        """Add a :class:`PipelineStep` as it is (what :meth:`add_step` and YAML build)."""
        self._check(step)
        self._steps[step.name] = step
        return step

    def _check(self, step: PipelineStep) -> None:
        if not isinstance(step, PipelineStep):
            raise TypeError(f"a step is a PipelineStep, got {type(step).__name__}")
        if step.name in self._steps:
            raise ValueError(f"pipeline {self.name!r} already has a step {step.name!r}")
        if not callable(step.command):
            raise TypeError(f"step {step.name!r}: command must be callable, got {step.command!r}")
        if step.rollback_fn is not None:
            _check_rollback(step)

    def add_parallel_group(self, steps: Iterable[PipelineStep]) -> list[PipelineStep]:
        """Add ``steps`` (:class:`PipelineStep` objects) to run at the same time: each one after
        the step (or group) added before them, unless its ``depends_on`` says otherwise; the
        step added next runs after all of them."""
        group = list(steps)
        names = tuple(str(getattr(step, "name", "")) for step in group)
        if not group:
            raise ValueError("add_parallel_group() needs at least one step")
        if len(set(names)) != len(names):
            raise ValueError(f"add_parallel_group(): a step name comes twice: {names}")
        for step in group:
            self._check(step)
        for step in group:
            self._steps[step.name] = step
            self._groups[step.name] = names
        return group

    def add_subpipeline(
        self,
        pipeline: Pipeline,
        name: str | None = None,
        *,
        retry_count: int = 0,
        retry_delay: float = 1.0,
        checkpoint: bool = True,
        skip_on_error: bool = False,
        condition: Callable[[], Any] | None = None,
        depends_on: Iterable[str] | str | None = None,
    ) -> PipelineStep:
        """Add a step (``name``: the sub-pipeline's) running ``pipeline``, another builder
        :class:`Pipeline`, as a pipectl sub-pipeline; the options are :meth:`add_step`'s."""
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"add_subpipeline() takes a Pipeline, got {type(pipeline).__name__}")
        if pipeline is self:
            raise ValueError(f"pipeline {self.name!r} cannot run itself as a sub-pipeline")
        deps = (depends_on,) if isinstance(depends_on, str) else depends_on
        return self.add(
            PipelineStep(
                name or pipeline.name,
                pipeline.execute,
                retry_count=retry_count,
                retry_delay=retry_delay,
                checkpoint=checkpoint,
                skip_on_error=skip_on_error,
                condition=condition,
                depends_on=None if deps is None else tuple(deps),
                subpipeline=pipeline,
            )
        )

    def on_step_complete(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``callback(result)`` as each step ends (see :meth:`pipectl.Pipeline.on_step_complete`)."""
        self._callbacks.append(callback)
        return callback

    # -- running ---------------------------------------------------------------------------

    def build(self, stop_on_error: bool = True, skip: Iterable[str] = ()) -> _Pipeline:
        """The :class:`pipectl.Pipeline` one execution runs; the steps in ``skip`` do not run.
        (A run with rollback runs its sub-pipelines with rollback: a failing one undoes its
        own completed steps.)"""
        skipping = set(skip)
        pipe = _Pipeline(
            self.name, description=self.description, fail_fast=stop_on_error, **self.options
        )
        dependencies = self.dependencies()
        for step in self._steps.values():
            options: dict[str, Any] = {
                "depends_on": dependencies[step.name],
                "retries": step.retry_count,
                "retry_delay": step.retry_delay,
                "allow_failure": step.skip_on_error,
                # none_failed: a step skipped by a condition or a resume does not stop the rest
                "trigger": "none_failed" if stop_on_error else "all_done",
                "when": "false" if step.name in skipping else None,
                "store_output": False,  # resume is the checkpoint's: no outputs to pickle
            }
            if step.subpipeline is not None:
                child = step.subpipeline
                built = child.build(stop_on_error, child._unmet_conditions())
                undo_child = _undo_subpipeline(child)
                pipe.add_subpipeline(built, step.name, rollback=undo_child, **options)
            else:
                undo = _undo(step) if step.rollback_fn is not None else None
                pipe.add_step(step.name, _call(step), rollback=undo, **options)
        for callback in self._callbacks:
            pipe.on_step_complete(callback)
        return pipe

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each step's dependencies: its ``depends_on``, else the step added before it (all
        the steps of a parallel group added before it)."""
        dependencies: dict[str, tuple[str, ...]] = {}
        previous: tuple[str, ...] = ()
        start = previous
        for step in self._steps.values():
            group = self._groups.get(step.name, (step.name,))
            if step.name == group[0]:
                start = previous
            dependencies[step.name] = step.depends_on if step.depends_on is not None else start
            if step.name == group[-1]:
                previous = group
        return dependencies

    def _unmet_conditions(self, exclude: Iterable[str] = ()) -> dict[str, str]:
        """Step name -> why it does not run, for the steps (but ``exclude``) whose
        ``condition`` is false (a sub-pipeline's are called when it is built)."""
        excluded = set(exclude)
        return {
            step.name: "condition is false"
            for step in self._steps.values()
            if step.name not in excluded and step.condition is not None and not step.condition()
        }

    @property
    def pipeline(self) -> _Pipeline:
        return self.build()

    def visualize(self, format: str = "text") -> str:
        return self.build().visualize(format)

    def execute(
        self,
        stop_on_error: bool = True,
        enable_rollback: bool = False,
        resume_from: str | os.PathLike[str] | None = None,
        **run_options: Any,
    ) -> PipelineResult:
        """Run every step once (the ones ``resume_from`` or a false ``condition`` skip aside);
        ``run_options`` are :meth:`pipectl.Pipeline.run`'s (``listeners=``, ``tracker=``...)."""
        carried, reasons = self._resume(resume_from)
        reasons.update(self._unmet_conditions(exclude=reasons))
        listeners = list(run_options.pop("listeners", ()))
        checkpoint = None
        if self.checkpoint_dir is not None:
            checkpoint = _Checkpoint(self, self.checkpoint_dir, carried)
            listeners.append(checkpoint)
        run = self.build(stop_on_error, reasons).run_sync(
            rollback=enable_rollback, listeners=listeners, **run_options
        )
        steps = {name: self._result(result, reasons) for name, result in run.steps.items()}
        if checkpoint is None:
            return PipelineResult(run, steps)
        return PipelineResult(run, steps, checkpoint.execution_id, checkpoint.path)

    def _result(self, result: StepResult, reasons: Mapping[str, str]) -> StepResult:
        name = result.step_name
        if name in reasons:
            return attrs.evolve(result, reason=reasons[name])
        if result.status is StepStatus.FAILED and self._steps[name].skip_on_error:
            reason = f"skip_on_error: the step failed: {result.error}"
            return attrs.evolve(result, status=StepStatus.SKIPPED, reason=reason)
        return result

    def _resume(self, resume_from: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """(the checkpoint entries carried into this execution, step name -> why it is not
        run) for ``resume_from``."""
        if resume_from is None or resume_from is False:
            return [], {}
        names = list(self._steps)
        if isinstance(resume_from, str) and resume_from in self._steps:
            before = names[: names.index(resume_from)]
            return [], {n: f"resume_from={resume_from!r}: not run" for n in before}
        state = self._checkpoint(resume_from)
        if state is None:
            return [], {}
        done = [
            {**entry, "resumed_from": state["execution_id"]}
            for entry in state.get("steps", [])
            if entry.get("status") == "success" and entry.get("name") in self._steps
        ]
        why = f"resumed: completed in execution {state['execution_id']}"
        return done, {entry["name"]: why for entry in done}

    def _checkpoint(self, resume_from: Any) -> dict[str, Any] | None:
        """The checkpoint ``resume_from`` names (None: "latest" and nothing to resume)."""
        if resume_from is True or resume_from == "latest":
            if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
                return None
            found = [s for s in map(_read, self.checkpoint_dir.glob("*.json")) if s]
            mine = [s for s in found if s.get("pipeline_name") == self.name]
            latest = max(mine, key=lambda s: str(s.get("execution_id")), default=None)
            return None if latest is None or latest.get("status") == "success" else latest
        path = Path(resume_from)
        if not path.is_file() and self.checkpoint_dir is not None:
            path = self.checkpoint_dir / f"{self.name}_{resume_from}.json"
        state = _read(path) if path.is_file() else None
        if state is None:
            steps = ", ".join(self._steps)
            raise ValueError(
                f"resume_from={str(resume_from)!r} is not a step of {self.name!r} ({steps}), "
                "'latest', a checkpoint file or an execution id with a checkpoint in "
                f"{self.checkpoint_dir}"
            )
        return state

    # -- YAML --------------------------------------------------------------------------------

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The pipeline in the document's YAML, written to ``path`` when given (its folder
        made). Paths among the keywords are written as strings; ``rollback_fn`` and
        ``condition`` are left out."""
        import yaml

        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        dependencies = self.dependencies()
        previous: tuple[str, ...] = ()
        data["steps"] = []
        for step in self._steps.values():
            # depends_on when it is not "the step added before": given, or a parallel group's
            deps = dependencies[step.name]
            explicit = step.depends_on is not None or deps != previous
            data["steps"].append(_step_data(step, deps if explicit else None))
            previous = (step.name,)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        command_registry: Mapping[str, Callable[..., Any]],
        **options: Any,
    ) -> Pipeline:
        """Read the document's YAML; each step's ``command`` names a function of
        ``command_registry``; ``options`` are :class:`Pipeline`'s (``checkpoint_dir=``...)."""
        import yaml

        with open(path, encoding="utf-8") as f:
            data = _substitute(yaml.safe_load(f), os.environ, str(path))
        if not isinstance(data, dict) or not data.get("name"):
            raise ValueError(f"{path}: a pipeline needs a name: (and steps:)")
        unknown = sorted(set(data) - {"name", "description", "steps"})
        if unknown:
            raise ValueError(f"{path}: unknown field {', '.join(unknown)}")
        pipeline = cls(data["name"], description=data.get("description") or "", **options)
        for entry in data.get("steps") or []:
            where = f"{path}: step {entry.get('name')!r}" if isinstance(entry, dict) else path
            if not isinstance(entry, dict) or "name" not in entry or "command" not in entry:
                raise ValueError(f"{where}: a step needs name: and command:")
            unknown = sorted(set(entry) - set(_YAML_STEP_FIELDS))
            if unknown:
                known = ", ".join(_YAML_STEP_FIELDS)
                raise ValueError(f"{where}: unknown field {', '.join(unknown)} (known: {known})")
            command = entry["command"]
            if command not in command_registry:
                known = ", ".join(sorted(command_registry)) or "none"
                raise ValueError(f"Unknown command: {command} ({where}; registered: {known})")
            deps = entry.get("depends_on")
            pipeline.add(
                PipelineStep(
                    entry["name"],
                    command_registry[command],
                    dict(entry.get("kwargs") or {}),
                    retry_count=int(entry.get("retry_count") or 0),
                    retry_delay=float(entry.get("retry_delay", 1.0)),
                    checkpoint=bool(entry.get("checkpoint", True)),
                    skip_on_error=bool(entry.get("skip_on_error", False)),
                    depends_on=None if deps is None else tuple(_as_list(deps)),
                    command_name=command,
                )
            )
        return pipeline

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={len(self._steps)})"


# -- the steps' functions for pipectl ------------------------------------------------------------


def _call(step: PipelineStep) -> Callable[..., Any]:
    """The pipectl step function: ``command(**kwargs)``, a SystemExit(0) a success."""
    command, kwargs = step.command, dict(step.kwargs)
    if is_async(command):

        async def call_async() -> Any:
            try:
                return await command(**kwargs)
            except SystemExit as exc:
                return _exited(exc)

        return call_async

    def call() -> Any:
        try:
            return command(**kwargs)
        except SystemExit as exc:
            return _exited(exc)

    return call


def _exited(exc: SystemExit) -> None:
    if exc.code in (None, 0):
        return None
    raise RuntimeError(f"the command exited with code {exc.code}") from exc


def _undo(step: PipelineStep) -> Callable[..., Any]:
    """pipectl's rollback: ``rollback_fn`` given the command's arguments it names."""
    func = step.rollback_fn
    assert func is not None
    arguments = step.arguments()

    if is_async(func):

        async def undo_async(**available: Any) -> None:
            await func(**rollback_kwargs(func, **{**available, **arguments}))

        return undo_async

    def undo(**available: Any) -> None:
        func(**rollback_kwargs(func, **{**available, **arguments}))

    return undo


def _undo_subpipeline(child: Pipeline) -> Callable[..., Any]:
    """pipectl's rollback of a sub-pipeline step: the ``rollback_fn`` of each step of the
    sub-pipeline's run that succeeded, last completed first (a nested sub-pipeline likewise)."""

    async def undo(output: Any, ctx: Any) -> None:
        run = getattr(output, "run", None)  # a SubPipelineOutput: the sub-pipeline's run
        if run is None:
            return
        done = [r for r in run.steps.values() if r.status is StepStatus.SUCCESS]
        for result in sorted(done, key=lambda r: r.finished_at, reverse=True):
            step = child._steps.get(result.step_name)
            if step is None:
                continue
            if step.subpipeline is not None:
                func: Callable[..., Any] = _undo_subpipeline(step.subpipeline)
            elif step.rollback_fn is not None:
                func = _undo(step)
            else:
                continue
            available = {
                "output": result.output,
                "result": result,
                "params": run.parameters,
                "ctx": ctx,
            }
            kwargs = rollback_kwargs(func, **available)
            if is_async(func):
                await func(**kwargs)
            else:
                await asyncio.to_thread(func, **kwargs)

    return undo


def _check_rollback(step: PipelineStep) -> None:
    assert step.rollback_fn is not None
    try:
        parameters = inspect.signature(step.rollback_fn).parameters.values()
    except (TypeError, ValueError):
        return
    given = _ROLLBACK_NAMES | set(step.arguments())
    missing = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and (p.kind is p.POSITIONAL_ONLY or p.name not in given)
    ]
    if missing:
        raise TypeError(
            f"step {step.name!r}: rollback_fn needs {', '.join(missing)}: neither a keyword of "
            "the step nor a parameter of its command with a default"
        )


# -- checkpoints -----------------------------------------------------------------------------------


class _Checkpoint:
    """The run listener writing one execution's checkpoint file."""

    plugin_name = "builder_checkpoint"

    def __init__(self, pipeline: Pipeline, directory: Path, carried: list[dict[str, Any]]):
        started = datetime.now()
        self.steps = pipeline.steps
        self.pipeline_name = pipeline.name
        # the document's id (YYYYMMDD_HHMMSS) and microseconds: one file per execution
        self.execution_id = started.strftime("%Y%m%d_%H%M%S_%f")
        self.timestamp = started.isoformat(timespec="seconds")
        self.path = directory / f"{pipeline.name}_{self.execution_id}.json"
        self.entries: dict[str, dict[str, Any]] = {e["name"]: e for e in carried}
        self.carried = set(self.entries)
        self.status = "running"
        self.run_id: str | None = None

    # a run listener also hears the runs of sub-pipelines: it keeps to the first run, its own

    @hookimpl
    def pipectl_run_start(self, run: PipelineRun) -> None:
        if self.run_id is None:
            self.run_id = run.run_id

    @hookimpl
    def pipectl_step_finish(self, run: PipelineRun, step: Any, result: StepResult) -> None:
        if run.run_id != self.run_id:
            return
        self._record(result)
        self._write()

    @hookimpl
    def pipectl_run_finish(self, run: PipelineRun) -> None:
        if run.run_id != self.run_id:
            return
        for result in run.steps.values():
            self._record(result)
        self.status = str(run.status)
        self._write()

    def _record(self, result: StepResult) -> None:
        name = result.step_name
        if name in self.carried or not self.steps[name].checkpoint:
            return
        status = str(result.status)
        entry: dict[str, Any] = {"name": name, "status": status}
        if result.status is StepStatus.FAILED and self.steps[name].skip_on_error:
            entry["status"] = "skipped"
        if result.status in (StepStatus.SUCCESS, StepStatus.ROLLED_BACK):
            entry["elapsed_time"] = round(result.duration_ms / 1000.0, 3)
        if result.error:
            entry["error"] = result.error
        elif result.reason:
            entry["reason"] = result.reason
        self.entries[name] = entry

    def _write(self) -> None:
        state = {
            "pipeline_name": self.pipeline_name,
            "execution_id": self.execution_id,
            "timestamp": self.timestamp,
            "status": self.status,
            "steps": list(self.entries.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(part, self.path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "execution_id" in state else None


# -- YAML --------------------------------------------------------------------------------------------


def _step_data(step: PipelineStep, depends_on: tuple[str, ...] | None) -> dict[str, Any]:
    if step.subpipeline is not None:
        raise TypeError(f"step {step.name!r}: a sub-pipeline has no place in the YAML")
    command = str(step.command_name or getattr(step.command, "__name__", ""))
    if not command.isidentifier():
        raise TypeError(f"step {step.name!r}: its command has no name for YAML ({command!r})")
    data: dict[str, Any] = {"name": step.name, "command": command}
    if step.kwargs:
        data["kwargs"] = {key: _plain(value, step.name) for key, value in step.kwargs.items()}
    if step.retry_count:
        data["retry_count"] = step.retry_count
    if step.retry_delay != 1.0:
        data["retry_delay"] = step.retry_delay
    if step.skip_on_error:
        data["skip_on_error"] = True
    if not step.checkpoint:
        data["checkpoint"] = False
    if depends_on is not None:
        data["depends_on"] = list(depends_on)
    return data


def _plain(value: Any, step: str) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, step) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, step) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"step {step!r}: a {type(value).__name__} cannot be written to YAML")


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _substitute(value: Any, env: Mapping[str, str], where: str) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in every string replaced from ``env``."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, where) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ValueError(f"{where}: ${{{name}}} is not set in the environment")

    text = _VAR.sub(one, value)
    if _VAR.fullmatch(value):  # the whole value: typed as a YAML scalar ("67" -> 67)
        import yaml

        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return parsed if isinstance(parsed, (bool, int, float)) else text
    return text

"""ia_modules (seed 003) on pipectl: step classes, a flow of paths, services.

The document's code runs with only its imports changed::

    from pipectl.compat.ia_modules import Pipeline, ServiceRegistry, Step

    class Step1(Step):
        async def run(self, input):
            return {"topic": f"PROCESSED_{input.get('topic').upper()}"}

    services = ServiceRegistry()
    services.register("database", db)
    pipeline = Pipeline("simple", [Step1("step1", {}), Step2("step2", {})], flow, services)
    result = await pipeline.run({"topic": "ml"})  # {"input", "steps", "output"}

or from a JSON file of that design: ``await run_pipeline_from_json("pipeline.json", input)``.

A :class:`Pipeline` is a pipectl :class:`pipectl.Pipeline` (``pipeline.pipeline``) with one
python step per ia_modules step, laid out by :func:`pipectl.importers.ia_modules.convert`,
the converter of ``pipectl import ia-modules``: paths are dependencies, conditions ``when:``,
declared ``inputs`` references. A step that declares no inputs gets what ia_modules hands it:

- no upstream: the pipeline input (the whole mapping given to ``run``);
- one upstream: that step's result itself (streams fed by one source each get its result,
  where ia_modules' own runner hands each the previous stream's);
- several upstreams, all on branches chosen by conditions: the result of the one that ran
  (only the chosen branch runs, where ia_modules' own runner runs them all);
- several upstreams that all run: each one's result by step id, ``{"stream1": ..., ...}``
  (merging them into one mapping would lose the keys they share).

Steps run as soon as their upstreams end (independent branches in parallel). A step that
raises ends the run and its exception is raised from ``run``, as in ia_modules. Every step
gets ``self.services``, the pipeline's :class:`ServiceRegistry`, where ``run`` registers
``execution_id`` (the pipectl run id; one registered by the application before the run, such
as a job id, is the run's id).

With an :class:`ExecutionTracker` registered as ``execution_tracker`` the run is recorded in
its pipectl tracker (the run's ``tracker``), and ``tracker.get_execution(execution_id)`` /
``get_execution_steps(execution_id)`` read it back in the ``pipeline_executions`` /
``step_executions`` shape of the design.
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipectl.model import PipelineRun, StepStatus
from pipectl.pipeline import Pipeline as _Pipeline

__all__ = [
    "ExecutionTracker",
    "GraphPipelineRunner",
    "Pipeline",
    "ServiceRegistry",
    "Step",
    "create_step_from_json",
    "load_step_class",
    "run_pipeline_from_json",
]

_WHOLE = "*"  # the input that is a step's whole data (pipectl.components.python_step)


class ServiceRegistry:
    """Services by name (``database``, ``http``, ``execution_id``...): ``register(name,
    service)``, ``get(name)`` (None when not registered)."""

    def __init__(self) -> None:
        self._services: dict[str, Any] = {}
        self._assigned_id: Any = None  # the execution_id the last run registered itself

    def register(self, name: str, service: Any) -> None:
        self._services[name] = service

    def get(self, name: str, default: Any = None) -> Any:
        return self._services.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._services

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def as_dict(self) -> dict[str, Any]:
        return dict(self._services)


class Step:
    """The base class of a step: ``Step(name, config)``, ``async run(data) -> dict``.

    ``self.services`` is the pipeline's :class:`ServiceRegistry` (None outside a pipeline);
    ``get_db()`` and ``get_http()`` are its ``database`` and ``http``."""

    def __init__(self, name: str, config: Mapping[str, Any] | None = None):
        self.name = name
        self.config: dict[str, Any] = dict(config or {})
        self.services: ServiceRegistry | None = None

    def set_services(self, services: ServiceRegistry | None) -> None:
        self.services = services

    def get_service(self, name: str) -> Any:
        return self.services.get(name) if self.services is not None else None

    def get_db(self) -> Any:
        return self.get_service("database")

    def get_http(self) -> Any:
        return self.get_service("http")

    async def run(self, data: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.run(data) is not written")


class Pipeline:
    """``Pipeline(name, steps, flow, services)``: step instances, a flow (``start_at`` and
    ``paths`` of ``from_step``/``to_step``, with conditions), and services. Without paths
    the steps run one after another in the order given. ``options`` go to
    :class:`pipectl.Pipeline` (``tracker=``, ``max_concurrent=``...)."""

    def __init__(
        self,
        name: str,
        steps: Iterable[Step],
        flow: Mapping[str, Any] | None = None,
        services: ServiceRegistry | None = None,
        *,
        definitions: Iterable[Mapping[str, Any]] | None = None,
        **options: Any,
    ):
        from pipectl.importers.ia_modules import convert

        self.name = name
        self.steps = list(steps)
        self.services = services if services is not None else ServiceRegistry()
        defs = {d["id"]: d for d in definitions or ()}
        flow = dict(flow or {})
        if not flow.get("paths") and not flow.get("transitions"):
            flow["paths"] = [
                {"from_step": a.name, "to_step": b.name}
                for a, b in zip(self.steps, self.steps[1:], strict=False)
            ]
        self.flow = flow
        data = {
            "name": name,
            "steps": [
                {
                    "id": step.name,
                    "module": type(step).__module__,
                    "step_class": type(step).__qualname__,
                    "inputs": defs.get(step.name, {}).get("inputs") or [],
                }
                for step in self.steps
            ],
            "flow": flow,
        }
        converted = convert(data, name)
        self.pipeline = _Pipeline(converted["name"], **options)
        self.last_run: PipelineRun | None = None
        for step, item in zip(self.steps, converted["steps"], strict=True):
            if hasattr(step, "set_services"):
                step.set_services(self.services)
            else:
                step.services = self.services
            deps = item.get("depends_on", [])
            inputs = dict(item.get("inputs", {}))
            declared = bool(defs.get(step.name, {}).get("inputs"))
            if not declared and not deps:
                func, inputs = _given_input(step), {}
            else:
                func = _given_data(step)
            self.pipeline.add_step(
                step.name,
                func,
                depends_on=deps,
                inputs=inputs,
                when=item.get("when"),
                trigger=item.get("trigger", "all_success"),
                description=str(defs.get(step.name, {}).get("name") or ""),
            )

    async def run(
        self, input_data: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run once: ``{"input", "steps", "output"}``. ``steps`` lists the steps that ran, in
        the order they started (``step_name``, ``step_index``, ``result``, ``status``);
        ``output`` is the result of the last step (of each last step by id, when several
        branches end the flow). A step's exception is raised."""
        given = dict(input_data or {})
        for step in self.steps:  # its services, again: another pipeline may share the steps
            if hasattr(step, "set_services"):
                step.set_services(self.services)
            else:
                step.services = self.services
        registered = self.services.get("execution_id")
        if registered and registered != self.services._assigned_id:
            run_id = kwargs.pop("run_id", None) or str(registered)  # the application's job id
        else:
            run_id = kwargs.pop("run_id", None) or uuid.uuid4().hex
        self.services.register("execution_id", run_id)
        self.services._assigned_id = run_id
        tracking = self.services.get("execution_tracker")
        if kwargs.get("tracker") is None and isinstance(tracking, ExecutionTracker):
            kwargs["tracker"] = tracking.tracker
        services = {**self.services.as_dict(), **dict(kwargs.pop("services", None) or {})}
        run = await self.pipeline.run(given, run_id=run_id, services=services, **kwargs)
        self.last_run = run
        for result in run.steps.values():
            if result.status is StepStatus.FAILED:
                if result.exception is not None:
                    raise result.exception
                raise RuntimeError(f"step {result.step_name!r} failed: {result.error}")
        if not run.ok:
            raise RuntimeError(f"pipeline {self.name!r} {run.status}: {'; '.join(run.errors)}")
        ran = sorted(
            (r for r in run.steps.values() if r.status is StepStatus.SUCCESS),
            key=lambda r: (r.started_at is None, r.started_at),
        )
        steps = [
            {"step_name": r.step_name, "step_index": i, "result": r.output, "status": "completed"}
            for i, r in enumerate(ran)
        ]
        feeding = {d for spec in self.pipeline.steps.values() for d in spec.all_dependencies}
        last = {r.step_name: r.output for r in ran if r.step_name not in feeding}
        output = next(iter(last.values())) if len(last) == 1 else last
        return {"input": given, "steps": steps, "output": output}


def _given_input(step: Step) -> Any:
    async def first_step(params: Mapping[str, Any]) -> Any:
        return await step.run(dict(params))

    first_step.__qualname__ = f"{type(step).__qualname__}.run"
    return first_step


def _given_data(step: Step) -> Any:
    async def next_step(**data: Any) -> Any:
        if _WHOLE in data:
            whole = data.pop(_WHOLE)
            data = {**whole, **data} if isinstance(whole, Mapping) else whole
        return await step.run(data)

    next_step.__qualname__ = f"{type(step).__qualname__}.run"
    return next_step


def load_step_class(module_path: str, class_name: str) -> type[Step]:
    """The class ``class_name`` of the module ``module_path``."""
    cls: type[Step] = getattr(importlib.import_module(module_path), class_name)
    return cls


def create_step_from_json(step_def: Mapping[str, Any]) -> Step:
    """The step of a JSON step definition: ``step_class(id, config)``."""
    cls = load_step_class(step_def["module"], step_def["step_class"])
    return cls(step_def.get("id", "Unknown"), dict(step_def.get("config") or {}))


def _read(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    data: dict[str, Any] = json.loads(Path(config).read_text(encoding="utf-8"))
    return data


async def run_pipeline_from_json(
    config: str | Path | Mapping[str, Any],
    input_data: Mapping[str, Any] | None = None,
    services: ServiceRegistry | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the pipeline of an ia_modules JSON file (a path, or its data): its step classes
    imported and built with ``(id, config)``; returns ``{"input", "steps", "output"}``."""
    data = _read(config)
    defs = list(data.get("steps") or [])
    pipeline = Pipeline(
        str(data.get("name") or "pipeline"),
        [create_step_from_json(d) for d in defs],
        data.get("flow"),
        services,
        definitions=defs,
        **options,
    )
    return await pipeline.run(input_data)


class GraphPipelineRunner:
    """``GraphPipelineRunner(services).run_pipeline_from_json(config, input_data)``."""

    def __init__(self, services: ServiceRegistry | None = None):
        self.services = services

    async def run_pipeline_from_json(
        self, config: str | Path | Mapping[str, Any], input_data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return await run_pipeline_from_json(config, input_data, self.services)


# -- ExecutionTracker: the design's tracker, on a pipectl tracker -----------------------------

_STATUS = {"success": "completed"}  # pipectl's status -> the design's; the others are the same
_STATUS_BACK = {"completed": "success", "success": "success"}


def _design_status(status: Any) -> Any:
    return _STATUS.get(str(status), status) if status is not None else None


def _open_tracker(db: Any) -> tuple[Any, bool]:
    """(the pipectl tracker ``db`` names, whether it was opened here and is closed here)."""
    from pipectl.tracking.contract import Tracker

    if isinstance(db, Tracker):
        return db, False
    url: Any = None
    if isinstance(db, os.PathLike):
        url = f"sqlite:///{os.fspath(db)}"
    elif isinstance(db, str):
        url = db
    else:  # the design's DatabaseManager: a URL, or ConnectionConfig(provider, database...)
        url = getattr(db, "database_url", None) or getattr(db, "url", None)
        config = getattr(db, "config", None)
        if not isinstance(url, str) and config is not None:
            url = _config_url(config)
    if not isinstance(url, str):
        raise TypeError(
            f"ExecutionTracker({type(db).__name__}): give a pipectl tracker, a tracker URL "
            "(sqlite:///runs.db, postgresql://...), or a database manager with a `url` or a "
            "`config` of provider sqlite/postgresql"
        )
    from pipectl.plugins import default_plugin_manager
    from pipectl.tracking import open_tracker

    opened = open_tracker(url, default_plugin_manager().registries)
    if opened is None:
        raise ValueError(f"ExecutionTracker({url!r}): that URL records nothing")
    return opened, True


def _config_url(config: Any) -> str | None:
    """The tracker URL of a ConnectionConfig: sqlite (its ``database`` file) or postgresql
    (``host``, ``port``, ``database``, ``username``/``user``, ``password``, and ``schema`` if
    it has one)."""
    provider = str(getattr(config, "provider", "") or getattr(config, "database_type", ""))
    provider = getattr(provider, "value", provider).lower()
    database = getattr(config, "database", None) or getattr(config, "database_path", None)
    if provider == "sqlite" and database:
        return f"sqlite:///{database}"
    if provider in ("postgresql", "postgres") and database:
        from urllib.parse import quote

        user = getattr(config, "username", None) or getattr(config, "user", None) or ""
        password = getattr(config, "password", None) or ""
        auth = quote(str(user)) + (f":{quote(str(password))}" if password else "")
        host = getattr(config, "host", None) or "localhost"
        port = getattr(config, "port", None)
        where = f"{host}:{port}" if port else str(host)
        schema = getattr(config, "schema", None)  # pipectl's tables in a schema of their own
        query = f"?schema={quote(str(schema))}" if schema else ""
        return f"postgresql://{auth + '@' if auth else ''}{where}/{database}{query}"
    return None


def _now() -> datetime:
    return datetime.now(UTC)


class ExecutionTracker:
    """The design's ``ExecutionTracker(db_manager)``, recording into a pipectl tracker.

    ``db`` is a pipectl tracker (``open_tracker(...)``, a :class:`pipectl.tracking.SQLTracker`),
    a tracker URL (``sqlite:///runs.db``, ``postgresql://...``) or path of a SQLite file, or
    the design's database manager: one with a ``url`` (or ``database_url``), or a ``config``
    (``ConnectionConfig``) whose ``provider`` is ``sqlite`` (its ``database`` file) or
    ``postgresql`` (``host``, ``port``, ``database``, ``username``, ``password``). pipectl's
    tables (``pipeline_executions``, ``step_executions``...) are created in that database: give
    one without ia_modules' own tables of those names. ``tracker`` is the pipectl tracker.

    A :class:`Pipeline` with this tracker registered as ``execution_tracker`` records its runs
    here by itself. ``start_execution``, ``start_step_execution``,
    ``complete_step_execution`` and ``complete_execution`` record a run by hand (code that runs
    its steps itself). ``get_execution`` and ``get_execution_steps`` read any run back, in the
    design's shape, with the statuses of the design (``completed`` for pipectl's ``success``);
    ``input_data`` and ``output_data`` are pipectl's bounded summaries of the values."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.tracker, self._owned = _open_tracker(db)
        self.active_executions: dict[str, dict[str, Any]] = {}
        self._steps: dict[str, tuple[str, str, str, datetime]] = {}

    # -- reading ----------------------------------------------------------------------------

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        """The ``pipeline_executions`` record of a run, None when there is none: its
        ``execution_id``, ``pipeline_name``, ``status``, ``started_at``, ``completed_at``,
        ``execution_time_ms``, ``input_data`` (the params), ``output_data`` (the last step's
        output, by step when several end the flow), ``error_message``, ``total_steps``,
        ``completed_steps``, ``failed_steps`` and ``metadata`` (pipectl's other fields)."""
        run = self._run(execution_id)
        if run is None:
            return None
        steps = run["steps"]
        feeding = {d for deps in (run.get("graph") or {}).values() for d in deps}
        last = {
            s["step_id"]: s["output_summary"]
            for s in steps
            if s["status"] == "success" and s["step_id"] not in feeding
        }
        return {
            "execution_id": run["run_id"],
            "pipeline_name": run["pipeline"],
            "status": _design_status(run["status"]),
            "started_at": run["started_at"],
            "completed_at": run["finished_at"],
            "execution_time_ms": run["duration_ms"],
            "input_data": run["params"],
            "output_data": next(iter(last.values())) if len(last) == 1 else (last or None),
            "error_message": run["error"],
            "total_steps": len(steps),
            "completed_steps": sum(s["status"] == "success" for s in steps),
            "failed_steps": sum(s["status"] == "failed" for s in steps),
            "metadata": {
                k: run.get(k)
                for k in (
                    "description",
                    "errors",
                    "records_processed",
                    "resumed_from",
                    "parent_run_id",
                    "host",
                    "pid",
                    "executor",
                )
            },
        }

    async def get_execution_steps(self, execution_id: str) -> list[dict[str, Any]]:
        """The ``step_executions`` records of a run, in the pipeline's order (``[]`` when there
        is no such run): ``step_id``, ``step_name``, ``step_type``, ``status``,
        ``started_at``, ``completed_at``, ``input_data``, ``output_data``,
        ``execution_time_ms``, ``retry_count``, ``error_message``, ``metadata``."""
        run = self._run(execution_id)
        if run is None:
            return []
        return [
            {
                "execution_id": run["run_id"],
                "step_id": s["step_id"],
                "step_name": s.get("description") or s["step_name"],  # the JSON's "name"
                "step_type": "task" if s["step_type"] == "python" else s["step_type"],
                "status": _design_status(s["status"]),
                "started_at": s["started_at"],
                "completed_at": s["completed_at"],
                "input_data": _whole_input(s.get("input_summary"))
                if s.get("input_summary") is not None or (run.get("graph") or {}).get(s["step_id"])
                else run.get("params"),  # a first step: the pipeline input
                "output_data": s.get("output_summary"),
                "execution_time_ms": s["execution_time_ms"],
                "retry_count": s["retry_count"],
                "error_message": s["error_message"],
                "metadata": {
                    **(s.get("metadata") or {}),
                    **{
                        k: s.get(k)
                        for k in ("description", "reason", "attempts", "records", "traceback")
                    },
                },
            }
            for s in run["steps"]
        ]

    async def list_executions(
        self, pipeline_name: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first (pipectl's ``list_runs``, statuses of the design)."""
        rows = self.tracker.list_runs(pipeline_name, _STATUS_BACK.get(status or "", status), limit)
        return [{**r, "status": _design_status(r.get("status"))} for r in rows]

    def _run(self, execution_id: str) -> dict[str, Any] | None:
        from pipectl.tracking.errors import TrackerError

        self.tracker.flush()
        try:
            run: dict[str, Any] = self.tracker.get_run(execution_id)
        except TrackerError:
            return None
        return run

    # -- recording by hand ------------------------------------------------------------------

    async def start_execution(
        self,
        pipeline_name: str,
        input_data: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
        **_: Any,
    ) -> str:
        """Record a run as started; returns its execution id (``execution_id``, or a new one)."""
        import socket

        from pipectl.tracking.contract import RunStarted

        execution_id = execution_id or uuid.uuid4().hex
        event: dict[str, Any] = {
            "run_id": execution_id,
            "pipeline": pipeline_name,
            "started_at": _now(),
            "params": dict(input_data or {}),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.active_executions[execution_id] = event
        self.tracker.record(RunStarted(**event))
        return execution_id

    async def start_step_execution(
        self,
        execution_id: str,
        step_id: str,
        step_name: str | None = None,
        step_type: str = "task",
        input_data: Any = None,
        **_: Any,
    ) -> str:
        """Record a step of a run started by :meth:`start_execution` as running; returns the
        step execution id that :meth:`complete_step_execution` takes."""
        from pipectl.tracking.contract import StepStarted

        started = _now()
        step_execution_id = f"{execution_id}:{step_id}"
        self._steps[step_execution_id] = (execution_id, step_id, step_type, started)
        self.tracker.record(
            StepStarted(
                run_id=execution_id,
                step_name=step_id,
                step_type=step_type,
                attempt=1,
                started_at=started,
            )
        )
        return step_execution_id

    async def complete_step_execution(
        self,
        step_execution_id: str,
        status: str = "completed",
        output_data: Any = None,
        error_message: str | None = None,
        **_: Any,
    ) -> None:
        """Record a step as ended: ``completed`` (pipectl's ``success``) or ``failed``, with
        its output or error."""
        from pipectl.model import StepResult, StepSpec
        from pipectl.tracking.contract import StepFinished

        execution_id, step_id, step_type, started = self._steps.pop(step_execution_id)
        finished = _now()
        result = StepResult(
            step_name=step_id,
            status=StepStatus(_STATUS_BACK.get(status, status)),
            output=output_data,
            error=error_message,
            started_at=started,
            finished_at=finished,
            duration_ms=(finished - started).total_seconds() * 1000,
            attempts=1,
        )
        step = StepSpec(step_id, step_type=step_type)
        self.tracker.record(StepFinished(run_id=execution_id, step=step, result=result))

    async def complete_execution(
        self,
        execution_id: str,
        status: str = "completed",
        error_message: str | None = None,
        **_: Any,
    ) -> None:
        """Record a run started by :meth:`start_execution` as ended (``completed`` or
        ``failed``)."""
        from pipectl.model import RunStatus
        from pipectl.tracking.contract import RunFinished

        event = self.active_executions.pop(execution_id)
        finished = _now()
        self.tracker.record(
            RunFinished(
                **event,
                status=RunStatus(_STATUS_BACK.get(status, status)),
                finished_at=finished,
                duration_ms=(finished - event["started_at"]).total_seconds() * 1000,
                errors=(error_message,) if error_message else (),
            )
        )
        self.tracker.flush()

    def close(self) -> list[str]:
        """Close the pipectl tracker when it was opened here (from a URL or manager)."""
        return self.tracker.close() if self._owned else []


def _whole_input(summary: Any) -> Any:
    """What a step class received as its ``data``: a step given its upstream's whole result
    (the ``*`` input) is recorded as ``{"*": result}``, and ia_modules records the result."""
    if isinstance(summary, dict) and len(summary) == 1 and "*" in summary:
        return summary["*"]
    return summary

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
``execution_id`` (the pipectl run id).
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipectl.model import PipelineRun, StepStatus
from pipectl.pipeline import Pipeline as _Pipeline

__all__ = [
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
            )

    async def run(
        self, input_data: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run once: ``{"input", "steps", "output"}``. ``steps`` lists the steps that ran, in
        the order they started (``step_name``, ``step_index``, ``result``, ``status``);
        ``output`` is the result of the last step (of each last step by id, when several
        branches end the flow). A step's exception is raised."""
        given = dict(input_data or {})
        run_id = kwargs.pop("run_id", None) or uuid.uuid4().hex
        self.services.register("execution_id", run_id)
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

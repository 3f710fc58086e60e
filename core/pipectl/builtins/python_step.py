"""Built-in plugin ``python``: registers the step types ``python`` (a function or a step class)
and ``pipeline`` (a sub-pipeline). They are implemented in
:mod:`pipectl.components.python_step`, imported when a pipeline is planned, not at start-up."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipectl.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from pipectl.model import StepSpec
    from pipectl.registry import Registries

_impl: ModuleType | None = None  # pipectl.components.python_step, once a step type was used


def _load() -> ModuleType:
    global _impl
    from pipectl.components import python_step

    _impl = python_step
    return python_step


def python_step(step: StepSpec) -> Callable[..., Any]:
    factory: Callable[[StepSpec], Callable[..., Any]] = (_impl or _load()).python_step
    return factory(step)


def pipeline_step(step: StepSpec, components: Registries | None = None) -> Callable[..., Any]:
    factory: Callable[..., Callable[..., Any]] = (_impl or _load()).pipeline_step
    return factory(step, components)


@hookimpl(trylast=True)
def pipectl_register_step_types(register: Register) -> None:
    register("python", python_step)
    register("pipeline", pipeline_step)

"""Built-in plugin ``data``: registers the step type ``data``, which streams an extractor into
outputs. It is implemented in :mod:`pipectl.components.data_step`, imported when a pipeline is
planned, not at start-up."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipectl.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from pipectl.model import StepSpec
    from pipectl.registry import Registries

_impl: ModuleType | None = None  # pipectl.components.data_step, once the step type was used


def _load() -> ModuleType:
    global _impl
    from pipectl.components import data_step

    _impl = data_step
    return data_step


def data_step(step: StepSpec, components: Registries | None = None) -> Callable[..., Any]:
    factory: Callable[..., Callable[..., Any]] = (_impl or _load()).data_step
    return factory(step, components)


@hookimpl(trylast=True)
def pipectl_register_step_types(register: Register) -> None:
    register("data", data_step)

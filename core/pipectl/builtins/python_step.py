"""Built-in plugin ``python``: the step type that calls a Python function."""

from __future__ import annotations

from typing import Any, Callable

from pipectl.hookspecs import hookimpl


def _python_step(step: Any) -> Callable[..., Any]:
    if step.func is None:
        raise ValueError("a python step needs a function (func=...)")
    if not callable(step.func):
        raise TypeError(f"func must be callable, got {type(step.func).__name__}")
    return step.func


@hookimpl(trylast=True)
def pipectl_register_step_types(register):
    register("python", _python_step)

"""pipectl: data pipelines as DAGs of steps, extended by plugins.

``import pipectl`` is cheap: names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipectl.hookspecs import hookimpl

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "pipectl.pipeline",
    "PipelineSpec": "pipectl.model",
    "StepSpec": "pipectl.model",
    "RunConfig": "pipectl.model",
    "StepStatus": "pipectl.model",
    "RunStatus": "pipectl.model",
    "StepResult": "pipectl.model",
    "PipelineRun": "pipectl.model",
    "PipelineRunConfig": "pipectl.model",
    "Transform": "pipectl.data",
    "DataStepResult": "pipectl.data",
    "Trigger": "pipectl.model",
    "Graph": "pipectl.graph",
    "StepContext": "pipectl.context",
    "Services": "pipectl.context",
    "PipectlError": "pipectl.errors",
    "PipelineValidationError": "pipectl.errors",
    "PluginError": "pipectl.errors",
    "StepTimeout": "pipectl.errors",
    "UnknownComponentError": "pipectl.errors",
    "RunCancelled": "pipectl.engine",
    "get_plugin_manager": "pipectl.plugins",
    "configure_logging": "pipectl.log",
}

__all__ = ["__version__", "hookimpl", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipectl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from pipectl.context import Services, StepContext
    from pipectl.data import DataStepResult, Transform
    from pipectl.engine import RunCancelled
    from pipectl.errors import (
        PipectlError,
        PipelineValidationError,
        PluginError,
        StepTimeout,
        UnknownComponentError,
    )
    from pipectl.graph import Graph
    from pipectl.log import configure_logging
    from pipectl.model import (
        PipelineRun,
        PipelineRunConfig,
        PipelineSpec,
        RunConfig,
        RunStatus,
        StepResult,
        StepSpec,
        StepStatus,
        Trigger,
    )
    from pipectl.pipeline import Pipeline
    from pipectl.plugins import get_plugin_manager

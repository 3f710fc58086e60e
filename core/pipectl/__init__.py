"""pipectl: data pipelines as DAGs of steps, extended by plugins.

``import pipectl`` is cheap: names are imported on first use, ``hookimpl`` too (the first
``from pipectl import hookimpl`` imports pluggy and the hook specifications); not even
:mod:`typing` is imported here.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; checkers read it as True

__version__ = "0.1.0"

_EXPORTS = {
    "hookimpl": "pipectl.hookspecs",
    "Pipeline": "pipectl.pipeline",
    "PipelineFile": "pipectl.orchestration",
    "PipelineSpec": "pipectl.model",
    "StepSpec": "pipectl.model",
    "RunConfig": "pipectl.model",
    "StepStatus": "pipectl.model",
    "RunStatus": "pipectl.model",
    "StepResult": "pipectl.model",
    "MapItemFailed": "pipectl.model",
    "PipelineRun": "pipectl.model",
    "PipelineRunConfig": "pipectl.model",
    "Transform": "pipectl.data",
    "DataStepResult": "pipectl.data",
    "Trigger": "pipectl.model",
    "Cache": "pipectl.model",
    "CacheEvent": "pipectl.model",
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

__all__ = ["__version__", *_EXPORTS]


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
    from typing import Any

    # "X as X": re-exported for type checkers (the names are in __all__, made at run time)
    from pipectl.context import Services as Services
    from pipectl.context import StepContext as StepContext
    from pipectl.data import DataStepResult as DataStepResult
    from pipectl.data import Transform as Transform
    from pipectl.engine import RunCancelled as RunCancelled
    from pipectl.errors import PipectlError as PipectlError
    from pipectl.errors import PipelineValidationError as PipelineValidationError
    from pipectl.errors import PluginError as PluginError
    from pipectl.errors import StepTimeout as StepTimeout
    from pipectl.errors import UnknownComponentError as UnknownComponentError
    from pipectl.graph import Graph as Graph
    from pipectl.hookspecs import hookimpl as hookimpl
    from pipectl.log import configure_logging as configure_logging
    from pipectl.model import Cache as Cache
    from pipectl.model import CacheEvent as CacheEvent
    from pipectl.model import MapItemFailed as MapItemFailed
    from pipectl.model import PipelineRun as PipelineRun
    from pipectl.model import PipelineRunConfig as PipelineRunConfig
    from pipectl.model import PipelineSpec as PipelineSpec
    from pipectl.model import RunConfig as RunConfig
    from pipectl.model import RunStatus as RunStatus
    from pipectl.model import StepResult as StepResult
    from pipectl.model import StepSpec as StepSpec
    from pipectl.model import StepStatus as StepStatus
    from pipectl.model import Trigger as Trigger
    from pipectl.orchestration import PipelineFile as PipelineFile
    from pipectl.pipeline import Pipeline as Pipeline
    from pipectl.plugins import get_plugin_manager as get_plugin_manager

"""The fields a sub-pipeline step (step type ``pipeline``, :mod:`pipectl.components.python_step`)
has in a pipeline file, declared for :mod:`pipectl.files.fields`: kept apart from the step
type, so that running a pipeline built in Python never imports the pipeline-file package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, kind
from pipectl.files.fields import StepField

__all__ = ["FILE_FIELDS"]


def _read_pipeline(path: Path, line: int, field: str, target: Any) -> Any:
    if not isinstance(target, str) or not target:
        raise PipelineFileError(
            path, line, field, f"expected the name of a pipeline of this file, got {kind(target)}"
        )
    return target


def _read_params(path: Path, line: int, field: str, value: Any) -> Any:
    overrides = value or {}
    if not isinstance(overrides, dict):
        raise PipelineFileError(
            path, line, field, f"expected {{param: value}}, got {kind(overrides)}"
        )
    return dict(overrides)


#: the fields of a sub-pipeline step in a pipeline file (:mod:`pipectl.files.fields`): the
#: pipeline of the same file it runs (built by the loader, with these params) and its params
FILE_FIELDS = (
    StepField(
        "pipeline",
        "pipeline",
        {"type": "string", "minLength": 1},
        "Run another pipeline of this file as a sub-pipeline (files with several pipelines).",
        _read_pipeline,
        required=True,
    ),
    StepField(
        "params",
        "params",
        {"type": "object"},
        "Params of the sub-pipeline run by 'pipeline' (over the file's).",
        _read_params,
    ),
)

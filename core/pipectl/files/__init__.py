"""Pipeline files: YAML (or JSON, a subset of YAML) read into model data.

Every problem is a :class:`PipelineFileError` naming the file, the line and the field, and what
would be right ("did you mean" where a name is close). Loading is safe (``yaml.SafeLoader``),
duplicate keys are rejected, and nothing in the file is evaluated: ``${params.NAME}``,
``${env.NAME}`` and ``${env.NAME:-default}`` are plain substitutions.

A file::

    name: orders
    description: clean the orders and load them
    params:
      source: {type: str, default: data/orders.csv}
      limit: {type: int, default: 100}
      token: {type: str, secret: true, default: ""}
    max_concurrent: 4
    steps:
      - name: extract
        run: my_module:extract          # a Python function, sync or async
        retries: 3
        retry_delay: 1.5
        timeout: 30
      - name: load
        depends_on: [extract]
        extract: {type: csv, path: "${params.source}"}
        transform: [my_module:clean_record]
        load:
          - {type: jsonl, path: out/orders.jsonl}

The modules: :mod:`~pipectl.files.loader` (the bytes and the YAML, with line numbers),
:mod:`~pipectl.files.params` (declarations, ``-p`` values, the values a run takes),
:mod:`~pipectl.files.interpolate` (``${...}``), :mod:`~pipectl.files.paths` (relative paths),
:mod:`~pipectl.files.connections` (``connections:`` and components' ``connection: NAME``),
:mod:`~pipectl.files.fields` (a step's fields, declared once),
:mod:`~pipectl.files.steps` (a step read), :mod:`~pipectl.files.build` (the pipelines, as
:class:`LoadedPipeline`), :mod:`~pipectl.files.problems` (problems as ``file:line``),
:mod:`~pipectl.files.writer` (``to_yaml``). :func:`pipectl.pipeline.load_pipelines` makes
:class:`~pipectl.Pipeline` objects of a file; this package does not import
:mod:`pipectl.pipeline`.

The names below are imported on first use (``from pipectl.files import PipelineFileError``
imports the error's module only).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; checkers read it as True

_EXPORTS = {
    "PipelineFileError": "pipectl.files.errors",
    "MAX_ALIASED": "pipectl.files.loader",
    "MAX_FILE_BYTES": "pipectl.files.loader",
    "MAX_NESTING": "pipectl.files.loader",
    "gc_paused": "pipectl.files.loader",
    "read_file": "pipectl.files.loader",
    "PARAM_TYPES": "pipectl.files.params",
    "ParamSpec": "pipectl.files.params",
    "parse_param": "pipectl.files.params",
    "resolve_params": "pipectl.files.params",
    "LoadedPipeline": "pipectl.files.build",
    "Origin": "pipectl.files.build",
    "read_pipeline": "pipectl.files.build",
    "read_pipelines": "pipectl.files.build",
    "locate": "pipectl.files.problems",
    "locate_problem": "pipectl.files.problems",
    "dump_pipeline": "pipectl.files.writer",
    "reference": "pipectl.files.writer",
    "to_yaml": "pipectl.files.writer",
}

__all__ = [
    "MAX_ALIASED",
    "MAX_FILE_BYTES",
    "MAX_NESTING",
    "PARAM_TYPES",
    "LoadedPipeline",
    "Origin",
    "ParamSpec",
    "PipelineFileError",
    "dump_pipeline",
    "gc_paused",
    "locate",
    "locate_problem",
    "parse_param",
    "read_file",
    "read_pipeline",
    "read_pipelines",
    "reference",
    "resolve_params",
    "to_yaml",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipectl.files' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))


if TYPE_CHECKING:  # pragma: no cover
    from pipectl.files.build import LoadedPipeline, Origin, read_pipeline, read_pipelines
    from pipectl.files.errors import PipelineFileError
    from pipectl.files.loader import (
        MAX_ALIASED,
        MAX_FILE_BYTES,
        MAX_NESTING,
        gc_paused,
        read_file,
    )
    from pipectl.files.params import PARAM_TYPES, ParamSpec, parse_param, resolve_params
    from pipectl.files.problems import locate, locate_problem
    from pipectl.files.writer import dump_pipeline, reference, to_yaml

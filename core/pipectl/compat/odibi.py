"""Odibi (seed 002) on pipectl: YAML projects of pipelines of nodes, run with pandas.

The document's code runs with only its imports changed::

    from pipectl.compat.odibi import Pipeline, PipelineManager

    manager = PipelineManager.from_yaml("config.yaml")
    results = manager.run(["bronze_to_silver", "silver_to_gold"])  # {name: PipelineResults}
    results = manager.run("bronze_to_silver")  # one name: its PipelineResults

    pipeline = Pipeline(pipeline_config, engine="pandas")
    results = pipeline.run()  # completed, failed, skipped, node_results, duration, story_path

The project YAML is Odibi's: ``project``, ``engine: pandas``, ``connections`` (``type: local``
with a ``base_path``, relative to the working directory as in Odibi), ``pipelines`` (each
``pipeline: NAME`` with ``nodes``), ``story`` (``connection``, ``path``, ``auto_generate``) and
``retry`` (``enabled``, ``max_attempts``, ``backoff``). A node has ``name``, ``depends_on``,
``read`` (``connection``, ``format`` csv/json/parquet, ``path``, ``options`` for pandas'
reader), ``transformer`` + ``params`` and ``transform: {steps: [...]}`` (``function`` steps,
``operation`` steps: drop_duplicates, fillna, drop, rename, sort, sample), ``write``
(``connection``, ``format``, ``path``, ``mode`` overwrite/append, ``options``), ``enabled`` and
``on_error`` (fail_later, ignore). SQL (``sql``/``sql_file`` steps, a plain string step, a
``query``/``table`` read) needs a SQL engine, which this adapter does not have: such a config
is refused with the fix (a ``function`` step). A field this adapter does not run is refused,
naming it; descriptive fields (``description``, ``tags``...) are accepted and not used.

A ``function`` (or ``transformer``) is a function registered with :func:`transform` (Odibi's
``@transform``; ``transforms.py`` beside the YAML file, or in the working directory, is
imported first, as Odibi does) or a ``module:function`` reference (the YAML's folder is on
``sys.path``). It is called as Odibi calls it: ``func(context, current=df, **params)``, where
``context`` is an :class:`EngineContext` (``context.df``, ``context.get("other_node")``); it
returns a DataFrame (or the context).

Each :class:`Pipeline` is one :class:`pipectl.Pipeline` (``pipeline.pipeline``) with a python
step per node, its ``depends_on`` the step's: pipectl validates the DAG (unknown nodes, cycles),
groups it in layers (:meth:`Pipeline.get_execution_layers`), runs it, skips the nodes downstream
of a failed one while independent nodes go on, and writes the HTML story (:mod:`pipectl.story`).
A node's DataFrame goes to the nodes after it as its output, and into the run's
:class:`Context` under the node's name. A node without ``read`` starts from the DataFrame of its
first dependency, as in Odibi. ``run()`` runs one node at a time, as Odibi's serial run does;
``run(parallel=True, max_workers=4)`` lets up to ``max_workers`` nodes of a layer run at once.
``PipelineManager.run`` runs the named pipelines one after another in the order given, each
whatever the last one's outcome, as Odibi does.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pipectl.errors import PipectlError, PipelineValidationError
from pipectl.model import PipelineRun, StepResult, StepStatus
from pipectl.pipeline import Pipeline as _Pipeline

__all__ = [
    "ConfigError",
    "Context",
    "DependencyError",
    "EngineContext",
    "LocalConnection",
    "NodeResult",
    "Pipeline",
    "PipelineManager",
    "PipelineResults",
    "ProjectConfig",
    "SUPPORTED_ENGINES",
    "load_config_from_file",
    "transform",
]

F = TypeVar("F", bound=Callable[..., Any])

SUPPORTED_ENGINES = ("pandas",)
FORMATS = ("csv", "json", "parquet")
OPERATIONS = {  # Odibi's pandas operations: the DataFrame method each calls with the params
    "drop_duplicates": "drop_duplicates",
    "fillna": "fillna",
    "drop": "drop",
    "rename": "rename",
    "sort": "sort_values",
    "sample": "sample",
}
_SQL = (
    "SQL needs a SQL engine, which pipectl.compat.odibi does not have: write the step as a "
    "Python function (transform: {steps: [{function: module:function}]})"
)


class ConfigError(PipectlError, ValueError):
    """An Odibi config this adapter cannot run; the message names the place and the fix."""


class DependencyError(ConfigError):
    """A node depends on an unknown node, or nodes depend on each other in a cycle."""

    def __init__(self, message: str, cycle: list[str] | None = None):
        super().__init__(message)
        self.cycle = cycle


# -- config -------------------------------------------------------------------------------------


def _check_fields(
    where: str,
    data: Any,
    used: Iterable[str],
    ignored: Iterable[str] = (),
    unsupported: Mapping[str, str] | Iterable[str] = (),
) -> dict[str, Any]:
    """``data`` as a dict, refusing a field that is unknown or that this adapter does not run."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    used, ignored = tuple(used), tuple(ignored)
    why = unsupported if isinstance(unsupported, Mapping) else dict.fromkeys(unsupported, "")
    for key in data:
        if key in used or key in ignored:
            continue
        if key in why:
            raise ConfigError(
                f"{where}: Odibi's {key!r} is not supported by pipectl.compat.odibi"
                f"{'; ' + why[key] if why[key] else ''}; remove it (supported: {', '.join(used)})"
            )
        close = difflib.get_close_matches(str(key), [*used, *ignored], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown field {key!r}{hint}; known fields: {', '.join([*used, *ignored])}"
        )
    return dict(data)


def _names(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected a node name or a list of them, got {value!r}")


@dataclass
class LocalConnection:
    """Odibi's ``type: local`` connection: paths under ``base_path`` (relative to the working
    directory when the run reads or writes, as in Odibi)."""

    base_path: str = "./data"

    def get_path(self, relative_path: str) -> str:
        return str(Path(self.base_path) / relative_path)


def _connection(where: str, data: Any) -> LocalConnection:
    if isinstance(data, LocalConnection):
        return data
    conn = _check_fields(where, data, ("type", "base_path"), ("validation_mode",))
    kind = conn.get("type", "local")
    if kind != "local":
        raise ConfigError(
            f"{where}: connection type {kind!r} is not supported by pipectl.compat.odibi "
            "(supported: local, with base_path)"
        )
    return LocalConnection(str(conn.get("base_path", "./data")))


@dataclass
class _Step:
    """One entry of ``transform.steps``: a function or an operation, with its params."""

    function: str | None
    operation: str | None
    params: dict[str, Any]


@dataclass
class _IO:
    """A node's ``read`` or ``write``."""

    connection: str | None
    format: str
    path: str
    options: dict[str, Any]
    mode: str = "overwrite"


@dataclass
class NodeConfig:
    """One node as read from the YAML (Odibi's ``NodeConfig``, the fields this adapter runs)."""

    name: str
    depends_on: list[str] = field(default_factory=list)
    read: _IO | None = None
    transformer: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    steps: list[_Step] = field(default_factory=list)
    write: _IO | None = None
    enabled: bool = True
    on_error: str = "fail_later"
    description: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> NodeConfig:
        name = data.get("name") if isinstance(data, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a node needs a name: (got {data!r})")
        where = f"{where}: node {name!r}"
        for wrong, right in (("source", "read"), ("sink", "write"), ("target", "write")):
            if wrong in data:
                raise ConfigError(f"{where}: {wrong!r} is not a node field; use {right!r}")
        node = _check_fields(
            where,
            data,
            _NODE_FIELDS,
            ("description", "explanation", "explanation_file", "runbook_url", "tags", "columns")
            + ("cache", "log_level"),
            {
                "inputs": "use depends_on (a node without read starts from its first dependency)",
                "pre_sql": _SQL,
                "post_sql": _SQL,
                "materialized": _SQL,
                "streaming": "",
                "validation": "",
                "contracts": "",
                "schema_policy": "",
                "privacy": "",
                "sensitive": "",
            },
        )
        on_error = node.get("on_error", "fail_later")
        if on_error == "fail_fast":
            raise ConfigError(
                f"{where}: on_error: fail_fast per node is not supported by pipectl.compat.odibi; "
                "stop the whole pipeline at its first failure with run(on_error='fail_fast')"
            )
        if on_error not in ("fail_later", "ignore"):
            raise ConfigError(f"{where}: on_error is fail_later or ignore, got {on_error!r}")
        steps = []
        transform_data = node.get("transform")
        if transform_data is not None:
            transform_data = _check_fields(f"{where}: transform", transform_data, ("steps",))
            for i, raw in enumerate(transform_data.get("steps") or [], 1):
                steps.append(_step(f"{where}: transform step {i}", raw))
        transformer = node.get("transformer")
        if transformer is not None and not isinstance(transformer, str):
            raise ConfigError(f"{where}: transformer is a function's name, got {transformer!r}")
        config = cls(
            name=name,
            depends_on=list(_names(f"{where}: depends_on", node.get("depends_on"))),
            read=_io(f"{where}: read", node["read"], read=True) if node.get("read") else None,
            transformer=transformer,
            params=dict(node.get("params") or {}),
            steps=steps,
            write=_io(f"{where}: write", node["write"], read=False) if node.get("write") else None,
            enabled=bool(node.get("enabled", True)),
            on_error=on_error,
            description=node.get("description"),
        )
        if not (config.read or config.transformer or transform_data is not None or config.write):
            raise ConfigError(f"{where}: a node needs at least one of read, transform, write")
        return config


_NODE_FIELDS = (
    "name",
    "depends_on",
    "read",
    "transformer",
    "params",
    "transform",
    "write",
    "enabled",
    "on_error",
)


def _step(where: str, raw: Any) -> _Step:
    if isinstance(raw, str):
        raise ConfigError(f"{where}: a plain string step is SQL; {_SQL}")
    step = _check_fields(
        where, raw, ("function", "operation", "params"), (), {"sql": _SQL, "sql_file": _SQL}
    )
    function, operation = step.get("function"), step.get("operation")
    if (function is None) == (operation is None):
        raise ConfigError(f"{where}: give exactly one of function: or operation:")
    return _Step(function, operation, dict(step.get("params") or {}))


def _io(where: str, raw: Any, *, read: bool) -> _IO:
    sql = {"table": _SQL, "query": _SQL, "sql_file": _SQL, "filter": _SQL}
    if read:
        unsupported = {**sql, "incremental": "", "time_travel": "", "streaming": ""}
        unsupported.update({"schema_ddl": "", "archive_options": ""})
        io = _check_fields(where, raw, ("connection", "format", "path", "options"), (), unsupported)
    else:
        unsupported = {"table": _SQL, "register_table": "", "partition_by": "", "zorder_by": ""}
        for name in ("table_properties", "merge_schema", "overwrite_schema", "first_run_query"):
            unsupported[name] = ""
        for name in ("auto_optimize", "add_metadata", "skip_if_unchanged", "skip_hash_columns"):
            unsupported[name] = ""
        for name in ("skip_hash_sort_columns", "streaming", "merge_keys", "merge_options"):
            unsupported[name] = ""
        unsupported["overwrite_options"] = ""
        used = ("connection", "format", "path", "mode", "options")
        io = _check_fields(where, raw, used, (), unsupported)
    fmt = io.get("format")
    if fmt not in FORMATS:
        sql_hint = f"; {_SQL}" if fmt == "sql" else ""
        raise ConfigError(
            f"{where}: format {fmt!r} is not supported (supported: {', '.join(FORMATS)}){sql_hint}"
        )
    if not isinstance(io.get("path"), str) or not io["path"]:
        raise ConfigError(f"{where}: needs a path: (the file, under the connection's base_path)")
    mode = io.get("mode", "overwrite")
    if mode not in ("overwrite", "append"):
        raise ConfigError(
            f"{where}: mode {mode!r} is not supported by pipectl.compat.odibi "
            "(supported: overwrite, append)"
        )
    connection = io.get("connection")
    return _IO(connection, fmt, io["path"], dict(io.get("options") or {}), mode)


@dataclass
class StorySettings:
    """Odibi's ``story:``: the story of each run is written under the connection's
    ``base_path``/``path`` as ``PIPELINE/YYYY-MM-DD/run_HH-MM-SS.html`` when
    ``auto_generate`` (the default); a second run in the same second adds microseconds."""

    connection: str | None = None
    path: str = "stories/"
    auto_generate: bool = True


@dataclass
class PipelineConfig:
    """One pipeline: ``pipeline`` (its name) and its ``nodes``. One read from a project
    (``project``) runs with that project's connections, story and retry settings."""

    pipeline: str
    nodes: list[NodeConfig]
    description: str | None = None
    project: ProjectConfig | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> PipelineConfig:
        name = data.get("pipeline") if isinstance(data, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: a pipeline needs pipeline: NAME and nodes: (got {data!r})")
        where = f"{where}: pipeline {name!r}"
        config = _check_fields(
            where,
            data,
            ("pipeline", "nodes"),
            ("description", "layer", "owner", "tags", "freshness_sla", "freshness_anchor")
            + ("auto_cache_threshold",),
        )
        nodes = [NodeConfig.from_dict(n, where) for n in config.get("nodes") or []]
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ConfigError(f"{where}: two nodes are named {node.name!r}; rename one")
            seen.add(node.name)
        return cls(name, nodes, config.get("description"))


@dataclass
class ProjectConfig:
    """An Odibi project: its ``pipelines``, ``connections``, ``story`` and ``retry`` settings."""

    project: str
    engine: str = "pandas"
    connections: dict[str, LocalConnection] = field(default_factory=dict)
    pipelines: list[PipelineConfig] = field(default_factory=list)
    story: StorySettings | None = None
    retries: int = 0
    retry_backoff: float = 2.0
    source: Path | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> ProjectConfig:
        project = _check_fields(
            where,
            data,
            ("project", "engine", "connections", "pipelines", "story", "retry"),
            ("description", "version", "owner", "system", "lineage", "logging", "performance"),
            ("alerts", "environments", "vars", "semantic", "imports"),
        )
        if not project.get("project"):
            raise ConfigError(f"{where}: needs project: NAME")
        engine = str(project.get("engine", "pandas"))
        _check_engine(engine)
        connections = {
            str(name): _connection(f"{where}: connection {name!r}", conn)
            for name, conn in (project.get("connections") or {}).items()
        }
        story = None
        if project.get("story") is not None:
            raw = _check_fields(
                f"{where}: story",
                project["story"],
                ("connection", "path", "auto_generate"),
                ("max_sample_rows", "retention_days", "retention_count", "failure_sample_size")
                + ("max_failure_samples", "max_sampled_validations", "async_generation")
                + ("generate_lineage", "docs"),
            )
            story = StorySettings(
                raw.get("connection"),
                str(raw.get("path", "stories/")),
                bool(raw.get("auto_generate", True)),
            )
        retries, backoff = _retry(f"{where}: retry", project.get("retry"))
        config = cls(
            str(project["project"]), engine, connections, [], story, retries, backoff, None
        )
        for raw_pipeline in project.get("pipelines") or []:
            pipeline = PipelineConfig.from_dict(raw_pipeline, where)
            pipeline.project = config
            config.pipelines.append(pipeline)
        return config


def _retry(where: str, data: Any) -> tuple[int, float]:
    """Odibi's ``retry:`` as pipectl's (retries, retry_backoff); no ``retry:``, no retries."""
    if data is None:
        return 0, 2.0
    retry = _check_fields(where, data, ("enabled", "max_attempts", "backoff"))
    if not retry.get("enabled", True):
        return 0, 2.0
    backoff = retry.get("backoff", "exponential")
    if backoff not in ("exponential", "constant"):
        raise ConfigError(
            f"{where}: backoff {backoff!r} is not supported by pipectl.compat.odibi "
            "(exponential or constant)"
        )
    attempts = int(retry.get("max_attempts", 3))
    return max(attempts - 1, 0), 2.0 if backoff == "exponential" else 1.0


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, where: str) -> Any:
    """``${NAME}`` in every string replaced by the environment variable's value."""
    if isinstance(value, dict):
        return {k: _substitute(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, where) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(1) not in os.environ:
            raise ConfigError(f"{where}: ${{{match.group(1)}}} is not set in the environment")
        return os.environ[match.group(1)]

    return _VAR.sub(one, value)


def load_config_from_file(path: str | os.PathLike[str]) -> ProjectConfig:
    """Read an Odibi project YAML (``${NAME}`` from the environment); raises
    :class:`ConfigError` (or :class:`DependencyError`) naming the pipeline, node and field."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YAML file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = _substitute(yaml.safe_load(f), str(path))
    config = ProjectConfig.from_dict(data, str(path))
    config.source = path
    return config


def _check_engine(engine: str) -> None:
    if engine not in SUPPORTED_ENGINES:
        raise ValueError(
            f"engine {engine!r} is not supported by pipectl.compat.odibi "
            f"(supported engines: {', '.join(SUPPORTED_ENGINES)})"
        )


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise ImportError(
            "engine 'pandas' needs pandas, which is not installed: pip install 'pipectl[pandas]'"
        ) from None


# -- transform functions ------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Any]] = {}


def transform(name_or_func: str | F | None = None) -> Any:
    """Odibi's ``@transform``: register a function for ``function:`` steps and
    ``transformer:``, under its name or the one given (``@transform("clean")``)."""

    def register(func: F, name: str | None = None) -> F:
        _REGISTRY[name or func.__name__] = func
        return func

    if callable(name_or_func):
        return register(name_or_func)
    return lambda func: register(func, name_or_func)


def _function(where: str, name: str) -> Callable[..., Any]:
    """The function ``name`` names: registered with :func:`transform`, or ``module:function``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ConfigError(
            f"{where}: no transform function named {name!r} (registered: {known}); register it "
            "with @transform (from pipectl.compat.odibi import transform) or name it "
            "module:function"
        )
    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {name!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"{where}: {name!r} is not a function")
    return obj  # type: ignore[no-any-return]


def _load_transforms(folder: Path) -> None:
    """Import ``transforms.py`` of ``folder`` if there is one (Odibi's auto-discovery)."""
    path = folder / "transforms.py"
    if not path.is_file():
        return
    spec = importlib.util.spec_from_file_location(f"_odibi_transforms_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


# -- run-time objects ---------------------------------------------------------------------------


class Context:
    """The DataFrames of one pipeline run by node name (Odibi's ``Context``)."""

    def __init__(self) -> None:
        self._frames: dict[str, Any] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, df: Any, metadata: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._frames[name] = df
            self._metadata[name] = dict(metadata or {})

    def get(self, name: str) -> Any:
        with self._lock:
            if name not in self._frames:
                known = ", ".join(self._frames) or "none"
                raise KeyError(f"no DataFrame registered as {name!r} (registered: {known})")
            return self._frames[name]

    def get_metadata(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._metadata.get(name, {}))

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._frames

    def list_names(self) -> list[str]:
        with self._lock:
            return list(self._frames)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._frames.pop(name, None)
            self._metadata.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._metadata.clear()


class EngineContext:
    """What a transform function gets first: ``df`` (the node's DataFrame so far), ``get(name)``
    (another node's DataFrame), ``register_temp_view(name, df)`` / ``set``. ``sql()`` raises:
    this adapter has no SQL engine."""

    def __init__(self, context: Context, df: Any):
        self.context = context
        self.df = df

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in getattr(self.df, "columns", [])]

    def get(self, name: str) -> Any:
        return self.context.get(name)

    def register_temp_view(self, name: str, df: Any) -> None:
        self.context.register(name, df)

    set = register_temp_view

    def with_df(self, df: Any) -> EngineContext:
        return EngineContext(self.context, df)

    def sql(self, query: str) -> EngineContext:
        raise NotImplementedError(f"context.sql(): {_SQL}")


@dataclass
class NodeResult:
    """One node's outcome (Odibi's ``NodeResult``). A skipped node has ``success`` False and
    ``metadata`` ``{"skipped": True, "reason": ...}``; ``step`` is pipectl's result."""

    node_name: str
    success: bool
    duration: float
    rows_processed: int | None = None
    rows_read: int | None = None
    rows_written: int | None = None
    error: BaseException | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    step: StepResult | None = field(default=None, repr=False)


@dataclass
class PipelineResults:
    """What :meth:`Pipeline.run` returns (Odibi's ``PipelineResults``); ``run`` is the
    :class:`~pipectl.model.PipelineRun` underneath."""

    pipeline_name: str
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    node_results: dict[str, NodeResult] = field(default_factory=dict)
    duration: float = 0.0
    start_time: str | None = None
    end_time: str | None = None
    story_path: str | None = None
    run: PipelineRun | None = field(default=None, repr=False)

    def get_node_result(self, name: str) -> NodeResult | None:
        return self.node_results.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline_name": self.pipeline_name,
            "completed": self.completed,
            "failed": self.failed,
            "skipped": self.skipped,
            "duration": self.duration,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "node_count": len(self.node_results),
        }

    def debug_summary(self) -> str:
        """The failed nodes with their errors and where the story is ("" when none failed)."""
        if not self.failed:
            return ""
        lines = [f"Pipeline {self.pipeline_name!r} failed", "Failed nodes:"]
        for name in self.failed:
            error = self.node_results[name].error
            lines.append(f"  - {name}: {str(error)[:200]}" if error else f"  - {name}")
        if self.skipped:
            lines.append(f"Skipped: {', '.join(self.skipped)}")
        if self.story_path:
            lines.append(f"Story: {self.story_path}")
        return "\n".join(lines)


class _RunState:
    """What the node steps of one run share (given to them as the service ``odibi``)."""

    def __init__(self, context: Context):
        self.context = context
        self.rows: dict[str, dict[str, int]] = {}


# -- the pipeline -------------------------------------------------------------------------------


class Pipeline:
    """One Odibi pipeline as one :class:`pipectl.Pipeline` (``self.pipeline``).

    ``pipeline_config`` is a :class:`PipelineConfig` (one of ``ProjectConfig.pipelines``) or
    its YAML as a mapping (``{"pipeline": ..., "nodes": [...]}``). ``connections`` (name ->
    :class:`LocalConnection` or ``{type: local, base_path: ...}``) and ``story_config``
    (``{"output_path": DIR}``) default to those of the config's project; without a project,
    stories go to ``stories/`` as in Odibi (``generate_story=False``: none).
    """

    def __init__(
        self,
        pipeline_config: PipelineConfig | Mapping[str, Any],
        engine: str = "pandas",
        connections: Mapping[str, Any] | None = None,
        generate_story: bool = True,
        story_config: Mapping[str, Any] | None = None,
    ):
        _check_engine(engine)
        _pandas()
        if not isinstance(pipeline_config, PipelineConfig):
            pipeline_config = PipelineConfig.from_dict(pipeline_config)
        self.config = pipeline_config
        self.engine_type = engine
        project = pipeline_config.project
        source = str(project.source) if project and project.source else "config"
        self._where = f"{source}: pipeline {pipeline_config.pipeline!r}"
        if connections is None:
            connections = project.connections if project is not None else {}
        self.connections = {
            name: _connection(f"{self._where}: connection {name!r}", conn)
            for name, conn in connections.items()
        }
        self.story_dir: Path | None = None
        if story_config is not None:
            self.story_dir = Path(str(story_config.get("output_path", "stories/")))
        elif project is not None and project.story is not None:
            story = project.story
            if story.auto_generate:
                if story.connection not in self.connections:
                    raise ConfigError(
                        f"{source}: story: connection "
                        f"{story.connection!r} is not one of connections: "
                        f"({', '.join(self.connections) or 'none'}); add it or fix the name"
                    )
                self.story_dir = Path(self.connections[str(story.connection)].get_path(story.path))
        elif project is None:
            self.story_dir = Path("stories")
        if not generate_story:
            self.story_dir = None
        self.context = Context()
        self.pipeline = self._build(project)

    def _build(self, project: ProjectConfig | None) -> _Pipeline:
        nodes = {node.name: node for node in self.config.nodes}
        for node in self.config.nodes:
            for dep in node.depends_on:
                if dep not in nodes:
                    close = difflib.get_close_matches(dep, list(nodes), n=1)
                    hint = f"did you mean {close[0]!r}?" if close else "remove it"
                    raise DependencyError(
                        f"{self._where}: node {node.name!r} depends on {dep!r}, which is not a "
                        f"node of this pipeline ({hint}; nodes: {', '.join(nodes)})"
                    )
            for io in (node.read, node.write):
                if io is not None and io.connection not in self.connections:
                    part = "read" if io is node.read else "write"
                    known = ", ".join(self.connections) or "none"
                    if io.connection is None:
                        raise ConfigError(
                            f"{self._where}: node {node.name!r}: {part}: needs connection: "
                            f"NAME, one of the connections ({known})"
                        )
                    raise ConfigError(
                        f"{self._where}: node {node.name!r}: {part}: connection "
                        f"{io.connection!r} is not one of the connections ({known}); add "
                        f"it under connections: ({io.connection or 'local'}: {{type: local, "
                        "base_path: ./data}) or pass connections="
                    )
        if project is not None and project.source is not None:
            folder = str(project.source.parent.resolve())
            if folder not in sys.path:  # module:function references beside the YAML
                sys.path.insert(0, folder)
        retries = project.retries if project is not None else 0
        backoff = project.retry_backoff if project is not None else 2.0
        pipe = _Pipeline(self.config.pipeline, description=self.config.description or "")
        for node in self.config.nodes:
            where = f"{self._where}: node {node.name!r}"
            transformer = None
            if node.transformer is not None:
                transformer = _function(f"{where}: transformer", node.transformer)
            steps: list[tuple[Callable[..., Any] | None, _Step]] = []
            for i, s in enumerate(node.steps, 1):
                s = _operation(f"{where}: transform step {i}", s) if s.operation else s
                func = _function(f"{where}: transform step {i}", s.function) if s.function else None
                steps.append((func, s))
            pipe.add_step(
                node.name,
                self._node_step(node, transformer, steps),
                depends_on=node.depends_on,
                inputs={f"upstream_{i}": dep for i, dep in enumerate(node.depends_on)},
                allow_failure=node.on_error == "ignore",
                retries=retries,
                retry_backoff=backoff,
                description=node.description or "",
            )
        try:
            pipe.graph.topological_order()  # validates the DAG
        except PipelineValidationError as exc:
            cycle = next((p for p in exc.problems if p.startswith("cycle: ")), None)
            names = cycle[len("cycle: ") :].split(" -> ") if cycle else None
            raise DependencyError(
                f"{self._where}: circular dependency: {'; '.join(exc.problems)}; remove one of "
                "these depends_on",
                names,
            ) from None
        return pipe

    def _node_step(
        self,
        node: NodeConfig,
        transformer: Callable[..., Any] | None,
        steps: list[tuple[Callable[..., Any] | None, _Step]],
    ) -> Callable[..., Any]:
        """The pipectl step function of ``node``: read, transformer, steps, write, register."""
        connections = self.connections

        def run_node(ctx: Any, **upstream: Any) -> Any:
            state: _RunState = ctx.services["odibi"]
            rows = state.rows.setdefault(node.name, {})
            df = None
            if node.read is not None:
                df = _read(connections, node.read)
                rows["rows_read"] = len(df)
            elif upstream:
                df = upstream["upstream_0"]  # Odibi: the first dependency's DataFrame
            if transformer is not None:
                df = _call(transformer, state.context, df, node.params)
            for func, step in steps:
                if func is None:
                    method = OPERATIONS[str(step.operation)]
                    df = getattr(df, method)(**step.params)
                else:
                    df = _call(func, state.context, df, step.params)
            if node.write is not None:
                if df is None:
                    raise ValueError(f"node {node.name!r} has no DataFrame to write")
                _write(connections, node.write, df)
                rows["rows_written"] = len(df)
            if df is not None:
                state.context.register(node.name, df)
            return df

        run_node.__name__ = run_node.__qualname__ = node.name
        return run_node

    def get_execution_layers(self) -> list[list[str]]:
        """The nodes by layer: a node's layer is one more than its deepest dependency's."""
        levels: list[list[str]] = self.pipeline.graph.levels()
        return levels

    def visualize(self) -> str:
        return self.pipeline.visualize()

    def run(
        self, parallel: bool = False, max_workers: int = 4, on_error: str | None = None
    ) -> PipelineResults:
        """Run every enabled node once (one at a time; ``parallel``: up to ``max_workers`` at
        once) and return its :class:`PipelineResults`. A failed node does not raise: its
        downstream nodes are skipped, the others run. ``on_error="fail_fast"`` stops the run at
        the first failure (the nodes not started are skipped)."""
        if on_error not in (None, "fail_later", "fail_fast"):
            raise ValueError(f"on_error is fail_later or fail_fast, got {on_error!r}")
        disabled = [n.name for n in self.config.nodes if not n.enabled]
        self.context = Context()
        state = _RunState(self.context)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        run = self.pipeline.run_sync(
            max_concurrent=max_workers if parallel else 1,
            fail_fast=on_error == "fail_fast",
            services={"odibi": state},
            skip=disabled,
        )
        results = PipelineResults(
            self.config.pipeline,
            start_time=started.isoformat(),
            end_time=datetime.now(UTC).isoformat(),
            duration=time.perf_counter() - clock,
            run=run,
        )
        order = self.pipeline.graph.topological_order()
        for name in order:
            result = run.steps.get(name)
            node = _node_result(name, result, state.rows.get(name, {}), disabled)
            results.node_results[name] = node
            if result is not None and result.status is StepStatus.SUCCESS:
                results.completed.append(name)
            elif result is not None and result.status is StepStatus.FAILED:
                results.failed.append(name)
            else:
                results.skipped.append(name)
        if self.story_dir is not None:
            from pipectl.story import write_story

            now = datetime.now()
            folder = self.story_dir / self.config.pipeline / now.strftime("%Y-%m-%d")
            path = folder / f"run_{now.strftime('%H-%M-%S')}.html"
            if path.exists():  # a run in the same second: keep both stories
                path = folder / f"run_{now.strftime('%H-%M-%S-%f')}.html"
            results.story_path = str(write_story(run, path, pipeline=self.pipeline))
        return results

    def __repr__(self) -> str:
        return f"Pipeline({self.config.pipeline!r}, nodes={len(self.config.nodes)})"


def _operation(where: str, step: _Step) -> _Step:
    if step.operation not in OPERATIONS:
        if step.operation in _REGISTRY:  # Odibi falls back on a registered function
            return _Step(step.operation, None, step.params)
        raise ConfigError(
            f"{where}: unknown operation {step.operation!r} "
            f"(operations: {', '.join(OPERATIONS)}; or a function: step)"
        )
    return step


def _call(func: Callable[..., Any], context: Context, df: Any, params: Mapping[str, Any]) -> Any:
    """``func(context, current=df, **params)`` as Odibi calls a transform function."""
    engine_ctx = EngineContext(context, df)
    kwargs = dict(params)
    try:
        takes_current = "current" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes_current = False
    if takes_current:
        kwargs["current"] = df
    result = func(engine_ctx, **kwargs)
    return result.df if isinstance(result, EngineContext) else result


def _read(connections: Mapping[str, LocalConnection], io: _IO) -> Any:
    pd = _pandas()
    path = connections[str(io.connection)].get_path(io.path)
    if io.format == "csv":
        return pd.read_csv(path, **io.options)
    if io.format == "json":
        return pd.read_json(path, **io.options)
    return _parquet(lambda: pd.read_parquet(path, **io.options))


def _write(connections: Mapping[str, LocalConnection], io: _IO, df: Any) -> None:
    """Write ``df`` where ``io`` says, all or nothing: into a temporary file beside the target
    (a copy of it first, for ``mode: append``), synced and renamed over it, so that a process
    that dies mid-write, or an attempt that fails and is retried, leaves the old file whole
    and never half a write or a row twice."""
    path = Path(connections[str(io.connection)].get_path(io.path))
    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(io.options)
    append = io.mode == "append"
    existed = path.exists()

    def write(tmp: Path) -> None:
        if io.format == "csv":
            if append and existed:
                shutil.copyfile(path, tmp)
                options.setdefault("header", False)
            df.to_csv(tmp, index=False, mode="a" if append else "w", **options)
        elif io.format == "json":
            options.setdefault("orient", "records")
            if append:  # pandas appends JSON lines only
                if existed:
                    shutil.copyfile(path, tmp)
                options.update(lines=True, mode="a")
            df.to_json(tmp, **options)
        else:
            out = df
            if append and existed:
                pd = _pandas()
                old = _parquet(lambda: pd.read_parquet(path))
                out = pd.concat([old, df], ignore_index=True)
            _parquet(lambda: out.to_parquet(tmp, index=False, **options))

    from pipectl.loads import remove_stale_temp_files, temp_prefix

    remove_stale_temp_files(str(path))
    tmp = path.with_name(f"{temp_prefix(str(path))}{os.urandom(4).hex()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as synced:
            os.fsync(synced.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parquet(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except ImportError as exc:
        raise ImportError(f"parquet needs pyarrow: pip install pyarrow ({exc})") from exc


def _node_result(
    name: str, result: StepResult | None, rows: Mapping[str, int], disabled: Sequence[str]
) -> NodeResult:
    if result is None:  # left out of the run: disabled, or downstream of a disabled node
        reason = "disabled" if name in disabled else "dependency_disabled"
        return NodeResult(name, False, 0.0, metadata={"skipped": True, "reason": reason})
    duration = result.duration_ms / 1000.0
    if result.status is StepStatus.SUCCESS:
        output = result.output
        count = len(output) if hasattr(output, "__len__") else None
        return NodeResult(
            name,
            True,
            duration,
            rows_processed=count,
            rows_read=rows.get("rows_read"),
            rows_written=rows.get("rows_written"),
            step=result,
        )
    if result.status is StepStatus.FAILED:
        error = result.exception or RuntimeError(result.error or "failed")
        return NodeResult(name, False, duration, error=error, step=result)
    # skipped: downstream of a failed node; cancelled: fail_fast (or Ctrl-C) stopped the run
    reason = "dependency_failed" if result.status is StepStatus.SKIPPED else "run_stopped"
    metadata = {"skipped": True, "reason": reason, "detail": result.reason}
    return NodeResult(name, False, duration, metadata=metadata, step=result)


# -- the manager --------------------------------------------------------------------------------


class PipelineManager:
    """The pipelines of one project: ``PipelineManager.from_yaml("config.yaml")``, then
    ``run()`` (all, in the file's order), ``run("name")`` or ``run(["a", "b"])``."""

    def __init__(self, project_config: ProjectConfig):
        self.project_config = project_config
        self.connections = project_config.connections
        self._pipelines = {
            p.pipeline: Pipeline(p, engine=project_config.engine) for p in project_config.pipelines
        }

    @classmethod
    def from_yaml(cls, yaml_path: str | os.PathLike[str]) -> PipelineManager:
        """Read the project YAML (after importing ``transforms.py`` beside it and in the
        working directory) and build every pipeline; a bad config raises here."""
        folder = Path(yaml_path).parent.resolve()
        _load_transforms(folder)
        if Path.cwd().resolve() != folder:
            _load_transforms(Path.cwd())
        return cls(load_config_from_file(yaml_path))

    def list_pipelines(self) -> list[str]:
        return list(self._pipelines)

    def get_pipeline(self, name: str) -> Pipeline:
        if name not in self._pipelines:
            raise ValueError(
                f"Pipeline {name!r} not found. Available: {', '.join(self._pipelines)}"
            )
        return self._pipelines[name]

    def run(
        self,
        pipelines: str | list[str] | None = None,
        parallel: bool = False,
        max_workers: int = 4,
        on_error: str | None = None,
    ) -> PipelineResults | dict[str, PipelineResults]:
        """Run the named pipelines (all when None) one after another, in the order given;
        one name given as a string (or a list of one): its :class:`PipelineResults`, else
        ``{name: PipelineResults}``."""
        if pipelines is None:
            names = list(self._pipelines)
        elif isinstance(pipelines, str):
            names = [pipelines]
        else:
            names = list(pipelines)
        for name in names:
            self.get_pipeline(name)
        results = {
            name: self._pipelines[name].run(
                parallel=parallel, max_workers=max_workers, on_error=on_error
            )
            for name in names
        }
        return results[names[0]] if len(names) == 1 else results

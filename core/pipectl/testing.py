"""A test kit for plugin authors, loaded by pytest as the plugin ``pipectl`` (entry point pytest11).

Fixtures:

``plugin_manager``
    A fresh :class:`~pipectl.plugins.PipectlPluginManager` with the built-ins and no installed
    plugin (autoload off), so a test sees only what it registers.
``register_plugin``
    ``register_plugin(obj, name=None)`` registers a plugin object or module in
    ``plugin_manager`` for this test only and returns its
    :class:`~pipectl.plugins.PluginRecord` (check ``record.status``).
``hook_recorder``
    A :class:`HookRecorder` registered in ``plugin_manager``: every lifecycle hook call, in order.
``run_cli``
    ``run_cli(*args)`` runs the command line built from ``plugin_manager`` and returns click's
    ``Result`` (``exit_code``, ``output``).
``run_pipeline``
    ``run_pipeline(file, params=None, *, name=None, **run_options)`` loads a pipeline file as
    ``pipectl run`` does (its project's param defaults and env file, paths relative to the
    file; the installed plugins) and runs it, untracked unless ``tracker=`` says otherwise,
    with the pipectl home in a temporary folder; returns the
    :class:`~pipectl.model.PipelineRun`. For a project's own tests of its pipelines.

Contract checks:

:func:`check_output_contract`
    Runs an output plugin through the exactly-once contract of :mod:`pipectl.loads`: every
    record committed once with its load marker, a load found committed is skipped, the cursor
    comes back, an aborted attempt leaves nothing, a second commit of one load adds nothing.
:func:`run_killed_at`
    Runs ``pipectl`` in a subprocess that SIGKILLs itself at a named fault point
    (:mod:`pipectl.faults`), for crash tests: kill it there, resume, count the records.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from pipectl.hookspecs import hookimpl

__all__ = ["HookCall", "HookRecorder", "check_output_contract", "run_killed_at"]
# fixtures (pytest finds them through the entry point): plugin_manager, register_plugin,
# hook_recorder, run_cli, run_pipeline


class HookCall:
    """One recorded hook call: ``name`` and the keyword arguments it got."""

    __slots__ = ("name", "kwargs")

    def __init__(self, name: str, kwargs: dict[str, Any]):
        self.name = name
        self.kwargs = kwargs

    def __getattr__(self, key: str) -> Any:
        try:
            return self.kwargs[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def step_name(self) -> str | None:
        step = self.kwargs.get("step")
        return getattr(step, "name", None)

    def __repr__(self) -> str:
        extra = f" step={self.step_name!r}" if self.step_name else ""
        attempt = f" attempt={self.kwargs['attempt']}" if "attempt" in self.kwargs else ""
        return f"<HookCall {self.name}{extra}{attempt}>"


class HookRecorder:
    """A plugin recording every lifecycle hook call it sees, in order."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append(HookCall(name, kwargs))

    @hookimpl
    def pipectl_run_start(self, run):
        self._record("pipectl_run_start", run=run)

    @hookimpl
    def pipectl_run_finish(self, run):
        self._record("pipectl_run_finish", run=run)

    @hookimpl
    def pipectl_step_start(self, run, step, attempt):
        self._record("pipectl_step_start", run=run, step=step, attempt=attempt)

    @hookimpl
    def pipectl_step_retry(self, run, step, attempt, error, delay):
        self._record("pipectl_step_retry", run=run, step=step, attempt=attempt, error=error,
                     delay=delay)

    @hookimpl
    def pipectl_step_finish(self, run, step, result):
        self._record("pipectl_step_finish", run=run, step=step, result=result)

    def names(self) -> list[str]:
        """The hook names called, in order."""
        return [c.name for c in self.calls]

    def calls_for(self, name: str, step: str | None = None) -> list[HookCall]:
        """Calls of hook ``name`` (``pipectl_`` may be left out), optionally for one step."""
        if not name.startswith("pipectl_"):
            name = "pipectl_" + name
        return [c for c in self.calls if c.name == name and (step is None or c.step_name == step)]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def plugin_manager() -> Any:
    """A fresh plugin manager: built-ins only, no installed plugin."""
    from pipectl.plugins import get_plugin_manager

    return get_plugin_manager(autoload=False, entry_points=())


@pytest.fixture
def register_plugin(plugin_manager: Any) -> Iterator[Callable[..., Any]]:
    """``register_plugin(obj, name=None)``: register a plugin for this test only."""
    added: list[tuple[str, Any]] = []

    def register(plugin: Any, name: str | None = None) -> Any:
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{id(plugin):x}"
        record = plugin_manager.add_plugin(plugin, name)
        added.append((name, plugin))
        return record

    yield register
    for name, plugin in added:
        if plugin_manager.get_plugin(name) is plugin:  # not a name it failed to take
            plugin_manager.remove_plugin(name)


@pytest.fixture
def hook_recorder(register_plugin: Callable[..., Any]) -> HookRecorder:
    """A :class:`HookRecorder` registered in ``plugin_manager``."""
    recorder = HookRecorder()
    register_plugin(recorder, "hook-recorder")
    return recorder


@pytest.fixture
def run_cli(plugin_manager: Any) -> Callable[..., Any]:
    """``run_cli(*args, input=None, env=None)`` on a CLI freshly built from ``plugin_manager``."""
    from click.testing import CliRunner

    from pipectl.cli import build_cli

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
        runner = CliRunner()
        return runner.invoke(build_cli(plugin_manager), list(args), input=input, env=env,
                             catch_exceptions=False)

    return run


@pytest.fixture
def run_pipeline(tmp_path_factory: Any, monkeypatch: Any) -> Callable[..., Any]:
    """``run_pipeline(file, params=None, *, name=None, **run_options)``: a pipeline file loaded
    as ``pipectl run`` loads it and run once; returns the run."""
    import os

    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path_factory.mktemp("pipectl-home")))

    def run(file: Any, params: Any = None, *, name: str | None = None,
            **run_options: Any) -> Any:
        from pipectl.pipelinefile import load_pipeline
        from pipectl.project import find_project

        project = find_project(file)
        for variable in project.load_env():  # undone after the test
            monkeypatch.setenv(variable, os.environ.pop(variable))
        pipe = load_pipeline(file, params, name=name, project=project)
        run_options.setdefault("tracker", "none")
        return pipe.run_sync(**run_options)

    return run


# -- the output contract ----------------------------------------------------------------------


def check_output_contract(make_output: Callable[[], Any],
                          read: Callable[[], list[dict[str, Any]]],
                          records: list[dict[str, Any]] | None = None) -> None:
    """Check an output against the exactly-once contract (raises AssertionError if it fails).

    ``make_output()`` returns a new output writing to one destination (the same each call, empty
    at first); ``read()`` returns the records in that destination now (any order). The records
    written default to 25 of ``{"id": int, "name": str}``; the destination may hold them with
    more columns, but these keys must read back as written.
    """
    import asyncio

    from pipectl.data import run_data_step
    from pipectl.loads import Load

    records = records or [{"id": i, "name": f"n{i}"} for i in range(25)]

    def held() -> list[tuple[Any, ...]]:
        keys = sorted(records[0])
        return sorted(tuple(r.get(k) for k in keys) for r in read())

    expected = sorted(tuple(r[k] for k in sorted(records[0])) for r in records)

    class Source:
        def __init__(self, cursor: int = 0):
            self.state = {"cursor": cursor}

        def set_state(self, state: Any) -> None:
            self.state = dict(state)

        def describe(self) -> str:
            return "contract records"

        def batches(self, ctx: Any) -> Any:
            for start in range(0, len(records), 10):
                yield [dict(r) for r in records[start:start + 10]]
            self.state = {"cursor": self.state["cursor"] + len(records)}

    def load(run_id: str, load_run: str | None = None, fail: bool = False) -> Any:
        source = Source()
        if fail:
            def batches(ctx: Any) -> Any:
                yield [dict(r) for r in records[:10]]
                raise RuntimeError("the source broke")
            source.batches = batches  # type: ignore[method-assign]
        return asyncio.run(run_data_step(
            step="contract", extractor=source, outputs=[("out", make_output())],
            pipeline="contract", run_id=run_id, load_run=load_run))

    output = make_output()
    assert getattr(output, "guarantee", None) in ("transactional", "idempotent"), \
        "an output declares guarantee = 'transactional' or 'idempotent'"
    assert isinstance(output.describe(), str), "describe() names the output in messages"
    for method in ("open", "write", "commit", "abort", "close", "loaded", "last_load"):
        assert callable(getattr(output, method, None)), f"an exactly-once output has {method}()"

    # an extraction that fails commits nothing
    try:
        load("run-failed", fail=True)
    except RuntimeError:
        pass
    else:  # pragma: no cover - the runner re-raises the extraction error
        raise AssertionError("a failed extraction must raise")
    assert held() == [], "a failed extraction left records in the destination"

    # an attempt aborted after writing leaves nothing and no marker
    output = make_output()
    probe = Load("contract", "run-aborted", "contract", "out")

    class Ctx:
        load = probe

    output.open(Ctx())
    output.write([dict(r) for r in records])
    output.abort()
    output.close()
    assert held() == [], "abort() left records in the destination"
    output = make_output()
    output.open(Ctx())
    try:
        assert output.loaded(probe) is None, "abort() left a load marker"
    finally:
        output.abort()
        output.close()

    # a load commits every record once, with its marker and the cursor
    result = load("run-1")
    assert result.outputs["out"].status == "committed", result.outputs["out"].error
    assert held() == expected, "the committed records are not the records written"
    output = make_output()
    first = Load("contract", "run-1", "contract", "out")
    output.open(Ctx())
    try:
        marker = output.loaded(first)
        assert marker is not None, "commit() did not commit the load's marker"
        assert marker.records == len(records), f"the marker says {marker.records} records"
        assert marker.committed_by == "run-1"
        last = output.last_load(first)
        assert last is not None and last.state == {"cursor": len(records)}, \
            f"last_load() does not give back the cursor committed with the load: {last!r}"
    finally:
        output.abort()
        output.close()

    # a resume of that run finds the load and writes nothing
    again = load("run-2", load_run="run-1")
    report = again.outputs["out"]
    assert report.status == "skipped" and "already committed by run run-1" in (report.note or ""), \
        f"a load committed already was not skipped: {report!r}"
    assert held() == expected, "a resumed load wrote records twice"

    # committing the same load a second time, past the check, adds nothing
    output = make_output()

    class Same:
        load = Load("contract", "run-1", "contract", "out", "run-3")

    output.open(Same())
    try:
        output.write([dict(r) for r in records])
        Same.load.records = len(records)
        output.commit()
    except Exception:  # noqa: BLE001 - refusing is what a transactional output does
        pass
    finally:
        output.close()
    assert held() == expected, "a second commit of one load wrote its records twice"


# -- crash tests ------------------------------------------------------------------------------


def run_killed_at(fault: str, *args: str, cwd: Any, env: dict[str, str] | None = None,
                  timeout: float = 600) -> Any:
    """Run ``pipectl ARGS`` in a subprocess that kills itself at the fault point ``fault``
    (``NAME`` or ``NAME:N``, see :mod:`pipectl.faults`); check that it died there (SIGKILL)
    and return the ``subprocess.CompletedProcess``."""
    import os
    import signal
    import subprocess
    import sys

    environ = {**os.environ, **(env or {}), "PIPECTL_FAULT": fault}
    proc = subprocess.run([sys.executable, "-m", "pipectl.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"pipectl {' '.join(args)} with PIPECTL_FAULT={fault} did not die at the fault point "
        f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

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
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from pipectl.hookspecs import hookimpl

__all__ = ["HookCall", "HookRecorder"]


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

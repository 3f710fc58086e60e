"""Start-up and shut-down of plugins: :class:`Config`, :class:`OptionParser`, and the calls of
``pipectl_addoption``, ``pipectl_configure`` and ``pipectl_unconfigure``.

A plugin manager is *configured* once, before its first run: ``pipectl run`` does it after
parsing its options (so plugins see the values of the options they added), and the Python API
(``Pipeline.run``) does it when the first run starts. It is *unconfigured* once: at the end of
the ``pipectl`` command, or when the process exits.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.plugins import PipectlPluginManager

__all__ = ["Config", "OptionParser", "PluginOption", "configure", "unconfigure"]


class PluginOption:
    """An option a plugin added to ``pipectl run`` with :meth:`OptionParser.add_option`."""

    __slots__ = ("flag", "dest", "type", "help", "metavar", "default", "executor", "key", "plugin")

    def __init__(
        self,
        flag: str,
        dest: str,
        type: type,
        help: str,
        metavar: str | None,
        default: Any,
        executor: str | None,
        key: str | None,
        plugin: str,
    ) -> None:
        self.flag = flag
        self.dest = dest
        self.type = type
        self.help = help
        self.metavar = metavar
        self.default = default
        self.executor = executor
        self.key = key
        self.plugin = plugin

    def __repr__(self) -> str:
        return f"PluginOption({self.flag!r}, dest={self.dest!r}, plugin={self.plugin!r})"


_TYPES = (str, int, float, bool)


class OptionParser:
    """What ``pipectl_addoption`` receives: adds options to ``pipectl run``.

    Flags are long options (``--name``). An option is either an executor's (``executor=`` and
    ``key=``: its value becomes that executor's option ``key`` and implies ``--executor``) or the
    plugin's own, read in ``pipectl_configure`` as ``config.getoption(dest)``.
    """

    def __init__(self, taken: set[str] | None = None) -> None:
        self.options: list[PluginOption] = []
        self._taken = set(taken or ())
        self._plugin = "?"

    def add_option(
        self,
        flag: str,
        *,
        help: str = "",
        type: type = str,
        metavar: str | None = None,
        default: Any = None,
        dest: str | None = None,
        executor: str | None = None,
        key: str | None = None,
    ) -> None:
        """Add ``flag`` to ``pipectl run``.

        :param flag: a free long option, e.g. ``"--dask-scheduler"``.
        :param help: one line for ``pipectl run --help``.
        :param type: ``str``, ``int``, ``float`` or ``bool`` (``bool``: a flag without value).
        :param metavar: what the value is called in the help, e.g. ``"ADDRESS"``.
        :param default: the value when the option is not given (executor options: left out).
        :param dest: the name ``config.getoption`` knows it by (default: the flag without its
            dashes, ``-`` read as ``_``).
        :param executor: the executor this option belongs to; with ``key``, the option's name
            among that executor's options.
        :raises ValueError: a flag that is not ``--long`` or is taken, a type not in the list,
            ``executor`` without ``key`` or the reverse.
        """
        if not isinstance(flag, str) or not flag.startswith("--") or flag[2:3] in ("", "-"):
            raise ValueError(f"flag {flag!r}: expected a long option such as '--my-option'")
        if flag in self._taken:
            raise ValueError(f"flag {flag!r} is already taken")
        if type not in _TYPES:
            raise ValueError(f"type {type!r}: expected str, int, float or bool")
        if (executor is None) != (key is None):
            raise ValueError("executor= and key= go together: the option of that executor")
        name = dest or flag[2:].replace("-", "_")
        if not name.isidentifier():
            raise ValueError(f"dest {name!r} is not an identifier")
        self._taken.add(flag)
        self.options.append(
            PluginOption(flag, name, type, help, metavar, default, executor, key, self._plugin)
        )


def collect_options(pm: PipectlPluginManager, taken: set[str]) -> list[PluginOption]:
    """Every plugin's ``pipectl_addoption``, one plugin at a time: a plugin whose hook raises
    (or adds a bad option) is reported as failed and removed, with none of its options."""
    parser = OptionParser(taken)
    for impl in reversed(pm.hook.pipectl_addoption.get_hookimpls()):
        before = len(parser.options)
        taken_before = set(parser._taken)
        parser._plugin = impl.plugin_name
        try:
            impl.function(**{arg: parser for arg in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the CLI down
            del parser.options[before:]
            parser._taken = taken_before
            pm.fail_plugin(impl.plugin_name, exc)
    return parser.options


class Config:
    """What ``pipectl_configure`` and ``pipectl_unconfigure`` receive.

    :ivar pluginmanager: the plugin manager being configured.
    :ivar options: the values of the options plugins added (``dest`` -> value); empty when
        configured by the Python API.
    :ivar invocation: ``"cli"`` (``pipectl run``) or ``"python"`` (the Python API).
    :ivar project_root: the project's root folder with ``pipectl run``, else None.
    """

    def __init__(
        self,
        pluginmanager: PipectlPluginManager,
        options: Mapping[str, Any],
        invocation: str,
        project_root: Path | None = None,
    ) -> None:
        self.pluginmanager = pluginmanager
        self.options = dict(options)
        self.invocation = invocation
        self.project_root = project_root
        self.unconfigured = False
        self._cleanups: list[Callable[[], Any]] = []

    def getoption(self, name: str, default: Any = None) -> Any:
        """The value of the option whose ``dest`` is ``name`` (``default`` when not given)."""
        value = self.options.get(name)
        return default if value is None else value

    def add_cleanup(self, func: Callable[[], Any]) -> None:
        """Call ``func`` (no arguments) when unconfigured, after ``pipectl_unconfigure``; the
        cleanups run last added first, each even when another raised."""
        self._cleanups.append(func)

    def cleanups(self) -> Iterator[Callable[[], Any]]:
        while self._cleanups:
            yield self._cleanups.pop()


_configured: weakref.WeakSet[Any] = weakref.WeakSet()
_atexit_registered = False


def configure(
    pm: PipectlPluginManager,
    options: Mapping[str, Any] | None = None,
    invocation: str = "python",
    project_root: Path | None = None,
) -> Config | None:
    """Configure ``pm`` unless it is already: call ``pipectl_configure`` plugin by plugin. A
    plugin whose hook raises is reported as failed and removed (it sees no run). Returns the
    new :class:`Config`, or None when ``pm`` was configured before."""
    global _atexit_registered
    if pm.config is not None:
        return None
    config = Config(pm, options or {}, invocation, project_root)
    pm.config = config
    _configured.add(pm)
    if not _atexit_registered:
        atexit.register(_unconfigure_all)
        _atexit_registered = True
    caller = pm.hook.pipectl_configure
    for impl in reversed(caller.get_hookimpls()):
        try:
            pm._hookexec("pipectl_configure", [impl], {"config": config}, False)
        except Exception as exc:  # noqa: BLE001 - a plugin that cannot set up is left out
            pm.fail_plugin(impl.plugin_name, exc)
    if not caller.get_hookimpls() and pm.hookcall_monitors:
        pm._hookexec("pipectl_configure", [], {"config": config}, False)
    return config


def unconfigure(pm: PipectlPluginManager) -> None:
    """Unconfigure ``pm`` if it is configured: ``pipectl_unconfigure`` (each plugin isolated:
    a failure is logged), then the cleanups the plugins added. Safe to call twice; a later
    run configures the manager again."""
    config = pm.config
    if config is None or config.unconfigured:
        return
    config.unconfigured = True
    pm.config = None  # a later run configures it again
    _configured.discard(pm)
    from pipectl.hooks import report_failure

    for impl in reversed(pm.hook.pipectl_unconfigure.get_hookimpls()):
        try:
            pm._hookexec("pipectl_unconfigure", [impl], {"config": config}, False)
        except Exception as exc:  # noqa: BLE001 - every plugin gets to clean up
            report_failure(impl.plugin_name, "pipectl_unconfigure", exc)
    for cleanup in config.cleanups():
        try:
            cleanup()
        except Exception as exc:  # noqa: BLE001
            report_failure(getattr(cleanup, "__module__", "?") or "?", "config.add_cleanup", exc)


def _unconfigure_all() -> None:
    for pm in list(_configured):
        unconfigure(pm)

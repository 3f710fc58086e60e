"""Plugin discovery and the plugin manager.

Built-in plugins and every entry point of group ``pipectl`` are loaded by :func:`get_plugin_manager`
through the same pluggy manager, one at a time, each atomically: a plugin that fails to import,
implements a hook that does not exist, has a hook with the wrong arguments, raises in a
registration hook or registers a component name another plugin already has is unregistered,
recorded as ``failed`` with its name, distribution, version and error, and everything else keeps
working. Blocked plugins are never imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from pipectl import hookspecs
from pipectl.errors import PluginError
from pipectl.registry import KINDS, Component, Registries

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.config import Config

ENTRY_POINT_GROUP = "pipectl"
DISABLE_ENV = "PIPECTL_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "PIPECTL_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "PIPECTL_STRICT_PLUGINS"

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("local", "pipectl.builtins.local_executor"),
    ("python", "pipectl.builtins.python_step"),
    ("data", "pipectl.builtins.data_step"),
    ("files", "pipectl.builtins.files"),
    ("sqlite", "pipectl.builtins.sqlite"),
    ("ia-modules", "pipectl.builtins.ia_modules"),
    ("connections", "pipectl.builtins.connections"),
    ("core-commands", "pipectl.builtins.commands"),
)
"""(name, module) of the plugins that ship with pipectl, registered like any other plugin."""

ESSENTIAL_PLUGINS = frozenset({"local", "python", "core-commands"})
"""Built-in plugins that cannot be disabled."""

LIFECYCLE_HOOKS = (*hookspecs.LISTENER_HOOKS, "pipectl_wrap_step")
"""The hooks a run calls: the listener hooks (isolated) and the step middleware hook."""


class PluginRecord:
    """What the loader knows about one plugin (a plain class, to keep attrs off the start-up
    path of ``pipectl --help``).

    Given ``dist`` (the entry point's ``importlib.metadata.Distribution``), ``distribution``
    and ``version`` are read from its metadata when first asked for: ``pipectl --help`` never
    parses the plugins' METADATA files (``--version``, ``pipectl plugins``, a failure or a
    ``-p no:NAME`` to match against distribution names do)."""

    __slots__ = (
        "name",
        "_distribution",
        "_version",
        "module",
        "source",
        "status",
        "error",
        "builtin",
        "_dist",
    )
    FIELDS = ("name", "distribution", "version", "module", "source", "status", "error", "builtin")

    def __init__(
        self,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
        module: str | None = None,
        source: str | None = None,
        status: str = "loaded",
        error: str | None = None,
        builtin: bool = False,
        *,
        dist: Any = None,
    ):
        self.name = name
        self._distribution = distribution
        self._version = version
        self.module = module
        self.source = source
        self.status = status  # loaded | blocked | failed
        self.error = error
        self.builtin = builtin
        self._dist = dist

    def _read_dist(self) -> None:
        name, version = _dist_of(self._dist)
        self._dist = None
        self._distribution = self._distribution if self._distribution is not None else name
        self._version = self._version if self._version is not None else version

    @property
    def distribution(self) -> str | None:
        if self._dist is not None:
            self._read_dist()
        return self._distribution

    @distribution.setter
    def distribution(self, value: str | None) -> None:
        self._distribution = value

    @property
    def version(self) -> str | None:
        if self._dist is not None:
            self._read_dist()
        return self._version

    @version.setter
    def version(self, value: str | None) -> None:
        self._version = value

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS)
        return f"PluginRecord({fields})"

    @property
    def label(self) -> str:
        dist = self.distribution or "?"
        return f"{self.name!r} ({dist} {self.version or ''})".replace(" )", ")")


def normalize_name(name: str) -> str:
    """A distribution or plugin name as PEP 503 compares them: ``Pipectl_Foo`` is ``pipectl-foo``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


def _format_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) if "\n" not in str(exc)[:200] else text.strip()


class PipectlPluginManager(pluggy.PluginManager):
    """pluggy's manager plus component registries and a record of every plugin seen."""

    def __init__(self) -> None:
        super().__init__("pipectl")
        self.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.records: dict[str, PluginRecord] = {}
        self.strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
        self.hookcall_monitors = 0
        """How many hook-call monitors (``add_hookcall_monitoring``, ``enable_tracing``) are
        installed: while there is one, a run calls every listener hook, even one no plugin
        implements, so that the monitor sees each event (see :mod:`pipectl.hooks`)."""
        self.config: Config | None = None
        """The :class:`~pipectl.config.Config` once configured (:func:`pipectl.config.configure`,
        before the manager's first run), else None."""

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's ``register``, then each listener hook implementation of ``plugin`` is
        wrapped so that an exception in it is logged as ``plugin_hook_failed`` and the other
        listeners are still called (:func:`pipectl.hooks.isolate`)."""
        registered = super().register(plugin, name)
        if registered is not None:
            from pipectl.hooks import isolate_plugin

            isolate_plugin(self, plugin)
        return registered

    def add_hookcall_monitoring(self, before: Any, after: Any) -> Any:
        """pluggy's ``add_hookcall_monitoring``, counted in :attr:`hookcall_monitors`."""
        undo = super().add_hookcall_monitoring(before, after)
        self.hookcall_monitors += 1
        undone = False

        def undo_monitoring() -> None:
            nonlocal undone
            undo()
            if not undone:
                undone = True
                self.hookcall_monitors -= 1

        return undo_monitoring

    # -- loading ---------------------------------------------------------------------------

    def add_plugin(
        self,
        plugin: Any,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        builtin: bool = False,
        dist: Any = None,
    ) -> PluginRecord:
        """Register ``plugin`` under ``name`` atomically and collect the components it provides.

        Returns the plugin's record; on failure the plugin is left out and the record says why
        (or :class:`PluginError` is raised when ``PIPECTL_STRICT_PLUGINS=1``). ``dist``: the
        ``importlib.metadata.Distribution`` that ``distribution`` and ``version`` are read
        from when they are first needed (see :class:`PluginRecord`).
        """
        record = PluginRecord(
            name=name,
            distribution=distribution,
            version=version,
            module=getattr(plugin, "__name__", type(plugin).__name__),
            source=getattr(plugin, "__file__", None),
            builtin=builtin,
            dist=dist,
        )
        if self.is_blocked(name):
            record.status = "blocked"
            self.records[name] = record
            return record
        owner = self.records.get(name)
        if self.get_plugin(name) is not None or (owner is not None and owner.status == "loaded"):
            # the name is taken: leave its owner alone and keep this record under its own key
            taken_by = owner.label if owner is not None else repr(name)
            self._fail(record, PluginError(f"plugin name {name!r} is already taken by {taken_by}"))
            self.records[f"{name}@{record.distribution or id(plugin)}"] = record
            return record
        try:
            self.register(plugin, name)
            self._check_plugin(plugin)
            self._collect_components(plugin, name)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the plugin out
            if self.get_plugin(name) is plugin:
                self.unregister(name=name)
            self.registries.remove_plugin(name)
            self._fail(record, exc)
        self.records[name] = record
        return record

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and drop its components and record."""
        if self.get_plugin(name) is not None:
            self.unregister(name=name)
        self.registries.remove_plugin(name)
        self.records.pop(name, None)

    def fail_plugin(self, name: str, exc: BaseException) -> None:
        """Mark the loaded plugin ``name`` as failed by ``exc`` (reported by ``pipectl plugins``
        and logged) and unregister it with its components; its record stays."""
        record = self.records.get(name)
        self.remove_plugin(name)
        if record is not None:
            self.records[name] = record
            self._fail(record, exc)

    def _fail(self, record: PluginRecord, exc: BaseException) -> None:
        record.status = "failed"
        record.error = _format_error(exc)
        from pipectl import log

        log.plugin_failed(record)
        if self.strict:
            raise PluginError(f"plugin {record.label} failed: {record.error}") from exc

    def _check_plugin(self, plugin: Any) -> None:
        """Reject hooks that are not in the contract and wrappers, naming the hook and a fix."""
        for caller in self.get_hookcallers(plugin) or ():
            if caller.spec is None:
                import difflib

                known = [n for n in dir(hookspecs) if n.startswith("pipectl_")]
                close = difflib.get_close_matches(caller.name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise pluggy.PluginValidationError(
                    plugin, f"{caller.name!r} is not a pipectl hook{hint}"
                )
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    raise pluggy.PluginValidationError(
                        plugin, f"{caller.name!r} cannot be implemented as a wrapper"
                    )

    def _collect_components(self, plugin: Any, name: str) -> None:
        staged: list[Component] = []
        closed = False
        for hook_name, kind in hookspecs.REGISTRATION_HOOKS.items():
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(
                    component_name: str, factory: Any, _kind: str = kind, *, options: Any = None
                ) -> None:
                    if closed:
                        raise PluginError(
                            f"plugin {name!r} called register() after its "
                            "registration hook returned; call it inside the hook"
                        )
                    if not isinstance(component_name, str) or not component_name:
                        raise TypeError(
                            f"register() needs a non-empty name, got {component_name!r}"
                        )
                    if not callable(factory):
                        raise TypeError(
                            f"register({component_name!r}, ...) needs a callable factory"
                        )
                    if options is not None and not (
                        callable(options) or isinstance(options, str) and ":" in options
                    ):
                        raise TypeError(
                            f"register({component_name!r}, ..., options=...) takes the "
                            "class (or function) whose signature declares the "
                            f"options, or 'module:Class'; got {options!r}"
                        )
                    staged.append(Component(_kind, component_name, factory, name, options))

                impl.function(**{arg: register for arg in impl.argnames})
        closed = True  # noqa: F841 - read by the register closures
        added: list[Component] = []
        try:
            for component in staged:
                self.registries.of(component.kind).add(component)
                added.append(component)
        except Exception:
            self.registries.remove_plugin(name)
            raise

    # -- introspection ---------------------------------------------------------------------

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.get_plugin(name)
        if plugin is None:
            return []
        return sorted(c.name for c in self.get_hookcallers(plugin) or ())

    def describe(self, include_builtin: bool = False) -> list[dict[str, Any]]:
        """One dict per plugin, as ``pipectl plugins --json`` prints them."""
        out = []
        for key, record in self.records.items():
            if record.builtin and not include_builtin:
                continue
            loaded = record.status == "loaded" and key == record.name
            out.append(
                {
                    "name": record.name,
                    "distribution": record.distribution,
                    "version": record.version,
                    "status": record.status,
                    "error": record.error,
                    "builtin": record.builtin,
                    "module": record.module,
                    "source": record.source,
                    "hooks": self.hooks_of(record.name) if loaded else [],
                    "components": self.registries.provided_by(record.name) if loaded else {},
                }
            )
        return out


def _dist_of(dist: Any) -> tuple[str | None, str | None]:
    """The name and version of an ``importlib.metadata.Distribution`` (its METADATA parsed
    once), or Nones."""
    if dist is None:
        return None, None
    try:
        metadata = dist.metadata
        return metadata["Name"], metadata["Version"]
    except Exception:  # noqa: BLE001 - broken metadata must not stop discovery
        return None, None


def _pipectl_version() -> str:
    from pipectl import __version__

    return __version__


def get_plugin_manager(
    *,
    autoload: bool | None = None,
    disabled: Iterable[str] = (),
    entry_points: Iterable[Any] | None = None,
) -> PipectlPluginManager:
    """Build a fresh plugin manager: built-ins first, then every ``pipectl`` entry point.

    :param autoload: load entry points; default: unless ``PIPECTL_DISABLE_PLUGIN_AUTOLOAD`` is set.
    :param disabled: plugin names (entry point or distribution names) to block before import;
        ``PIPECTL_DISABLE_PLUGINS=a,b`` adds to it.
    :param entry_points: the entry points to consider instead of the installed ones (tests).
    """
    import importlib

    pm = PipectlPluginManager()
    blocked = {normalize_name(n) for n in (*disabled, *_env_list(DISABLE_ENV))}
    essential = sorted(blocked & ESSENTIAL_PLUGINS)
    if essential:
        raise PluginError(
            f"plugin {essential[0]!r} is built in and cannot be disabled "
            f"(remove it from -p no:... and {DISABLE_ENV})"
        )
    if autoload is None:
        autoload = os.environ.get(NO_AUTOLOAD_ENV, "") in ("", "0")
    version = _pipectl_version()
    for name, module_name in BUILTIN_PLUGINS:
        if normalize_name(name) in blocked:
            pm.set_blocked(name)
        pm.add_plugin(
            importlib.import_module(module_name),
            name,
            distribution="pipectl",
            version=version,
            builtin=True,
        )
    if entry_points is None:
        from importlib.metadata import entry_points as _eps

        entry_points = _eps(group=ENTRY_POINT_GROUP)
    for ep in sorted(entry_points, key=lambda e: e.name):
        # the distribution's name and version are read when needed (not for --help)
        record = PluginRecord(name=ep.name, module=ep.value, dist=getattr(ep, "dist", None))
        if ep.name in pm.records:
            record.status = "failed"
            record.error = (
                f"plugin name {ep.name!r} is already taken by {pm.records[ep.name].label}"
            )
            pm.records[f"{ep.name}@{record.distribution}"] = record
            pm._fail(record, PluginError(record.error))
            continue
        if (
            not autoload
            or normalize_name(ep.name) in blocked
            or (
                blocked
                and record.distribution is not None
                and normalize_name(record.distribution) in blocked
            )
        ):
            pm.set_blocked(ep.name)
            record.status = "blocked"
            record.error = None if autoload else f"autoload disabled ({NO_AUTOLOAD_ENV})"
            pm.records[ep.name] = record
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything at import, sys.exit too
            pm.records[ep.name] = record
            pm._fail(record, exc)
            continue
        new = pm.add_plugin(plugin, ep.name, dist=getattr(ep, "dist", None))
        new.module = ep.value
    return pm


_default: PipectlPluginManager | None = None


def default_plugin_manager() -> PipectlPluginManager:
    """The process-wide manager used by :class:`pipectl.Pipeline` when none is given.

    Built on first use (never at import) and kept; :func:`reset_default_plugin_manager` drops it.
    """
    global _default
    if _default is None:
        _default = get_plugin_manager()
    return _default


def reset_default_plugin_manager() -> None:
    global _default
    _default = None


def preparse_disabled(argv: list[str]) -> list[str]:
    """The plugin names given as ``-p no:NAME`` before the command name in ``argv``."""
    names = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-p", "--plugin") and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
        elif arg.startswith("-p") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:].lstrip("=")
            i += 1
        elif arg.startswith("--plugin="):
            value = arg.split("=", 1)[1]
            i += 1
        elif arg.startswith("-"):
            i += 1
            continue
        else:
            break
        if value.startswith("no:"):
            names.append(value[3:])
    return names


__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PipectlPluginManager",
    "PluginRecord",
    "default_plugin_manager",
    "get_plugin_manager",
    "preparse_disabled",
]

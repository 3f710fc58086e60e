"""Connection types: what a pipeline file's ``connections:`` declare, and what each gives the
components that name one (``connection: NAME``).

A connection type is a class. Its constructor's typed keyword signature declares its fields,
as a component's constructor declares its options (:mod:`pipectl.options`: unknown, missing
and mistyped fields are reported with file:line; fields typed
:data:`~pipectl.options.FilePath` are relative to the pipeline file's folder; ````name````
docstring entries describe them). Its class attributes say the rest:

``serves``
    The component types (``type:`` of an extractor or output) that may name it. Empty: any
    component that declares an option named in ``joins`` (the ``directory`` type).
``replaces``
    The options of a component that the connection gives it: a component given both
    ``connection:`` and one of them is an error naming both.
``joins``
    The options the connection combines with the component's own value (a ``directory``'s
    path joined to the component's relative ``path``, an ``http`` ``base_url`` joined to its
    ``url``, headers merged).
``secret_fields``
    The fields whose values are secret: never shown, never stored (see :meth:`secrets`).

An instance is built once per load of a file, from the checked fields, and gives each component
its options (:meth:`Connection.options`). The built-in types (``sqlite``, ``postgres``,
``directory``, ``http``) are in :mod:`pipectl.components.connections`, registered by the
built-in plugin ``connections``; a plugin adds one with
``register(name, factory, options="module:Class")`` from a
``pipectl_register_connection_types(register)`` hook. Importing this module is cheap; the
loader imports it only for a file that uses connections.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pipectl.options import Problem

__all__ = ["Connection", "ConnectionType", "connection_types"]


class Connection:
    """The base of connection types (see the module's docstring)."""

    serves: ClassVar[tuple[str, ...]] = ()
    replaces: ClassVar[tuple[str, ...]] = ()
    joins: ClassVar[tuple[str, ...]] = ()
    secret_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_fields(cls, values: Mapping[str, Any]) -> list[Problem]:
        """Problems of ``values`` the signature cannot say (fields that go together, or not);
        each a :class:`~pipectl.options.Problem` naming its field. Called when the types are
        right. A secret field's value is never part of a message."""
        return []

    def options(self, component: Mapping[str, Any]) -> dict[str, Any]:
        """The options to set on ``component`` (its own options, without ``type``, ``name``
        and ``connection``): those of ``replaces``, and those of ``joins`` combined with the
        component's. ``ValueError`` for a component the connection cannot serve so (its
        message is shown with the ``connection:`` line; it must not quote a secret)."""
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """The values that are secret: by default, the secret fields' values (strings, or a
        mapping's values). A type that builds a secret from them (a DSN, an ``Authorization``
        header) adds what it built."""
        out: list[str] = []
        for name in self.secret_fields:
            value = getattr(self, name, None)
            values = value.values() if isinstance(value, Mapping) else [value]
            out.extend(str(v) for v in values if v is not None)
        return tuple(out)

    def describe(self) -> str:
        """The connection in a few words, secrets left out."""
        return type(self).__name__


class ConnectionType:
    """A registered connection type: its name, its factory (called with the checked fields)
    and the class that declares the fields and carries ``serves``, ``replaces``, ``joins``
    and ``secret_fields`` (``options``: the class, or ``"module:Class"`` imported on first
    use)."""

    __slots__ = ("_declared", "factory", "name", "plugin")

    def __init__(
        self, name: str, factory: Callable[..., Any], options: Any, plugin: str = "pipectl"
    ):
        self.name, self.factory, self.plugin = name, factory, plugin
        self._declared = options

    @property
    def declared(self) -> type[Connection]:
        """The class declaring the fields (imported on first use)."""
        target = self._declared
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            found: Any = importlib.import_module(module)
            for part in attr.split("."):
                found = getattr(found, part)
            self._declared = target = found
        if not isinstance(target, type):
            target = getattr(target, "__self__", target)  # a classmethod as declaration
        assert isinstance(target, type)
        return target


def connection_types(plugin_manager: Any = None) -> dict[str, ConnectionType]:
    """The connection types by name, as the plugins of ``plugin_manager`` (default: the
    process's) registered them through ``pipectl_register_connection_types(register)`` (the
    built-in ones by plugin ``connections``)."""
    if plugin_manager is None:
        from pipectl.plugins import default_plugin_manager

        plugin_manager = default_plugin_manager()
    registry = plugin_manager.registries.connection_types
    return {
        c.name: ConnectionType(c.name, c.factory, c.options or c.factory, c.plugin)
        for c in registry
    }

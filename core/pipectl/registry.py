"""Component registries: extractors, outputs, trackers, executors, step types, pipeline-file
formats and connection types, by name.

A plugin registers a *factory* under a name; the factory runs only when a pipeline uses the
component, so a plugin's heavy dependencies are imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pipectl.errors import DuplicateComponentError, UnknownComponentError

KINDS = (
    "extractors",
    "outputs",
    "trackers",
    "executors",
    "step_types",
    "pipeline_formats",
    "connection_types",
)


class Component:
    """A component factory registered by a plugin (a plain class: ``pipectl --help`` imports
    this module, and attrs would add to its start-up)."""

    __slots__ = ("kind", "name", "factory", "plugin", "options")

    def __init__(
        self, kind: str, name: str, factory: Callable[..., Any], plugin: str, options: Any = None
    ):
        self.kind = kind
        self.name = name
        self.factory = factory
        self.plugin = plugin
        #: what declares the component's options (:mod:`pipectl.options`): a class or function
        #: whose signature names them, or ``"module:Class"``; None: not declared
        self.options = options

    def __repr__(self) -> str:
        return f"Component(kind={self.kind!r}, name={self.name!r}, plugin={self.plugin!r})"


class Registry:
    """The components of one kind, by name, each attributed to the plugin that registered it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._components: dict[str, Component] = {}
        self.version = 0  # bumped on every change, so cached lookups know they are stale

    def add(self, component: Component) -> None:
        existing = self._components.get(component.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{self.kind.rstrip('s').replace('_', ' ')} {component.name!r} is registered by "
                f"plugin {existing.plugin!r} and again by plugin {component.plugin!r}"
            )
        self._components[component.name] = component
        self.version += 1

    def remove_plugin(self, plugin: str) -> None:
        for name in [n for n, c in self._components.items() if c.plugin == plugin]:
            del self._components[name]
            self.version += 1

    def get(self, name: str) -> Component:
        try:
            return self._components[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, list(self._components)) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the component registered as ``name`` by calling its factory."""
        return self.get(name).factory(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._components)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, c in self._components.items() if c.plugin == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        return iter(self._components.values())

    def __len__(self) -> int:
        return len(self._components)


class Registries:
    """One :class:`Registry` per component kind."""

    __slots__ = KINDS

    # one per name of KINDS (set in __init__ by name)
    extractors: Registry
    outputs: Registry
    trackers: Registry
    executors: Registry
    step_types: Registry
    pipeline_formats: Registry
    connection_types: Registry

    def __init__(self) -> None:
        for kind in KINDS:
            setattr(self, kind, Registry(kind))

    def of(self, kind: str) -> Registry:
        registry: Registry = getattr(self, kind)
        return registry

    def remove_plugin(self, plugin: str) -> None:
        for kind in KINDS:
            self.of(kind).remove_plugin(plugin)

    def provided_by(self, plugin: str) -> dict[str, list[str]]:
        """The components ``plugin`` registered, by kind (kinds it registered none of are left out)."""
        out: dict[str, list[str]] = {}
        for kind in KINDS:
            names = self.of(kind).by_plugin(plugin)
            if names:
                out[kind] = names
        return out

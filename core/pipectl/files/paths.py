"""Relative paths in a pipeline file, made absolute against the file's folder (or another
base): ``path`` params, a data step's ``dead_letter`` and the component options declared as
:data:`~pipectl.options.FilePath`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["absolute", "resolve_paths"]


def absolute(value: Any, base: Path) -> Any:
    """A path (``~`` expanded) made absolute against ``base``; other values as they are."""
    if not isinstance(value, str) or not value:
        return value
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else os.path.normpath(base / expanded)


def resolve_paths(options: dict[str, Any], folder: Path, plugin_manager: Any) -> None:
    """A data step's relative paths made absolute against the pipeline file's ``folder``: its
    ``dead_letter``, and the options each component declares as a
    :data:`~pipectl.options.FilePath` (``path`` for the built-in files and sqlite components)."""
    if isinstance(options.get("dead_letter"), str):
        options["dead_letter"] = absolute(options["dead_letter"], folder)
    pm: Any = None
    for kind, key in (("extractors", "extract"), ("outputs", "load")):
        specs = options.get(key)
        for spec in specs if isinstance(specs, list) else [specs]:
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
                continue
            relative = [
                k
                for k, v in spec.items()
                if isinstance(v, str)
                and v
                and v != "-"
                and "://" not in v  # stdin, a URL
                and not os.path.isabs(os.path.expanduser(v))
            ]
            if not relative:
                continue
            if pm is None:
                from pipectl.plugins import default_plugin_manager

                pm = plugin_manager or default_plugin_manager()
            registry = pm.registries.of(kind)
            if spec["type"] not in registry:
                continue  # validation names the unknown component
            from pipectl.options import schema_of

            try:
                schema = schema_of(registry.get(spec["type"]))
            except Exception:  # noqa: BLE001 - validation reports a declaration that is broken
                schema = None
            names = schema.path_options if schema is not None else ()
            for option in names:
                if option in relative:
                    spec[option] = absolute(spec[option], folder)

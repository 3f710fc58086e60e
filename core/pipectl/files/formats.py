"""Pipeline-file formats: other systems' pipeline files read as pipectl files.

A plugin registers a reader through ``pipectl_register_pipeline_formats``;
:func:`read_pipeline_data` reads a file (:func:`~pipectl.files.loader.read_file`: every check of
a pipeline file), asks each registered reader whether the file is in its format, and gives the
first answer, converted to file data with lines (:class:`~pipectl.files.loader.Map`), or the
file as it is when no reader claims it. The built-in ``ia-modules`` format is in
:mod:`pipectl.builtins.ia_modules`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipectl.files.errors import PipelineFileError, kind
from pipectl.files.loader import Map, Seq, read_file

__all__ = ["file_data", "read_pipeline_data"]


def read_pipeline_data(path: Path, plugin_manager: Any = None) -> Map:
    """The pipeline file at ``path`` as pipectl file data: as read, or as the registered format
    that claims it converts it. ``plugin_manager`` (default: the process's) gives the formats."""
    data = read_file(path)
    if plugin_manager is None:
        from pipectl.plugins import default_plugin_manager

        plugin_manager = default_plugin_manager()
    registries = getattr(plugin_manager, "registries", None)
    formats = getattr(registries, "pipeline_formats", None)
    if not formats:
        return data
    for component in formats:
        try:
            converted = component.factory(path, data)
        except PipelineFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - a reader's bug, reported as the file's problem
            raise PipelineFileError(
                path,
                None,
                None,
                f"the {component.name!r} pipeline format (plugin {component.plugin!r}) failed "
                f"to read the file: {type(exc).__name__}: {exc}",
            ) from None
        if converted is None:
            continue
        if not isinstance(converted, Mapping):
            raise PipelineFileError(
                path,
                None,
                None,
                f"the {component.name!r} pipeline format (plugin {component.plugin!r}) gave "
                f"{kind(converted)} for the file, not a pipeline (a mapping with name and "
                "steps): a bug in that plugin",
            )
        return file_data(converted, data)
    return data


def file_data(value: Mapping[str, Any], like: Map) -> Map:
    """``value`` (a format's conversion of the file ``like``) as file data whose every key and
    item has a line: the line of the same key (or index) in ``like`` where it has one (a list
    under a new name: the original's list as long, at the same level, such as ``tasks`` made
    ``steps``), else the line of the nearest enclosing mapping or list item."""
    converted = _convert(value, like, like.line or 1)
    assert isinstance(converted, Map)
    return converted


def _convert(value: Any, like: Any, line: int) -> Any:
    if isinstance(value, Mapping):
        out = Map()
        out.line = getattr(like, "line", 0) or line if isinstance(like, Map) else line
        out.lines = {}
        for key, item in value.items():
            twin = None
            here = out.line
            if isinstance(like, Map):
                if key in like:
                    twin, here = like[key], like.lines.get(key, out.line)
                elif isinstance(item, (list, tuple)):  # a list renamed: the one as long
                    for other, candidate in like.items():
                        if isinstance(candidate, Seq) and len(candidate) == len(item):
                            twin, here = candidate, like.lines.get(other, out.line)
                            break
            out.lines[key] = here
            out[key] = _convert(item, twin, here)
        return out
    if isinstance(value, (list, tuple)):
        seq = Seq()
        seq.line = getattr(like, "line", 0) or line if isinstance(like, Seq) else line
        seq.lines = []
        for index, item in enumerate(value):
            here = like.lines[index] if isinstance(like, Seq) and index < len(like) else seq.line
            seq.lines.append(here)
            twin = like[index] if isinstance(like, Seq) and index < len(like) else None
            seq.append(_convert(item, twin, here))
        return seq
    return value

"""Built-in plugin ``ia-modules``: the ``ia-modules`` pipeline-file format, so that
``pipectl run pipeline.json`` runs a pipeline of the ia_modules JSON design as it is (steps
with ``module`` and ``step_class``, a ``flow`` of paths). The conversion is
:func:`pipectl.importers.ia_modules.convert`, imported only for a file in that format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipectl.hookspecs import Register, hookimpl


def claims(data: Any) -> bool:
    """Whether the file's data is an ia_modules pipeline: its first step names a
    ``step_class``, which no pipectl step has (decided from a key or two)."""
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or "pipelines" in data:
        return False
    return isinstance(steps[0], dict) and "step_class" in steps[0]


def read_ia_modules(path: Path, data: Any) -> dict[str, Any] | None:
    """The pipectl pipeline of the ia_modules pipeline file at ``path``; None for another
    file."""
    if not claims(data):
        return None
    from pipectl.importers.ia_modules import read_pipeline_file

    return read_pipeline_file(path, data)


@hookimpl(trylast=True)
def pipectl_register_pipeline_formats(register: Register) -> None:
    register("ia-modules", read_ia_modules)

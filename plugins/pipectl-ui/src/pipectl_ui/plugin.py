"""The plugin module (entry point ``ui`` in the group ``pipectl``): adds the command ``pipectl ui``.

pipectl imports this module every time it starts, so it imports nothing heavy: the command is a
:class:`~pipectl.cli.LazyCommand` placeholder, and its module (with Starlette, uvicorn and
Jinja2 behind it) is imported only when ``pipectl ui`` is used.
"""

from __future__ import annotations

from typing import Any

from pipectl import hookimpl

#: the first paragraph of the command's help: ``pipectl --help`` lists it without importing it
HELP = (
    "Serve a local web UI over the tracker: the runs, each run's DAG, timeline, steps, errors "
    "and logs, the pipelines, live while they run; read-only unless --allow-actions."
)


@hookimpl
def pipectl_register_commands(cli: Any) -> None:
    from pipectl.cli import LazyCommand

    cli.add_command(LazyCommand("ui", "pipectl_ui.command:ui", help=HELP))

"""Built-in plugin ``sqlite``: the ``sqlite`` output (in :mod:`pipectl.components.sqlite`,
imported when a pipeline uses it) and the ``sqlite`` run tracker (:mod:`pipectl.components.sqlite_tracker`)."""

from __future__ import annotations

from typing import Any

from pipectl.hookspecs import hookimpl


def _make_sqlite(**options: Any) -> Any:
    from pipectl.components.sqlite import SqliteOutput

    return SqliteOutput(**options)


@hookimpl(trylast=True)
def pipectl_register_outputs(register: Any) -> None:
    register("sqlite", _make_sqlite, options="pipectl.components.sqlite:SqliteOutput")


def _make_tracker(url: str) -> Any:
    from pipectl.components.sqlite_tracker import SqliteTracker

    return SqliteTracker(url)


@hookimpl(trylast=True)
def pipectl_register_trackers(register: Any) -> None:
    register("sqlite", _make_tracker)

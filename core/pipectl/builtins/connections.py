"""Built-in plugin ``connections``: the connection types ``sqlite``, ``postgres``,
``directory`` and ``http`` of pipeline files' ``connections:`` (their classes in
:mod:`pipectl.components.connections`, imported when a file declares a connection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipectl.hookspecs import hookimpl

TYPES = {
    "sqlite": "SqliteConnection",
    "postgres": "PostgresConnection",
    "directory": "DirectoryConnection",
    "http": "HttpConnection",
}


def _factory(class_name: str) -> Callable[..., Any]:
    def make(**fields: Any) -> Any:
        from pipectl.components import connections

        return getattr(connections, class_name)(**fields)

    return make


@hookimpl(trylast=True)
def pipectl_register_connection_types(register: Any) -> None:
    for name, class_name in TYPES.items():
        register(name, _factory(class_name), options=f"pipectl.components.connections:{class_name}")

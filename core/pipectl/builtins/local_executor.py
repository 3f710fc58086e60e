"""Built-in plugin ``local``: the default executor, asyncio in this process."""

from __future__ import annotations

from typing import Any

from pipectl.hookspecs import hookimpl


def _make_local(**options: Any) -> Any:
    from pipectl.components.local_executor import LocalExecutor

    return LocalExecutor(**options)


@hookimpl(trylast=True)
def pipectl_register_executors(register: Any) -> None:
    register("local", _make_local)

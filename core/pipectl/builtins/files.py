"""Built-in plugin ``files``: extractors ``csv``, ``jsonl``, ``python``; outputs ``jsonl``, ``csv``.

Only factories are registered here; the components live in :mod:`pipectl.components.files`,
imported when a pipeline uses one, so that start-up stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipectl.hookspecs import hookimpl


def _lazy(name: str) -> Callable[..., Any]:
    def factory(**options: Any) -> Any:
        from pipectl.components import files

        return getattr(files, name)(**options)

    factory.__qualname__ = factory.__name__ = f"make_{name}"
    return factory


# the options each component takes: its constructor's signature (pipectl.options), read when a
# pipeline is validated, not at start-up
_MODULE = "pipectl.components.files"


@hookimpl(trylast=True)
def pipectl_register_extractors(register: Any) -> None:
    register("csv", _lazy("CsvExtractor"), options=f"{_MODULE}:CsvExtractor")
    register("jsonl", _lazy("JsonlExtractor"), options=f"{_MODULE}:JsonlExtractor")
    register("python", _lazy("PythonExtractor"), options=f"{_MODULE}:PythonExtractor")


@hookimpl(trylast=True)
def pipectl_register_outputs(register: Any) -> None:
    register("jsonl", _lazy("JsonlOutput"), options=f"{_MODULE}:JsonlOutput")
    register("csv", _lazy("CsvOutput"), options=f"{_MODULE}:CsvOutput")

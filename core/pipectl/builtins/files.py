"""Built-in plugin ``files``: extractors ``csv``, ``jsonl``, ``python``; outputs ``jsonl``, ``csv``.

Only factories are registered here; the components live in :mod:`pipectl.components.files`,
imported when a pipeline uses one, so that start-up stays cheap.
"""

from __future__ import annotations

from typing import Any, Callable

from pipectl.hookspecs import hookimpl


def _lazy(name: str) -> Callable[..., Any]:
    def factory(**options: Any) -> Any:
        from pipectl.components import files

        return getattr(files, name)(**options)

    factory.__qualname__ = factory.__name__ = f"make_{name}"
    if name != "PythonExtractor":
        factory.path_options = ("path",)  # relative in a pipeline file: to the file's folder
    return factory


@hookimpl(trylast=True)
def pipectl_register_extractors(register):
    register("csv", _lazy("CsvExtractor"))
    register("jsonl", _lazy("JsonlExtractor"))
    register("python", _lazy("PythonExtractor"))


@hookimpl(trylast=True)
def pipectl_register_outputs(register):
    register("jsonl", _lazy("JsonlOutput"))
    register("csv", _lazy("CsvOutput"))

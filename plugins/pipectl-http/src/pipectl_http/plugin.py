"""The plugin module (entry point ``http`` in the group ``pipectl``): registers the extractor.

pipectl imports this module every time it starts, so it imports nothing heavy: the extractor and
httpx are imported by the factory, when a pipeline uses the extractor.
"""

from __future__ import annotations

from typing import Any

from pipectl import hookimpl


def make_http_extractor(**options: Any) -> Any:
    """Build an ``http`` extractor from a data step's ``extract`` options (see the README).

    Raises ``ValueError`` for an unknown option (with a suggestion), a value of the wrong type
    and options that do not go together.
    """
    from pipectl_http.extractor import HttpExtractor

    return HttpExtractor.from_options(options)


@hookimpl
def pipectl_register_extractors(register):
    register("http", make_http_extractor, options="pipectl_http.extractor:HttpExtractor")

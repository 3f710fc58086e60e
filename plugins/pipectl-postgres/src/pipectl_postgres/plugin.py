"""pipectl-postgres: the ``postgres`` extractor and output, and the ``postgresql`` run tracker
(PostgreSQL through psycopg 3).

This module is imported whenever pipectl starts, so it imports nothing but pipectl: the
components, and psycopg with them, are imported by the factories, when a pipeline uses them
(:mod:`pipectl_postgres.extractor`, :mod:`pipectl_postgres.output`,
:mod:`pipectl_postgres.tracker`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipectl import hookimpl


def check_options(kind: str, options: Mapping[str, Any], component: type) -> None:
    """A ValueError for an option ``component`` does not take, with the closest known one."""
    import difflib
    import inspect

    known = [
        name
        for name, p in inspect.signature(component).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    ]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"postgres {kind}: unknown option {name!r}{hint} (options: "
                f"{', '.join(sorted(known))})"
            )


def make_extractor(**options: Any) -> Any:
    """The ``postgres`` extractor (options: :mod:`pipectl_postgres.extractor`)."""
    from pipectl_postgres.extractor import PostgresExtractor

    check_options("extractor", options, PostgresExtractor)
    return PostgresExtractor(**options)


def make_output(**options: Any) -> Any:
    """The ``postgres`` output (options: :mod:`pipectl_postgres.output`)."""
    from pipectl_postgres.output import PostgresOutput

    check_options("output", options, PostgresOutput)
    return PostgresOutput(**options)


@hookimpl
def pipectl_register_extractors(register):
    register("postgres", make_extractor, options="pipectl_postgres.extractor:PostgresExtractor")


@hookimpl
def pipectl_register_outputs(register):
    register("postgres", make_output, options="pipectl_postgres.output:PostgresOutput")


def make_tracker(url: str) -> Any:
    """The ``postgresql`` run tracker for ``url`` (:mod:`pipectl_postgres.tracker`); pipectl
    picks it for ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` URLs."""
    from pipectl_postgres.tracker import PostgresTracker

    return PostgresTracker(url)


@hookimpl
def pipectl_register_trackers(register):
    register("postgresql", make_tracker)

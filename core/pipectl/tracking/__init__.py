"""Run tracking: what ran, when, with what, and what failed.

The contract every tracker keeps is :mod:`pipectl.tracking.contract`: the :class:`Tracker`
protocol (with :class:`ResumableTracker` and :class:`PrunableTracker`) and the typed events a
run is recorded as (:class:`RunStarted`, :class:`StepStarted`, ...). The rest of the package is
what every tracker shares (the listener that turns a run's hooks into events, resume, the
result store) and pipectl's own implementation of the contract on SQL, one job per module:

========================  ===================================================================
``contract``              the protocols and the events; :func:`require_resume`,
                          :func:`require_prune`, :func:`require_browse`
``errors``                :class:`TrackerError` and the refusals of a resume
``listener``              :class:`TrackingListener`, a run's hooks as events
``dialect``               :class:`SQLDialect`, what one SQL database does its own way
``schema``                the tables and their migrations (:data:`MIGRATIONS`)
``sql``                   :class:`SQLTracker`: connections, the writer thread, the spool
``rows``                  the rows built from events, kept until written, upserted
``reads``                 the queries behind ``pipectl runs``, stories, resume and a web
                          UI (pages of runs, step logs, run versions)
``serialize``             bounded summaries of params, inputs, outputs and errors; secrets
``result_store``          :class:`ResultStore`, the authenticated outputs kept for resume
``resume``                :func:`fingerprint`, :func:`resume_outputs`, resume claims
``retention``             which old runs go (prune), :func:`parse_duration`
========================  ===================================================================

The SQLite tracker is a built-in component (:mod:`pipectl.components.sqlite_tracker`);
PostgreSQL's is the plugin pipectl-postgres, a :class:`SQLTracker` with a dialect of its own.

Every name is imported on first use (``from pipectl.tracking import X``): importing the
package imports none of its modules, so a process that only unpickles a :class:`ResultStore`
(a dask worker's) never imports attrs or the SQL tracker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.components.sqlite_tracker import SqliteDialect, SqliteTracker
    from pipectl.tracking.contract import BROWSE_MEMBERS as BROWSE_MEMBERS
    from pipectl.tracking.contract import RESUME_MEMBERS as RESUME_MEMBERS
    from pipectl.tracking.contract import TRACKER_MEMBERS as TRACKER_MEMBERS
    from pipectl.tracking.contract import (
        BrowsableTracker,
        ExtractorStateSaved,
        OutputStore,
        PrunableTracker,
        ResumableTracker,
        RunEvent,
        RunFinished,
        RunStarted,
        StepFinished,
        StepRetrying,
        StepRolledBack,
        StepStarted,
        Tracker,
        TrackerEvent,
        require_browse,
        require_prune,
        require_resume,
    )
    from pipectl.tracking.contract import tracker_name as tracker_name
    from pipectl.tracking.dialect import SQLDialect
    from pipectl.tracking.errors import ResumeClaimed, RunInProgress, TrackerError
    from pipectl.tracking.errors import ResumeRefused as ResumeRefused
    from pipectl.tracking.listener import TrackingListener
    from pipectl.tracking.result_store import ResultStore
    from pipectl.tracking.resume import fingerprint, resume_outputs
    from pipectl.tracking.retention import PrunedRuns, parse_duration
    from pipectl.tracking.rows import step_row as step_row
    from pipectl.tracking.schema import LOG_COLUMNS as LOG_COLUMNS
    from pipectl.tracking.schema import MIGRATIONS
    from pipectl.tracking.schema import RUN_COLUMNS as RUN_COLUMNS
    from pipectl.tracking.schema import STATE_COLUMNS as STATE_COLUMNS
    from pipectl.tracking.schema import STEP_COLUMNS as STEP_COLUMNS
    from pipectl.tracking.serialize import MAX_DEPTH as MAX_DEPTH
    from pipectl.tracking.serialize import MAX_NODES as MAX_NODES
    from pipectl.tracking.serialize import PARAMS_CHARS as PARAMS_CHARS
    from pipectl.tracking.serialize import SUMMARY_CHARS as SUMMARY_CHARS
    from pipectl.tracking.serialize import TEXT_CHARS as TEXT_CHARS
    from pipectl.tracking.serialize import cut_secrets as cut_secrets
    from pipectl.tracking.serialize import summarize as summarize
    from pipectl.tracking.sql import GIVE_UP_SECONDS as GIVE_UP_SECONDS
    from pipectl.tracking.sql import RETRY_FIRST_SECONDS as RETRY_FIRST_SECONDS
    from pipectl.tracking.sql import RETRY_MAX_SECONDS as RETRY_MAX_SECONDS
    from pipectl.tracking.sql import STOP_SECONDS as STOP_SECONDS
    from pipectl.tracking.sql import SQLTracker

__all__ = [
    "MIGRATIONS",
    "BrowsableTracker",
    "ExtractorStateSaved",
    "OutputStore",
    "PrunableTracker",
    "PrunedRuns",
    "ResultStore",
    "ResumableTracker",
    "ResumeClaimed",
    "RunEvent",
    "RunFinished",
    "RunInProgress",
    "RunStarted",
    "SQLDialect",
    "SQLTracker",
    "SqliteDialect",
    "SqliteTracker",
    "StepFinished",
    "StepRetrying",
    "StepRolledBack",
    "StepStarted",
    "Tracker",
    "TrackerError",
    "TrackerEvent",
    "TrackingListener",
    "default_tracker_url",
    "fingerprint",
    "open_tracker",
    "parse_duration",
    "require_browse",
    "require_prune",
    "require_resume",
    "resume_outputs",
]

#: Where each name of the package is defined, imported on first use (see the module's doc).
_EXPORTS = {
    **dict.fromkeys(
        [
            "BROWSE_MEMBERS",
            "BrowsableTracker",
            "ExtractorStateSaved",
            "OutputStore",
            "PrunableTracker",
            "RESUME_MEMBERS",
            "ResumableTracker",
            "RunEvent",
            "RunFinished",
            "RunStarted",
            "StepFinished",
            "StepRetrying",
            "StepRolledBack",
            "StepStarted",
            "TRACKER_MEMBERS",
            "Tracker",
            "TrackerEvent",
            "require_browse",
            "require_prune",
            "require_resume",
            "tracker_name",
        ],
        "pipectl.tracking.contract",
    ),
    **dict.fromkeys(
        ["ResumeClaimed", "ResumeRefused", "RunInProgress", "TrackerError"],
        "pipectl.tracking.errors",
    ),
    **dict.fromkeys(
        ["LOG_COLUMNS", "MIGRATIONS", "RUN_COLUMNS", "STATE_COLUMNS", "STEP_COLUMNS"],
        "pipectl.tracking.schema",
    ),
    **dict.fromkeys(
        [
            "MAX_DEPTH",
            "MAX_NODES",
            "PARAMS_CHARS",
            "SUMMARY_CHARS",
            "TEXT_CHARS",
            "cut_secrets",
            "summarize",
        ],
        "pipectl.tracking.serialize",
    ),
    **dict.fromkeys(
        [
            "GIVE_UP_SECONDS",
            "RETRY_FIRST_SECONDS",
            "RETRY_MAX_SECONDS",
            "STOP_SECONDS",
            "SQLTracker",
        ],
        "pipectl.tracking.sql",
    ),
    **dict.fromkeys(["PrunedRuns", "parse_duration"], "pipectl.tracking.retention"),
    **dict.fromkeys(["fingerprint", "resume_outputs"], "pipectl.tracking.resume"),
    **dict.fromkeys(["SqliteDialect", "SqliteTracker"], "pipectl.components.sqlite_tracker"),
    "SQLDialect": "pipectl.tracking.dialect",
    "ResultStore": "pipectl.tracking.result_store",
    "TrackingListener": "pipectl.tracking.listener",
    "step_row": "pipectl.tracking.rows",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# -- choosing a tracker -----------------------------------------------------------------------


def default_tracker_url(environ: Mapping[str, str] | None = None) -> str:
    """``sqlite:///`` a file ``pipectl.db`` in ``$PIPECTL_HOME``, else in ``.pipectl/`` of the
    project of the working directory (:mod:`pipectl.project`)."""
    environ = os.environ if environ is None else environ
    if environ.get("PIPECTL_HOME"):
        return f"sqlite:///{os.path.join(environ['PIPECTL_HOME'], 'pipectl.db')}"
    from pipectl.project import find_project

    return f"sqlite:///{find_project().home / 'pipectl.db'}"


def open_tracker(url: str | None, registries: Any) -> Tracker | None:
    """The tracker for ``url`` (None or ``none``: no tracking), schema migrated. A factory
    that returns something without the :class:`Tracker` methods is a :class:`TrackerError`
    saying which are missing."""
    if url is None or url.strip().lower() in ("", "none", "off", "false"):
        return None
    from pipectl.tracking.contract import TRACKER_MEMBERS, Tracker
    from pipectl.tracking.errors import TrackerError

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise TrackerError(
            f"tracker {url!r} is not a URL: use sqlite:///path.db, postgresql://..., or none"
        )
    scheme = {"postgres": "postgresql"}.get(scheme.split("+", 1)[0], scheme.split("+", 1)[0])
    tracker = registries.trackers.create(scheme, url)
    if not isinstance(tracker, Tracker):
        missing = [m for m in TRACKER_MEMBERS if not hasattr(tracker, m)]
        raise TrackerError(
            f"the {scheme!r} tracker ({type(tracker).__module__}."
            f"{type(tracker).__qualname__}) is not a tracker: it has no "
            f"{', '.join(missing)} (see pipectl.tracking.Tracker)"
        )
    tracker.migrate()
    return tracker

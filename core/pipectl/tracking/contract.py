"""The tracker contract: what pipectl calls on a run tracker, and the events it records.

A tracker is whatever a plugin's ``pipectl_register_trackers`` factory returns for a URL: the
engine, the CLI and :func:`pipectl.tracking.resume_outputs` only ever use the methods of
:class:`Tracker` (and, when the tracker has them, of :class:`ResumableTracker`,
:class:`PrunableTracker` and :class:`BrowsableTracker`: the reads of a web UI and of
``pipectl runs logs``). A run reaches the tracker as typed events, each passed to
:meth:`Tracker.record` by :class:`pipectl.tracking.TrackingListener`, the lifecycle listener
registered for the run:

========================  ===================================================================
:class:`RunStarted`       the run began (``pipectl_run_start``)
:class:`StepStarted`      an attempt of a step began (``pipectl_step_start``)
:class:`StepRetrying`     an attempt failed and the step is tried again (``pipectl_step_retry``)
:class:`StepFinished`     a step ended: succeeded, failed, skipped, cancelled, or taken from the
                          run being resumed (``pipectl_step_finish``)
:class:`StepRolledBack`   what a step's rollback did (at ``pipectl_run_finish``, before it)
:class:`ExtractorStateSaved`  the cursor a data step's extractor reached in a successful run
                          (at ``pipectl_run_finish``, before it)
:class:`RunFinished`      the run ended (``pipectl_run_finish``), always last
========================  ===================================================================

Events of one run arrive in that order, from the thread of the run's event loop; a run that
starts sub-pipeline runs (``pipeline`` steps) sends their events to the same tracker, with
their own ``run_id`` and the parent's as ``parent_run_id``. The classes are frozen attrs
classes: build them with keyword arguments.

The built-in SQL trackers (:class:`pipectl.tracking.SQLTracker`, SQLite and PostgreSQL) are
one implementation; anything with the methods below is another (the kernel's
``tests/test_tracker_protocol.py`` keeps runs in a JSON Lines file).
:func:`pipectl.testing.check_tracker_contract` checks one.

Step logs (what each attempt of a step logged and printed, see :mod:`pipectl.step_logs`) come
with :class:`StepFinished` (``logs``); a tracker that does not keep them ignores them, and one
that does not want them captured at all says so with ``wants_step_logs = False``.

Import these names from :mod:`pipectl.tracking` (where they are re-exported). Also here:
:func:`require_resume`, :func:`require_prune` and :func:`require_browse`, which check that a
tracker can resume, delete or browse runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

import attrs

from pipectl.tracking.errors import TrackerError

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.model import RunStatus, StepResult, StepSpec, StepStatus

__all__ = [
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
    "Tracker",
    "TRACKER_MEMBERS",
    "TrackerEvent",
    "require_browse",
    "require_prune",
    "require_resume",
    "tracker_name",
]


# -- the events ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RunEvent:
    """What both run events carry (:class:`RunStarted`, :class:`RunFinished`): everything a
    run's record says of the run apart from its outcome, so that a tracker can write the
    whole record from either."""

    run_id: str
    pipeline: str
    started_at: datetime
    """When the run started (aware, UTC)."""
    params: Mapping[str, Any] = attrs.field(factory=dict)
    """The run's params, as given; a secret param's value is ``"***"`` already."""
    description: str = ""
    """The pipeline's description (whole: a tracker cuts it to what it keeps)."""
    graph: Mapping[str, Sequence[str]] = attrs.field(factory=dict)
    """The DAG: each step's name and the steps it depends on, in the pipeline's order (empty
    for a sub-pipeline run). The same mapping object for every event of a run."""
    parent_run_id: str | None = None
    """The run whose ``pipeline`` step started this one (a sub-pipeline run), else None."""
    resumed_from: str | None = None
    """The run this one resumes (its succeeded steps are taken from it), else None."""
    pipeline_file: str | None = None
    executor: str | None = None
    host: str = ""
    pid: int = 0
    """The host and process the run runs in: a run recorded as running whose process is gone
    is ``interrupted`` (see :meth:`Tracker.list_runs`)."""


@attrs.frozen(kw_only=True)
class RunStarted(RunEvent):
    """A run began; its status is ``running`` until :class:`RunFinished`."""


@attrs.frozen(kw_only=True)
class RunFinished(RunEvent):
    """A run ended: the last event of the run."""

    status: RunStatus
    """``success``, ``failed``, ``cancelled``, ``rolled_back`` or ``rollback_failed``."""
    finished_at: datetime | None = None
    duration_ms: float | None = None
    records_processed: int = 0
    errors: tuple[str, ...] = ()
    """The run's errors, one per failed step (secret params' values masked already)."""


@attrs.frozen(kw_only=True)
class StepStarted:
    """An attempt of a step began (``attempt`` counts from 1)."""

    run_id: str
    step_name: str
    step_type: str
    attempt: int
    started_at: datetime


@attrs.frozen(kw_only=True)
class StepRetrying:
    """Attempt ``attempt`` of a step failed with ``error`` (``"Type: message"``, secret
    params' values masked) at ``failed_at`` and the step is tried again after ``delay``
    seconds."""

    run_id: str
    step_name: str
    attempt: int
    error: str
    delay: float
    failed_at: datetime | None = None


@attrs.frozen(kw_only=True)
class StepFinished:
    """A step ended, after its last attempt, or without running (skipped, cancelled, or taken
    from the run being resumed: ``result.resumed_from``).

    ``step`` and ``result`` are the engine's own :class:`~pipectl.model.StepSpec` and
    :class:`~pipectl.model.StepResult` (status, error, traceback, times, attempts, records,
    reason, output); read them, never change them. What a tracker records of the output and
    of ``inputs`` is its choice; the SQL trackers keep a bounded summary of each.

    Secrets: ``result.error`` and ``result.traceback`` have the run's secret params' values
    masked already; the output and ``inputs`` are the values themselves, so a tracker that
    records anything of them masks ``secrets`` (the values of the run's secret params) in it.
    """

    run_id: str
    step: StepSpec
    result: StepResult
    pickled_output: bytes | None = None
    """The step's output, pickled, when the tracker has a result store (:attr:`Tracker.results`)
    and the step succeeded with an output that pickles, holds no secret and is not
    ``store_output=False``: a tracker that supports resume puts it in the store
    (``results.put(run_id, step_name, pickled_output)``) before it records the step as
    succeeded, and says so in :meth:`ResumableTracker.step_states` (``output_stored``)."""
    output_in_store: bool = False
    """The executor wrote the output into the result store itself (pipectl-dask's workers):
    it is stored, with nothing to put."""
    fingerprint: str | None = None
    """What identifies the step's definition (:func:`pipectl.tracking.fingerprint`); None for
    a step of a sub-pipeline run. A resume refuses to take a step whose fingerprint changed."""
    inputs: Mapping[str, Any] | None = None
    """What the step was called with when it ran (:attr:`~pipectl.model.StepResult.received`:
    upstream outputs and ``inputs`` references by parameter name, not ``ctx`` or ``params``),
    or the outputs of the steps it depends on, by name, when the result does not say."""
    secrets: tuple[str, ...] = ()
    logs: Sequence[tuple[int, Sequence[tuple[float, str, str | None, str]]]] = ()
    """What each attempt of the step logged and printed (``result.logs``), when the run
    captured step logs (:attr:`TrackingListener.wants_step_logs
    <pipectl.tracking.TrackingListener>`): ``(attempt, lines)`` per attempt, in order, each
    line ``(logged_at, stream, level, message)``: a POSIX timestamp; ``event`` (pipectl's log
    events for the step), ``stdout``, ``stderr`` or ``logging``; the level (None for stdout
    and stderr); the text. Bounded (:data:`pipectl.step_logs.MAX_LINES` lines and
    :data:`~pipectl.step_logs.MAX_BYTES` bytes per attempt, then a line saying what was left
    out) and with the secret values masked already. A tracker may ignore them; a
    :class:`BrowsableTracker` keeps them for :meth:`BrowsableTracker.step_logs`."""

    @property
    def step_name(self) -> str:
        return self.step.name

    @property
    def status(self) -> StepStatus:
        return self.result.status

    @property
    def output_none(self) -> bool:
        """The step succeeded and returned None: a resume takes it without a stored output."""
        return self.result.output is None and self.result.status.value == "success"

    @property
    def committed_outputs(self) -> tuple[str, ...]:
        """A data step's outputs that committed their load in this step (or found it
        committed already), also when the step failed: a resume runs the step again writing
        only to the others."""
        result = self.result
        data = (
            result.output
            if result.output is not None
            else getattr(result.exception, "result", None)
        )
        reports = getattr(data, "outputs", None)
        if not isinstance(reports, Mapping):
            return ()
        return tuple(
            name
            for name, report in reports.items()
            if getattr(report, "status", None) in ("committed", "skipped")
        )


@attrs.frozen(kw_only=True)
class StepRolledBack:
    """A step's rollback ran after the run failed: ``status`` is the step's status now
    (``rolled_back`` when the rollback succeeded), ``outcome`` what the rollback did
    (``status``, ``error``, ``started_at``, ``finished_at``)."""

    run_id: str
    step_name: str
    status: StepStatus
    outcome: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class ExtractorStateSaved:
    """A successful run left a data step's extractor at ``state`` (JSON-able: a cursor such as
    ``{"updated_since": "..."}``): the next run of ``pipeline`` starts its step ``step_name``
    from it (:meth:`Tracker.extractor_states`)."""

    run_id: str
    pipeline: str
    step_name: str
    state: Any
    saved_at: datetime


# a runtime alias, so Union (3.11 has no `type` statement)
TrackerEvent = Union[  # noqa: UP007
    RunStarted,
    StepStarted,
    StepRetrying,
    StepFinished,
    StepRolledBack,
    ExtractorStateSaved,
    RunFinished,
]
"""Any event :meth:`Tracker.record` is given."""


# -- the protocols ------------------------------------------------------------------------------


@runtime_checkable
class OutputStore(Protocol):
    """Where a tracker keeps step outputs for resume (:class:`pipectl.tracking.ResultStore`,
    files authenticated with the pipectl home's key, is the one pipectl has)."""

    def put(self, run_id: str, step: str, data: bytes) -> str:
        """Keep ``data`` (a pickled output) durably; raises OSError and keeps nothing when it
        cannot."""

    def get(self, run_id: str, step: str) -> tuple[bool, Any]:
        """(True, the output unpickled) when kept, else (False, None)."""


@runtime_checkable
class Tracker(Protocol):
    """A run tracker: what ``pipectl run``, ``pipectl runs``, ``pipectl story`` and
    :meth:`pipectl.Pipeline.run` call.

    Errors: a run that does not exist, a store that cannot be opened or read, raise
    :class:`pipectl.tracking.TrackerError` (a :class:`~pipectl.errors.PipectlError`: the CLI
    prints its message, no traceback). Recording must never fail a run: see :meth:`record`.

    Records (:meth:`get_run`, :meth:`list_runs`) are plain JSON-able dicts, read from the
    store (never only from memory: another process reads them too).
    """

    results: OutputStore | None
    """Where outputs are kept for resume, or None (outputs are then never pickled, and a
    resume runs every step that had an output again). The executor may write into it too
    (``RunConfig.result_store``)."""

    def migrate(self) -> int | None:
        """Called once, right after the factory, before anything else (``open_tracker``):
        create or upgrade the store. Safe to call from several processes at once. Returns the
        store's schema version, or None."""

    def record(self, event: TrackerEvent) -> None:
        """Record one event of a run (see :mod:`pipectl.tracking.contract`).

        Called on the run's event loop for every run and step event: it must return in
        microseconds and never raise for a database that fails (queue the event and write it
        in the background; keep what cannot be written and say so in :meth:`close`). An event
        may repeat what an earlier one said (:class:`RunFinished` carries the whole run):
        later events win."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event recorded so far is durable and readable by :meth:`get_run`
        (at most ``timeout`` seconds); True when it is. Called when a run ends, before its
        record is read (stories, retention)."""

    def close(self, report: bool = True) -> list[str]:
        """Flush what is left and release everything. Returns what went wrong, one line each
        (events that could not be written, outputs not stored), and logs each as a warning
        with ``report``. The tracker may be used again after it (reads open it again)."""

    def list_runs(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first (by ``started_at``), at most ``limit``: only those of
        ``pipeline`` and of ``status`` when given. Each a dict with ``execution_id``,
        ``pipeline_name``, ``status``, ``started_at``, ``completed_at``,
        ``execution_time_ms``, ``records_processed``, ``error_message``, ``resumed_from``,
        ``host``, ``pid`` (the column names of the seed design's ``pipeline_executions``).
        A run recorded as ``running`` whose process on this host is gone is shown, and
        found by ``status="interrupted"``, as ``interrupted``."""

    def get_run(self, run_id: str, pipeline: str | None = None) -> dict[str, Any]:
        """The whole record of one run (``run_id`` as :meth:`resolve` takes it): the format of
        ``pipectl runs show --json``, which stories are made from. Keys: ``run_id``,
        ``pipeline``, ``description``, ``status``, ``started_at``, ``finished_at``,
        ``duration_ms``, ``params``, ``records_processed``, ``error``, ``errors``,
        ``resumed_from``, ``parent_run_id``, ``host``, ``pid``, ``executor``,
        ``pipeline_file``, ``graph``, and ``steps``: a list, in the pipeline's order, of
        dicts with ``step_id``, ``step_name``, ``step_type``, ``status``, ``started_at``,
        ``completed_at``, ``execution_time_ms``, ``attempts``, ``retry_count``,
        ``error_message``, ``traceback``, ``reason``, ``records``, ``attempt_history`` (each
        attempt's ``attempt``, ``started_at``, ``error``), ``input_summary``,
        ``output_summary``, ``resumed_from`` and the optional ``description``, ``outputs``,
        ``bad_records``, ``dead_letter_path``, ``rollback``, ``metadata``. Nothing in it
        holds a secret param's value. Raises :class:`~pipectl.tracking.TrackerError` when
        there is no such run."""

    def resolve(self, run_id: str, pipeline: str | None = None, *, finished: bool = False) -> str:
        """The full id of a run given as ``latest`` (the newest run, of ``pipeline`` when
        given), a full id, or a prefix of exactly one id; raises
        :class:`~pipectl.tracking.TrackerError` when there is none (or several).

        ``finished`` is asked by a resume (only of a :class:`ResumableTracker`): ``latest``
        is then :meth:`ResumableTracker.latest_finished`, and a run still running raises
        :class:`~pipectl.tracking.RunInProgress`."""

    def pipeline_of(self, run_id: str) -> str | None:
        """The pipeline of a run (a full id), None when there is no such run."""

    def extractor_states(self, pipeline: str) -> dict[str, Any]:
        """The latest :class:`ExtractorStateSaved` state of each data step of ``pipeline``,
        by step name (where its next run starts); ``{}`` when there is none."""


@runtime_checkable
class ResumableTracker(Tracker, Protocol):
    """A tracker that can resume runs (``pipectl run --resume``): it keeps each step's state
    and outputs (:attr:`Tracker.results`), and one resumer per run."""

    def latest_finished(self, pipeline: str | None = None) -> dict[str, Any] | None:
        """The latest run (of ``pipeline``) that is not running: it ended, or its process
        died (``interrupted``); None when there is none. A dict with ``execution_id``,
        ``status``, ``started_at``, ``host``, ``pid``."""

    def step_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Each recorded step of a run, by name: ``status``, ``fingerprint``
        (:attr:`StepFinished.fingerprint`), ``output_stored`` (its output is in
        :attr:`Tracker.results`), ``output_none`` (:attr:`StepFinished.output_none`) and
        ``committed`` (:attr:`StepFinished.committed_outputs`, a list)."""

    def load_run(self, run_id: str) -> str:
        """The first run of ``run_id``'s chain of resumes (``resumed_from``, followed back):
        the run whose loads a resume goes on with."""

    def claim_resume(self, run_id: str, by_run_id: str, *, take_over_finished: bool = True) -> None:
        """Claim the resume of ``run_id`` for the run ``by_run_id`` (about to start in this
        process), atomically for every process using the store, so that two resumes of one
        run never both run. Raises :class:`~pipectl.tracking.ResumeClaimed` when another run
        holds it and is running (or is about to: its claim's process is alive), or succeeded.
        A claim whose run ended otherwise is taken over, unless ``take_over_finished`` is
        false and that run is recorded (``ResumeClaimed`` with ``state`` ``finished``). The
        claim stays after the resuming run ends."""

    def release_resume(self, run_id: str, by_run_id: str) -> None:
        """Drop ``by_run_id``'s claim on ``run_id`` (the resume never started); nothing when it
        holds none."""


@runtime_checkable
class PrunableTracker(Tracker, Protocol):
    """A tracker that can delete old runs (``pipectl runs prune``, a project's
    ``[retention]``)."""

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | None = None,
        pipeline: str | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete old runs, their records and stored outputs; the ids of the runs deleted
        (with ``dry_run``: that would be, deleting nothing), oldest first: best a
        :class:`~pipectl.tracking.PrunedRuns`, a list whose ``runs`` maps each id to its
        ``pipeline_name``, ``status``, ``started_at``, ``resumed_from`` and
        ``parent_execution_id`` (``pipectl runs prune`` shows them).

        ``keep``: every pipeline's N latest runs stay; ``older_than`` (seconds): only runs
        that started longer ago go; both: only runs both rules remove; ``pipeline``: only
        that pipeline's runs go. Neither given: ValueError. A running run
        never goes; a resume chain and a run's sub-pipeline runs go together or not at all
        (see :meth:`pipectl.tracking.SQLTracker.prune`)."""


@runtime_checkable
class BrowsableTracker(Tracker, Protocol):
    """A tracker a web UI can browse (``pipectl ui``), and whose step logs ``pipectl runs
    logs`` reads: pages of runs at any depth, each pipeline's history, the runs linked to a
    run, step logs, and a cheap version of a run for live updates by polling. The SQL trackers
    (SQLite, PostgreSQL) are. Run rows are the rows of :meth:`Tracker.list_runs` (plus
    ``parent_execution_id``)."""

    def page_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        since: str | None = None,
        until: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """One page of runs, newest first: ``{"runs": [run rows], "next": cursor or None}``.
        Pass ``next`` back as ``cursor`` for the following page; paging is by position
        (``started_at``, then ``execution_id``), so a deep page costs what the first does and
        runs recorded meanwhile do not shift the pages. ``pipeline``: that pipeline's runs;
        ``status``: as :meth:`Tracker.list_runs` (``interrupted`` included); ``since`` and
        ``until``: ISO 8601 times (``since <= started_at < until``; without a zone: UTC);
        ``search``: a run id prefix, or text found in the pipeline's name or the run's error
        (case-insensitive). A cursor that cannot be read raises
        :class:`~pipectl.tracking.TrackerError`."""

    def pipeline_names(self) -> list[str]:
        """The names of the pipelines that have runs, sorted."""

    def pipeline_runs(self, pipeline: str, limit: int = 200) -> list[dict[str, Any]]:
        """A pipeline's latest runs, newest first, for its history (duration and status over
        time, success rate): ``execution_id``, ``status``, ``started_at``,
        ``execution_time_ms``, ``records_processed``."""

    def related_runs(self, run_id: str) -> dict[str, Any]:
        """The runs linked to a run (``run_id`` as :meth:`Tracker.resolve` takes it):
        ``{"resumed_from": row or None, "resumes": [rows of the runs that resumed it],
        "parent": row or None (the run whose step started it), "children": [rows of its
        sub-pipeline runs]}``, lists oldest first. Unknown run:
        :class:`~pipectl.tracking.TrackerError`."""

    def step_logs(
        self, run_id: str, step: str, attempt: int | None = None, limit: int = 10000
    ) -> list[dict[str, Any]]:
        """A step's log lines (of one ``attempt``, else of every attempt), in order, at most
        ``limit``: dicts with ``attempt``, ``seq``, ``logged_at`` (ISO 8601), ``stream``
        (``event``, ``stdout``, ``stderr``, ``logging``), ``level`` and ``message``. ``[]`` for
        a step without logs; an unknown run: :class:`~pipectl.tracking.TrackerError`."""

    def run_version(self, run_id: str) -> str | None:
        """A short token that changes whenever the run's record or one of its steps changes
        (its status, a step starting, retrying or ending): poll it, and read the run again
        when it changed. None when there is no such run (a full id)."""


# -- checks -------------------------------------------------------------------------------------

#: What every tracker has (:class:`Tracker`), and what one that resumes runs has too.
TRACKER_MEMBERS = (
    "results",
    "migrate",
    "record",
    "flush",
    "close",
    "list_runs",
    "get_run",
    "resolve",
    "pipeline_of",
    "extractor_states",
)
RESUME_MEMBERS = ("latest_finished", "step_states", "load_run", "claim_resume", "release_resume")
#: What a :class:`BrowsableTracker` has beyond :data:`TRACKER_MEMBERS`.
BROWSE_MEMBERS = (
    "page_runs",
    "pipeline_names",
    "pipeline_runs",
    "related_runs",
    "step_logs",
    "run_version",
)


def tracker_name(tracker: Any) -> str:
    """How messages name a tracker: its ``display`` (the SQL trackers': the file, or the URL
    without password), else its ``url``, else its class."""
    return str(
        getattr(tracker, "display", None) or getattr(tracker, "url", None) or type(tracker).__name__
    )


def require_resume(tracker: Tracker) -> ResumableTracker:
    """``tracker`` when it can resume runs (:class:`ResumableTracker`); else a
    :class:`TrackerError` naming what it lacks."""
    if isinstance(tracker, ResumableTracker):
        return tracker
    missing = [m for m in (*TRACKER_MEMBERS, *RESUME_MEMBERS) if not hasattr(tracker, m)]
    raise TrackerError(
        f"tracker {tracker_name(tracker)} cannot resume runs (it has no "
        f"{', '.join(missing)}): run without --resume, or record the runs with "
        "a tracker that resumes them (sqlite, postgresql)"
    )


def require_browse(tracker: Tracker) -> BrowsableTracker:
    """``tracker`` when it can be browsed and keeps step logs (:class:`BrowsableTracker`);
    else a :class:`TrackerError` naming what it lacks."""
    if isinstance(tracker, BrowsableTracker):
        return tracker
    missing = [m for m in (*TRACKER_MEMBERS, *BROWSE_MEMBERS) if not hasattr(tracker, m)]
    raise TrackerError(
        f"tracker {tracker_name(tracker)} cannot be browsed and keeps no step logs (it has "
        f"no {', '.join(missing)}): record the runs with a tracker that does (sqlite, "
        "postgresql)"
    )


def require_prune(tracker: Tracker) -> PrunableTracker:
    """``tracker`` when it can delete old runs (:class:`PrunableTracker`); else a
    :class:`TrackerError` saying it cannot."""
    if isinstance(tracker, PrunableTracker):
        return tracker
    missing = [m for m in (*TRACKER_MEMBERS, "prune") if not hasattr(tracker, m)]
    raise TrackerError(
        f"tracker {tracker_name(tracker)} cannot delete runs (it has no {', '.join(missing)})"
    )

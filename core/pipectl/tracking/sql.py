"""The SQL tracker (:class:`SQLTracker`): run tracking on a SQL database, through a
:class:`~pipectl.tracking.dialect.SQLDialect` for what the database does its own way.

How a run is tracked: :class:`~pipectl.tracking.listener.TrackingListener` hands each event to
:meth:`SQLTracker.record`, which only appends to a queue; a writer thread of the tracker takes
everything queued, builds its rows (:class:`~pipectl.tracking.rows.RowBuilder`), writes them in
one transaction and commits, so writes never stall the engine and each step's row is durable a
few milliseconds after the step ends. Step outputs go to a
:class:`~pipectl.tracking.result_store.ResultStore` (files under the tracker's folder by
default) before the row that says the step succeeded is committed, so a resumed run finds the
output of every step recorded as succeeded.

A tracker's fault never changes a run's outcome: rows the database does not take are kept and
tried again in the background; what is still not written when the tracker closes is spooled to
a file that the next command opening the tracker writes (:meth:`SQLTracker.close`,
:meth:`SQLTracker.migrate`); an output the result store cannot take is recorded as not stored.

The reads (:mod:`pipectl.tracking.reads`), resume claims (:mod:`pipectl.tracking.resume`) and
retention (:mod:`pipectl.tracking.retention`) are each in their module; the tracker's methods
run them on its connections.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipectl import faults
from pipectl.tracking import reads
from pipectl.tracking.contract import (
    ExtractorStateSaved,
    OutputStore,
    RunEvent,
    RunFinished,
    RunStarted,
    StepFinished,
    StepRetrying,
    StepRolledBack,
    StepStarted,
    TrackerEvent,
)
from pipectl.tracking.dialect import SQLDialect, dialect_sql, retrying
from pipectl.tracking.errors import TrackerError
from pipectl.tracking.result_store import ResultStore, write_durably
from pipectl.tracking.resume import claim, release_claim
from pipectl.tracking.retention import PrunedRuns, cutoff_of, delete_runs, remove_outputs
from pipectl.tracking.rows import Row, RowBuilder, Unwritten, write_rows
from pipectl.tracking.schema import STEP_COLUMNS, migrate_schema
from pipectl.tracking.serialize import iso_time, to_json

__all__ = [
    "GIVE_UP_SECONDS",
    "RETRY_FIRST_SECONDS",
    "RETRY_MAX_SECONDS",
    "STOP_SECONDS",
    "SQLTracker",
]

GIVE_UP_SECONDS = 5.0
"""How long the end of a run waits for a tracker whose database fails (or does not answer)
before its rows are left to the spool (:meth:`SQLTracker.close`)."""

STOP_SECONDS = 2.0
"""How long :meth:`SQLTracker.close` waits for the writer's attempt in progress to end."""

RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 2.0
"""The writer's backoff between attempts while the database fails: doubling, from/to."""

_STATUS = STEP_COLUMNS.index("status")
_T = TypeVar("_T")

#: A write queued for the writer thread: ``("run", row)``, ``("step", event)``,
#: ``("state", row)``, ``("flush", threading.Event)`` or ``("stop", None)``.
_Op = tuple[str, Any]


class SQLTracker:
    """A tracker on a SQL database (:class:`~pipectl.tracking.Tracker`,
    :class:`~pipectl.tracking.ResumableTracker`, :class:`~pipectl.tracking.PrunableTracker`
    and :class:`~pipectl.tracking.BrowsableTracker`, with step logs):
    the schema, the writer thread, the reads, resume claims and retention, through a
    :class:`SQLDialect` for what the database does its own way.

    ``url`` is the URL the tracker was opened with (default: the dialect's ``display``),
    ``results`` the folder of its :class:`ResultStore` (None: no outputs kept for resume).
    """

    def __init__(
        self,
        dialect: SQLDialect,
        *,
        url: str | None = None,
        results: str | os.PathLike[str] | None = None,
    ) -> None:
        self.dialect = dialect
        self.url = url if url is not None else dialect.display
        self.results: OutputStore | None = ResultStore(results) if results is not None else None
        #: where rows the database would not take are kept until a later command writes them
        from pipectl.project import home

        self.spool = home() / "spool"
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()  # rows are built by one thread at a time
        self._pending = Unwritten()
        self._stopping = threading.Event()
        self._failure: BaseException | None = None  # of the writer's last attempt
        self._busy_since: float | None = None  # an attempt in progress
        self._problems: dict[str, str] = {}  # what close() reports, one line each
        self._rows = RowBuilder(self._problems)
        self._read_conn: Any = None
        self._record: dict[type, Callable[[Any], None]] = {
            RunStarted: self._record_run,
            RunFinished: self._record_run,
            StepStarted: self._record_step,
            StepRetrying: self._record_step,
            StepFinished: self._record_step,
            StepRolledBack: self._record_step,
            ExtractorStateSaved: self._record_state,
        }

    # the database, through the dialect

    def _connect(self) -> Any:
        return self.dialect.connect(self._stopping)

    def _sql(self, text: str) -> str:
        return dialect_sql(self.dialect, text)

    # schema

    def migrate(self) -> int:
        """Create or upgrade the tables; returns the schema version. Safe to call from several
        processes at once (one migrates, the others see the result). Then writes the rows an
        earlier command spooled for this tracker (see :meth:`close`). A database that cannot
        be opened or migrated raises :class:`TrackerError`."""
        try:
            conn = self._connect()
            try:
                version = self._retrying(lambda: migrate_schema(conn, self.dialect, self.display))
                self._replay(conn)
                return version
            finally:
                conn.close()
        except Exception as exc:
            self.dialect.raise_error(exc, "migrate")
            raise

    def _retrying(self, action: Callable[[], _T], attempts: int = 50) -> _T:
        return retrying(self.dialect, action, attempts)

    @property
    def display(self) -> str:
        """Where the tracker writes, for messages (the dialect's: never a password)."""
        return self.dialect.display

    def _spool_key(self) -> str:
        """The tracker's share of the spool's file names: a hash of where it writes."""
        return hashlib.sha256(self.dialect.identity.encode()).hexdigest()[:16]

    def _reason(self, exc: BaseException) -> str:
        """One line saying why a database call failed (never the URL's password)."""
        return self.dialect.reason(exc)

    # writing: called from runs, never blocks on the database

    def record(self, event: TrackerEvent) -> None:
        """Record one event of a run (:class:`Tracker`): a run's row is built now (its params
        serialised, bounded), everything else in the writer thread, which writes it."""
        try:
            record = self._record[type(event)]
        except KeyError:
            raise TypeError(
                f"a tracker records the events of pipectl.tracking, not {type(event).__name__}"
            ) from None
        record(event)

    def _record_run(self, event: RunEvent) -> None:
        self._enqueue(("run", self._rows.run_row(event)))

    def _record_step(self, event: Any) -> None:
        self._enqueue(("step", event))

    def _record_state(self, event: ExtractorStateSaved) -> None:
        self._enqueue(
            (
                "state",
                (
                    event.pipeline,
                    event.step_name,
                    to_json(event.state),
                    event.run_id,
                    iso_time(event.saved_at),
                ),
            )
        )

    def _enqueue(self, op: _Op) -> None:
        """Queue a write for the writer thread (started on first use)."""
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop,
                        name="pipectl-tracker",
                        daemon=True,
                        args=(self._queue, self._stopping, self._pending),
                    )
                    self._writer.start()
        self._queue.put(op)

    def flush(self, timeout: float | None = None, grace: float | None = None) -> bool:
        """Wait until everything queued so far is committed; True when it is. While the
        database fails (an attempt failed, or has not answered for :data:`GIVE_UP_SECONDS`),
        wait ``grace`` seconds at most (default :data:`GIVE_UP_SECONDS`) and return False: the
        rows stay queued, retried in the background, and :meth:`close` spools what is left."""
        writer = self._writer
        if writer is None:
            return True
        grace = GIVE_UP_SECONDS if grace is None else grace
        done = threading.Event()
        self._queue.put(("flush", done))
        start = time.monotonic()
        while not done.wait(0.05):
            elapsed = time.monotonic() - start
            if (
                not writer.is_alive()
                or (timeout is not None and elapsed >= timeout)
                or (elapsed >= grace and self._stalled())
            ):
                return False
        return True

    def _stalled(self) -> bool:
        busy = self._busy_since
        return self._failure is not None or (
            busy is not None and time.monotonic() - busy >= GIVE_UP_SECONDS
        )

    def close(self, report: bool = True) -> list[str]:
        """Commit what is queued (waiting a few seconds at most if the database fails), stop
        the writer, and spool the rows it could not write to a file under :attr:`spool`, from
        where the next command that opens this tracker writes them (:meth:`migrate`).

        Returns what went wrong, one line each (rows spooled, outputs not stored); with
        ``report`` each line is logged as a warning too."""
        writer = self._writer
        if writer is not None:
            self.flush(grace=0.0 if self._stalled() else None)  # run() waited already
            q, stopping, pending = self._queue, self._stopping, self._pending
            stopping.set()
            q.put(("stop", None))
            writer.join(timeout=STOP_SECONDS)  # it stops after the attempt in progress
            with self._build_lock:  # what it never took (still in an attempt), then spool
                ops = _drain(q, [])
                self._build([op for op in ops if op[0] not in ("flush", "stop")], pending)
                if pending:
                    self._spool_rows(pending)
            for op in ops:
                if op[0] == "flush":
                    op[1].set()
            self._queue, self._stopping, self._pending = (
                queue.SimpleQueue(),
                threading.Event(),
                Unwritten(),
            )
            self._failure = None
            self._writer = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        problems = list(self._problems.values())
        self._problems.clear()
        self._rows.unstored.clear()
        if report and problems:
            from pipectl.log import get_logger

            for line in problems:
                get_logger().warning("tracker_problem", problem=line)
        return problems

    def _write_loop(
        self, q: queue.SimpleQueue[_Op], stopping: threading.Event, pending: Unwritten
    ) -> None:
        """Takes what is queued, builds its rows into ``pending`` and writes them in one
        transaction. When that fails the rows stay in ``pending`` and are tried again with
        backoff (new rows join them); a flush tries at once; a stop ends it."""
        conn: Any = None
        waiting: list[threading.Event] = []  # flushes waiting for a commit
        delay, retry_at = 0.0, None
        try:
            while True:
                timeout = None if retry_at is None else max(retry_at - time.monotonic(), 0.0)
                try:
                    first = [q.get(timeout=timeout)]
                except queue.Empty:
                    first = []
                with self._build_lock:
                    ops = _drain(q, first)  # everything queued meanwhile: one transaction
                    self._build([op for op in ops if op[0] not in ("flush", "stop")], pending)
                    rows = pending.rows() if pending else None
                flushes = [op[1] for op in ops if op[0] == "flush"]
                waiting += flushes
                stop = stopping.is_set() or any(op[0] == "stop" for op in ops)
                if flushes:
                    retry_at = None  # someone waits: try now
                due = retry_at is None or time.monotonic() >= retry_at
                if rows and due and not (stop and self._failure is not None):
                    self._busy_since = time.monotonic()
                    try:
                        if conn is None:
                            conn = self._retrying(self._connect)
                        self._retrying(lambda: self._write(conn, *rows))  # noqa: B023 - now
                    except Exception as exc:  # noqa: BLE001 - kept, retried, reported by close()
                        self._failure = exc
                        delay = min(max(delay * 2, RETRY_FIRST_SECONDS), RETRY_MAX_SECONDS)
                        retry_at = time.monotonic() + delay
                        if conn is not None:
                            try:
                                conn.close()  # a new connection for the next attempt
                            except Exception:  # noqa: BLE001
                                pass
                            conn = None
                    else:
                        with self._build_lock:
                            pending.clear()
                        self._failure = None
                        delay, retry_at = 0.0, None
                        if any(row[_STATUS] == "success" for row in rows[1]):
                            faults.reach("tracker.after-row")  # a step's success is recorded
                    finally:
                        self._busy_since = None
                if not pending or stop:
                    for event in waiting:
                        event.set()
                    waiting = []
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _build(self, work: list[_Op], pending: Unwritten) -> None:
        """The rows of queued writes into ``pending`` (under ``_build_lock``)."""
        if not work:
            return
        try:
            pending.add(*self._rows.rows(work, self.results))
        except Exception as exc:  # noqa: BLE001 - a bug: said, not hidden
            self._problems["build"] = (
                f"tracker {self.display}: {len(work)} writes could not "
                f"be recorded: {type(exc).__name__}: {exc}"
            )

    def _spool_rows(self, pending: Unwritten) -> None:
        """Write ``pending`` to a spool file (merged with an earlier one of the same run) and
        say so in the problems."""
        runs, steps, states, logs = pending.rows()
        ids = list(
            dict.fromkeys([r[0] for r in runs] + [r[0] for r in steps] + [r[3] for r in states])
        )
        counts = " and ".join(
            f"{n} {what}{'s' if n != 1 else ''}"
            for n, what in (
                (len(steps), "step row"),
                (len(runs), "run row"),
                (len(states), "extractor state"),
                (len(logs), "step log line"),
            )
            if n
        )
        short = ", ".join(i[:12] for i in ids[:3]) + (", ..." if len(ids) > 3 else "")
        what = f"{counts} of run{'s' if len(ids) > 1 else ''} {short}"
        reason = (
            self._reason(self._failure)
            if self._failure is not None
            else f"no answer in {GIVE_UP_SECONDS:.0f} s"
        )
        path = self.spool / f"{self._spool_key()}.{ids[0] if ids else 'rows'}.jsonl"
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            if path.exists():  # this run spooled before: one file, the later rows win
                pending = Unwritten.load(path).merge(pending)
            write_durably(path, pending.dump())
        except (OSError, ValueError) as exc:
            self._problems["spool"] = (
                f"tracker {self.display}: writes failed ({reason}); {what} are LOST: they "
                f"could not be spooled to {path} either ({type(exc).__name__}: {exc})"
            )
            return
        self._problems["spool"] = (
            f"tracker {self.display}: writes failed ({reason}); {what} spooled to {path}; "
            "they are written to the tracker by the next pipectl command that opens it"
        )

    def _replay(self, conn: Any) -> None:
        """Write the rows spooled for this tracker, oldest file first, deleting each file once
        its rows are committed (the writes are upserts: a file written twice does no harm)."""

        def age(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        try:
            files = sorted(self.spool.glob(f"{self._spool_key()}.*.jsonl"), key=age)
        except OSError:
            return
        for path in files:
            try:
                runs, steps, states, logs = Unwritten.load(path).rows()
                # called at once, in this iteration: the loop variables are the ones meant
                self._retrying(
                    lambda: self._write(conn, runs, steps, states, logs, replay=True)  # noqa: B023
                )
            except FileNotFoundError:
                continue  # another command wrote it meanwhile
            except Exception as exc:  # noqa: BLE001 - the file stays for the next command
                try:
                    conn.rollback()
                except Exception:  # noqa: BLE001
                    pass
                self._problems["replay"] = (
                    f"tracker {self.display}: rows spooled in {path} are not written to it "
                    f"yet ({self._reason(exc)}); the file is kept"
                )
                continue
            path.unlink(missing_ok=True)

    def _write(
        self,
        conn: Any,
        runs: list[Row],
        steps: list[Row],
        states: list[Row],
        logs: list[Row] | None = None,
        replay: bool = False,
    ) -> None:
        """Write one batch of rows in one transaction and commit it (retried as a whole):
        :func:`~pipectl.tracking.rows.write_rows`."""
        write_rows(conn, self.dialect, runs, steps, states, replay, logs)

    # reading

    def _reader(self) -> Any:
        if self._read_conn is None:
            self._read_conn = self._connect()
        return self._read_conn

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of a query, as dicts; a database error is the dialect's
        :class:`TrackerError`."""
        try:
            conn = self._reader()
            cur = conn.cursor()
            try:
                cur.execute(self._sql(sql), params)
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, row)) for row in cur.fetchall()]
            finally:
                try:
                    conn.rollback()  # end the read transaction: see later commits next time
                except Exception:  # noqa: BLE001
                    pass
        except Exception as exc:
            self.dialect.raise_error(exc, "read")
            raise
        return rows

    def list_runs(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first (``status`` ``interrupted`` finds runs whose process
        died)."""
        return reads.list_runs(self._query, pipeline, status, limit)

    def resolve(self, run_id: str, pipeline: str | None = None, *, finished: bool = False) -> str:
        """A run id from ``run_id`` (``latest``, a full id or a unique prefix).

        ``finished`` (what a resume asks): ``latest`` is the latest run that ended
        (:meth:`latest_finished`), and a run still running raises :class:`RunInProgress`."""
        return reads.resolve(self._query, self.display, run_id, pipeline, finished=finished)

    def latest_finished(self, pipeline: str | None = None) -> dict[str, Any] | None:
        """The latest run (of ``pipeline``) that is not running: it ended, or its process died
        (``interrupted``, as :meth:`list_runs` shows it); None if there is none. A row with
        ``execution_id``, ``status``, ``started_at``, ``host`` and ``pid``."""
        return reads.latest_finished(self._query, pipeline)

    def pipeline_of(self, run_id: str) -> str | None:
        """The pipeline a run (a full id) belongs to, None if there is no such run."""
        return reads.pipeline_of(self._query, run_id)

    def get_run(self, run_id: str, pipeline: str | None = None) -> dict[str, Any]:
        """The whole record of one run: the run and every step (the format of
        ``pipectl runs show --json``)."""
        return reads.get_run(self._query, self.display, run_id, pipeline)

    def step_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Each step of a run: ``status``, ``fingerprint``, ``output_stored``, ``output_none``,
        and ``committed`` (the outputs a data step committed)."""
        return reads.step_states(self._query, run_id)

    def load_run(self, run_id: str) -> str:
        """The run that ``run_id``'s loads belong to: the first run of its chain of resumes."""
        return reads.load_run(self._query, run_id)

    def extractor_states(self, pipeline: str) -> dict[str, Any]:
        """The latest incremental state of each data step of ``pipeline``."""
        return reads.extractor_states(self._query, pipeline)

    # what a web UI reads (BrowsableTracker)

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
        """One page of runs, newest first, and the cursor of the next page
        (:meth:`~pipectl.tracking.BrowsableTracker.page_runs`)."""
        return reads.page_runs(
            self._query,
            pipeline=pipeline,
            status=status,
            since=since,
            until=until,
            search=search,
            cursor=cursor,
            limit=limit,
        )

    def pipeline_names(self) -> list[str]:
        """The pipelines that have runs, sorted."""
        return reads.pipeline_names(self._query)

    def pipeline_runs(self, pipeline: str, limit: int = 200) -> list[dict[str, Any]]:
        """A pipeline's latest runs, newest first (its history)."""
        return reads.pipeline_runs(self._query, pipeline, limit)

    def related_runs(self, run_id: str) -> dict[str, Any]:
        """The runs linked to a run: ``resumed_from``, ``resumes``, ``parent``, ``children``."""
        return reads.related_runs(self._query, self.display, run_id)

    def step_logs(
        self, run_id: str, step: str, attempt: int | None = None, limit: int = 10000
    ) -> list[dict[str, Any]]:
        """A step's log lines (of one attempt, else all), in order."""
        return reads.step_logs(self._query, self.display, run_id, step, attempt, limit)

    def run_version(self, run_id: str) -> str | None:
        """A token that changes whenever the run or one of its steps changes."""
        return reads.run_version(self._query, run_id)

    # one resumer per run

    def claim_resume(self, run_id: str, by_run_id: str, *, take_over_finished: bool = True) -> None:
        """Claim the resume of run ``run_id`` for the run ``by_run_id`` (about to start, in
        this process), atomically in the database, so that two resumes of one run, in any
        processes on any hosts, never both run; raises :class:`ResumeClaimed` when another run
        holds the claim.

        The claim is a row of ``resume_claims``. One held by another run is refused while that
        run, or a resume of it (and so on: a resume that was killed can be resumed), is running
        (its process alive, or on another host), or once one of them succeeded. A claim whose
        run ended otherwise (failed, cancelled, its process gone) is taken over, unless
        ``take_over_finished`` is false and that run is recorded (it is then newer than
        ``run_id``): ``ResumeClaimed`` with ``state`` ``finished``. The claim stays after the
        resuming run ends: it records who resumed the run."""
        host, pid = socket.gethostname(), os.getpid()
        conn = self._connect()
        try:
            for _ in range(20):
                refusal = self._retrying(
                    lambda: claim(
                        conn, self.dialect, run_id, by_run_id, host, pid, take_over_finished
                    )
                )
                if refusal is not None:
                    raise refusal
                # read back after the commit (a transaction replayed on a new connection may
                # have found another claim): ours, or look again at whose it is
                rows = self._query(
                    "SELECT claimed_by FROM resume_claims WHERE execution_id = ?", (run_id,)
                )
                if rows and rows[0]["claimed_by"] == by_run_id:
                    return
        finally:
            conn.close()
        raise TrackerError(
            f"tracker {self.display}: could not claim the resume of run "
            f"{run_id}: other resumes kept taking it; try again"
        )

    def release_resume(self, run_id: str, by_run_id: str) -> None:
        """Give up the claim of ``by_run_id`` on the resume of ``run_id`` (a resume that did
        not start); nothing if it holds none."""
        conn = self._connect()
        try:
            self._retrying(lambda: release_claim(conn, self.dialect, run_id, by_run_id))
        finally:
            conn.close()

    # retention

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | None = None,
        pipeline: str | None = None,
        dry_run: bool = False,
    ) -> PrunedRuns:
        """Delete old runs: their rows and their stored outputs. Returns the ids of the runs
        deleted (with ``dry_run``: of those that would be, and nothing is deleted), oldest
        first, as a :class:`PrunedRuns` (a list whose ``runs`` has each one's row).

        Which runs go:

        - ``keep=N`` alone: every run of a pipeline but its N latest (by ``started_at``);
        - ``older_than=S`` alone (seconds; :func:`parse_duration` reads ``"30d"``): the runs
          that started more than S seconds ago;
        - both: only the runs that both rules remove, beyond the N latest of their pipeline
          *and* older than S. So neither limit is crossed: the N latest runs of each pipeline
          stay whatever their age, and no run younger than S goes;
        - ``pipeline``: only runs of that pipeline go (every pipeline's runs are counted for
          ``keep`` as always; the other pipelines' runs stay).

        At least one of ``keep`` (0 or more) and ``older_than`` (0 or more) is given, else
        ValueError.

        Runs go in groups, never some without the others:

        - *sub-pipeline runs* (``parent_execution_id``) go with the run that started them, and
          only with it; they are not counted as runs of their own pipeline;
        - *a resume chain*: the runs linked by ``resumed_from`` (and by the claims of
          :meth:`claim_resume`) stay together: a resume names the runs it resumed, takes the
          loads of the first one (:meth:`load_run`), and holds a claim on each. The chain
          stays while any of its runs would stay, which its latest run decides (a chain whose
          latest run is among the N latest, or younger than S, stays whole).

        Never deleted, with its whole group: a run still running (recorded as running and its
        process alive; on another host, where its process cannot be checked, a run recorded
        as running counts as running, as in :meth:`list_runs`), and a run whose resume has
        been claimed by a run not recorded yet (about to start) whose process is alive. A run
        whose process died (``interrupted``) can go.

        Deleting removes the runs' rows in one transaction: ``pipeline_executions``,
        ``step_executions``, ``step_logs`` and ``resume_claims`` (the claims on them and by them); then,
        after the commit, each run's folder in the result store (``ResultStore.delete_run``;
        one gone already is fine; one that cannot be removed is reported by :meth:`close`,
        the rows are gone anyway). ``extractor_state`` stays: it is the pipeline's
        incremental cursor, which its next run starts from, whichever run wrote it. The runs
        are chosen inside the deleting transaction (on SQLite nothing is written meanwhile); a
        resume of a deleted run starting at that very instant finds nothing to take from it
        and runs its steps again.

        Raises :class:`TrackerError` when the database cannot be read or written (a
        read-only SQLite file: only ``dry_run`` works on it).
        """
        cutoff = cutoff_of(keep, older_than)
        try:
            conn = self._connect()
            try:
                if not dry_run and self.dialect.read_only:
                    raise TrackerError(
                        f"tracker {self.display} is read-only: no run can be "
                        "deleted from it (make it writable)"
                    )
                chosen = self._retrying(
                    lambda: delete_runs(conn, self.dialect, keep, cutoff, pipeline, dry_run)
                )
            finally:
                conn.close()
        except TrackerError:
            raise
        except Exception as exc:  # a database error: said as the tracker's, no traceback
            raise TrackerError(
                f"tracker {self.display}: cannot prune runs: {self._reason(exc)}"
            ) from exc
        pruned = PrunedRuns(r["execution_id"] for r in chosen)
        pruned.runs = {r["execution_id"]: r for r in chosen}
        if not dry_run:
            problem = remove_outputs(self.results, pruned)
            if problem is not None:
                self._problems["prune"] = problem
        return pruned


def _drain(q: queue.SimpleQueue[_Op], ops: list[_Op]) -> list[_Op]:
    """``ops`` and everything in ``q`` now."""
    while True:
        try:
            ops.append(q.get_nowait())
        except queue.Empty:
            return ops

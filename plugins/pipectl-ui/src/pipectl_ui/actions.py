"""Actions (``pipectl ui --allow-actions``): re-run a pipeline, resume a failed run, cancel a
run the UI started.

The UI never writes to the tracker: an action starts ``pipectl run`` in a child process
(``sys.executable -m pipectl.cli run ...``, in the UI's working directory, with ``--tracker``
the UI's tracker), and that process records its run as any ``pipectl run`` does. Its output
goes to a log file under the project's ``.pipectl/ui/`` (else a temporary folder), never to the
UI's terminal. :class:`Actions` keeps the processes it started; a cancel sends ``SIGINT`` (what
Ctrl-C sends: ``pipectl run`` cancels the run gracefully and records it ``cancelled``) to one
of them only, and only while it runs.

- re-run: ``pipectl run FILE PIPELINE -p KEY=VALUE ...``, the run's pipeline file and
  pipeline, with the params it recorded. A run with secret params is not re-run: the tracker
  recorded them as ``***``, so they cannot be given again (running with the file's defaults
  instead would be a different run); the refusal says how to run it from a terminal. A param
  too big to be recorded whole is refused the same way.
- resume: ``pipectl run FILE PIPELINE --resume RUN_ID`` (``pipectl run`` takes the resumed
  run's params itself), for a failed, cancelled or interrupted run, refused for a run with
  secret params as above.
- cancel: ``SIGINT`` to the process of a running run whose recorded ``host`` is this machine
  and whose ``pid`` is a process this UI started and that still runs.

What is checked before an action (CSRF, origin, loopback) is :mod:`pipectl_ui.security`'s and
the app's; here is only what the action does.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = ["RESUMABLE", "Actions", "Plan", "Refused", "Started", "default_log_dir"]

#: the statuses of a run that can be resumed
RESUMABLE = frozenset({"failed", "cancelled", "interrupted"})
#: environment variables a started run does not get (the UI's own secrets)
_KEPT_FROM_CHILD = ("PIPECTL_UI_TOKEN",)
_LOG_TAIL_BYTES = 4096


class Refused(Exception):
    """An action that is not made, and why (shown to the user with ``status``)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Plan:
    """A ``pipectl run`` to start: its arguments (after ``pipectl``), what it does."""

    kind: str  # "rerun" or "resume"
    run_id: str  # the run it re-runs or resumes
    pipeline: str
    file: str
    args: list[str]


@dataclass
class Started:
    """A ``pipectl run`` process the UI started."""

    kind: str
    origin: str
    pipeline: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.time)
    run_id: str | None = None
    #: what is never shown of its output (the tracker URL's password)
    hidden: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, limit: int = _LOG_TAIL_BYTES) -> str:
        """The end of what the process printed (its log file)."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(size - limit, 0))
                data = handle.read()
        except OSError:
            return ""
        text = _masked(data.decode("utf-8", errors="replace"), *self.hidden)
        return text if size <= limit else "…" + text


def default_log_dir(workdir: Path) -> Path:
    """Where started runs' output goes: ``ui/`` in the project's home (``.pipectl/``), else a
    temporary folder of the UI's own."""
    try:
        from pipectl.project import find_project

        home = Path(find_project(workdir).home)
        folder = home / "ui"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.access(folder, os.W_OK):
            return folder
    except Exception:  # no project, an unwritable home: a temporary folder
        pass
    return Path(tempfile.mkdtemp(prefix="pipectl-ui-"))


def _url_password(url: str) -> str | None:
    """The password in a tracker URL (``postgresql://user:PASSWORD@host/db``), if any."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _masked(text: str, *words: str | None) -> str:
    for word in words:
        if word:
            text = text.replace(word, "***")
    return text


def _is_secret(value: Any) -> bool:
    return value == "***"


def _is_cut(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("truncated") is True and "preview" in value


def _param_text(value: Any, declared: Any) -> str:
    """A recorded param value as ``-p`` reads it back (typed by its declaration): text for a
    ``str`` or ``path`` param, else JSON (a number, ``true``, a list, a mapping)."""
    kind = declared.get("type") if isinstance(declared, Mapping) else None
    if isinstance(value, str) and kind in (None, "str", "path"):
        return value
    return json.dumps(value, ensure_ascii=False)


class Actions:
    """What ``--allow-actions`` adds: the processes the UI started and the rules of what it
    starts and cancels.

    :param tracker_url: the UI's tracker, given to every run as ``--tracker``.
    :param workdir: the working directory of the runs (the UI's, the project's).
    :param log_dir: where each run's output goes (default :func:`default_log_dir`).
    :param python: the interpreter (default ``sys.executable``).
    """

    def __init__(
        self,
        tracker_url: str,
        workdir: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        python: str | None = None,
    ) -> None:
        self.tracker_url = tracker_url
        self.workdir = Path(workdir or os.getcwd()).absolute()
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.python = python or sys.executable
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._started: dict[int, Started] = {}

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = default_log_dir(self.workdir)
        self._log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._log_dir

    # -- what can be done --------------------------------------------------------------------

    def _file(self, record: Mapping[str, Any]) -> tuple[str, Path]:
        """The run's pipeline file as given to ``pipectl run`` (as recorded when it is found
        from the working directory) and where it is; :class:`Refused` when it is not."""
        recorded = record.get("pipeline_file")
        run_id = record.get("run_id")
        if not recorded:
            raise Refused(
                f"run {run_id} was not started from a pipeline file (a pipeline built in "
                "Python): the UI runs pipeline files only; run it again the way it was started"
            )
        path = Path(str(recorded))
        found = path if path.is_absolute() else self.workdir / path
        if not found.is_file():
            raise Refused(
                f"the pipeline file of run {run_id}, {recorded}, is not found from the UI's "
                f"working directory {self.workdir}: start pipectl ui in the folder the run was "
                "started from, or run it again from a terminal"
            )
        return str(recorded), found

    @staticmethod
    def _guarded_params(record: Mapping[str, Any], declared: Mapping[str, Any]) -> list[str]:
        """The params of the run that cannot be given again: secret ones (recorded as
        ``***``, or declared ``secret``) and those too big to have been recorded whole."""
        params = record.get("params") or {}
        secret = {
            name
            for name, spec in declared.items()
            if isinstance(spec, Mapping) and spec.get("secret")
        }
        return sorted(
            name
            for name, value in params.items()
            if _is_secret(value) or _is_cut(value) or name in secret
        )

    def _refuse_guarded(self, record: Mapping[str, Any], names: list[str], kind: str) -> None:
        params = record.get("params") or {}
        secret = [n for n in names if not _is_cut(params.get(n))]
        cut = [n for n in names if _is_cut(params.get(n))]
        file = record.get("pipeline_file") or "FILE"
        pipeline = record.get("pipeline") or "PIPELINE"
        if kind == "resume":
            command = f"pipectl run {file} {pipeline} --resume {record.get('run_id')}"
        else:
            command = f"pipectl run {file} {pipeline}"
        command += "".join(f" -p {n}=…" for n in names)
        why = []
        if secret:
            why.append(
                f"it has secret params ({', '.join(secret)}): the tracker recorded their "
                "values as ***, so the UI cannot give them again, and running with the "
                "file's defaults instead would not be the same run"
            )
        if cut:
            why.append(f"params too big to be recorded whole ({', '.join(cut)})")
        verb = "resumed" if kind == "resume" else "re-run"
        raise Refused(
            f"run {record.get('run_id')} cannot be {verb} from the UI: {'; and '.join(why)}. "
            f"Run it from a terminal, giving them: {command}"
        )

    def offer(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What a run's page offers (cheap checks, from the record and the file's presence):
        ``rerun``, ``resume`` and ``cancel``, each ``None`` (not offered) or ``{"refusal":
        text or None}``; and ``started`` (this UI's process of the run, or None)."""
        status = record.get("status")

        def check(kind: str) -> dict[str, Any]:
            try:
                self._file(record)
                guarded = self._guarded_params(record, {})
                if guarded:
                    self._refuse_guarded(record, guarded, kind)
            except Refused as exc:
                return {"refusal": str(exc)}
            return {"refusal": None}

        started = self.started_for(record)
        cancel = None
        if status == "running":
            cancel = {"refusal": None if started else self._not_ours(record)}
        return {
            "rerun": check("rerun"),
            "resume": check("resume") if status in RESUMABLE else None,
            "cancel": cancel,
            "started": None
            if started is None
            else {"pid": started.pid, "log": str(started.log), "kind": started.kind},
        }

    def plan_rerun(self, record: Mapping[str, Any]) -> Plan:
        """The ``pipectl run`` that runs the run's pipeline again with its params;
        :class:`Refused` (a run with secret params, no pipeline file, ...)."""
        recorded, found = self._file(record)
        declared = self._declared(found)
        guarded = self._guarded_params(record, declared)
        if guarded:
            self._refuse_guarded(record, guarded, "rerun")
        pipeline = str(record.get("pipeline") or "")
        args = ["run", recorded, pipeline]
        for name, value in (record.get("params") or {}).items():
            if value is None:  # not given and no default: the file's own handling again
                continue
            args += ["-p", f"{name}={_param_text(value, declared.get(name))}"]
        args += ["--tracker", self.tracker_url, "--no-progress"]
        return Plan("rerun", str(record["run_id"]), pipeline, recorded, args)

    def plan_resume(self, record: Mapping[str, Any]) -> Plan:
        """The ``pipectl run --resume`` of a failed, cancelled or interrupted run;
        :class:`Refused` otherwise."""
        status = record.get("status")
        if status not in RESUMABLE:
            raise Refused(
                f"run {record.get('run_id')} is {status}: only a failed, cancelled or "
                "interrupted run can be resumed"
            )
        recorded, found = self._file(record)
        guarded = self._guarded_params(record, self._declared(found))
        if guarded:
            self._refuse_guarded(record, guarded, "resume")
        pipeline = str(record.get("pipeline") or "")
        args = ["run", recorded, pipeline, "--resume", str(record["run_id"])]
        args += ["--tracker", self.tracker_url, "--no-progress"]
        return Plan("resume", str(record["run_id"]), pipeline, recorded, args)

    @staticmethod
    def _declared(file: Path) -> dict[str, Any]:
        """The params the file declares (name -> declaration), as ``pipectl run`` reads
        them before loading (empty when it cannot be read: the run says why)."""
        try:
            from pipectl.orchestration import outline_of

            declared = outline_of(file).get("params") or {}
        except Exception:  # loading the file in the run reports its problems
            return {}
        return dict(declared) if isinstance(declared, Mapping) else {}

    # -- starting and cancelling --------------------------------------------------------------

    def start(self, plan: Plan) -> Started:
        """Start ``pipectl run`` for ``plan``: its output to a new log file."""
        argv = [self.python, "-m", "pipectl.cli", *plan.args]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        log = self.log_dir / f"{stamp}-{plan.kind}-{plan.run_id[:12]}-{secrets.token_hex(3)}.log"
        env = {k: v for k, v in os.environ.items() if k not in _KEPT_FROM_CHILD}
        # a SIGINT ignored by the UI (started in the background by a shell without job
        # control) would be ignored by the run too, and a cancel could not reach it
        reset = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        password = _url_password(self.tracker_url)
        hidden = (password, quote(password, safe="")) if password else ()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                fd = -1
                shown = _masked(shlex.join(argv), *hidden)
                out.write(f"$ {shown}\n".encode())
                out.flush()
                process = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the UI's terminal's Ctrl-C is not the run's
                    preexec_fn=_default_sigint if reset else None,
                )
        finally:
            if fd >= 0:
                os.close(fd)
        started = Started(plan.kind, plan.run_id, plan.pipeline, argv, log, process, hidden=hidden)
        with self._lock:
            self._started[started.pid] = started
        # reaped as soon as it ends: a zombie would still look alive to the tracker
        threading.Thread(
            target=process.wait, name=f"pipectl-ui-wait-{started.pid}", daemon=True
        ).start()
        return started

    def find_run(self, tracker: Any, started: Started) -> str | None:
        """The id of the run ``started`` recorded (its pipeline's, else the first it
        recorded), once the tracker has it; None before."""
        if started.run_id is not None:
            return started.run_id
        rows = tracker.list_runs(limit=50)
        mine = [
            r
            for r in rows
            if r.get("pid") == started.pid
            and r.get("host") == self.host
            and (r.get("resumed_from") == started.origin or started.kind != "resume")
        ]
        if not mine:
            return None
        ours = [r for r in mine if r.get("pipeline_name") == started.pipeline]
        chosen = (ours or mine)[-1]  # the oldest of them: newest first
        if ours:
            started.run_id = str(chosen["execution_id"])
        return str(chosen["execution_id"])

    def started_for(self, record: Mapping[str, Any]) -> Started | None:
        """The process this UI started that runs ``record``'s run (still running), or None."""
        pid = record.get("pid")
        if record.get("host") != self.host or not isinstance(pid, int):
            return None
        with self._lock:
            started = self._started.get(pid)
        if started is None or not started.running():
            return None
        return started

    def _not_ours(self, record: Mapping[str, Any]) -> str:
        return (
            f"run {record.get('run_id')} was not started by this pipectl ui (it runs as "
            f"process {record.get('pid')} on {record.get('host')}): cancel it where it runs "
            "(Ctrl-C in its terminal, or kill -INT PID)"
        )

    def cancel(self, record: Mapping[str, Any]) -> Started:
        """Send ``SIGINT`` to the process of ``record``'s run, when it is one this UI started
        and it still runs; :class:`Refused` otherwise."""
        if record.get("status") != "running":
            raise Refused(
                f"run {record.get('run_id')} is {record.get('status')}: there is nothing to cancel"
            )
        started = self.started_for(record)
        if started is None:
            raise Refused(self._not_ours(record))
        started.process.send_signal(signal.SIGINT)  # nothing sent once it has been reaped
        return started

    def running(self) -> list[Started]:
        """The processes this UI started that still run."""
        with self._lock:
            return [s for s in self._started.values() if s.running()]


def _default_sigint() -> None:  # in the child, before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)

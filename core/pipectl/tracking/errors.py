"""The errors of run tracking: :class:`TrackerError` and the refusals of a resume."""

from __future__ import annotations

from pipectl.errors import PipectlError

__all__ = ["ResumeClaimed", "ResumeRefused", "RunInProgress", "TrackerError"]


class TrackerError(PipectlError):
    """The tracker cannot be opened, or a run asked of it does not exist."""


class ResumeRefused(TrackerError):
    """Steps changed since the run being resumed; ``changed`` names them."""

    def __init__(self, run_id: str, changed: list[str]) -> None:
        self.run_id, self.changed = run_id, changed
        names = ", ".join(repr(c) for c in changed)
        super().__init__(
            f"cannot resume run {run_id}: step(s) {names} changed since it ran "
            "(their code, options, dependencies, inputs or condition); their "
            "outputs from that run may not be what they produce now. Run them "
            "again by leaving out --resume, or take the old outputs anyway with "
            "--force"
        )


class RunInProgress(TrackerError):
    """The run to resume is still running (its process is alive, or runs on another host), or
    ``latest`` found no run of the pipeline that ended; ``run_id`` names the running one."""

    def __init__(self, run_id: str, host: str | None, pid: int | None, message: str) -> None:
        self.run_id, self.host, self.pid = run_id, host, pid
        super().__init__(message)


class ResumeClaimed(TrackerError):
    """Another run holds the resume of run ``run_id``: ``claimed_by`` (pid ``pid`` on ``host``)
    is resuming it (``state`` ``active``), resumed it successfully (``succeeded``), or ended
    without success (``finished``: only when taking such a claim over was not wanted).
    ``through`` lists the runs between them when ``claimed_by`` resumes a resume of it."""

    def __init__(
        self,
        run_id: str,
        claimed_by: str,
        host: str | None,
        pid: int | None,
        state: str,
        through: list[str] | None = None,
        status: str | None = None,
    ) -> None:
        self.run_id, self.claimed_by, self.host, self.pid = run_id, claimed_by, host, pid
        self.state, self.through = state, list(through or [])
        via = f" (through run {', run '.join(self.through)})" if self.through else ""
        if state == "active":
            message = (
                f"run {run_id} is being resumed already, by run {claimed_by}{via} "
                f"(pid {pid} on host {host}): wait for that run to end; if it fails, "
                "--resume latest resumes it"
            )
        elif state == "succeeded":
            message = (
                f"run {run_id} was resumed already, by run {claimed_by}{via}, which "
                "succeeded: nothing of it is left to run (run the pipeline without "
                "--resume to run it all again)"
            )
        else:
            message = (
                f"run {run_id} was resumed already, by run {claimed_by}{via}, which "
                f"ended ({status or 'failed'}): resume that run instead "
                "(--resume latest)"
            )
        super().__init__(message)

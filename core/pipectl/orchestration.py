"""Running a pipeline file's pipelines, as ``pipectl run FILE`` does, from Python.

:class:`PipelineFile` holds what ``pipectl run`` decides before the first step: the file's
pipelines in dependency order, the project it belongs to, the params (with those of a resumed
run), and the tracker (``tracker=``, else the file's, else the project's). Its :meth:`run
<PipelineFile.run>` runs the named pipelines and those they depend on, each after its
upstream pipelines, and skips a pipeline whose upstream did not succeed::

    from pipectl import PipelineFile

    pf = PipelineFile.load("pipelines.yaml", params={"day": "2026-12-01"})
    result = pf.run(["silver_to_gold"])
    assert result.ok, result.outcome

The command line is a thin layer over it: it adds the live display, the summaries and the
exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pipectl.errors import PipectlError

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.model import PipelineRun
    from pipectl.pipeline import Pipeline
    from pipectl.project import Project

__all__ = ["FileRunResult", "PipelineFile", "PipelineOutcome", "ResumeError", "TrackerOpenError"]


class TrackerOpenError(PipectlError):
    """The tracker cannot be opened (a bad URL, a database that does not answer)."""


class ResumeError(PipectlError):
    """A resume that cannot be made: no tracker, no such run, a run still running, or a run of
    a pipeline not among those to run."""


@attrs.define(frozen=True)
class PipelineOutcome:
    """How one pipeline of a file ended in :meth:`PipelineFile.run`.

    :ivar name: the pipeline.
    :ivar status: the run's status (``"success"``, ``"failed"``, ``"rolled_back"``,
        ``"cancelled"``), or ``"skipped"`` (an upstream pipeline did not succeed, or a run
        before it was cancelled) or ``"not_run"`` (``skip=`` left out every step it would run).
    :ivar run: the :class:`~pipectl.model.PipelineRun`, None when it did not run.
    :ivar reason: why it did not run.
    """

    name: str
    status: str
    run: PipelineRun | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the pipelines after it may run: it succeeded or had nothing to run."""
        return self.status in ("success", "not_run")


@attrs.define
class FileRunResult:
    """What :meth:`PipelineFile.run` returns: each pipeline's :class:`PipelineOutcome`, in the
    order they were taken."""

    outcomes: dict[str, PipelineOutcome] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        """Every pipeline succeeded (or had nothing to run)."""
        return all(o.ok for o in self.outcomes.values())

    @property
    def outcome(self) -> dict[str, str]:
        """Pipeline name -> status."""
        return {name: o.status for name, o in self.outcomes.items()}

    @property
    def runs(self) -> dict[str, PipelineRun]:
        """Pipeline name -> its run, for those that ran."""
        return {name: o.run for name, o in self.outcomes.items() if o.run is not None}

    @property
    def cancelled(self) -> bool:
        """A run was cancelled (Ctrl-C, SIGTERM): the pipelines after it did not run."""
        return any(o.status == "cancelled" for o in self.outcomes.values())


_UNOPENED = object()


class PipelineFile:
    """The pipelines of one pipeline file, ready to run as ``pipectl run FILE`` runs them.

    Made by :meth:`load`. ``pipelines`` maps each name to its :class:`~pipectl.Pipeline`, in
    an order where each follows those it depends on; ``depends`` maps each name to the
    pipelines it depends on; ``project`` is the file's :class:`~pipectl.project.Project`;
    ``warnings`` lists what was noticed while loading (a resumed run's param too big to take).
    """

    def __init__(
        self,
        path: Path,
        pipelines: dict[str, Pipeline],
        depends: dict[str, list[str]],
        project: Project,
        plugin_manager: Any,
        tracker: Any = None,
        opened: Any = _UNOPENED,
        warnings: list[str] | None = None,
    ) -> None:
        self.path = path
        self.pipelines = pipelines
        self.depends = depends
        self.project = project
        self.plugin_manager = plugin_manager
        self.warnings = warnings or []
        self._tracker_arg = tracker
        self._tracker = opened

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        params: Mapping[str, Any] | None = None,
        *,
        tracker: Any = None,
        resume: str | None = None,
        plugin_manager: Any = None,
    ) -> PipelineFile:
        """Load the file at ``path`` with ``params`` (by name; strings are read as ``-p``
        reads them).

        :param tracker: a tracker URL (``sqlite:///runs.db``, ``postgresql://...``), a tracker
            object, or ``"none"``; by default the file's ``tracker:``, else the project's
            (its ``tracker`` setting, else ``pipectl.db`` in its ``.pipectl/``).
        :param resume: the run that :meth:`run` will resume (a run id or ``"latest"``): its
            params are taken for those not given (not secrets, which are not recorded).
        :raises PipelineFileError: anything wrong in the file (line and field named).
        :raises PipectlError: a tracker that cannot be opened, a resume that cannot be made.

        The file's folder goes on ``sys.path`` (``module:function`` references beside it), and
        ``$PIPECTL_HOME`` is set to the project's home unless it is set already.
        """
        from pipectl.files import gc_paused
        from pipectl.pipeline import load_pipelines
        from pipectl.plugins import default_plugin_manager
        from pipectl.project import find_project

        file = Path(path)
        pm = plugin_manager if plugin_manager is not None else default_plugin_manager()
        project = find_project(file)
        project.load_env()
        os.environ.setdefault("PIPECTL_HOME", str(project.home))
        folder = str(file.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        given = dict(params or {})
        warnings: list[str] = []
        recorder = None
        if resume is not None:
            outline = outline_of(file, pm)
            recorder = open_file_tracker(pm, tracker, outline["tracker"], project)
            if recorder is not None:
                taken, cut, run_id = resumed_params(recorder, resume, outline, given)
                given = {**taken, **given}
                if cut:
                    warnings.append(
                        f"--resume: param(s) {', '.join(map(repr, cut))} of run {run_id} were "
                        "too big to record whole, so they are not taken from it: give them "
                        "again with -p"
                    )
        with gc_paused():  # loading makes objects, not garbage (see gc_paused)
            pipelines, depends = load_pipelines(
                file, given, plugin_manager=pm, project=project, check_graph=False
            )
        return cls(
            file,
            pipelines,
            depends,
            project,
            pm,
            tracker,
            _UNOPENED if resume is None else recorder,
            warnings,
        )

    @property
    def tracker(self) -> Any:
        """The tracker the runs are recorded in (None with ``tracker="none"``), opened on first
        use (so that loading a file to look at it creates no database).

        :raises PipectlError: a tracker that cannot be opened.
        """
        if self._tracker is _UNOPENED:
            file_tracker = next(
                (p.spec.tracker for p in self.pipelines.values() if p.spec.tracker), None
            )
            self._tracker = open_file_tracker(
                self.plugin_manager, self._tracker_arg, file_tracker, self.project
            )
        return self._tracker

    def close(self) -> None:
        """Close the tracker if it was opened here (not one given as an object)."""
        opened = self._tracker
        if opened is _UNOPENED or opened is None or opened is self._tracker_arg:
            return
        close = getattr(opened, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> PipelineFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- choosing ------------------------------------------------------------------------------

    def select(self, names: Iterable[str] = ()) -> list[str]:
        """The pipelines to run for ``names`` (by default every pipeline not run as a
        sub-pipeline of another), with those they depend on, in dependency order.

        :raises PipectlError: a name that is not a pipeline of the file (with the nearest).
        """
        wanted_names = list(names)
        unknown = [n for n in wanted_names if n not in self.pipelines]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], list(self.pipelines), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PipectlError(
                f"{self.path}: no pipeline named {unknown[0]!r}{hint} (in the "
                f"file: {', '.join(self.pipelines)})"
            )
        roots = wanted_names or [n for n, p in self.pipelines.items() if not p.nested]
        wanted: set[str] = set()
        stack = list(roots)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.depends[name])
        return [n for n in self.pipelines if n in wanted]

    # -- running -------------------------------------------------------------------------------

    def run(
        self,
        names: Iterable[str] = (),
        *,
        resume: str | None = None,
        force: bool = False,
        rollback: bool = False,
        max_concurrent: int | None = None,
        fail_fast: bool | None = None,
        executor: str | None = None,
        executor_options: Mapping[str, Any] | None = None,
        only: Mapping[str, Sequence[str]] | None = None,
        skip: Mapping[str, Sequence[str]] | None = None,
        progress: Callable[[str, int], AbstractContextManager[Any]] | None = None,
        on_outcome: Callable[[PipelineOutcome], None] | None = None,
        cache: bool = True,
        refresh: Mapping[str, Sequence[str]] | None = None,
    ) -> FileRunResult:
        """Run ``names`` (see :meth:`select`), each pipeline after those it depends on; a
        pipeline whose upstream did not succeed is ``skipped``, and after a cancelled run
        (Ctrl-C, SIGTERM) nothing more starts.

        :param resume: a run id (of one of the pipelines to run) or ``"latest"`` (each
            pipeline's latest ended run; a pipeline never run before just runs).
        :param force: with ``resume``, take the outputs of steps that changed since anyway.
        :param only: pipeline name -> the steps to run (with what they depend on); a pipeline
            not in it does not run.
        :param skip: pipeline name -> the steps to leave out (with what depends on them).
        :param cache: False: cached steps neither look their output up nor store it.
        :param refresh: pipeline name -> cached steps that run anyway (their output stored).
        :param progress: ``progress(name, steps)`` returns a context manager around each run
            whose value (if not None) is a listener of that run (a live display).
        :param on_outcome: called with each pipeline's :class:`PipelineOutcome` as it ends,
            before the next starts.
        :raises ResumeError: the resume cannot be made.
        :raises PipectlError: a pipeline that cannot run (e.g. a resume claimed by another
            process, an unknown executor).
        """
        from pipectl.errors import PipectlError as Error

        order = self.select(names)
        if only is not None:  # the pipelines with none of the steps named do not run
            order = [n for n in order if only.get(n)]
        recorder = self.tracker
        target = None  # the pipeline a given run id belongs to
        if resume is not None and recorder is None:
            raise ResumeError("needs a tracker to read the run from (not tracker none)")
        if resume is not None and resume != "latest":
            try:
                target = recorder.pipeline_of(recorder.resolve(resume))
            except Error as exc:
                raise ResumeError(str(exc)) from exc
            if target not in order:
                raise ResumeError(
                    f"run {resume} is a run of pipeline {target!r}, which is not "
                    f"among those to run ({', '.join(order)})"
                )
        result = FileRunResult()
        for name in order:
            outcome = self._run_one(
                name,
                result,
                recorder,
                resume,
                target,
                force,
                rollback,
                max_concurrent,
                fail_fast,
                executor,
                executor_options,
                only,
                skip,
                progress,
                cache,
                refresh,
            )
            result.outcomes[name] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
        return result

    def _run_one(
        self,
        name: str,
        result: FileRunResult,
        recorder: Any,
        resume: str | None,
        target: str | None,
        force: bool,
        rollback: bool,
        max_concurrent: int | None,
        fail_fast: bool | None,
        executor: str | None,
        executor_options: Mapping[str, Any] | None,
        only: Mapping[str, Sequence[str]] | None,
        skip: Mapping[str, Sequence[str]] | None,
        progress: Callable[[str, int], AbstractContextManager[Any]] | None,
        cache: bool = True,
        refresh: Mapping[str, Sequence[str]] | None = None,
    ) -> PipelineOutcome:
        if result.cancelled:
            return PipelineOutcome(name, "skipped", reason="a run before it was cancelled")
        blocked = [
            d for d in self.depends[name] if d in result.outcomes and not result.outcomes[d].ok
        ]
        if blocked:
            return PipelineOutcome(
                name,
                "skipped",
                reason=f"upstream pipeline {blocked[0]!r} {result.outcomes[blocked[0]].status}",
            )
        pipe = self.pipelines[name]
        resumes = resume
        if resume == "latest":  # a pipeline never run before just runs
            resumes = "latest" if recorder.list_runs(pipeline=name, limit=1) else None
        elif resume is not None and name != target:
            resumes = None
        picked = tuple((only or {}).get(name, ()))
        left = tuple((skip or {}).get(name, ()))
        options: dict[str, Any] = dict(
            max_concurrent=max_concurrent,
            fail_fast=fail_fast,
            executor=executor,
            executor_options=dict(executor_options) if executor_options else None,
            tracker=recorder if recorder is not None else "none",
            rollback=rollback,
            force=force and resumes is not None,
            resume=resumes,
            only=picked or None,
            skip=left or None,
            cache=cache,
            refresh=tuple((refresh or {}).get(name, ())) or None,
        )
        plan = pipe.plan(only=picked, skip=left)
        if plan.left_out and not plan.nodes:  # nothing left: no run to record
            return PipelineOutcome(
                name,
                "not_run",
                reason=f"skip left out every step it would run ({', '.join(plan.left_out)})",
            )
        if progress is None:
            run = pipe.run_sync(**options)
        else:
            with progress(name, len(plan.nodes)) as view:
                run = pipe.run_sync(**options, listeners=[view] if view is not None else [])
        return PipelineOutcome(name, run.status.value, run)


def outline_of(file: Path, plugin_manager: Any = None) -> dict[str, Any]:
    """What a resume needs before the file is loaded: its pipelines' names, its params (and
    which are secret) and its tracker, read from the file as it is, or as the registered
    pipeline-file format that claims it converts it (empty when it cannot be read: loading it
    reports why)."""
    from pipectl.files.formats import read_pipeline_data

    outline: dict[str, Any] = {"names": [], "params": {}, "secret": set(), "tracker": None}
    try:
        data = read_pipeline_data(Path(file), plugin_manager)
    except Exception:  # noqa: BLE001 - loading the file reports its problems
        return outline
    listed = data.get("pipelines")
    items = listed if isinstance(listed, list) else [data]
    outline["names"] = [
        i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)
    ]
    trackers = [i.get("tracker") for i in items if isinstance(i, dict) and i.get("tracker")]
    outline["tracker"] = trackers[0] if trackers and isinstance(trackers[0], str) else None
    if outline["tracker"] and outline["tracker"].startswith("sqlite:///"):
        from pipectl.project import sqlite_url

        outline["tracker"] = sqlite_url(outline["tracker"], Path(file).absolute().parent)
    params = data.get("params")
    declared = params if isinstance(params, dict) else {}
    outline["params"] = declared
    outline["secret"] = {n for n, d in declared.items() if isinstance(d, dict) and d.get("secret")}
    return outline


def resumed_params(
    recorder: Any, resume: str, outline: Mapping[str, Any], given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], str | None]:
    """The params of the run being resumed that are not in ``given`` (not secrets, not values
    too big to have been recorded whole), the names of those left out as too big, and the
    resumed run's id (None: no run to resume).

    :raises ResumeError: no such run, a run still running, a tracker that cannot resume.
    """
    from pipectl.tracking import require_resume

    try:
        recorder = require_resume(recorder)
        if resume == "latest":  # each pipeline's latest run that ended, as the resume takes
            runs = []
            for name in outline["names"]:
                found = recorder.latest_finished(name)
                if found is not None:
                    runs.append(found)
                elif recorder.list_runs(pipeline=name, limit=1):
                    recorder.resolve("latest", name, finished=True)  # raises: all running
            if not runs:
                return {}, [], None
            run_id = max(runs, key=lambda r: r["started_at"])["execution_id"]
        else:
            run_id = recorder.resolve(resume, finished=True)  # raises if still running
        old = recorder.get_run(run_id)["params"]
    except PipectlError as exc:
        raise ResumeError(str(exc)) from exc
    declared = outline["params"]
    cut = [k for k, v in old.items() if k in declared and k not in given and is_cut_param(v)]
    taken = {
        k: v
        for k, v in old.items()
        if k in declared
        and k not in given
        and k not in outline["secret"]
        and v != "***"
        and not is_cut_param(v)
    }
    return taken, cut, run_id


def is_cut_param(value: Any) -> bool:
    """Whether a recorded param is the tracker's cut summary of a value too big to record
    (``pipectl.tracking.PARAMS_CHARS``): not the value, so not given to a resume."""
    return isinstance(value, dict) and value.get("truncated") is True and "preview" in value


def open_file_tracker(
    pm: Any, tracker: Any, file_tracker: str | None, project: Project | None
) -> Any:
    """The tracker of a file's runs: ``tracker`` (a URL, an object, or ``"none"``), else the
    file's, else the project's (its setting, else ``pipectl.db`` in its home); None for
    ``"none"``.

    :raises TrackerOpenError: a tracker that cannot be opened (the error says why).
    """
    from pipectl.tracking import default_tracker_url, open_tracker

    if tracker is not None and not isinstance(tracker, str):
        return tracker
    url = tracker or file_tracker
    default = project.tracker_url() if project is not None else default_tracker_url()
    try:
        return open_tracker(url or default, pm.registries)
    except PipectlError as exc:
        raise TrackerOpenError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a database that cannot be opened
        raise TrackerOpenError(f"cannot open the tracker: {type(exc).__name__}: {exc}") from exc

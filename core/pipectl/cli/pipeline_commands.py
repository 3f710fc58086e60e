"""``pipectl run``, ``pipectl validate`` and ``pipectl graph``: pipeline files on the command line.

Exit codes: 0 success, 1 the run failed, 2 bad usage or an invalid pipeline (one message, no
traceback), 130 interrupted (Ctrl-C, or a second signal while a run is being cancelled), 143
terminated (SIGTERM: the run is cancelled as by Ctrl-C, its data steps' outputs aborted and
the run recorded as ``cancelled``).

What ``run`` prints: on a terminal, a live display of the running steps on stderr and a coloured
table on stdout (:mod:`pipectl.cli.progress`); in a pipe or a CI log, one log event per line on
stderr and a plain table on stdout; with ``-q``, the failed steps and the final line only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended

_param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Set a declared param (typed by its declaration). Repeat for more.",
)


def _fail(message: str) -> None:
    click.echo(f"pipectl: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _parse_params(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"-p {item!r}: expected KEY=VALUE, e.g. -p day=2026-11-23")
        out[key.strip()] = value
    return out


def _project(file: str) -> Any:
    """The project of the pipeline file (:mod:`pipectl.project`), its settings checked and its
    env file loaded; ``$PIPECTL_HOME`` is set to its home (unless set already), so the run
    records in the same place from any working directory, and the steps it starts see it."""
    import os

    from pipectl.project import ProjectFileError, find_project

    try:
        project = find_project(file)
        project.load_env()
    except ProjectFileError as exc:
        _fail(str(exc))
    os.environ.setdefault("PIPECTL_HOME", str(project.home))
    return project


def _load(pm: Any, file: str, params: Sequence[str],
          names: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The file's pipelines to act on (``names`` and what they depend on; by default all but
    those used as sub-pipelines), validated, in dependency order; any problem exits 2 with one
    message."""
    from pipectl.errors import PipectlError
    from pipectl.pipelinefile import PipelineFileError, gc_paused, load_pipelines

    folder = str(Path(file).resolve().parent)
    if folder not in sys.path:  # module:function references next to the pipeline file
        sys.path.insert(0, folder)
    with gc_paused():  # loading and planning make objects, not garbage (see gc_paused)
        try:
            pipelines, depends = load_pipelines(file, _parse_params(params), plugin_manager=pm,
                                                project=_project(file), check_graph=False)
            # by default every pipeline but those other pipelines run as sub-pipelines
            roots = list(names) or [n for n, p in pipelines.items() if not p.nested]
            if names:
                unknown = [n for n in names if n not in pipelines]
                if unknown:
                    import difflib

                    close = difflib.get_close_matches(unknown[0], list(pipelines), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise PipelineFileError(file, None, None, f"no pipeline named {unknown[0]!r}"
                                            f"{hint} (in the file: {', '.join(pipelines)})")
            wanted, stack = set(), roots
            while stack:
                name = stack.pop()
                if name not in wanted:
                    wanted.add(name)
                    stack.extend(depends[name])
            chosen = {n: p for n, p in pipelines.items() if n in wanted}
            found: list[str] = []  # every problem of every pipeline, at once
            for pipe in chosen.values():
                try:
                    pipe.validate()
                except PipectlError as exc:
                    from pipectl.pipelinefile import locate

                    found.extend(locate(pipe, exc).splitlines())
            if found:
                for line in found:
                    click.echo(f"pipectl: error: {line}", err=True)
                if len(found) > 1:
                    click.echo(f"pipectl: {len(found)} problems in {file}", err=True)
                sys.exit(EXIT_USAGE)
        except PipectlError as exc:
            text = getattr(exc, "cli_text", None) or str(exc)  # a param: "give it with -p ..."
            _fail(text.replace("\n", "\n  ") if "\n" in text else text)
    return chosen, depends


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@click.argument("names", nargs=-1, metavar="[PIPELINE]...")
@_param_option
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Override max_concurrent.")
@click.option("--fail-fast/--no-fail-fast", default=None, help="Override fail_fast.")
@click.option("--executor", metavar="NAME", help="Run the steps on this executor plugin.")
@click.option("--executor-option", "executor_option", multiple=True, metavar="KEY=VALUE",
              help="An option of the executor (repeatable); VALUE is read as JSON when it "
                   "parses, else as text. Executors may add options of their own below.")
@click.option("--dry-run", is_flag=True, help="Print the plan (levels) and run nothing.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True, help="How events are logged (to stderr).")
@click.option("-v", "--verbose", count=True,
              help="More events: -v the debug events (plugins, project, the plan, scheduling "
                   "decisions, retries); -vv also the libraries' own debug logging.")
@click.option("-q", "--quiet", count=True,
              help="Only warnings, the failed steps and the final line.")
@click.option("--progress/--no-progress", default=None,
              help="Show the live display of running steps and a coloured table, or not "
                   "(default: when stdout and stderr are terminals; never with TERM=dumb, "
                   "--log-format json or -q).")
@click.option("--tracker", metavar="URL",
              help="Where runs are recorded: sqlite:///file.db, postgresql://..., or none "
                   "(default: the file's tracker, else .pipectl/pipectl.db, or "
                   "$PIPECTL_HOME/pipectl.db).")
@click.option("--resume", metavar="RUN_ID|latest",
              help="Run again only what that run (of the same pipeline) did not finish; the "
                   "steps that succeeded keep their outputs. latest: the latest run that "
                   "ended (or whose process died), not one still running. A run being "
                   "resumed by another pipectl is not resumed twice: exit 2.")
@click.option("--force", is_flag=True,
              help="With --resume: take the outputs of steps that changed since anyway.")
@click.option("--only", "only", multiple=True, metavar="STEP",
              help="Run only this step and what it depends on (repeatable); pipelines of the "
                   "file without any of the steps named do not run.")
@click.option("--skip", "skip", multiple=True, metavar="STEP",
              help="Leave this step out, and every step downstream of it (repeatable); with "
                   "--only, of the steps it selects. Pipelines of the file without any of the "
                   "steps named run whole.")
@click.option("--rollback", is_flag=True,
              help="When a run fails, run the rollbacks of its completed steps, last first.")
@click.pass_obj
def run(pm: Any, file: str, names: Sequence[str], params: Sequence[str],
        max_concurrent: int | None, fail_fast: bool | None, executor: str | None,
        dry_run: bool, log_format: str, verbose: int, quiet: int,
        progress: bool | None, tracker: str | None, resume: str | None, force: bool,
        rollback: bool, executor_option: Sequence[str] = (), only: Sequence[str] = (),
        skip: Sequence[str] = (), **executor_cli: Any) -> None:
    """Run the pipelines in FILE (YAML or JSON): the named ones and those they depend on, or
    all of them, each after the pipelines it depends on. Runs are recorded in the tracker
    (`pipectl runs list`), and a failed one can be resumed (--resume latest)."""
    from pipectl import configure_logging
    from pipectl.cli import progress as display

    recorder = None
    if resume is not None and not dry_run:
        # the tracker and the resumed run's params first: a required param may be given only
        # by the run being resumed (a secret must be given again: it is not stored)
        outline = _outline(file)
        recorder = _tracker(pm, tracker, {}, outline["tracker"], _project(file))
        if recorder is not None:
            params = [*_resumed_params(recorder, resume, outline, params), *params]
    pipelines, depends = _load(pm, file, params, names)
    picked = _only(pipelines, only) if only else None
    skipped = _only(pipelines, skip, "--skip") if skip else {}
    if picked is not None:
        pipelines = {n: p for n, p in pipelines.items() if n in picked}
    executor, executor_options = _executor_options(executor, executor_option, executor_cli)
    if executor is not None and executor not in pm.registries.executors:
        from pipectl.errors import UnknownComponentError

        _fail(str(UnknownComponentError("executors", executor, pm.registries.executors.names())))
    if dry_run:
        steps = 0
        for pipe in pipelines.values():
            after = [d for d in depends[pipe.name] if d in pipelines]
            plan = pipe._plan(pm, tuple((picked or {}).get(pipe.name, ())),
                              tuple(skipped.get(pipe.name, ())))
            steps += len(plan.nodes)
            click.echo(plan.graph.visualize() + (f"\n(after: {', '.join(after)})" if after
                                                  else ""))
            if plan.left_out:
                click.echo(display.left_out_line(plan.left_out))
            click.echo("")
        click.echo(f"{len(pipelines)} pipeline(s), {steps} steps; nothing was run (--dry-run)")
        return
    live = display.progress_enabled(progress, log_format=log_format, quiet=bool(quiet))
    # the live display replaces the info events; -v still shows them (above it)
    level = "debug" if verbose else ("warning" if quiet or live else "info")
    configure_logging(level, fmt=log_format)
    external = [f"{r.name}-{r.version}" for r in pm.records.values()
                if not r.builtin and r.status == "loaded"]
    if external and not quiet:
        if log_format == "json":  # every line of stderr is JSON: an event, not a plain line
            from pipectl.log import get_logger

            get_logger().info("plugins_loaded", plugins=external)
        else:
            click.echo(f"plugins: {', '.join(external)}", err=True)
    if verbose:  # -v: what pipectl decided before the first step
        from pipectl.log import capture_library_logs, get_logger

        logger = get_logger()
        logger.debug("plugins", plugins=[
            {"name": r.name, "distribution": r.distribution, "version": r.version,
             "status": r.status, "builtin": r.builtin} for r in pm.records.values()])
        project = _project(file)
        logger.debug("project", root=str(project.root),
                     file=str(project.file) if project.file else None,
                     home=str(project.home), tracker=tracker or project.tracker_url())
        if verbose > 1:  # -vv: the libraries' own debug logging (httpx, psycopg, dask ...)
            capture_library_logs()
    if force and resume is None:
        _fail("--force goes with --resume RUN_ID|latest")
    if recorder is None:
        recorder = _tracker(pm, tracker, pipelines, project=_project(file))
    try:
        _run_all(pm, file, pipelines, depends, recorder, live, quiet, max_concurrent,
                 fail_fast, executor, resume, force, rollback, executor_options, picked,
                 skipped)
    finally:
        ended = sys.exc_info()[1]
        if recorder is not None and (ended is None or isinstance(ended, SystemExit)):
            _retain(recorder, _project(file), log_format, quiet)
        if recorder is not None:  # a tracker's fault is a warning, never the run's outcome
            for problem in recorder.close(report=False):
                if log_format == "json":  # stderr stays one JSON event a line
                    from pipectl.log import get_logger

                    get_logger().warning("tracker_problem", problem=problem)
                else:
                    click.echo(f"pipectl: warning: {problem}", err=True)


def _retain(recorder: Any, project: Any, log_format: str, quiet: int) -> None:
    """The project's ``[retention]`` after a run: prune the runs beyond it (never the runs of
    this command, which are the latest). A failure is a warning, never the run's outcome."""
    settings = project.retention
    if not settings:
        return
    from pipectl.tracking import parse_duration, require_prune

    def warn(message: str) -> None:
        if log_format == "json":
            from pipectl.log import get_logger

            get_logger().warning("retention_problem", problem=message)
        else:
            click.echo(f"pipectl: warning: {message}", err=True)

    try:
        if not recorder.flush(timeout=10):  # this run's rows first: it counts as the latest
            warn("retention: not applied, the tracker has not written this run yet")
            return
        older = settings.get("older_than")
        pruned = require_prune(recorder).prune(
            keep=settings.get("keep"),
            older_than=parse_duration(older) if older is not None else None)
    except Exception as exc:  # noqa: BLE001 - retention is housekeeping
        warn(f"retention: not applied: {type(exc).__name__}: {exc}")
        return
    if pruned and not quiet:
        rule = ", ".join(f"{k} {v}" for k, v in settings.items())
        if log_format == "json":
            from pipectl.log import get_logger

            get_logger().info("runs_pruned", runs=len(pruned), retention=dict(settings))
        else:
            click.echo(f"retention ({rule}): pruned {len(pruned)} old run(s) and their stored "
                       "outputs", err=True)


def _only(pipelines: dict[str, Any], only: Sequence[str],
          flag: str = "--only") -> dict[str, list[str]]:
    """``--only`` (or ``--skip``, the ``flag``): the steps named, by the pipeline they belong
    to; a name no pipeline has is an error (exit 2) with the closest names."""
    import difflib

    picked: dict[str, list[str]] = {}
    for step in dict.fromkeys(only):
        owners = [n for n, pipe in pipelines.items() if step in pipe.steps]
        if not owners:
            known = [s for pipe in pipelines.values() for s in pipe.steps]
            close = difflib.get_close_matches(step, known, n=1)
            _fail(f"{flag} {step}: no such step" + (f"; did you mean {close[0]!r}?" if close
                                                      else f" (steps: {', '.join(known[:20])})"))
        for owner in owners:
            picked.setdefault(owner, []).append(step)
    return picked


def _executor_options(executor: str | None, given: Sequence[str], declared: dict[str, Any]
                      ) -> tuple[str | None, dict[str, Any]]:
    """The executor and its options from ``--executor-option KEY=VALUE`` and the options
    executors declare (``--dask-scheduler ...``, which imply their executor)."""
    import json as _json

    from pipectl.cli import ExecutorOption

    options: dict[str, Any] = {}
    implied: dict[str, str] = {}
    params = {p.name: p for p in click.get_current_context().command.params}
    for name, value in declared.items():
        param = params.get(name)
        if value is None or not isinstance(param, ExecutorOption):
            continue
        implied.setdefault(param.executor, param.opts[0])
        options[param.key] = value
    if len(implied) > 1:
        (a, flag_a), (b, flag_b) = list(implied.items())[:2]
        _fail(f"{flag_a} (executor {a}) and {flag_b} (executor {b}) do not go together")
    if implied:
        (wanted, flag), = implied.items()
        if executor is not None and executor != wanted:
            _fail(f"{flag} is an option of executor {wanted!r}, not of --executor {executor}")
        executor = wanted
    for item in given:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            _fail(f"--executor-option {item!r}: expected KEY=VALUE, e.g. "
                  "--executor-option local_workers=2")
        try:
            value = _json.loads(text)
        except ValueError:
            value = text
        options[key] = value
    return executor, options  # with no --executor: the options of the file's executor


def _outline(file: str) -> dict[str, Any]:
    """What a resume needs before the file is loaded: its pipelines' names, its params (and
    which are secret) and its tracker, read from the file as it is (empty when it cannot be
    read: loading it reports why)."""
    from pipectl.pipelinefile import _read

    outline: dict[str, Any] = {"names": [], "params": {}, "secret": set(), "tracker": None}
    try:
        data = _read(Path(file))
    except Exception:  # noqa: BLE001 - _load reports the file's problems
        return outline
    items = data.get("pipelines") if isinstance(data.get("pipelines"), list) else [data]
    outline["names"] = [i["name"] for i in items if isinstance(i, dict)
                        and isinstance(i.get("name"), str)]
    trackers = [i.get("tracker") for i in items if isinstance(i, dict) and i.get("tracker")]
    outline["tracker"] = trackers[0] if trackers and isinstance(trackers[0], str) else None
    if outline["tracker"] and outline["tracker"].startswith("sqlite:///"):
        from pipectl.project import _sqlite_url

        outline["tracker"] = _sqlite_url(outline["tracker"], Path(file).absolute().parent)
    declared = data.get("params") if isinstance(data.get("params"), dict) else {}
    outline["params"] = declared
    outline["secret"] = {n for n, d in declared.items() if isinstance(d, dict) and d.get("secret")}
    return outline


def _resumed_params(recorder: Any, resume: str, outline: dict[str, Any],
                    given: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` for the params of the run being resumed that are not given again."""
    import json as _json

    from pipectl.errors import PipectlError
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
                return []
            run_id = max(runs, key=lambda r: r["started_at"])["execution_id"]
        else:
            run_id = recorder.resolve(resume, finished=True)  # raises if still running
        old = recorder.get_run(run_id)["params"]
    except PipectlError as exc:
        _fail(f"--resume: {exc}")
    named = {item.partition("=")[0].strip() for item in given}
    cut = [k for k, v in old.items() if k in outline["params"] and k not in named
           and _cut_param(v)]
    if cut:
        click.echo(f"pipectl: warning: --resume: param(s) {', '.join(map(repr, cut))} of run "
                   f"{run_id} were too big to record whole, so they are not taken from it: "
                   "give them again with -p", err=True)
    return [f"{k}={v if isinstance(v, str) else _json.dumps(v)}" for k, v in old.items()
            if k in outline["params"] and k not in named and k not in outline["secret"]
            and v != "***" and not _cut_param(v)]


def _cut_param(value: Any) -> bool:
    """Whether a recorded param is the tracker's cut summary of a value too big to record
    (``pipectl.tracking.PARAMS_CHARS``): not the value, so not given to a resume."""
    return isinstance(value, dict) and value.get("truncated") is True and "preview" in value


def _tracker(pm: Any, url: str | None, pipelines: dict[str, Any],
             file_tracker: str | None = None, project: Any = None) -> Any:
    """The tracker of this command: --tracker, else the file's, else the project's (its
    setting, else ``pipectl.db`` in its home)."""
    from pipectl.errors import PipectlError
    from pipectl.tracking import default_tracker_url, open_tracker

    if url is None:
        url = next((p.spec.tracker for p in pipelines.values() if p.spec.tracker),
                   file_tracker)
    try:
        default = project.tracker_url() if project is not None else default_tracker_url()
        return open_tracker(url or default, pm.registries)
    except PipectlError as exc:
        _fail(f"--tracker: {exc}")
    except Exception as exc:  # noqa: BLE001 - a database that cannot be opened
        _fail(f"--tracker: cannot open the tracker: {type(exc).__name__}: {exc}")
    return None


def _run_all(pm: Any, file: str, pipelines: dict[str, Any], depends: dict[str, list[str]],
             recorder: Any, live: bool, quiet: int, max_concurrent: int | None,
             fail_fast: bool | None, executor: str | None, resume: str | None, force: bool,
             rollback: bool, executor_options: dict[str, Any] | None = None,
             only: dict[str, list[str]] | None = None,
             skip: dict[str, list[str]] | None = None) -> None:
    from pipectl.cli import progress as display
    from pipectl.errors import PipectlError
    from pipectl.tracking import ResumeClaimed, RunInProgress

    project = _project(file)
    outcome: dict[str, str] = {}
    target = None  # the pipeline a given run id belongs to
    if resume is not None and resume != "latest":
        if recorder is None:
            _fail("--resume needs a tracker to read the run from (not --tracker none)")
        try:
            target = recorder.pipeline_of(recorder.resolve(resume))
        except PipectlError as exc:
            _fail(f"--resume: {exc}")
        if target not in pipelines:
            _fail(f"--resume: run {resume} is a run of pipeline {target!r}, which is not "
                  f"among those to run ({', '.join(pipelines)})")
    for name, pipe in pipelines.items():
        blocked = [d for d in depends[name] if outcome.get(d, "success") != "success"]
        if blocked:
            outcome[name] = "skipped"
            click.echo(f"pipeline {name!r} skipped: upstream pipeline {blocked[0]!r} "
                       f"{outcome[blocked[0]]}\n")
            continue
        steps = pipe.steps
        resumes = resume
        if resume == "latest":  # a pipeline never run before just runs
            resumes = "latest" if recorder is not None and recorder.list_runs(
                pipeline=name, limit=1) else None
        elif resume is not None and name != target:
            resumes = None
        options = dict(max_concurrent=max_concurrent, fail_fast=fail_fast, executor=executor,
                       executor_options=executor_options or None,
                       tracker=recorder if recorder is not None else "none",
                       rollback=rollback, force=force and resumes is not None, resume=resumes,
                       only=(only or {}).get(name), skip=(skip or {}).get(name))
        try:
            # the steps to run (with --only/--skip, a part of them): the run takes this plan
            plan = pipe._plan(pm, tuple(options["only"] or ()), tuple(options["skip"] or ()))
            if plan.left_out and not plan.nodes:  # nothing left: no run to record
                outcome[name] = "success"  # not a failure: the pipelines after it run
                click.echo(f"pipeline {name!r} not run: --skip left out every step it "
                           f"would run ({', '.join(plan.left_out)})\n")
                continue
            if live:
                with display.LiveProgress(name, total=len(plan.nodes)) as view:
                    result = pipe.run_sync(**options, listeners=[view])  # this run only
            else:
                result = pipe.run_sync(**options)
        except (ResumeClaimed, RunInProgress) as exc:  # another pipectl has it: try later
            _fail(f"--resume: {exc}")
        except PipectlError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM while the run was being cancelled
            click.echo(f"\npipectl: interrupted: pipeline {name!r} stopped before its run ended",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        if live:
            display.print_rich_summary(result, steps)
        else:
            _summary(result, steps, quiet=bool(quiet))
        terminated = result.cancelled_by == "SIGTERM"
        if terminated:
            click.echo("the run was terminated (SIGTERM)")
        if recorder is not None and result.status.value not in ("success", "rolled_back"):
            click.echo(f"resume it with: pipectl run {file} --resume {result.run_id}")
        story = pipe.story or (project.story if project is not None else None)
        if story:
            _write_story(recorder, story, result.run_id)
        outcome[name] = result.status.value
        if result.status.value == "cancelled":
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        if len(pipelines) > 1:
            click.echo("")
    if any(status != "success" for status in outcome.values()):
        sys.exit(EXIT_FAILED)


def _write_story(recorder: Any, template: str, run_id: str) -> None:
    """The pipeline file's ``story:``, written from the tracker's record of the run."""
    if recorder is None:
        click.echo("story: not written: the story is read from the tracker (not --tracker "
                   "none)", err=True)
        return
    from pipectl.cli.story_command import story_path
    from pipectl.errors import PipectlError
    from pipectl.story import write_story

    try:
        record = recorder.get_run(run_id)
    except PipectlError as exc:  # the tracker failed: the run's rows may be in its spool
        click.echo(f"story: not written: {exc}", err=True)
        return
    from pipectl.cli.progress import shown_paths

    click.echo(shown_paths(f"story: {write_story(record, story_path(template, record))}"))


def _summary(run: Any, steps: Any, quiet: bool = False) -> None:
    """The plain summary: a table of the steps (not with ``quiet``), each failed step's attempt,
    error and where the user's code raised it, the steps --skip left out (not with ``quiet``)
    and the final line."""
    from pipectl.cli.progress import (
        data_lines,
        failure_details,
        final_line,
        format_duration,
        left_out_line,
        status_text,
    )

    if not quiet:
        from pipectl.cli.progress import DETAIL_HEADER, step_detail, table_lines, table_width
        from pipectl.preview import run_secrets

        # the last column: the error, why it did not run, or what the step produced (a data
        # step: read, written per output, rejected); whole in a pipe, cut to fit a terminal
        secrets = run_secrets(run)
        rows = [("step", "status", "duration", "attempts", "records", DETAIL_HEADER)]
        for name, r in run.steps.items():
            rows.append((name, status_text(r, steps.get(name)), format_duration(r.duration_ms),
                         str(r.attempts),
                         "" if r.records is None else str(r.records),
                         step_detail(r, secrets)))
        for line in table_lines(rows, table_width(), secrets):
            click.echo(line)
    failures = failure_details(run, steps)
    if failures and not quiet:
        click.echo("")
    for failure in failures:
        click.echo(failure.headline())
        if failure.location is not None:
            click.echo(f"  at {failure.location}")
    data = [] if quiet else data_lines(run)
    if data:
        click.echo("")
        for line in data:
            click.echo(line)
    if not quiet or failures:
        click.echo("")
    if run.left_out and not quiet:
        click.echo(left_out_line(run.left_out))
    click.echo(final_line(run))


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.pass_obj
def validate(pm: Any, file: str, params: Sequence[str]) -> None:
    """Check the pipelines in FILE without running them."""
    pipelines, _ = _load(pm, file, params)
    for pipe in pipelines.values():
        click.echo(f"{file}: pipeline {pipe.name!r} is valid ({len(pipe.steps)} steps)")


@click.command(short_help="Print the DAG of the pipelines in FILE (text, Mermaid, dot).")
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True)
@click.pass_obj
def graph(pm: Any, file: str, params: Sequence[str], fmt: str) -> None:
    """Print the DAG of the pipelines in FILE: text levels, a Mermaid flowchart or a dot
    digraph. Each pipeline is named (a heading, a subgraph, a cluster) and drawn after the
    pipelines it depends on, with an edge from each of those to it."""
    from pipectl.graph import visualize_pipelines

    pipelines, depends = _load(pm, file, params)
    title = next(iter(pipelines)) if len(pipelines) == 1 else Path(file).stem
    click.echo(visualize_pipelines({n: p.graph for n, p in pipelines.items()}, depends, fmt,
                                   title=title))

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
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
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


def _load(
    pm: Any,
    file: str,
    params: Sequence[str],
    names: Sequence[str] = (),
    tracker: str | None = None,
    resume: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The file as a :class:`~pipectl.orchestration.PipelineFile`, and the pipelines to act on (``names`` and what they depend on; by default all but those used as
    sub-pipelines), validated, in dependency order; any problem exits 2, every problem of
    every pipeline listed at once."""
    from pipectl.errors import PipectlError
    from pipectl.files import gc_paused
    from pipectl.orchestration import PipelineFile, ResumeError, TrackerOpenError

    _project(file)  # its problems exit 2 first; PIPECTL_HOME set
    with gc_paused():  # loading and planning make objects, not garbage (see gc_paused)
        try:
            pf = PipelineFile.load(
                file, _parse_params(params), tracker=tracker, resume=resume, plugin_manager=pm
            )
            for warning in pf.warnings:
                click.echo(f"pipectl: warning: {warning}", err=True)
            chosen = {n: pf.pipelines[n] for n in pf.select(names)}
            found: list[str] = []  # every problem of every pipeline, at once
            for pipe in chosen.values():
                try:
                    pipe.validate()
                except PipectlError as exc:
                    from pipectl.files import locate

                    found.extend(locate(pipe, exc).splitlines())
            if found:
                for line in found:
                    click.echo(f"pipectl: error: {line}", err=True)
                if len(found) > 1:
                    click.echo(f"pipectl: {len(found)} problems in {file}", err=True)
                sys.exit(EXIT_USAGE)
        except TrackerOpenError as exc:
            _fail(f"--tracker: {exc}")
        except ResumeError as exc:
            _fail(f"--resume: {exc}")
        except PipectlError as exc:
            errors = getattr(exc, "errors", None)  # several problems (a file's connections)
            if isinstance(errors, list) and len(errors) > 1:
                for error in errors:
                    click.echo(f"pipectl: error: {error}", err=True)
                click.echo(f"pipectl: {len(errors)} problems in {file}", err=True)
                sys.exit(EXIT_USAGE)
            if isinstance(errors, list) and errors:
                exc = errors[0]
            text = getattr(exc, "cli_text", None) or str(exc)  # a param: "give it with -p ..."
            _fail(text.replace("\n", "\n  ") if "\n" in text else text)
    return pf, chosen


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@click.argument("names", nargs=-1, metavar="[PIPELINE]...")
@_param_option
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Override max_concurrent.")
@click.option("--fail-fast/--no-fail-fast", default=None, help="Override fail_fast.")
@click.option("--executor", metavar="NAME", help="Run the steps on this executor plugin.")
@click.option(
    "--executor-option",
    "executor_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the executor (repeatable); VALUE is read as JSON when it "
    "parses, else as text. Executors may add options of their own below.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan (levels) and run nothing.")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="How events are logged (to stderr).",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More events: -v the debug events (plugins, project, the plan, scheduling "
    "decisions, retries); -vv also the libraries' own debug logging.",
)
@click.option(
    "-q", "--quiet", count=True, help="Only warnings, the failed steps and the final line."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show the live display of running steps and a coloured table, or not "
    "(default: when stdout and stderr are terminals; never with TERM=dumb, "
    "--log-format json or -q).",
)
@click.option(
    "--tracker",
    metavar="URL",
    help="Where runs are recorded: sqlite:///file.db, postgresql://..., or none "
    "(default: the file's tracker, else .pipectl/pipectl.db, or "
    "$PIPECTL_HOME/pipectl.db).",
)
@click.option(
    "--resume",
    metavar="RUN_ID|latest",
    help="Run again only what that run (of the same pipeline) did not finish; the "
    "steps that succeeded keep their outputs. latest: the latest run that "
    "ended (or whose process died), not one still running. A run being "
    "resumed by another pipectl is not resumed twice: exit 2.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: take the outputs of steps that changed since anyway.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="STEP",
    help="Run only this step and what it depends on (repeatable); pipelines of the "
    "file without any of the steps named do not run.",
)
@click.option(
    "--skip",
    "skip",
    multiple=True,
    metavar="STEP",
    help="Leave this step out, and every step downstream of it (repeatable); with "
    "--only, of the steps it selects. Pipelines of the file without any of the "
    "steps named run whole.",
)
@click.option(
    "--no-cache",
    "no_cache",
    is_flag=True,
    help="Run every cached step (cache: on a step) without looking its output up, and "
    "store nothing in the cache.",
)
@click.option(
    "--refresh",
    "refresh",
    multiple=True,
    metavar="STEP",
    help="Run this cached step whatever the cache holds, and store its new output (repeatable).",
)
@click.option(
    "--rollback",
    is_flag=True,
    help="When a run fails, run the rollbacks of its completed steps, last first.",
)
@click.pass_obj
def run(
    pm: Any,
    /,
    file: str,
    names: Sequence[str],
    params: Sequence[str],
    max_concurrent: int | None,
    fail_fast: bool | None,
    executor: str | None,
    dry_run: bool,
    log_format: str,
    verbose: int,
    quiet: int,
    progress: bool | None,
    tracker: str | None,
    resume: str | None,
    force: bool,
    rollback: bool,
    executor_option: Sequence[str] = (),
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    no_cache: bool = False,
    refresh: Sequence[str] = (),
    **executor_cli: Any,
) -> None:
    """Run the pipelines in FILE (YAML or JSON): the named ones and those they depend on, or
    all of them, each after the pipelines it depends on. Runs are recorded in the tracker
    (`pipectl runs list`), and a failed one can be resumed (--resume latest)."""
    from pipectl import configure_logging
    from pipectl.cli import progress as display

    # with --resume, the resumed run's params are taken for those not given: a required param
    # may be given only by the run being resumed (a secret must be given again: not stored)
    pf, pipelines = _load(pm, file, params, names, tracker, None if dry_run else resume)
    depends = pf.depends
    picked = _only(pipelines, only) if only else None
    skipped = _only(pipelines, skip, "--skip") if skip else {}
    refreshed = _refreshed(pipelines, refresh, no_cache) if refresh else {}
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
            plan = pipe.plan((picked or {}).get(pipe.name, ()), skipped.get(pipe.name, ()))
            steps += len(plan.nodes)
            click.echo(plan.graph.visualize() + (f"\n(after: {', '.join(after)})" if after else ""))
            if plan.left_out:
                click.echo(display.left_out_line(plan.left_out))
            click.echo("")
        click.echo(f"{len(pipelines)} pipeline(s), {steps} steps; nothing was run (--dry-run)")
        return
    live = display.progress_enabled(progress, log_format=log_format, quiet=bool(quiet))
    # the live display replaces the info events; -v still shows them (above it)
    level = "debug" if verbose else ("warning" if quiet or live else "info")
    configure_logging(level, fmt=log_format)
    external = [
        f"{r.name}-{r.version}"
        for r in pm.records.values()
        if not r.builtin and r.status == "loaded"
    ]
    if external and not quiet:
        if log_format == "json":  # every line of stderr is JSON: an event, not a plain line
            from pipectl.log import get_logger

            get_logger().info("plugins_loaded", plugins=external)
        else:
            click.echo(f"plugins: {', '.join(external)}", err=True)
    if verbose:  # -v: what pipectl decided before the first step
        from pipectl.log import capture_library_logs, get_logger

        logger = get_logger()
        logger.debug(
            "plugins",
            plugins=[
                {
                    "name": r.name,
                    "distribution": r.distribution,
                    "version": r.version,
                    "status": r.status,
                    "builtin": r.builtin,
                }
                for r in pm.records.values()
            ],
        )
        project = _project(file)
        logger.debug(
            "project",
            root=str(project.root),
            file=str(project.file) if project.file else None,
            home=str(project.home),
            tracker=tracker or project.tracker_url(),
        )
        if verbose > 1:  # -vv: the libraries' own debug logging (httpx, psycopg, dask ...)
            capture_library_logs()
    if force and resume is None:
        _fail("--force goes with --resume RUN_ID|latest")
    from pipectl.orchestration import TrackerOpenError

    try:
        recorder = pf.tracker
    except TrackerOpenError as exc:
        _fail(f"--tracker: {exc}")
    from pipectl.config import configure, unconfigure

    configure(pm, _plugin_option_values(executor_cli), "cli", _project(file).root)
    try:
        _run_all(
            pf,
            list(pipelines),
            live,
            quiet,
            dict(
                max_concurrent=max_concurrent,
                fail_fast=fail_fast,
                executor=executor,
                resume=resume,
                force=force,
                rollback=rollback,
                executor_options=executor_options,
                only=picked,
                skip=skipped,
                cache=not no_cache,
                refresh=refreshed,
            ),
        )
    finally:
        ended = sys.exc_info()[1]
        if recorder is not None and (ended is None or isinstance(ended, SystemExit)):
            _retain(recorder, _project(file), log_format, quiet)
        unconfigure(pm)
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
            older_than=parse_duration(older) if older is not None else None,
        )
    except Exception as exc:  # noqa: BLE001 - retention is housekeeping
        warn(f"retention: not applied: {type(exc).__name__}: {exc}")
        return
    if pruned and not quiet:
        rule = ", ".join(f"{k} {v}" for k, v in settings.items())
        if log_format == "json":
            from pipectl.log import get_logger

            get_logger().info("runs_pruned", runs=len(pruned), retention=dict(settings))
        else:
            click.echo(
                f"retention ({rule}): pruned {len(pruned)} old run(s) and their stored outputs",
                err=True,
            )


def _only(
    pipelines: dict[str, Any], only: Sequence[str], flag: str = "--only"
) -> dict[str, list[str]]:
    """``--only`` (or ``--skip``, the ``flag``): the steps named, by the pipeline they belong
    to; a name no pipeline has is an error (exit 2) with the closest names."""
    import difflib

    picked: dict[str, list[str]] = {}
    for step in dict.fromkeys(only):
        owners = [n for n, pipe in pipelines.items() if step in pipe.steps]
        if not owners:
            known = [s for pipe in pipelines.values() for s in pipe.steps]
            close = difflib.get_close_matches(step, known, n=1)
            _fail(
                f"{flag} {step}: no such step"
                + (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else f" (steps: {', '.join(known[:20])})"
                )
            )
        for owner in owners:
            picked.setdefault(owner, []).append(step)
    return picked


def _refreshed(
    pipelines: dict[str, Any], refresh: Sequence[str], no_cache: bool
) -> dict[str, list[str]]:
    """``--refresh``: the cached steps named, by pipeline; a step no pipeline has, or that is
    not cached, is an error (exit 2)."""
    if no_cache:
        _fail("--refresh STEP and --no-cache: give one (--no-cache runs every cached step)")
    named = _only(pipelines, refresh, "--refresh")
    for owner, steps in named.items():
        spec = pipelines[owner].spec
        for step in steps:
            if spec.step(step).cache is None:
                _fail(
                    f"--refresh {step}: step {step!r} of pipeline {owner!r} is not cached (it "
                    "runs every time); give it cache: true"
                )
    return named


def _plugin_option_values(given: dict[str, Any]) -> dict[str, Any]:
    """The values of the plugins' own options (``pipectl_addoption`` without an executor), by
    their ``dest``: what ``config.getoption`` reads."""
    from pipectl.cli import ExecutorOption

    params = {p.name: p for p in click.get_current_context().command.params}
    return {
        param.option.dest: value
        for name, value in given.items()
        if isinstance(param := params.get(name), ExecutorOption) and param.executor is None
    }


def _executor_options(
    executor: str | None, given: Sequence[str], declared: dict[str, Any]
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
        if value is None or value is False or not isinstance(param, ExecutorOption):
            continue
        if param.executor is None:  # a plugin's own option: for pipectl_configure
            continue
        implied.setdefault(param.executor, param.opts[0])
        options[param.key] = value
    if len(implied) > 1:
        (a, flag_a), (b, flag_b) = list(implied.items())[:2]
        _fail(f"{flag_a} (executor {a}) and {flag_b} (executor {b}) do not go together")
    if implied:
        ((wanted, flag),) = implied.items()
        if executor is not None and executor != wanted:
            _fail(f"{flag} is an option of executor {wanted!r}, not of --executor {executor}")
        executor = wanted
    for item in given:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            _fail(
                f"--executor-option {item!r}: expected KEY=VALUE, e.g. "
                "--executor-option local_workers=2"
            )
        try:
            value = _json.loads(text)
        except ValueError:
            value = text
        options[key] = value
    return executor, options  # with no --executor: the options of the file's executor


def _run_all(pf: Any, names: list[str], live: bool, quiet: int, options: dict[str, Any]) -> None:
    """Run the pipelines (:meth:`PipelineFile.run <pipectl.orchestration.PipelineFile.run>`),
    printing each one's summary as it ends; exit 1 when one did not succeed, 130/143 when a
    run was cancelled."""
    from pipectl.cli import progress as display
    from pipectl.errors import PipectlError
    from pipectl.orchestration import PipelineOutcome, ResumeError
    from pipectl.tracking import ResumeClaimed, RunInProgress

    file, recorder, project = pf.path, pf.tracker, pf.project
    ended: list[str] = []

    def report(outcome: PipelineOutcome) -> None:
        ended.append(outcome.name)
        pipe, result = pf.pipelines[outcome.name], outcome.run
        if outcome.status == "skipped":
            click.echo(f"pipeline {outcome.name!r} skipped: {outcome.reason}\n")
            return
        if result is None:  # nothing left to run: not a failure, the pipelines after it run
            click.echo(
                f"pipeline {outcome.name!r} not run: --skip left out every step it "
                f"would run ({', '.join(result_left_out(pipe, options))})\n"
            )
            return
        if live:
            display.print_rich_summary(result, pipe.steps)
        else:
            _summary(result, pipe.steps, quiet=bool(quiet))
        terminated = result.cancelled_by == "SIGTERM"
        if terminated:
            click.echo("the run was terminated (SIGTERM)")
        if recorder is not None and result.status.value not in ("success", "rolled_back"):
            click.echo(f"resume it with: pipectl run {file} --resume {result.run_id}")
        story = pipe.story or (project.story if project is not None else None)
        if story:
            _write_story(recorder, story, result.run_id)
        if result.status.value == "cancelled":
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        if len(names) > 1:
            click.echo("")

    def progress(name: str, total: int) -> Any:
        return display.LiveProgress(name, total=total)

    try:
        result = pf.run(names, progress=progress if live else None, on_outcome=report, **options)
    except (ResumeError, ResumeClaimed, RunInProgress) as exc:  # e.g. another pipectl has it
        _fail(f"--resume: {exc}")
    except PipectlError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM while the run was being cancelled
        name = next((n for n in names if n not in ended), names[-1])
        click.echo(
            f"\npipectl: interrupted: pipeline {name!r} stopped before its run ended", err=True
        )
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(EXIT_FAILED)


def result_left_out(pipe: Any, options: dict[str, Any]) -> list[str]:
    """The steps --only/--skip leave out of ``pipe``'s run."""
    plan = pipe.plan(
        (options["only"] or {}).get(pipe.name, ()), (options["skip"] or {}).get(pipe.name, ())
    )
    return list(plan.left_out)


def _write_story(recorder: Any, template: str, run_id: str) -> None:
    """The pipeline file's ``story:``, written from the tracker's record of the run."""
    if recorder is None:
        click.echo(
            "story: not written: the story is read from the tracker (not --tracker none)", err=True
        )
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
            rows.append(
                (
                    name,
                    status_text(r, steps.get(name)),
                    format_duration(r.duration_ms),
                    str(r.attempts),
                    "" if r.records is None else str(r.records),
                    step_detail(r, secrets),
                )
            )
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
    for pipe in _load(pm, file, params)[1].values():
        click.echo(f"{file}: pipeline {pipe.name!r} is valid ({len(pipe.steps)} steps)")


@click.command(short_help="Print the DAG of the pipelines in FILE (text, Mermaid, dot).")
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
)
@click.pass_obj
def graph(pm: Any, file: str, params: Sequence[str], fmt: str) -> None:
    """Print the DAG of the pipelines in FILE: text levels, a Mermaid flowchart or a dot
    digraph. Each pipeline is named (a heading, a subgraph, a cluster) and drawn after the
    pipelines it depends on, with an edge from each of those to it."""
    from pipectl.graph import visualize_pipelines

    pf, pipelines = _load(pm, file, params)
    depends = pf.depends
    title = next(iter(pipelines)) if len(pipelines) == 1 else Path(file).stem
    click.echo(
        visualize_pipelines({n: p.graph for n, p in pipelines.items()}, depends, fmt, title=title)
    )

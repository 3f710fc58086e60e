"""``pipectl runs list``, ``pipectl runs show`` and ``pipectl runs logs``: what the tracker
recorded, read from it; ``pipectl runs prune``: delete old runs and their stored outputs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_USAGE = 2


def open_store(pm: Any, url: str | None, *, empty: str | None = None) -> Any:
    """The tracker to read: ``url``, else the project's (of the working directory). Reading
    creates nothing: when the project's SQLite file does not exist yet, ``empty`` is printed
    (exit 0) or, without ``empty``, it is an error (exit 2)."""
    import os

    from pipectl.errors import PipectlError
    from pipectl.tracking import open_tracker

    if url is None:
        from pipectl.project import find_project

        try:
            url = find_project().tracker_url()
        except PipectlError as exc:
            click.echo(f"pipectl: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        where = url[len("sqlite:///") :]
        if empty is not None:
            click.echo(empty if empty == "[]" else f"{empty} (no tracker at {where} yet)")
            sys.exit(0)
        click.echo(
            f"pipectl: error: no runs recorded: there is no tracker at {where} (run a "
            "pipeline first, or give --tracker URL)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    try:
        tracker = open_tracker(url, pm.registries)
    except PipectlError as exc:
        click.echo(f"pipectl: error: --tracker: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - a tracker plugin's own error: no traceback
        click.echo(
            f"pipectl: error: --tracker: cannot open the tracker: {type(exc).__name__}: {exc}",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    if tracker is None:
        click.echo("pipectl: error: --tracker none: there is nothing to read", err=True)
        sys.exit(EXIT_USAGE)
    return tracker


def close_store(store: Any) -> None:
    """Close the tracker; what went wrong with it (spooled rows it could not write yet) as one
    warning line each."""
    for problem in store.close(report=False):
        click.echo(f"pipectl: warning: {problem}", err=True)


tracker_option = click.option(
    "--tracker",
    metavar="URL",
    help="The tracker to read (default: the project's: its "
    "pipectl.toml's tracker, else .pipectl/pipectl.db in the project, or "
    "$PIPECTL_HOME/pipectl.db).",
)


@click.group()
def runs() -> None:
    """The runs the tracker recorded."""


@runs.command(name="list")
@click.option("--pipeline", metavar="NAME", help="Only the runs of this pipeline.")
@click.option(
    "--status",
    type=click.Choice(
        [
            "running",
            "success",
            "failed",
            "cancelled",
            "interrupted",
            "rolled_back",
            "rollback_failed",
        ]
    ),
    help="Only runs that ended so (interrupted: the process died while it ran).",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@tracker_option
@click.pass_obj
def list_runs(
    pm: Any,
    pipeline: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
    tracker: str | None,
) -> None:
    """The latest runs, newest first."""
    from pipectl.cli.progress import format_duration
    from pipectl.errors import PipectlError

    store = open_store(pm, tracker, empty="[]" if as_json else "no runs recorded")
    try:
        rows = store.list_runs(pipeline=pipeline, status=status, limit=limit)
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        close_store(store)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs recorded" + (f" of pipeline {pipeline!r}" if pipeline else ""))
        return
    from pipectl.cli.progress import table_lines, table_width

    table = [("run", "pipeline", "status", "started", "duration", "records", "error")]
    for r in rows:
        duration = "" if r["execution_time_ms"] is None else format_duration(r["execution_time_ms"])
        error = (r["error_message"] or "").strip().splitlines()
        table.append(
            (
                r["execution_id"][:12],
                r["pipeline_name"],
                r["status"],
                (r["started_at"] or "")[:19].replace("T", " "),
                duration,
                str(r["records_processed"] or 0),
                error[0] if error else "",
            )
        )
    for line in table_lines(table, table_width()):  # whole in a pipe, cut to fit a terminal
        click.echo(line)


def _step_detail(step: dict[str, Any]) -> str:
    """The last cell of a recorded step's row: its error, why it did not run, or what it
    produced (a data step: read, written per output, rejected; another: a preview of its
    recorded output summary, in which the tracker masked the secrets already)."""
    from pipectl.preview import preview_summary, record_data_counts

    error: str | None = step.get("error_message")
    if error:
        return error
    reason = step.get("reason") or ""
    shown = ""
    if step.get("status") == "success":
        shown = record_data_counts(step) or ""
        summary = step.get("output_summary")
        if not shown and summary is not None:
            shown = preview_summary(summary)
    if reason:
        return f"{shown} ({reason})" if shown else reason
    return shown


@runs.command(name="show")
@click.argument("run_id", metavar="RUN_ID|latest")
@click.option("--pipeline", metavar="NAME", help="With latest: the latest run of this one.")
@click.option(
    "--json", "as_json", is_flag=True, help="The whole record: the run and every step, as JSON."
)
@tracker_option
@click.pass_obj
def show(pm: Any, run_id: str, pipeline: str | None, as_json: bool, tracker: str | None) -> None:
    """One run: its params, outcome and every step with timing, attempts, records, and its
    output (a data step: records read, written per output, rejected), error or skip reason."""
    from pipectl.cli.progress import format_duration
    from pipectl.errors import PipectlError

    store = open_store(pm, tracker)
    try:
        record = store.get_run(run_id, pipeline)
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        close_store(store)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    click.echo(f"run {record['run_id']} of {record['pipeline']!r}: {record['status']}")
    duration = record["duration_ms"]
    click.echo(
        f"  started {record['started_at']}"
        + (f", took {format_duration(duration)}" if duration is not None else "")
        + f", {record['records_processed'] or 0} records"
    )
    if record["resumed_from"]:
        click.echo(f"  resumed from run {record['resumed_from']}")
    if record["params"]:
        click.echo("  params: " + ", ".join(f"{k}={v!r}" for k, v in record["params"].items()))
    click.echo("")
    from pipectl.cli.progress import DETAIL_HEADER, table_lines, table_width

    table = [("step", "status", "duration", "attempts", "records", DETAIL_HEADER)]
    for s in record["steps"]:
        detail = _step_detail(s)
        if s.get("rollback"):
            rb = s["rollback"]
            detail = (
                f"rollback {rb['status']}"
                + (f": {rb['error']}" if rb.get("error") else "")
                + (f"; {detail}" if detail else "")
            )
        status = s["status"]
        if status == "failed" and (s.get("metadata") or {}).get("allow_failure"):
            status = "failed (allowed)"
        elif status == "success" and s.get("cached_from"):  # a cache hit: not run
            status = "cached"
            detail = f"{detail} (from the cache, run {s['cached_from'][:12]})".lstrip()
        ms = s["execution_time_ms"]
        lines = detail.strip().splitlines()
        table.append(
            (
                s["step_name"],
                status,
                "" if ms is None else format_duration(ms),
                str(s["attempts"]),
                "" if s["records"] is None else str(s["records"]),
                lines[0] if lines else "",
            )
        )
    for line in table_lines(table, table_width()):  # whole in a pipe, cut to fit a terminal
        click.echo(line)
    for error in record["errors"]:
        click.echo(f"\n{error}")


@runs.command(name="logs")
@click.argument("run_id", metavar="RUN_ID|latest")
@click.argument("step")
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    metavar="N",
    help="Only this attempt's lines (default: every attempt's).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON array of lines: attempt, seq, logged_at, stream, level, message.",
)
@tracker_option
@click.pass_obj
def logs(
    pm: Any, run_id: str, step: str, attempt: int | None, as_json: bool, tracker: str | None
) -> None:
    """What a step of a run logged and printed, attempt by attempt: its stdout and stderr,
    its logging records and pipectl's events for it (bounded, secrets masked)."""
    from pipectl.errors import PipectlError
    from pipectl.tracking import require_browse

    store = open_store(pm, tracker)
    try:
        browse = require_browse(store)
        record = store.get_run(run_id)
        steps = {s["step_id"]: s for s in record["steps"]}
        known = list(dict.fromkeys([*record["graph"], *steps]))
        if step not in steps and step not in record["graph"]:
            import difflib

            near = difflib.get_close_matches(step, known, n=3)
            hint = (
                f" (did you mean {', '.join(repr(n) for n in near)}?)"
                if near
                else f"; its steps: {', '.join(known[:20])}"
                if known
                else ""
            )
            raise _Usage(f"run {record['run_id']} has no step {step!r}{hint}")
        attempts = steps[step]["attempts"] if step in steps else 0
        if attempt is not None and attempt > attempts:
            ran = (
                f"it ran {attempts} attempt{'s' if attempts != 1 else ''}"
                if attempts
                else "it did not run"
            )
            raise _Usage(f"step {step!r} of run {record['run_id']} has no attempt {attempt}: {ran}")
        lines = browse.step_logs(record["run_id"], step, attempt)
    except (PipectlError, _Usage) as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        close_store(store)
    if as_json:
        click.echo(json.dumps(lines, indent=2))
        return
    if not lines:
        which = f"attempt {attempt} of step" if attempt is not None else "step"
        click.echo(f"no logs recorded for {which} {step!r} of run {record['run_id']}")
        return
    several = len({line["attempt"] for line in lines}) > 1 or attempts > 1
    shown = None
    for line in lines:
        if several and line["attempt"] != shown:
            shown = line["attempt"]
            click.echo(f"{'' if shown == lines[0]['attempt'] else chr(10)}-- attempt {shown}")
        click.echo(_log_line(line))


class _Usage(Exception):
    """A bad argument of ``runs logs`` (exit 2)."""


def _log_line(line: dict[str, Any]) -> str:
    """``12:00:01.234 stdout  text``; a level after the stream; further lines indented."""
    at = str(line.get("logged_at") or "")
    clock = at[11:23] if len(at) >= 23 else at
    where = line["stream"] + (f" {line['level']}" if line.get("level") else "")
    first, *rest = str(line["message"]).split("\n") or [""]
    text = f"{clock} {where:<15} {first}".rstrip()
    pad = " " * (len(clock) + 17)
    return "\n".join([text, *(pad + more for more in rest)])


@runs.command(name="prune")
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the N latest runs of each pipeline; delete the others.",
)
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    help="Delete the runs that started longer ago than this: 30d, 12h, 90m, 2w, "
    "45s, 1h30m. With --keep too, a run goes only when both say so.",
)
@click.option("--pipeline", metavar="NAME", help="Only delete runs of this pipeline.")
@click.option("--dry-run", is_flag=True, help="Say which runs would go; delete nothing.")
@tracker_option
@click.pass_obj
def prune(
    pm: Any,
    keep: int | None,
    older_than: str | None,
    pipeline: str | None,
    dry_run: bool,
    tracker: str | None,
) -> None:
    """Delete old runs: their records and their stored outputs.

    A run still running is never deleted; a resume chain (a run and the runs that resumed
    it) stays or goes as a whole, and sub-pipeline runs go with the run that started them
    (see docs/guide.md, "Retention").
    """
    from pipectl.errors import PipectlError
    from pipectl.tracking import parse_duration, require_prune

    if keep is None and older_than is None:
        click.echo(
            "pipectl: error: runs prune needs --keep N, --older-than DURATION or both "
            "(such as --keep 100, or --older-than 30d)",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    seconds = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            click.echo(f"pipectl: error: --older-than: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    store = open_store(pm, tracker, empty="no runs to delete")
    try:
        pruned = require_prune(store).prune(
            keep=keep, older_than=seconds, pipeline=pipeline, dry_run=dry_run
        )
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        close_store(store)
    count = f"{len(pruned)} run{'s' if len(pruned) != 1 else ''}"
    if not pruned:
        click.echo("no runs to delete" + (f" of pipeline {pipeline!r}" if pipeline else ""))
        return
    click.echo(
        f"would delete {count} (--dry-run: nothing deleted):" if dry_run else f"deleted {count}:"
    )
    runs_info = getattr(pruned, "runs", {})
    for run_id in pruned:
        row = runs_info.get(run_id, {})
        started = (row.get("started_at") or "")[:19].replace("T", " ")
        parent = row.get("parent_execution_id")
        click.echo(
            f"  {run_id}  {row.get('pipeline_name', '')}  {row.get('status', '')}  "
            f"started {started}" + (f"  (sub-pipeline run of {parent[:12]})" if parent else "")
        )

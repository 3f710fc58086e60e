"""``pipectl runs list`` and ``pipectl runs show``: what the tracker recorded, read from it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

EXIT_USAGE = 2


def _open(pm: Any, url: str | None) -> Any:
    from pipectl.errors import PipectlError
    from pipectl.tracking import default_tracker_url, open_tracker

    try:
        tracker = open_tracker(url or default_tracker_url(), pm.registries)
    except PipectlError as exc:
        click.echo(f"pipectl: error: --tracker: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - a tracker plugin's own error: no traceback
        click.echo(f"pipectl: error: --tracker: cannot open the tracker: "
                   f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if tracker is None:
        click.echo("pipectl: error: --tracker none: there is nothing to read", err=True)
        sys.exit(EXIT_USAGE)
    return tracker


def _close(store: Any) -> None:
    """Close the tracker; what went wrong with it (spooled rows it could not write yet) as one
    warning line each."""
    for problem in store.close(report=False):
        click.echo(f"pipectl: warning: {problem}", err=True)


_tracker_option = click.option(
    "--tracker", metavar="URL", help="The tracker to read (default: .pipectl/pipectl.db, or "
    "$PIPECTL_HOME/pipectl.db).")


@click.group()
def runs() -> None:
    """The runs the tracker recorded."""


@runs.command(name="list")
@click.option("--pipeline", metavar="NAME", help="Only the runs of this pipeline.")
@click.option("--status", type=click.Choice(["running", "success", "failed", "cancelled",
                                             "interrupted", "rolled_back", "rollback_failed"]),
              help="Only runs that ended so (interrupted: the process died while it ran).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_tracker_option
@click.pass_obj
def list_runs(pm: Any, pipeline: str | None, status: str | None, limit: int, as_json: bool,
              tracker: str | None) -> None:
    """The latest runs, newest first."""
    from pipectl.cli.progress import format_duration
    from pipectl.errors import PipectlError

    store = _open(pm, tracker)
    try:
        rows = store.list_runs(pipeline=pipeline, status=status, limit=limit)
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        _close(store)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs recorded" + (f" of pipeline {pipeline!r}" if pipeline else ""))
        return
    table = [("run", "pipeline", "status", "started", "duration", "records", "error")]
    for r in rows:
        duration = "" if r["execution_time_ms"] is None else \
            format_duration(r["execution_time_ms"])
        error = (r["error_message"] or "").splitlines()[0][:80] if r["error_message"] else ""
        table.append((r["execution_id"][:12], r["pipeline_name"], r["status"],
                      (r["started_at"] or "")[:19].replace("T", " "), duration,
                      str(r["records_processed"] or 0), error))
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        click.echo("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:6]))
                   + ("  " + row[6] if row[6] else ""))


@runs.command(name="show")
@click.argument("run_id", metavar="RUN_ID|latest")
@click.option("--pipeline", metavar="NAME", help="With latest: the latest run of this one.")
@click.option("--json", "as_json", is_flag=True,
              help="The whole record: the run and every step, as JSON.")
@_tracker_option
@click.pass_obj
def show(pm: Any, run_id: str, pipeline: str | None, as_json: bool, tracker: str | None) -> None:
    """One run: its params, outcome and every step with timing, attempts, errors, records."""
    from pipectl.cli.progress import format_duration
    from pipectl.errors import PipectlError

    store = _open(pm, tracker)
    try:
        record = store.get_run(run_id, pipeline)
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        _close(store)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    click.echo(f"run {record['run_id']} of {record['pipeline']!r}: {record['status']}")
    duration = record["duration_ms"]
    click.echo(f"  started {record['started_at']}"
               + (f", took {format_duration(duration)}" if duration is not None else "")
               + f", {record['records_processed'] or 0} records")
    if record["resumed_from"]:
        click.echo(f"  resumed from run {record['resumed_from']}")
    if record["params"]:
        click.echo("  params: " + ", ".join(f"{k}={v!r}" for k, v in record["params"].items()))
    click.echo("")
    table = [("step", "status", "duration", "attempts", "records", "error")]
    for s in record["steps"]:
        detail = s["error_message"] or s["reason"] or ""
        if s.get("rollback"):
            rb = s["rollback"]
            detail = (f"rollback {rb['status']}" + (f": {rb['error']}" if rb.get("error")
                                                     else "") + (f"; {detail}" if detail else ""))
        ms = s["execution_time_ms"]
        table.append((s["step_name"], s["status"], "" if ms is None else format_duration(ms),
                      str(s["attempts"]), "" if s["records"] is None else str(s["records"]),
                      detail.splitlines()[0][:100] if detail else ""))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:5]))
                   + ("  " + row[5] if row[5] else ""))
    for error in record["errors"]:
        click.echo(f"\n{error}")

"""``pipectl cache``: the step cache (``cache:`` on steps) kept in the tracker's result store."""

from __future__ import annotations

import sys
from typing import Any

import click

from pipectl.cli.runs_command import EXIT_USAGE, close_store, open_store, tracker_option


@click.group()
def cache() -> None:
    """The step cache: outputs of cached steps (cache: on a step), kept beside the tracker."""


@cache.command(name="clear")
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only the entries stored more than this long ago (30d, 12h, 1h30m).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@tracker_option
@click.pass_obj
def clear(pm: Any, older_than: str | None, dry_run: bool, tracker: str | None) -> None:
    """Remove the step cache's entries (all of them, or the old ones): the cached steps run
    again next time, and store their outputs again."""
    from pipectl.tracking import parse_duration

    seconds = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            click.echo(f"pipectl: error: --older-than: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    store = open_store(pm, tracker, empty="no step cache")
    try:
        results = getattr(store, "results", None)
        clear_cache = getattr(results, "clear_cache", None)
        if clear_cache is None:
            click.echo(
                "pipectl: error: this tracker keeps no step cache (it has no result store "
                "that caches)",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        count, size = clear_cache(seconds, dry_run=dry_run)
    finally:
        close_store(store)
    entries = f"{count} entr{'ies' if count != 1 else 'y'} ({size / 1e6:.1f} MB)"
    if count == 0:
        click.echo(
            "no cache entries to remove" + (f" older than {older_than}" if older_than else "")
        )
    elif dry_run:
        click.echo(f"would remove {entries} (--dry-run: nothing removed)")
    else:
        click.echo(f"removed {entries}: the cached steps run again next time")

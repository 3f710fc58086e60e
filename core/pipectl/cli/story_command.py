"""``pipectl story``: a self-contained report of one run, read from the tracker."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

EXIT_USAGE = 2


def story_path(template: str, record: dict[str, Any]) -> Path:
    """``template`` with ``{run_id}``, ``{short_id}`` and ``{pipeline}`` filled in."""
    return Path(
        template.format(
            run_id=record["run_id"], short_id=record["run_id"][:12], pipeline=record["pipeline"]
        )
    )


@click.command()
@click.argument("run_id", metavar="RUN_ID|latest")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    help="html (default) or md; taken from -o's suffix when it has one.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Where to write it (default: story-PIPELINE-RUN.html in the current "
    "folder); {run_id}, {short_id} and {pipeline} are filled in.",
)
@click.option("--pipeline", metavar="NAME", help="With latest: the latest run of this one.")
@click.option(
    "--tracker",
    metavar="URL",
    help="The tracker to read (default: .pipectl/pipectl.db, or $PIPECTL_HOME/pipectl.db).",
)
@click.pass_obj
def story(
    pm: Any,
    run_id: str,
    fmt: str | None,
    output: str | None,
    pipeline: str | None,
    tracker: str | None,
) -> None:
    """Write the story of a run: pipeline and params (secrets redacted), outcome, the DAG as
    a picture, a timeline of the steps with their retries, a table of steps with records per
    output, and every error with its traceback. One file, nothing fetched from the network."""
    from pipectl.cli.runs_command import close_store, open_store
    from pipectl.errors import PipectlError
    from pipectl.story import write_story

    store = open_store(pm, tracker)
    try:
        record = store.get_run(run_id, pipeline)
    except PipectlError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        close_store(store)
    suffix = f".{fmt or 'html'}"
    path = story_path(output or f"story-{{pipeline}}-{{short_id}}{suffix}", record)
    if path.suffix.lower() not in (".html", ".md", ".markdown"):
        path = path.with_name(path.name + suffix)
    written = write_story(record, path, format=fmt)
    click.echo(f"wrote the story of run {record['run_id']} ({record['status']}) to {written}")

"""``pipectl init``: a new project (see :func:`pipectl.scaffold.write_project`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Write a small runnable project into DIRECTORY (default: here): the project file
    (pipectl.toml: tracker, param defaults, env file, plugins to disable, story, retention),
    a pipeline, its step module, sample data, a test of the pipeline and a .gitignore.
    Nothing existing is overwritten."""
    from pipectl import scaffold

    try:
        written = scaffold.write_project(directory)
    except OSError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote a pipectl project in {directory}/:")
    for path in written:
        click.echo(f"  {path.relative_to(directory)}")
    go = "" if directory == Path(".") else f"cd {directory} && "
    click.echo(f"\nnext: {go}pipectl run pipeline.yaml && pipectl runs list && python -m pytest")

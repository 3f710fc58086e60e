"""``pipectl new plugin``: a plugin distribution's skeleton (see :mod:`pipectl.scaffold`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def new() -> None:
    """Start something new from a template."""


@new.command(name="plugin")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["extractor", "output", "tracker", "listener"]),
    default="extractor",
    show_default=True,
    help="What the plugin provides.",
)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(path_type=Path),
    help="The folder to create (default: ./pipectl-NAME).",
)
def plugin(name: str, kind: str, target: Path | None) -> None:
    """Write the skeleton of the plugin NAME: distribution pipectl-NAME, module pipectl_NAME,
    entry point NAME, with a working component, README, CHANGELOG and a passing test.
    `pip install -e` it and `pipectl plugins` lists it at once."""
    from importlib.metadata import PackageNotFoundError, version

    from pipectl import scaffold

    try:
        dist, module, entry = scaffold.names(name)
    except ValueError as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(2)
    try:
        current = version("pipectl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        current = "0.1.0"
    folder = target if target is not None else Path(dist)
    try:
        written = scaffold.write(folder, name, kind, current)
    except (FileExistsError, OSError) as exc:
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote {dist} ({kind} {entry!r}, module {module}) in {folder}/:")
    for path in written:
        click.echo(f"  {path.relative_to(folder)}")
    click.echo(f"\nnext: pip install -e '{folder}[test]' && pipectl plugins && pytest {folder}")

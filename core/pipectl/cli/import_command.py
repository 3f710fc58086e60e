"""``pipectl import``: pipelines of other tools as pipectl pipeline files."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click


@click.group(name="import")
def import_group() -> None:
    """Turn a pipeline of another tool into a pipectl pipeline file."""


@import_group.command(name="ia-modules")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the pipeline file here (default: print it).",
)
def ia_modules(file: Path, output: Path | None) -> None:
    """Convert FILE, a pipeline of the ia_modules JSON design, to pipectl's YAML.

    Steps keep their classes (run: module:StepClass, built with id and config), inputs become
    references (steps.ID.output.FIELD, params.NAME, alternatives with |), the flow's paths
    become depends_on and its conditions when: expressions.
    """
    from pipectl.importers.ia_modules import ImportError_, convert_file

    try:
        text = convert_file(file)
    except ImportError_ as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if output is None:
        click.echo(text, nl=False)
        return
    directory = output.parent if str(output.parent) else Path(".")
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    click.echo(f"wrote {output}: run it with `pipectl run {output}`", err=True)

"""``pipectl schema``: the JSON Schema of pipeline files, for editors."""

from __future__ import annotations

import click


def schema_text() -> str:
    from importlib.resources import files

    return files("pipectl").joinpath("schema/pipeline.schema.json").read_text(encoding="utf-8")


@click.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (point your editor's YAML support at it)."""
    click.echo(schema_text(), nl=False)

"""``pipectl plugins``: what the loader found, loaded, blocked or could not load."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--all", "include_builtin", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", "hook_name", metavar="HOOK", help="Only plugins implementing HOOK.")
@click.pass_obj
def plugins(pm, as_json: bool, include_builtin: bool, hook_name: str | None) -> None:
    """List installed plugins: name, distribution, version, status, hooks and components."""
    rows = pm.describe(include_builtin=include_builtin)
    if hook_name:
        rows = [r for r in rows if hook_name in r["hooks"]]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No plugins installed." + ("" if include_builtin else " (--all shows the built-in ones)"))
        return
    for row in rows:
        status = row["status"] + (f": {row['error']}" if row["error"] else "")
        dist = row["distribution"] or "?"
        version = row["version"] or "?"
        click.echo(f"{row['name']}  ({dist} {version})  {status}")
        if row["hooks"]:
            click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in row["components"].items():
            click.echo(f"    {kind.replace('_', ' ')}: {', '.join(names)}")

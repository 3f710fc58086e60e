"""``pipectl plugins``: what the loader found, loaded, blocked or could not load."""

from __future__ import annotations

import difflib
import json
from typing import Any

import click

from pipectl import hookspecs


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--all", "include_builtin", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", "hook_name", metavar="HOOK", help="Only plugins implementing HOOK.")
@click.pass_obj
def plugins(pm: Any, as_json: bool, include_builtin: bool, hook_name: str | None) -> None:
    """List installed plugins: name, distribution, version, status, hooks and components."""
    rows = pm.describe(include_builtin=include_builtin)
    if hook_name:
        known = sorted(n for n in dir(hookspecs) if n.startswith("pipectl_"))
        if hook_name not in known:
            close = difflib.get_close_matches(hook_name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise click.BadParameter(
                f"{hook_name!r} is not a pipectl hook.{hint}", param_hint="--hook"
            )
        rows = [r for r in rows if hook_name in r["hooks"]]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(
            "No plugins installed."
            + ("" if include_builtin else " (--all shows the built-in ones)")
        )
        return
    for row in rows:
        status = row["status"] + (f": {row['error']}" if row["error"] else "")
        status = status.replace("\n", "\n      ")  # keep a multi-line error under its plugin
        dist = row["distribution"] or "?"
        version = row["version"] or "?"
        click.echo(f"{row['name']}  ({dist} {version})  {status}")
        if row["hooks"]:
            click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in row["components"].items():
            click.echo(f"    {kind.replace('_', ' ')}: {', '.join(names)}")

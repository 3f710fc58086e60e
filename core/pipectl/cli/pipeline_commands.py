"""``pipectl run``, ``pipectl validate`` and ``pipectl graph``: pipeline files on the command line.

Exit codes: 0 success, 1 the run failed, 2 bad usage or an invalid pipeline (one message, no
traceback), 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import click

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

_param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Set a declared param (typed by its declaration). Repeat for more.",
)


def _fail(message: str) -> None:
    click.echo(f"pipectl: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _parse_params(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"-p {item!r}: expected KEY=VALUE, e.g. -p day=2026-11-23")
        out[key.strip()] = value
    return out


def _load(pm: Any, file: str, params: Sequence[str]) -> Any:
    from pipectl.errors import PipectlError
    from pipectl.pipelinefile import load_pipeline

    folder = str(Path(file).resolve().parent)
    if folder not in sys.path:  # module:function references next to the pipeline file
        sys.path.insert(0, folder)
    try:
        pipe = load_pipeline(file, _parse_params(params), plugin_manager=pm)
        pipe.validate()
    except PipectlError as exc:
        _fail(str(exc).replace("\n", "\n  ") if "\n" in str(exc) else str(exc))
    return pipe


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Override max_concurrent.")
@click.option("--fail-fast/--no-fail-fast", default=None, help="Override fail_fast.")
@click.option("--executor", metavar="NAME", help="Run the steps on this executor plugin.")
@click.option("--dry-run", is_flag=True, help="Print the plan (levels) and run nothing.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True, help="How events are logged (to stderr).")
@click.option("-v", "--verbose", count=True, help="More events (-v: debug).")
@click.option("-q", "--quiet", count=True, help="Fewer events (-q: warnings only).")
@click.pass_obj
def run(pm: Any, file: str, params: Sequence[str], max_concurrent: int | None,
        fail_fast: bool | None, executor: str | None, dry_run: bool, log_format: str,
        verbose: int, quiet: int) -> None:
    """Run the pipeline in FILE (YAML or JSON)."""
    from pipectl import configure_logging
    from pipectl.errors import PipectlError

    pipe = _load(pm, file, params)
    if executor is not None and executor not in pm.registries.executors:
        from pipectl.errors import UnknownComponentError

        _fail(str(UnknownComponentError("executors", executor, pm.registries.executors.names())))
    if dry_run:
        click.echo(pipe.visualize())
        click.echo(f"\n{len(pipe.steps)} steps; nothing was run (--dry-run)")
        return
    level = "debug" if verbose else ("warning" if quiet else "info")
    configure_logging(level, fmt=log_format)
    external = [f"{r.name}-{r.version}" for r in pm.records.values()
                if not r.builtin and r.status == "loaded"]
    if external and not quiet:
        click.echo(f"plugins: {', '.join(external)}", err=True)
    try:
        result = pipe.run_sync(max_concurrent=max_concurrent, fail_fast=fail_fast,
                               executor=executor)
    except PipectlError as exc:
        _fail(str(exc))
    _summary(result)
    if result.status.value == "cancelled":
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(EXIT_FAILED)


def _summary(run: Any) -> None:
    rows = [("step", "status", "duration", "attempts", "records", "error")]
    for name, r in run.steps.items():
        detail = r.error or r.reason or ""
        rows.append((name, r.status.value, f"{r.duration_ms:.1f} ms", str(r.attempts),
                     "" if r.records is None else str(r.records), detail.splitlines()[0][:100]
                     if detail else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5]))
                   + ("  " + row[5] if row[5] else ""))
    click.echo(f"\nrun {run.run_id} of {run.pipeline_id!r}: {run.status.value} in "
               f"{(run.duration_ms or 0) / 1000:.2f} s")


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.pass_obj
def validate(pm: Any, file: str, params: Sequence[str]) -> None:
    """Check the pipeline in FILE without running it."""
    pipe = _load(pm, file, params)
    click.echo(f"{file}: pipeline {pipe.name!r} is valid ({len(pipe.steps)} steps)")


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True)
@click.pass_obj
def graph(pm: Any, file: str, params: Sequence[str], fmt: str) -> None:
    """Print the DAG of the pipeline in FILE (text levels, Mermaid or dot)."""
    pipe = _load(pm, file, params)
    click.echo(pipe.visualize(fmt))

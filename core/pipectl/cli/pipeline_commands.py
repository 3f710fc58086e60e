"""``pipectl run``, ``pipectl validate`` and ``pipectl graph``: pipeline files on the command line.

Exit codes: 0 success, 1 the run failed, 2 bad usage or an invalid pipeline (one message, no
traceback), 130 interrupted.

What ``run`` prints: on a terminal, a live display of the running steps on stderr and a coloured
table on stdout (:mod:`pipectl.cli.progress`); in a pipe or a CI log, one log event per line on
stderr and a plain table on stdout; with ``-q``, the failed steps and the final line only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _load(pm: Any, file: str, params: Sequence[str],
          names: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The file's pipelines to act on (``names`` and what they depend on; by default all but
    those used as sub-pipelines), validated, in dependency order; any problem exits 2 with one
    message."""
    from pipectl.errors import PipectlError
    from pipectl.pipelinefile import PipelineFileError, load_pipelines

    folder = str(Path(file).resolve().parent)
    if folder not in sys.path:  # module:function references next to the pipeline file
        sys.path.insert(0, folder)
    try:
        pipelines, depends = load_pipelines(file, _parse_params(params), plugin_manager=pm)
        # by default every pipeline but those other pipelines run as sub-pipelines
        roots = list(names) or [n for n, p in pipelines.items() if not p.nested]
        if names:
            unknown = [n for n in names if n not in pipelines]
            if unknown:
                import difflib

                close = difflib.get_close_matches(unknown[0], list(pipelines), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PipelineFileError(file, None, None, f"no pipeline named {unknown[0]!r}"
                                        f"{hint} (in the file: {', '.join(pipelines)})")
        wanted, stack = set(), roots
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(depends[name])
        chosen = {n: p for n, p in pipelines.items() if n in wanted}
        for pipe in chosen.values():
            try:
                pipe.validate()
            except PipectlError as exc:
                from pipectl.pipelinefile import locate

                _fail(locate(pipe, exc))
    except PipectlError as exc:
        _fail(str(exc).replace("\n", "\n  ") if "\n" in str(exc) else str(exc))
    return chosen, depends


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@click.argument("names", nargs=-1, metavar="[PIPELINE]...")
@_param_option
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Override max_concurrent.")
@click.option("--fail-fast/--no-fail-fast", default=None, help="Override fail_fast.")
@click.option("--executor", metavar="NAME", help="Run the steps on this executor plugin.")
@click.option("--dry-run", is_flag=True, help="Print the plan (levels) and run nothing.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True, help="How events are logged (to stderr).")
@click.option("-v", "--verbose", count=True, help="More events (-v: debug).")
@click.option("-q", "--quiet", count=True,
              help="Only warnings, the failed steps and the final line.")
@click.option("--progress/--no-progress", default=None,
              help="Show the live display of running steps and a coloured table, or not "
                   "(default: when stdout and stderr are terminals; never with TERM=dumb, "
                   "--log-format json or -q).")
@click.pass_obj
def run(pm: Any, file: str, names: Sequence[str], params: Sequence[str],
        max_concurrent: int | None, fail_fast: bool | None, executor: str | None,
        dry_run: bool, log_format: str, verbose: int, quiet: int,
        progress: bool | None) -> None:
    """Run the pipelines in FILE (YAML or JSON): the named ones and those they depend on, or
    all of them, each after the pipelines it depends on."""
    from pipectl import configure_logging
    from pipectl.cli import progress as display
    from pipectl.errors import PipectlError

    pipelines, depends = _load(pm, file, params, names)
    if executor is not None and executor not in pm.registries.executors:
        from pipectl.errors import UnknownComponentError

        _fail(str(UnknownComponentError("executors", executor, pm.registries.executors.names())))
    if dry_run:
        for pipe in pipelines.values():
            after = [d for d in depends[pipe.name] if d in pipelines]
            click.echo(pipe.visualize() + (f"\n(after: {', '.join(after)})" if after else ""))
            click.echo("")
        steps = sum(len(p.steps) for p in pipelines.values())
        click.echo(f"{len(pipelines)} pipeline(s), {steps} steps; nothing was run (--dry-run)")
        return
    live = display.progress_enabled(progress, log_format=log_format, quiet=bool(quiet))
    # the live display replaces the info events; -v still shows them (above it)
    level = "debug" if verbose else ("warning" if quiet or live else "info")
    configure_logging(level, fmt=log_format)
    external = [f"{r.name}-{r.version}" for r in pm.records.values()
                if not r.builtin and r.status == "loaded"]
    if external and not quiet:
        click.echo(f"plugins: {', '.join(external)}", err=True)
    outcome: dict[str, str] = {}
    for name, pipe in pipelines.items():
        blocked = [d for d in depends[name] if outcome.get(d, "success") != "success"]
        if blocked:
            outcome[name] = "skipped"
            click.echo(f"pipeline {name!r} skipped: upstream pipeline {blocked[0]!r} "
                       f"{outcome[blocked[0]]}\n")
            continue
        steps = pipe.steps
        try:
            if live:
                with display.LiveProgress(pm, name, total=len(steps)):
                    result = pipe.run_sync(max_concurrent=max_concurrent, fail_fast=fail_fast,
                                           executor=executor)
            else:
                result = pipe.run_sync(max_concurrent=max_concurrent, fail_fast=fail_fast,
                                       executor=executor)
        except PipectlError as exc:
            _fail(str(exc))
        if live:
            display.print_rich_summary(result, steps)
        else:
            _summary(result, steps, quiet=bool(quiet))
        outcome[name] = result.status.value
        if result.status.value == "cancelled":
            sys.exit(EXIT_INTERRUPTED)
        if len(pipelines) > 1:
            click.echo("")
    if any(status != "success" for status in outcome.values()):
        sys.exit(EXIT_FAILED)


def _summary(run: Any, steps: Any, quiet: bool = False) -> None:
    """The plain summary: a table of the steps (not with ``quiet``), each failed step's attempt,
    error and where the user's code raised it, and the final line."""
    from pipectl.cli.progress import data_lines, failure_details, final_line

    if not quiet:
        rows = [("step", "status", "duration", "attempts", "records", "error")]
        for name, r in run.steps.items():
            detail = r.error or r.reason or ""
            rows.append((name, r.status.value, f"{r.duration_ms:.1f} ms", str(r.attempts),
                         "" if r.records is None else str(r.records),
                         detail.splitlines()[0][:100] if detail else ""))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5]))
                       + ("  " + row[5] if row[5] else ""))
    failures = failure_details(run, steps)
    if failures and not quiet:
        click.echo("")
    for failure in failures:
        click.echo(failure.headline())
        if failure.location is not None:
            click.echo(f"  at {failure.location}")
    data = [] if quiet else data_lines(run)
    if data:
        click.echo("")
        for line in data:
            click.echo(line)
    if not quiet or failures:
        click.echo("")
    click.echo(final_line(run))


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.pass_obj
def validate(pm: Any, file: str, params: Sequence[str]) -> None:
    """Check the pipelines in FILE without running them."""
    pipelines, _ = _load(pm, file, params)
    for pipe in pipelines.values():
        click.echo(f"{file}: pipeline {pipe.name!r} is valid ({len(pipe.steps)} steps)")


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_param_option
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True)
@click.pass_obj
def graph(pm: Any, file: str, params: Sequence[str], fmt: str) -> None:
    """Print the DAG of each pipeline in FILE (text levels, Mermaid or dot)."""
    pipelines, _ = _load(pm, file, params)
    click.echo("\n\n".join(pipe.visualize(fmt) for pipe in pipelines.values()))

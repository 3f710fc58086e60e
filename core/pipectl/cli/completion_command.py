"""``pipectl completion bash|zsh|fish``: the shell completion script (click's).

The script calls ``pipectl`` back with ``_PIPECTL_COMPLETE`` set whenever the user presses Tab;
:func:`pipectl.cli.main` hands such a call to click, which answers from the commands and options
of the CLI as built then (plugins' commands and executors' options included).
"""

from __future__ import annotations

import click

COMPLETE_VAR = "_PIPECTL_COMPLETE"
PROG_NAME = "pipectl"
SHELLS = ("bash", "zsh", "fish")


@click.command(
    short_help="Print the shell completion script (bash, zsh, fish).",
    epilog="""\b
Install it (once):
  bash  add to ~/.bashrc:                  eval "$(pipectl completion bash)"
  zsh   add to ~/.zshrc (after compinit):  eval "$(pipectl completion zsh)"
  fish  run:  pipectl completion fish > ~/.config/fish/completions/pipectl.fish

\b
Or write the script to a file and source that file from the shell's start-up file (faster:
the script is not made again at each start):
  pipectl completion bash > ~/.pipectl-complete.bash
  echo '. ~/.pipectl-complete.bash' >> ~/.bashrc

Then open a new shell. Bash needs version 4.4 or later.""",
)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL (bash, zsh or fish): Tab completes pipectl's
    commands, their options and arguments, and the commands plugins add."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the choice only offers shells click knows
    root = click.get_current_context().find_root().command
    click.echo(cls(root, {}, PROG_NAME, COMPLETE_VAR).source(), nl=False)

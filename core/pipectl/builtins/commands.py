"""Built-in plugin ``core-commands``: the commands every pipectl has, added through the hook.

They are added as :class:`~pipectl.cli.LazyCommand` placeholders: ``pipectl --help`` lists them
from the help text below, and a command's module (with what it imports) is imported only when
that command is used. ``tests/test_cli_lazy_commands.py`` checks the text against each command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipectl.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click

#: (name, "module:command", its help as the list of commands shows it: ``help``, the first
#: paragraph of the command's help, or the command's own ``short_help``)
COMMANDS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "run",
        "pipectl.cli.pipeline_commands:run",
        {
            "help": (
                "Run the pipelines in FILE (YAML or JSON): the named ones and those they depend on, or "
                "all of them, each after the pipelines it depends on. Runs are recorded in the tracker "
                "(`pipectl runs list`), and a failed one can be resumed (--resume latest)."
            )
        },
    ),
    (
        "validate",
        "pipectl.cli.pipeline_commands:validate",
        {"help": ("Check the pipelines in FILE without running them.")},
    ),
    (
        "graph",
        "pipectl.cli.pipeline_commands:graph",
        {"short_help": ("Print the DAG of the pipelines in FILE (text, Mermaid, dot).")},
    ),
    (
        "schema",
        "pipectl.cli.schema_command:schema",
        {
            "help": (
                "Print the JSON Schema of pipeline files (point your editor's YAML support at it): the "
                "format, and the options of every installed extractor and output."
            )
        },
    ),
    (
        "plugins",
        "pipectl.cli.plugins_command:plugins",
        {
            "help": (
                "List installed plugins: name, distribution, version, status, hooks and components."
            )
        },
    ),
    (
        "import",
        "pipectl.cli.import_command:import_group",
        {"help": ("Turn a pipeline of another tool into a pipectl pipeline file.")},
    ),
    ("runs", "pipectl.cli.runs_command:runs", {"help": ("The runs the tracker recorded.")}),
    (
        "cache",
        "pipectl.cli.cache_command:cache",
        {
            "help": (
                "The step cache: outputs of cached steps (cache: on a step), kept beside the "
                "tracker."
            )
        },
    ),
    (
        "story",
        "pipectl.cli.story_command:story",
        {
            "help": (
                "Write the story of a run: pipeline and params (secrets redacted), outcome, the DAG as "
                "a picture, a timeline of the steps with their retries, a table of steps with records "
                "per output, and every error with its traceback. One file, nothing fetched from the "
                "network."
            )
        },
    ),
    ("new", "pipectl.cli.new_command:new", {"help": ("Start something new from a template.")}),
    (
        "init",
        "pipectl.cli.init_command:init",
        {
            "help": (
                "Write a small runnable project into DIRECTORY (default: here): the project file "
                "(pipectl.toml: tracker, param defaults, env file, plugins to disable, story, "
                "retention), a pipeline, its step module, sample data, a test of the pipeline and a "
                ".gitignore. Nothing existing is overwritten."
            )
        },
    ),
    (
        "completion",
        "pipectl.cli.completion_command:completion",
        {"short_help": ("Print the shell completion script (bash, zsh, fish).")},
    ),
)


@hookimpl(trylast=True)
def pipectl_register_commands(cli: click.Group) -> None:
    from pipectl.cli import LazyCommand

    for name, target, text in COMMANDS:
        cli.add_command(LazyCommand(name, target, **text))

"""Built-in plugin ``core-commands``: the commands every pipectl has, added through the hook."""

from __future__ import annotations

from pipectl.hookspecs import hookimpl


@hookimpl(trylast=True)
def pipectl_register_commands(cli):
    from pipectl.cli.completion_command import completion
    from pipectl.cli.import_command import import_group
    from pipectl.cli.init_command import init
    from pipectl.cli.new_command import new
    from pipectl.cli.pipeline_commands import graph, run, validate
    from pipectl.cli.plugins_command import plugins
    from pipectl.cli.runs_command import runs
    from pipectl.cli.schema_command import schema
    from pipectl.cli.story_command import story

    for command in (run, validate, graph, schema, plugins, import_group, runs, story, new,
                    init, completion):
        cli.add_command(command)

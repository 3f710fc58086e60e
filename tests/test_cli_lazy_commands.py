"""Start-up: the built-in commands are listed by ``pipectl --help`` without being imported
(:class:`pipectl.cli.LazyCommand`), and what ``--help`` imports stays small."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pipectl import hookimpl
from pipectl.builtins.commands import COMMANDS
from pipectl.cli import LazyCommand, PipectlGroup, build_cli


@pytest.mark.parametrize("name, target, text", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_each_placeholder_lists_as_its_command(name, target, text):
    placeholder = LazyCommand(name, target, **text)
    command = placeholder.load()
    assert isinstance(command, click.Command)
    assert command.name == name
    assert (placeholder.hidden, placeholder.deprecated) == (command.hidden, command.deprecated)
    for limit in range(5, 160):  # the list of commands shortens the help to the terminal width
        assert placeholder.get_short_help_str(limit) == command.get_short_help_str(limit), (
            f"the help of {name!r} changed: copy its first paragraph into COMMANDS in "
            "pipectl/builtins/commands.py"
        )


def test_help_lists_the_same_commands_as_the_commands_themselves(plugin_manager):
    lazy = build_cli(plugin_manager)
    loaded = build_cli(plugin_manager)
    for name in list(loaded.commands):
        loaded.get_command(None, name)  # type: ignore[arg-type]
    assert not any(isinstance(c, LazyCommand) for c in loaded.commands.values())
    for width in (40, 80, 200):
        env = {"COLUMNS": str(width)}
        first = CliRunner().invoke(lazy, ["--help"], env=env, terminal_width=width)
        second = CliRunner().invoke(loaded, ["--help"], env=env, terminal_width=width)
        assert first.exit_code == 0 and first.output == second.output
    assert any(isinstance(c, LazyCommand) for c in lazy.commands.values())  # --help loaded none


def test_using_a_command_replaces_its_placeholder(run_cli, plugin_manager):
    cli = build_cli(plugin_manager)
    assert isinstance(cli, PipectlGroup)
    assert isinstance(cli.commands["schema"], LazyCommand)
    result = CliRunner().invoke(cli, ["schema"], catch_exceptions=False)
    assert result.exit_code == 0 and json.loads(result.output)["title"]
    from pipectl.cli.schema_command import schema

    assert cli.commands["schema"] is schema
    assert isinstance(cli.commands["run"], LazyCommand)  # the others are still placeholders


def test_a_placeholder_in_a_plugin_group_runs_its_command(register_plugin, run_cli):
    class Plugin:
        @hookimpl
        def pipectl_register_commands(self, cli):
            @cli.group()
            def tools():
                """Tools of a plugin."""

            tools.add_command(
                LazyCommand(
                    "schema",
                    "pipectl.cli.schema_command:schema",
                    help="The schema, from a plugin's group.",
                )
            )

    register_plugin(Plugin(), name="tools-plugin")
    assert "The schema, from a plugin's group." in run_cli("tools", "--help").output
    result = run_cli("tools", "schema")
    assert result.exit_code == 0 and json.loads(result.output)["title"]
    assert "Print the JSON Schema" in run_cli("tools", "schema", "--help").output


def test_a_plugin_command_cannot_replace_a_lazy_builtin(register_plugin, run_cli, plugin_manager):
    class Plugin:
        @hookimpl
        def pipectl_register_commands(self, cli):
            @cli.command()
            def schema():
                """Not pipectl's schema."""

    register_plugin(Plugin(), name="schema-thief")
    result = run_cli("plugins")
    assert "command 'schema' is already provided by plugin 'core-commands'" in result.output
    assert "Print the JSON Schema" in run_cli("schema", "--help").output


#: modules ``pipectl --help`` has no use for (the built-in commands' modules, what they import,
#: the plugins' METADATA parser, the libraries of a run)
MODULES_HELP_DOES_NOT_NEED = (
    "pipectl.cli.pipeline_commands",
    "pipectl.cli.runs_command",
    "pipectl.cli.plugins_command",
    "pipectl.cli.progress",
    "pipectl.files",
    "pipectl.engine",
    "pipectl.model",
    "pipectl.tracking",
    "email.parser",
    "json",
    "difflib",
    "yaml",
    "attr",
    "attrs",
    "rich",
    "structlog",
    "jinja2",
    "importlib_metadata",
)


def test_help_imports_no_command_module_nor_heavy_library():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from pipectl.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {MODULES_HELP_DOES_NOT_NEED!r}\n"
        "             if m in sys.modules and m not in before), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout and "validate" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "[]"


def test_import_pipectl_imports_neither_pluggy_nor_typing():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import pipectl\n"
        "print([m for m in ('pluggy', 'typing', 'pipectl.hookspecs')\n"
        "       if m in sys.modules and m not in before])\n"
        "from pipectl import hookimpl\n"
        "import pipectl.hookspecs\n"
        "print(hookimpl is pipectl.hookspecs.hookimpl is pipectl.hookimpl)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "True"]

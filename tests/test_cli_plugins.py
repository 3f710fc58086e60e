"""The ``pipectl`` command line and plugins: commands added by plugins, ``-p no:NAME``, and the
ways to start it (console script entry point, ``python -m pipectl.cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import click
import pytest
from plugin_fixtures.fakedist import PIPECTL, fake_dists  # noqa: F401 - fixture

from pipectl import hookimpl

HELLO_COMMANDS = """
import click
from pipectl import hookimpl


@hookimpl
def pipectl_register_commands(cli):
    @cli.command()
    @click.option("--name", default="world", help="Who to greet.")
    @click.pass_obj
    def hello(pm, name):
        \"\"\"Greet someone (a command from the hello plugin).\"\"\"
        click.echo(f"hello {name} from {pm.records['hello'].distribution}")

    @cli.group()
    def hello_db():
        \"\"\"A command group from a plugin.\"\"\"

    @hello_db.command()
    def migrate():
        click.echo("migrated")
"""


@pytest.fixture
def hello_plugin(fake_dists):
    return fake_dists.add("hello", HELLO_COMMANDS, version="0.4.0")


def test_plugin_command_appears_in_help(fake_dists, hello_plugin):
    proc = fake_dists.run_cli("--help")

    assert proc.returncode == 0, proc.stderr
    assert "hello " in proc.stdout
    assert "Greet someone (a command from the hello plugin)." in proc.stdout
    assert "hello-db" in proc.stdout
    assert "plugins" in proc.stdout  # the built-in commands are still there


def test_plugin_command_runs(fake_dists, hello_plugin):
    proc = fake_dists.run_cli("hello", "--name", "Ada")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello Ada from pipectl-hello\n"


def test_plugin_command_group_runs(fake_dists, hello_plugin):
    proc = fake_dists.run_cli("hello-db", "migrate")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "migrated\n"


def test_plugin_command_help(fake_dists, hello_plugin):
    proc = fake_dists.run_cli("hello", "--help")

    assert proc.returncode == 0, proc.stderr
    assert "--name TEXT" in proc.stdout
    assert "Who to greet." in proc.stdout


def test_plugin_commands_are_listed_as_its_hook(fake_dists, hello_plugin):
    proc = fake_dists.run_cli("plugins", "--json")

    row = {r["name"]: r for r in json.loads(proc.stdout)}["hello"]
    assert row["status"] == "loaded"
    assert row["version"] == "0.4.0"
    assert row["hooks"] == ["pipectl_register_commands"]


def test_blocked_plugin_command_is_absent(fake_dists, hello_plugin):
    helped = fake_dists.run_cli("-p", "no:hello", "--help")
    ran = fake_dists.run_cli("-p", "no:hello", "hello")

    assert helped.returncode == 0, helped.stderr
    assert "hello" not in helped.stdout.replace("pipectl-", "")
    assert ran.returncode == 2
    assert "No such command 'hello'" in ran.stderr


@pytest.mark.parametrize(
    "args", [["--plugin", "no:hello"], ["--plugin=no:hello"]], ids=["separate", "equals"]
)
def test_long_plugin_option_disables_too(fake_dists, hello_plugin, args):
    """Regression: preparse_disabled() understood --plugin but the click group only had -p."""
    proc = fake_dists.run_cli(*args, "plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["status"] == "blocked"


def test_p_option_needs_no_prefix(fake_dists):
    proc = fake_dists.run_cli("-p", "hello", "plugins")

    assert proc.returncode == 2
    assert "use -p no:NAME to disable the plugin NAME" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_option_names_pipectl_and_each_plugin(fake_dists, hello_plugin):
    import platform

    import pipectl

    proc = fake_dists.run_cli("--version")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"pipectl, version {pipectl.__version__} (Python {platform.python_version()})"
    )
    assert "  pipectl-hello 0.4.0 (plugin hello)" in lines
    # the repository's plugins, disabled for this test, are listed as such
    assert all(line.endswith("[blocked]") for line in lines[1:] if "hello" not in line)
    assert fake_dists.run_cli("-V").stdout == proc.stdout


def test_console_script_entry_point_is_the_cli():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "pipectl"]
    assert script.value == "pipectl.cli:main"


def test_installed_console_script_runs(tmp_path):
    from pathlib import Path

    script = Path(sys.executable).parent / "pipectl"
    if not script.exists():  # pragma: no cover - pipectl not installed in this interpreter's env
        pytest.skip("no pipectl console script next to the interpreter")
    proc = subprocess.run(
        [str(script), "plugins", "--all"], capture_output=True, text=True, timeout=60
    )

    assert proc.returncode == 0, proc.stderr
    assert "local  (pipectl " in proc.stdout


def test_python_dash_m_pipectl_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "plugins", "--all"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert "local  (pipectl " in proc.stdout


def test_subprocess_helper_runs_the_cli_entry_point():
    proc = subprocess.run([*PIPECTL, "--help"], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: pipectl")


# ---------------------------------------------------------------------------------------------
# in process, with the run_cli fixture
# ---------------------------------------------------------------------------------------------


def _commands_plugin(name: str, output: str) -> types.ModuleType:
    plugin = types.ModuleType(f"plugin_{name}")

    @hookimpl
    def pipectl_register_commands(cli):
        @cli.command(name=name)
        def command():
            click.echo(output)

    plugin.pipectl_register_commands = pipectl_register_commands
    return plugin


def test_hook_pipectl_register_commands(register_plugin, run_cli):
    record = register_plugin(_commands_plugin("report", "a report"), name="reporting")
    assert record.status == "loaded"

    helped = run_cli("--help")
    ran = run_cli("report")

    assert helped.exit_code == 0
    assert "report" in helped.output
    assert ran.exit_code == 0
    assert ran.output == "a report\n"


def test_register_commands_receives_the_root_group(register_plugin, run_cli):
    seen = []

    class Plugin:
        @hookimpl
        def pipectl_register_commands(self, cli):
            seen.append(cli)

    register_plugin(Plugin(), name="spy")

    run_cli("--help")

    assert len(seen) == 1
    assert isinstance(seen[0], click.Group)
    assert "plugins" in seen[0].commands  # built-in commands are added through the hook too


def test_commands_of_several_plugins_all_appear(register_plugin, run_cli):
    register_plugin(_commands_plugin("first", "1"), name="p1")
    register_plugin(_commands_plugin("second", "2"), name="p2")

    assert run_cli("first").output == "1\n"
    assert run_cli("second").output == "2\n"


def test_cli_is_built_fresh_each_time(register_plugin, run_cli, plugin_manager):
    from pipectl.cli import build_cli

    before = build_cli(plugin_manager)
    register_plugin(_commands_plugin("late", "late"), name="late")
    after = build_cli(plugin_manager)

    assert "late" not in before.commands
    assert "late" in after.commands
    assert run_cli("late").output == "late\n"


def test_run_cli_plugins_lists_registered_plugin(register_plugin, run_cli):
    register_plugin(_commands_plugin("report", "a report"), name="reporting")

    result = run_cli("plugins", "--json")

    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["reporting"]["hooks"] == ["pipectl_register_commands"]
    assert rows["reporting"]["status"] == "loaded"

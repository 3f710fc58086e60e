"""Conflicts between plugins, and names given the way people type them."""

from __future__ import annotations

import click

from pipectl import hookimpl
from pipectl.plugins import get_plugin_manager


class _Commands:
    def __init__(self, name: str):
        self.name = name

    @hookimpl
    def pipectl_register_commands(self, cli):
        @cli.command(self.name)
        def command():
            click.echo(f"from {type(self).__name__}")


def test_a_command_name_taken_by_another_plugin_fails_the_later_plugin(
    plugin_manager, register_plugin, run_cli
):
    first = register_plugin(_Commands("hello"), "first")
    assert first.status == "loaded"
    register_plugin(_Commands("hello"), "second")
    register_plugin(_Commands("plugins"), "shadow")

    result = run_cli("--help")
    assert result.exit_code == 0
    assert "hello" in result.output and "plugins" in result.output
    records = plugin_manager.records
    failed = {
        name: records[name]
        for name in ("first", "second", "shadow")
        if records[name].status == "failed"
    }
    # whichever registered its command later is the one reported, naming the owner
    assert len(failed) == 2
    assert "shadow" in failed
    assert (
        "command 'plugins' is already provided by plugin 'core-commands'" in failed["shadow"].error
    )
    assert run_cli("plugins").exit_code == 0  # the built-in command still works


def test_blocking_matches_distribution_names_as_pip_does(tmp_path, monkeypatch):
    (tmp_path / "pipectl_normal_mod.py").write_text("raise RuntimeError('must not be imported')\n")
    info = tmp_path / "pipectl_Normal_Name-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pipectl_Normal.Name\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[pipectl]\nNormal_Name = pipectl_normal_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    for spelling in ("pipectl-normal-name", "PIPECTL_NORMAL_NAME", "normal-name", "Normal.Name"):
        pm = get_plugin_manager(disabled=[spelling])
        assert pm.records["Normal_Name"].status == "blocked", spelling


def test_unknown_hook_filter_is_a_usage_error_with_a_hint(run_cli):
    result = run_cli("plugins", "--hook", "pipectl_step_strat")
    assert result.exit_code == 2
    assert "is not a pipectl hook" in result.output
    assert "pipectl_step_start" in result.output


def test_register_called_after_the_hook_returned_is_an_error(plugin_manager, register_plugin):
    kept = []

    class Late:
        @hookimpl
        def pipectl_register_outputs(self, register):
            kept.append(register)

    assert register_plugin(Late(), "late").status == "loaded"
    import pytest

    from pipectl.errors import PluginError

    with pytest.raises(PluginError, match="after its registration hook returned"):
        kept[0]("too-late", lambda **o: None)
    assert "too-late" not in plugin_manager.registries.outputs

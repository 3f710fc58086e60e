"""Start-up hooks: ``pipectl_addoption`` adds options to ``pipectl run``, ``pipectl_configure``
runs once before a manager's first run (with those options' values), ``pipectl_unconfigure``
once when it is done; a plugin that fails in them is left out, never the run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from pipectl import Pipeline, hookimpl
from pipectl.config import unconfigure


class Exporter:
    """A plugin that sets itself up like a trace exporter would."""

    def __init__(self):
        self.calls = []
        self.config = None

    @hookimpl
    def pipectl_addoption(self, parser):
        parser.add_option("--export-to", metavar="URL", help="Where to export the events.")
        parser.add_option("--export-verbose", type=bool, help="Export everything.")

    @hookimpl
    def pipectl_configure(self, config):
        self.config = config
        self.calls.append(
            (
                "configure",
                config.invocation,
                config.getoption("export_to"),
                config.getoption("export_verbose", False),
            )
        )
        config.add_cleanup(lambda: self.calls.append(("cleanup", 1)))
        config.add_cleanup(lambda: self.calls.append(("cleanup", 2)))

    @hookimpl
    def pipectl_run_start(self, run):
        self.calls.append(("run_start", run.pipeline_id))

    @hookimpl
    def pipectl_unconfigure(self, config):
        assert config is self.config
        self.calls.append(("unconfigure",))


class BrokenSetup:
    def __init__(self):
        self.runs = 0

    @hookimpl
    def pipectl_configure(self, config):
        raise ConnectionError("no collector at 127.0.0.1:1")

    @hookimpl
    def pipectl_run_start(self, run):
        self.runs += 1


def _pipe(pm, name="p"):
    pipe = Pipeline(name, plugin_manager=pm)
    pipe.add_step("a", lambda: 1)
    return pipe


def test_hook_pipectl_configure(plugin_manager, register_plugin):
    """Once before the manager's first run; unconfigure, then the cleanups last first."""
    exporter = Exporter()
    register_plugin(exporter, "exporter")
    assert exporter.calls == []  # registering configures nothing
    assert _pipe(plugin_manager).run_sync(tracker="none").status.value == "success"
    assert _pipe(plugin_manager, "q").run_sync(tracker="none").status.value == "success"
    assert exporter.calls == [
        ("configure", "python", None, False),
        ("run_start", "p"),
        ("run_start", "q"),
    ]
    assert exporter.config.pluginmanager is plugin_manager
    unconfigure(plugin_manager)
    unconfigure(plugin_manager)  # twice is once
    assert exporter.calls[3:] == [("unconfigure",), ("cleanup", 2), ("cleanup", 1)]
    # a run after that configures the manager again
    _pipe(plugin_manager, "r").run_sync(tracker="none")
    assert exporter.calls[6:] == [("configure", "python", None, False), ("run_start", "r")]
    unconfigure(plugin_manager)


def test_a_plugin_failing_to_configure_is_left_out_and_the_others_run(
    plugin_manager, register_plugin, capsys
):
    broken, exporter = BrokenSetup(), Exporter()
    register_plugin(broken, "broken-setup")
    register_plugin(exporter, "exporter")
    run = _pipe(plugin_manager).run_sync(tracker="none")
    assert run.status.value == "success"
    assert broken.runs == 0  # it sees no run
    assert ("run_start", "p") in exporter.calls
    record = plugin_manager.records["broken-setup"]
    assert record.status == "failed"
    assert "ConnectionError: no collector at 127.0.0.1:1" in record.error
    assert plugin_manager.get_plugin("broken-setup") is None
    unconfigure(plugin_manager)


def test_monitoring_sees_configure_and_unconfigure(plugin_manager, register_plugin):
    register_plugin(Exporter(), "exporter")
    seen = []
    undo = plugin_manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append(name), lambda *args: None
    )
    try:
        _pipe(plugin_manager).run_sync(tracker="none")
        unconfigure(plugin_manager)
    finally:
        undo()
    assert seen[0] == "pipectl_configure"
    assert seen[-1] == "pipectl_unconfigure"
    assert "pipectl_run_start" in seen


def test_hook_pipectl_addoption(run_cli, register_plugin, tmp_path, monkeypatch):
    """The options a plugin adds are in `pipectl run --help` and reach its configure."""
    exporter = Exporter()
    register_plugin(exporter, "exporter")
    (tmp_path / "steps_cfg.py").write_text("def one():\n    return 1\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        "name: p\nsteps:\n  - name: a\n    run: steps_cfg:one\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    help_text = " ".join(run_cli("run", "--help").output.split())
    assert "--export-to URL Where to export the events." in help_text
    assert "--export-verbose Export everything." in help_text
    result = run_cli(
        "run",
        "p.yaml",
        "--export-to",
        "http://127.0.0.1:4318",
        "--export-verbose",
        "--tracker",
        "none",
    )
    assert result.exit_code == 0, result.output
    assert exporter.calls == [
        ("configure", "cli", "http://127.0.0.1:4318", True),
        ("run_start", "p"),
        ("unconfigure",),
        ("cleanup", 2),
        ("cleanup", 1),
    ]
    assert exporter.config.project_root == tmp_path
    exporter.calls.clear()
    result = run_cli("run", "p.yaml", "--tracker", "none")  # a second command, a new config
    assert result.exit_code == 0, result.output
    assert exporter.calls[0] == ("configure", "cli", None, False)


def test_a_plugin_adding_a_bad_option_is_left_out(run_cli, register_plugin, plugin_manager):
    class Clashing:
        @hookimpl
        def pipectl_addoption(self, parser):
            parser.add_option("--mine", help="Fine on its own.")
            parser.add_option("--tracker", help="Taken by pipectl run.")

    register_plugin(Clashing(), "clashing")
    register_plugin(Exporter(), "exporter")
    help_text = run_cli("run", "--help").output
    assert "--export-to" in help_text
    assert "--mine" not in help_text  # none of the failed plugin's options
    record = plugin_manager.records["clashing"]
    assert record.status == "failed"
    assert "flag '--tracker' is already taken" in record.error


def test_an_option_parser_refuses_what_click_could_not_take():
    import pytest

    from pipectl.config import OptionParser

    parser = OptionParser({"--tracker"})
    for flag, kwargs, message in [
        ("-x", {}, "expected a long option"),
        ("--tracker", {}, "already taken"),
        ("--n", {"type": list}, "expected str, int, float or bool"),
        ("--k", {"executor": "dask"}, "executor= and key= go together"),
    ]:
        with pytest.raises(ValueError, match=message):
            parser.add_option(flag, **kwargs)
    parser.add_option("--ok-one", type=int)
    assert [(o.flag, o.dest, o.type) for o in parser.options] == [("--ok-one", "ok_one", int)]


def test_hook_pipectl_unconfigure(tmp_path):
    """The Python API has no end of command: the process's exit unconfigures."""
    out = tmp_path / "events.txt"
    script = textwrap.dedent(f"""
        from pipectl import Pipeline, hookimpl
        from pipectl.plugins import get_plugin_manager

        class Plugin:
            @hookimpl
            def pipectl_configure(self, config):
                config.add_cleanup(lambda: open({str(out)!r}, "a").write("cleanup\\n"))
                open({str(out)!r}, "a").write("configure\\n")

            @hookimpl
            def pipectl_unconfigure(self, config):
                open({str(out)!r}, "a").write("unconfigure\\n")

        pm = get_plugin_manager(autoload=False, entry_points=())
        pm.add_plugin(Plugin(), "p")
        pipe = Pipeline("p", plugin_manager=pm)
        pipe.add_step("a", lambda: 1)
        assert pipe.run_sync(tracker="none").status.value == "success"
        open({str(out)!r}, "a").write("ran\\n")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().split() == ["configure", "ran", "unconfigure", "cleanup"]

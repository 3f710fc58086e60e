"""Broken plugins are reported by name, distribution, version and error, and left out cleanly:
none of their hooks stay registered or get called, none of their components stay registered,
and the built-ins and every other plugin keep working.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from helpers import RaisingListener
from plugin_fixtures.fakedist import fake_dists  # noqa: F401 - fixture

from pipectl import Pipeline, RunStatus, StepStatus
from pipectl.errors import PluginError
from pipectl.plugins import get_plugin_manager
from pipectl.registry import KINDS

#: The good plugin every test installs next to the broken one; "good" sorts after "broken", so
#: the broken plugin is loaded first (case h for every kind).
GOOD = """
from pipectl import hookimpl

EVENTS = []


@hookimpl
def pipectl_register_step_types(register):
    register("good-type", lambda step: (lambda: "good output"))


@hookimpl
def pipectl_run_start(run):
    EVENTS.append("run_start")


@hookimpl
def pipectl_step_finish(run, step, result):
    EVENTS.append(("step_finish", step.name, result.status.value))
"""

#: Hooks a broken plugin implements besides its defect, to check none of them stays live.
PROBES = """

EVENTS = []


@hookimpl
def pipectl_run_start(run):
    EVENTS.append("run_start")


@hookimpl
def pipectl_step_finish(run, step, result):
    EVENTS.append(("step_finish", step.name))


@hookimpl
def pipectl_wrap_step(step, context):
    EVENTS.append(("wrap_step", step.name))


@hookimpl
def pipectl_register_outputs(register):
    register("broken-output", lambda **options: None)
"""

HEADER = "from pipectl import hookimpl\n"

BROKEN = {
    "import-error": (
        HEADER + "import pipectl_no_such_dependency_xyz\n" + PROBES,
        ["ModuleNotFoundError", "pipectl_no_such_dependency_xyz"],
    ),
    "syntax-error": (
        HEADER + PROBES + "\ndef broken(:\n    pass\n",
        ["SyntaxError"],
    ),
    "unknown-hook": (
        HEADER
        + PROBES
        + """

@hookimpl
def pipectl_step_strat(run, step, attempt):
    EVENTS.append("typo")
""",
        ["pipectl_step_strat", "not a pipectl hook"],
    ),
    "wrong-arguments": (
        HEADER
        + PROBES
        + """

@hookimpl
def pipectl_step_start(run, stepp):
    EVENTS.append("wrong")
""",
        ["pipectl_step_start", "stepp"],
    ),
    "registration-raises": (
        HEADER
        + PROBES
        + """

@hookimpl
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
    raise RuntimeError("cannot reach the license server")
""",
        ["RuntimeError", "cannot reach the license server"],
    ),
    "registration-wrapper": (
        HEADER
        + PROBES
        + """

@hookimpl(wrapper=True)
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
    return (yield)
""",
        ["pipectl_register_step_types", "wrapper"],
    ),
    "registration-old-style-hookwrapper": (
        HEADER
        + PROBES
        + """

@hookimpl(hookwrapper=True)
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
    yield
""",
        ["pipectl_register_step_types", "wrapper"],
    ),
    "registration-wrapper-not-a-generator": (
        HEADER
        + PROBES
        + """

@hookimpl(wrapper=True)
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
""",
        ["pipectl_register_step_types"],
    ),
    "duplicate-component": (
        HEADER
        + PROBES
        + """

@hookimpl
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
    register("shared-type", lambda step: (lambda: "from broken"))
""",
        ["'shared-type'", "'alpha'", "'broken'"],
    ),
    "register-bad-arguments": (
        HEADER
        + PROBES
        + """

@hookimpl
def pipectl_register_step_types(register):
    register("broken-type", lambda step: (lambda: None))
    register("not-callable", "this is not a factory")
""",
        ["not-callable", "callable"],
    ),
}

#: Installed in every test: "alpha" sorts first and owns "shared-type".
ALPHA = """
from pipectl import hookimpl


@hookimpl
def pipectl_register_step_types(register):
    register("shared-type", lambda step: (lambda: "from alpha"))
"""


@pytest.fixture
def log_stream():
    """pipectl's log lines (warnings and up) for this test."""
    from pipectl import log

    stream = io.StringIO()
    log.configure_logging("warning", stream=stream)
    yield stream
    log.reset_logging()


@pytest.fixture(params=sorted(BROKEN))
def installed(request, fake_dists):
    source, expected = BROKEN[request.param]
    alpha = fake_dists.add("alpha", ALPHA, version="2.0.0")
    broken = fake_dists.add("broken", source, version="0.3.1")
    good = fake_dists.add("good", GOOD, version="1.0.0")
    return {
        "kind": request.param,
        "expected": expected,
        "alpha": alpha,
        "broken": broken,
        "good": good,
    }


def _run_pipeline(pm):
    pipe = Pipeline("after-broken", plugin_manager=pm)

    @pipe.step("one")
    async def one():
        return 1

    pipe.add_step("good", step_type="good-type", depends_on=["one"])
    pipe.add_step("shared", step_type="shared-type")
    return pipe.run_sync()


def test_broken_plugin_is_reported_with_name_distribution_version_and_error(installed):
    pm = get_plugin_manager()

    record = pm.records["broken"]
    assert record.status == "failed"
    assert record.name == "broken"
    assert record.distribution == "pipectl-broken"
    assert record.version == "0.3.1"
    for text in installed["expected"]:
        assert text in record.error, record.error
    assert record.module == installed["broken"].module

    row = next(r for r in pm.describe() if r["name"] == "broken")
    assert row["status"] == "failed"
    assert row["error"] == record.error
    assert row["hooks"] == []
    assert row["components"] == {}


def test_broken_plugin_is_left_out_cleanly(installed):
    pm = get_plugin_manager()

    assert pm.get_plugin("broken") is None
    assert pm.registries.provided_by("broken") == {}
    for kind in KINDS:
        assert all(c.plugin != "broken" for c in pm.registries.of(kind))
    assert "broken-type" not in pm.registries.step_types
    assert "broken-output" not in pm.registries.outputs
    for caller in pm.hook.__dict__.values():
        assert all(impl.plugin_name != "broken" for impl in caller.get_hookimpls())
    pm.check_pending()  # no implementation of an unknown hook is left behind


def test_other_plugins_and_builtins_still_work(installed):
    pm = get_plugin_manager()

    assert pm.records["good"].status == "loaded"
    assert pm.records["alpha"].status == "loaded"
    assert all(pm.records[n].status == "loaded" for n in ("local", "python", "core-commands"))
    run = _run_pipeline(pm)

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["good"].output == "good output"
    assert run.steps["shared"].output == "from alpha"  # the first plugin keeps the name
    good_events = installed["good"].loaded_module().EVENTS
    assert good_events[0] == "run_start"
    assert ("step_finish", "good", "success") in good_events
    broken = sys.modules.get(installed["broken"].module)
    if installed["kind"] in ("import-error", "syntax-error"):
        assert broken is None  # a failed import leaves nothing behind
    else:  # it imported, then failed validation or registration
        assert broken.EVENTS == []  # none of its hooks was called during the run


def test_broken_plugin_warning_names_plugin_distribution_and_version(installed, log_stream):
    get_plugin_manager()

    lines = [line for line in log_stream.getvalue().splitlines() if "plugin_failed" in line]
    assert len(lines) == 1, log_stream.getvalue()
    assert "plugin=broken" in lines[0]
    assert "dist=pipectl-broken" in lines[0]
    assert "version=0.3.1" in lines[0]


def test_strict_mode_raises_plugin_error(installed, monkeypatch):
    monkeypatch.setenv("PIPECTL_STRICT_PLUGINS", "1")

    with pytest.raises(PluginError) as info:
        get_plugin_manager()

    message = str(info.value)
    assert "'broken'" in message
    assert "pipectl-broken" in message and "0.3.1" in message


def test_duplicate_component_error_names_both_plugins_and_first_keeps_it(fake_dists):
    fake_dists.add("alpha", ALPHA)
    fake_dists.add("broken", BROKEN["duplicate-component"][0])

    pm = get_plugin_manager()

    error = pm.records["broken"].error
    assert "DuplicateComponentError" in error
    assert "plugin 'alpha'" in error and "plugin 'broken'" in error
    assert pm.registries.step_types.get("shared-type").plugin == "alpha"
    assert pm.registries.provided_by("alpha") == {"step_types": ["shared-type"]}
    assert pm.registries.provided_by("broken") == {}


def test_duplicate_component_with_a_builtin_name(fake_dists):
    fake_dists.add(
        "shadow",
        """
        from pipectl import hookimpl

        @hookimpl
        def pipectl_register_executors(register):
            register("local", lambda **options: None)
        """,
    )

    pm = get_plugin_manager()

    assert pm.records["shadow"].status == "failed"
    assert "plugin 'local'" in pm.records["shadow"].error
    assert pm.registries.executors.get("local").plugin == "local"
    pipe = Pipeline("still-local", plugin_manager=pm)
    pipe.add_step("one", lambda: 1)
    assert pipe.run_sync().ok


def test_unknown_hook_error_suggests_the_right_hook(fake_dists):
    """Regression: the hint used to suggest the typo itself (pluggy had already created an
    unspecced ``pm.hook.pipectl_step_strat`` when the known names were read from ``pm.hook``)."""
    fake_dists.add("typo", BROKEN["unknown-hook"][0])

    pm = get_plugin_manager()

    assert "did you mean 'pipectl_step_start'?" in pm.records["typo"].error


def test_all_kinds_of_broken_plugins_at_once(fake_dists):
    """(h) every kind installed together, each sorting before the good plugin."""
    fake_dists.add("alpha", ALPHA)
    for kind, (source, _expected) in BROKEN.items():
        fake_dists.add(f"broken-{kind}", source)
    good = fake_dists.add("zz-good", GOOD)

    pm = get_plugin_manager()

    for kind, (_source, expected) in BROKEN.items():
        record = pm.records[f"broken-{kind}"]
        assert record.status == "failed", kind
        assert record.distribution == f"pipectl-broken-{kind}"
        for text in expected:
            if text != "'broken'":
                assert text in record.error, (kind, record.error)
        assert pm.get_plugin(record.name) is None
        assert pm.registries.provided_by(record.name) == {}
    assert pm.records["zz-good"].status == "loaded"
    run = _run_pipeline(pm)
    assert run.ok, run.errors
    assert good.loaded_module().EVENTS[0] == "run_start"


def test_broken_plugin_sorting_first_does_not_hide_the_next_one(fake_dists):
    """(h) the loader goes on after a failure: a fine plugin right after it is loaded."""
    fake_dists.add("aaa", "raise ImportError('aaa is broken')\n")
    fine = fake_dists.add("aab", GOOD)

    pm = get_plugin_manager()

    assert pm.records["aaa"].status == "failed"
    assert "ImportError: aaa is broken" == pm.records["aaa"].error
    assert pm.records["aab"].status == "loaded"
    assert pm.get_plugin("aab") is fine.loaded_module()
    assert "good-type" in pm.registries.step_types


def test_two_distributions_with_the_same_entry_point_name(fake_dists):
    first = fake_dists.add("same", GOOD, distribution="pipectl-same-a", version="1.0")
    second = fake_dists.add(
        "same",
        """
        from pipectl import hookimpl

        @hookimpl
        def pipectl_register_outputs(register):
            register("second-output", lambda **options: None)
        """,
        distribution="pipectl-same-b",
        version="2.0",
    )

    pm = get_plugin_manager()

    loaded = pm.records["same"]
    assert loaded.status == "loaded"
    failed = [r for r in pm.records.values() if r.name == "same" and r.status == "failed"]
    assert len(failed) == 1
    assert "already taken" in failed[0].error
    taken, other = (first, second) if loaded.distribution == "pipectl-same-a" else (second, first)
    assert other.module not in sys.modules  # never imported
    assert taken.module in sys.modules


def test_failed_duplicate_entry_point_shows_no_hooks_or_components(fake_dists):
    """Regression: describe() looked hooks and components up by name, so the failed record
    showed those of the plugin that took the name."""
    fake_dists.add("same", GOOD, distribution="pipectl-same-a", version="1.0")
    fake_dists.add("same", GOOD, distribution="pipectl-same-b", version="2.0")

    pm = get_plugin_manager()

    failed = [row for row in pm.describe() if row["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["hooks"] == []
    assert failed[0]["components"] == {}


def test_add_plugin_under_a_taken_name_leaves_the_owner_alone(plugin_manager):
    """Regression: the failed add used to drop the owner's components and overwrite its record."""
    import types

    intruder = types.ModuleType("intruder")
    record = plugin_manager.add_plugin(intruder, "local")

    assert record.status == "failed"
    assert "already taken" in record.error
    assert plugin_manager.get_plugin("local") is not intruder
    assert plugin_manager.registries.executors.get("local").plugin == "local"
    assert plugin_manager.records["local"].status == "loaded"
    assert plugin_manager.records["local"].builtin
    pipe = Pipeline("still-local", plugin_manager=plugin_manager)
    pipe.add_step("one", lambda: 1)
    assert pipe.run_sync().ok


# ---------------------------------------------------------------------------------------------
# the CLI with broken plugins installed (subprocess)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_plugins_shows_the_broken_plugin_as_failed(installed, fake_dists):
    proc = fake_dists.run_cli("plugins")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    broken_line = next(line for line in lines if line.startswith("broken "))
    assert "(pipectl-broken 0.3.1)  failed: " in broken_line
    for text in installed["expected"]:
        if installed["kind"] != "syntax-error":  # its message may run over several lines
            assert text in proc.stdout
    assert any(line.startswith("good  (pipectl-good 1.0.0)  loaded") for line in lines)
    assert "Traceback" not in proc.stderr
    assert "plugin_failed" in proc.stderr


@pytest.mark.slow
def test_cli_plugins_json_with_a_broken_plugin(installed, fake_dists):
    proc = fake_dists.run_cli("plugins", "--json", "--all")

    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["distribution"] == "pipectl-broken"
    assert rows["broken"]["version"] == "0.3.1"
    assert rows["broken"]["hooks"] == [] and rows["broken"]["components"] == {}
    assert rows["good"]["status"] == "loaded"
    assert rows["good"]["components"] == {"step_types": ["good-type"]}
    assert rows["local"]["status"] == "loaded"


def test_cli_p_no_turns_the_broken_plugin_off(fake_dists):
    broken = fake_dists.add("broken", BROKEN["import-error"][0])

    proc = fake_dists.run_cli("-p", "no:broken", "plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["status"] == "blocked"
    assert "plugin_failed" not in proc.stderr
    assert broken.module not in sys.modules


def test_cli_strict_mode_exits_2_with_message(fake_dists):
    fake_dists.add("broken", BROKEN["import-error"][0])

    proc = fake_dists.run_cli("plugins", PIPECTL_STRICT_PLUGINS="1")

    assert proc.returncode == 2
    assert "pipectl: error: plugin 'broken'" in proc.stderr
    assert "pipectl_no_such_dependency_xyz" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# lifecycle listeners that raise
# ---------------------------------------------------------------------------------------------


def test_a_raising_listener_does_not_stop_the_run_and_others_are_called(
    register_plugin, plugin_manager, hook_recorder, log_stream
):
    raiser = RaisingListener()
    # registered after the recorder, so pluggy's order calls it first
    assert register_plugin(raiser, "raiser").status == "loaded"
    pipe = Pipeline("listeners", plugin_manager=plugin_manager)
    attempts = []

    @pipe.step("flaky", retries=1, retry_delay=0.0)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("first attempt fails")
        return "ok"

    @pipe.step("after", depends_on=["flaky"])
    def after(flaky):
        return flaky + "!"

    run = pipe.run_sync()

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["after"].output == "ok!"
    # run_start, run_planned, 3 step starts, 1 retry, 2 finishes, run_finish
    assert raiser.calls == 1 + 1 + 3 + 1 + 2 + 1
    assert hook_recorder.names() == [
        "pipectl_run_start",
        "pipectl_run_planned",
        "pipectl_step_start",
        "pipectl_step_retry",
        "pipectl_step_start",
        "pipectl_step_finish",
        "pipectl_step_start",
        "pipectl_step_finish",
        "pipectl_run_finish",
    ]
    failures = [line for line in log_stream.getvalue().splitlines() if "plugin_hook_failed" in line]
    assert len(failures) == raiser.calls
    assert any("hook=pipectl_run_start" in line and "plugin=raiser" in line for line in failures)
    assert any("listener bug in step_finish" in line for line in failures)


def test_a_raising_installed_listener_does_not_stop_the_run(fake_dists):
    fake_dists.add(
        "raiser",
        """
        from pipectl import hookimpl

        @hookimpl
        def pipectl_step_finish(run, step, result):
            raise RuntimeError("listener bug")
        """,
    )
    good = fake_dists.add("zz-good", GOOD)
    pm = get_plugin_manager()
    pipe = Pipeline("listeners", plugin_manager=pm)
    pipe.add_step("good", step_type="good-type")

    run = pipe.run_sync()

    assert run.ok
    assert run.steps["good"].status is StepStatus.SUCCESS
    assert ("step_finish", "good", "success") in good.loaded_module().EVENTS


# ---------------------------------------------------------------------------------------------
# a plugin whose pipectl_register_commands raises
# ---------------------------------------------------------------------------------------------

BROKEN_COMMANDS = """
import click
from pipectl import hookimpl

EVENTS = []


@hookimpl
def pipectl_register_step_types(register):
    register("cmd-type", lambda step: (lambda: None))


@hookimpl
def pipectl_run_start(run):
    EVENTS.append("run_start")


@hookimpl
def pipectl_register_commands(cli):
    @cli.command()
    def halfway():
        click.echo("should not be here")

    raise RuntimeError("commands are broken")
"""

GOOD_COMMANDS = """
import click
from pipectl import hookimpl


@hookimpl
def pipectl_register_commands(cli):
    @cli.command()
    def greet():
        \"\"\"Say hello from a plugin.\"\"\"
        click.echo("hello from a plugin")
"""


@pytest.mark.slow
def test_cli_works_when_a_plugins_commands_raise(fake_dists):
    fake_dists.add("cmds", BROKEN_COMMANDS, version="0.9.0")
    fake_dists.add("greeter", GOOD_COMMANDS)

    listing = fake_dists.run_cli("plugins", "--json", "--all")
    helped = fake_dists.run_cli("--help")
    greeted = fake_dists.run_cli("greet")

    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["cmds"]["status"] == "failed"
    assert rows["cmds"]["distribution"] == "pipectl-cmds"
    assert rows["cmds"]["version"] == "0.9.0"
    assert "RuntimeError: commands are broken" in rows["cmds"]["error"]
    assert rows["cmds"]["hooks"] == [] and rows["cmds"]["components"] == {}
    assert rows["greeter"]["status"] == "loaded"
    assert helped.returncode == 0, helped.stderr
    assert "halfway" not in helped.stdout  # the half-added command is taken back
    assert "greet" in helped.stdout and "plugins" in helped.stdout
    assert greeted.returncode == 0 and greeted.stdout == "hello from a plugin\n"


def test_plugin_whose_commands_raise_is_left_out_in_process(fake_dists):
    dist = fake_dists.add("cmds", BROKEN_COMMANDS)
    pm = get_plugin_manager()
    assert pm.records["cmds"].status == "loaded"  # until the CLI is built

    from click.testing import CliRunner

    from pipectl.cli import build_cli

    cli = build_cli(pm)
    result = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False)

    assert result.exit_code == 0
    assert "cmds  (pipectl-cmds 1.2.0)  failed: RuntimeError: commands are broken" in result.output
    assert "halfway" not in cli.commands
    assert pm.get_plugin("cmds") is None
    assert "cmd-type" not in pm.registries.step_types
    pipe = Pipeline("after-cli", plugin_manager=pm)
    pipe.add_step("one", lambda: 1)
    assert pipe.run_sync().ok
    assert dist.loaded_module().EVENTS == []


@pytest.mark.slow
def test_cli_strict_mode_with_broken_commands_exits_2_without_traceback(fake_dists):
    fake_dists.add("cmds", BROKEN_COMMANDS)

    proc = fake_dists.run_cli("plugins", PIPECTL_STRICT_PLUGINS="1")

    assert proc.returncode == 2
    assert "pipectl: error: plugin 'cmds'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugin_exiting_at_import_is_reported_as_failed(fake_dists):
    """Regression: sys.exit() in a plugin module (SystemExit, a BaseException) took the whole
    CLI down, `pipectl plugins` included."""
    fake_dists.add("exits", "import sys\nsys.exit('bye from a plugin import')\n")
    fake_dists.add("good", GOOD)

    proc = fake_dists.run_cli("plugins")

    assert proc.returncode == 0, proc.stderr
    assert "exits  (pipectl-exits 1.2.0)  failed: SystemExit: bye from a plugin import" in (
        proc.stdout
    )
    assert "good  (pipectl-good 1.2.0)  loaded" in proc.stdout


def test_raising_listener_does_not_stop_the_run_after_stderr_was_replaced(
    register_plugin, plugin_manager
):
    import structlog

    from pipectl import log

    if structlog.is_configured():  # pragma: no cover - pipectl would log through that setup
        pytest.skip("structlog is configured by the application")
    register_plugin(RaisingListener(), name="raiser")
    log.reset_logging()
    original, replaced = sys.stderr, io.StringIO()
    sys.stderr = replaced
    try:
        log.get_logger()  # the first use: the default logger is built now
    finally:
        sys.stderr = original
    replaced.close()
    try:
        pipe = Pipeline("closed-stderr", plugin_manager=plugin_manager)
        pipe.add_step("one", lambda: 1)

        run = pipe.run_sync()

        assert run.ok
    finally:
        log.reset_logging()

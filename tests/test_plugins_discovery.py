"""Discovery of installed plugins: entry points of group ``pipectl`` in real ``*.dist-info``
directories, what the loader records, lazy heavy imports, and blocking before import.

Every plugin here is a real module on disk with a real (fake-installed) distribution, found by
``importlib.metadata`` the way a ``pip install``-ed one is.
"""

from __future__ import annotations

import json
import sys

import pytest
from plugin_fixtures.fakedist import IMPORT_MARKER, fake_dists  # noqa: F401 - fixture

from pipectl import Pipeline, RunStatus, StepSpec
from pipectl.errors import PluginError
from pipectl.plugins import get_plugin_manager

BUILTINS = {"local", "python", "data", "files", "sqlite", "core-commands"}
BUILTIN_EXTRACTORS = {"csv", "jsonl", "python"}

MYPLUGIN = """
from pipectl import hookimpl

EVENTS = []


def _make_step(step):
    greeting = step.options.get("greeting", "hello")

    def run(params):
        return f"{greeting}, {params['who']}"

    return run


def _make_executor(**options):
    from pipectl.components.local_executor import LocalExecutor

    class CountingExecutor(LocalExecutor):
        async def execute(self, invocation):
            EVENTS.append(("execute", invocation.step.name, invocation.attempt))
            return await super().execute(invocation)

    return CountingExecutor(**options)


@hookimpl
def pipectl_register_step_types(register):
    register("myplugin-type", _make_step)


@hookimpl
def pipectl_register_executors(register):
    register("myplugin-exec", _make_executor)


@hookimpl
def pipectl_run_start(run):
    EVENTS.append(("run_start", run.pipeline_id, run.status.value))


@hookimpl
def pipectl_step_start(run, step, attempt):
    EVENTS.append(("step_start", step.name, attempt))


@hookimpl
def pipectl_step_finish(run, step, result):
    EVENTS.append(("step_finish", step.name, result.status.value))


@hookimpl
def pipectl_run_finish(run):
    EVENTS.append(("run_finish", run.pipeline_id, run.status.value))
"""

MYPLUGIN_HOOKS = [
    "pipectl_register_executors",
    "pipectl_register_step_types",
    "pipectl_run_finish",
    "pipectl_run_start",
    "pipectl_step_finish",
    "pipectl_step_start",
]

#: A plugin that proves it was never imported: importing it leaves a marker file and fails.
MUST_NOT_IMPORT = (
    IMPORT_MARKER
    + """
raise RuntimeError("this plugin is blocked and must never be imported")
"""
)


@pytest.fixture
def myplugin(fake_dists):
    return fake_dists.add("myplugin", MYPLUGIN, version="1.2.0")


def _rows_by_name(output: str) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(output)}


def _greeting_pipeline(pm, **options) -> Pipeline:
    pipe = Pipeline("greet", plugin_manager=pm, **options)
    pipe.add_step("hello", step_type="myplugin-type", options={"greeting": "bonjour"})

    @pipe.step("shout", depends_on=["hello"])
    def shout(hello):
        return hello.upper()

    return pipe


# ---------------------------------------------------------------------------------------------
# discovery and records
# ---------------------------------------------------------------------------------------------


def test_installed_plugin_is_discovered_and_recorded(myplugin):
    pm = get_plugin_manager()

    record = pm.records["myplugin"]
    assert record.name == "myplugin"
    assert record.distribution == "pipectl-myplugin"
    assert record.version == "1.2.0"
    assert record.status == "loaded"
    assert record.error is None
    assert record.builtin is False
    assert record.module == myplugin.module
    assert record.source == str(myplugin.root / f"{myplugin.module}.py")
    assert pm.get_plugin("myplugin") is myplugin.loaded_module()


def test_builtins_are_recorded_as_builtin_plugins_of_pipectl(myplugin):
    import pipectl

    pm = get_plugin_manager()

    for name in BUILTINS:
        record = pm.records[name]
        assert record.builtin is True
        assert record.status == "loaded"
        assert record.distribution == "pipectl"
        assert record.version == pipectl.__version__
        assert pm.get_plugin(name) is not None


def test_plugin_components_are_registered_under_its_name(myplugin):
    pm = get_plugin_manager()

    assert "myplugin-type" in pm.registries.step_types
    assert "myplugin-exec" in pm.registries.executors
    assert pm.registries.step_types.get("myplugin-type").plugin == "myplugin"
    assert pm.registries.provided_by("myplugin") == {
        "executors": ["myplugin-exec"],
        "step_types": ["myplugin-type"],
    }
    # the built-ins stay attributed to themselves
    assert pm.registries.executors.get("local").plugin == "local"
    assert pm.registries.step_types.get("python").plugin == "python"


def test_plugin_step_type_and_executor_are_usable_by_name_in_a_pipeline(myplugin):
    pm = get_plugin_manager()
    pipe = _greeting_pipeline(pm, executor="myplugin-exec")

    run = pipe.run_sync(params={"who": "world"})

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["hello"].output == "bonjour, world"
    assert run.steps["shout"].output == "BONJOUR, WORLD"
    events = myplugin.loaded_module().EVENTS
    assert ("execute", "hello", 1) in events and ("execute", "shout", 1) in events


def test_plugin_lifecycle_hooks_are_called_during_a_run(myplugin):
    pm = get_plugin_manager()
    pipe = _greeting_pipeline(pm)

    run = pipe.run_sync(params={"who": "world"})

    assert run.ok
    events = myplugin.loaded_module().EVENTS
    assert events[0] == ("run_start", "greet", "running")
    assert events[-1] == ("run_finish", "greet", "success")
    assert events[1:-1] == [
        ("step_start", "hello", 1),
        ("step_finish", "hello", "success"),
        ("step_start", "shout", 1),
        ("step_finish", "shout", "success"),
    ]


def test_unknown_step_type_names_what_is_installed(myplugin):
    from pipectl.errors import PipelineValidationError

    pm = get_plugin_manager()
    pipe = Pipeline("typo", plugin_manager=pm)
    pipe.add_step("hello", step_type="myplugin-typ")

    with pytest.raises(PipelineValidationError) as info:
        pipe.run_sync()
    assert "myplugin-type" in str(info.value)  # the suggestion


def test_describe_lists_plugin_with_hooks_and_components(myplugin):
    pm = get_plugin_manager()

    rows = {row["name"]: row for row in pm.describe()}

    assert BUILTINS.isdisjoint(rows)
    row = rows["myplugin"]
    assert row["distribution"] == "pipectl-myplugin"
    assert row["version"] == "1.2.0"
    assert row["status"] == "loaded"
    assert row["error"] is None
    assert row["builtin"] is False
    assert row["hooks"] == MYPLUGIN_HOOKS
    assert row["components"] == {"executors": ["myplugin-exec"], "step_types": ["myplugin-type"]}

    with_builtins = {row["name"]: row for row in pm.describe(include_builtin=True)}
    assert BUILTINS | {"myplugin"} <= set(with_builtins)
    assert with_builtins["local"]["components"] == {"executors": ["local"]}
    assert with_builtins["python"]["components"] == {"step_types": ["pipeline", "python"]}
    assert with_builtins["core-commands"]["hooks"] == ["pipectl_register_commands"]


def test_two_plugins_of_two_distributions_are_both_loaded(fake_dists, myplugin):
    fake_dists.add(
        "other",
        """
        from pipectl import hookimpl

        @hookimpl
        def pipectl_register_outputs(register):
            register("other-out", lambda **options: options)
        """,
        version="0.3.0",
    )
    pm = get_plugin_manager()

    assert pm.records["other"].status == "loaded"
    assert pm.records["other"].version == "0.3.0"
    assert pm.records["myplugin"].status == "loaded"
    assert pm.registries.outputs.create("other-out", path="x") == {"path": "x"}


def test_entry_point_naming_an_object_in_a_module(fake_dists):
    module = fake_dists.unique("objplugin")
    fake_dists.add(
        "objplugin",
        """
        from pipectl import hookimpl

        class Plugin:
            @hookimpl
            def pipectl_register_outputs(self, register):
                register("obj-out", lambda **options: "obj")

        plugin = Plugin()
        """,
        module=module,
        value=f"{module}:plugin",
    )

    pm = get_plugin_manager()

    record = pm.records["objplugin"]
    assert record.status == "loaded", record.error
    assert record.module == f"{module}:plugin"
    assert pm.get_plugin("objplugin") is sys.modules[module].plugin
    assert pm.registries.outputs.create("obj-out") == "obj"
    assert pm.hooks_of("objplugin") == ["pipectl_register_outputs"]


def test_each_call_builds_a_fresh_manager(myplugin):
    first = get_plugin_manager()
    second = get_plugin_manager()

    assert first is not second
    assert first.registries is not second.registries
    first.remove_plugin("myplugin")
    assert "myplugin-type" in second.registries.step_types


# ---------------------------------------------------------------------------------------------
# the CLI listing, in a subprocess
# ---------------------------------------------------------------------------------------------


def test_cli_plugins_json_lists_installed_plugin_with_hooks_and_components(fake_dists, myplugin):
    proc = fake_dists.run_cli("plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    rows = _rows_by_name(proc.stdout)
    assert BUILTINS.isdisjoint(rows)
    row = rows["myplugin"]
    assert row["status"] == "loaded"
    assert row["distribution"] == "pipectl-myplugin"
    assert row["version"] == "1.2.0"
    assert row["hooks"] == MYPLUGIN_HOOKS
    assert row["components"] == {"executors": ["myplugin-exec"], "step_types": ["myplugin-type"]}
    assert row["source"].endswith(f"{myplugin.module}.py")


def test_cli_plugins_all_adds_the_builtins(fake_dists, myplugin):
    proc = fake_dists.run_cli("plugins", "--json", "--all")

    assert proc.returncode == 0, proc.stderr
    rows = _rows_by_name(proc.stdout)
    assert BUILTINS | {"myplugin"} <= set(rows)
    assert all(rows[name]["builtin"] for name in BUILTINS)
    assert rows["local"]["components"] == {"executors": ["local"]}
    assert rows["core-commands"]["hooks"] == ["pipectl_register_commands"]


@pytest.mark.slow
def test_cli_plugins_hook_filters_by_implemented_hook(fake_dists, myplugin):
    fake_dists.add(
        "outputs-only",
        """
        from pipectl import hookimpl

        @hookimpl
        def pipectl_register_outputs(register):
            register("csv-lite", lambda **options: options)
        """,
    )

    proc = fake_dists.run_cli("plugins", "--json", "--all", "--hook", "pipectl_register_executors")
    assert proc.returncode == 0, proc.stderr
    assert set(_rows_by_name(proc.stdout)) == {"local", "myplugin"}

    proc = fake_dists.run_cli("plugins", "--json", "--hook", "pipectl_register_outputs")
    assert proc.returncode == 0, proc.stderr
    assert set(_rows_by_name(proc.stdout)) == {"outputs-only"}

    proc = fake_dists.run_cli("plugins", "--json", "--hook", "pipectl_run_start")
    assert set(_rows_by_name(proc.stdout)) == {"myplugin"}


def test_cli_plugins_text_shows_name_distribution_version_status(fake_dists, myplugin):
    proc = fake_dists.run_cli("plugins")

    assert proc.returncode == 0, proc.stderr
    assert "myplugin  (pipectl-myplugin 1.2.0)  loaded" in proc.stdout
    assert "step types: myplugin-type" in proc.stdout
    assert "executors: myplugin-exec" in proc.stdout
    assert "local" not in proc.stdout.split()


# ---------------------------------------------------------------------------------------------
# lazy heavy imports
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def lazy_plugin(fake_dists):
    heavy = fake_dists.module("heavy_dependency", IMPORT_MARKER + "VALUE = 42\n")
    dist = fake_dists.add(
        "lazy",
        f"""
        from pipectl import hookimpl


        def _make_step(step):
            import {heavy}  # the heavy import, only when a pipeline uses the step type

            def run():
                return {heavy}.VALUE

            return run


        def _make_executor(**options):
            import {heavy}
            from pipectl.components.local_executor import LocalExecutor

            return LocalExecutor(**options)


        @hookimpl
        def pipectl_register_step_types(register):
            register("lazy-type", _make_step)


        @hookimpl
        def pipectl_register_executors(register):
            register("lazy-exec", _make_executor)
        """,
    )
    dist.heavy = heavy
    return dist


def test_loading_a_plugin_does_not_import_its_heavy_dependencies(lazy_plugin):
    pm = get_plugin_manager()

    assert pm.records["lazy"].status == "loaded"
    assert lazy_plugin.module in sys.modules
    assert lazy_plugin.heavy not in sys.modules
    assert "lazy-type" in pm.registries.step_types


def test_using_the_component_imports_the_heavy_dependency(lazy_plugin):
    pm = get_plugin_manager()
    pipe = Pipeline("lazy", plugin_manager=pm)
    pipe.add_step("answer", step_type="lazy-type")

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert run.steps["answer"].output == 42
    assert lazy_plugin.heavy in sys.modules


def test_using_the_executor_imports_the_heavy_dependency(lazy_plugin):
    pm = get_plugin_manager()
    pipe = Pipeline("lazy", plugin_manager=pm, executor="lazy-exec")
    pipe.add_step("one", lambda: 1)

    assert lazy_plugin.heavy not in sys.modules
    run = pipe.run_sync()

    assert run.ok
    assert lazy_plugin.heavy in sys.modules


def test_cli_listing_and_help_do_not_import_heavy_dependencies(fake_dists, lazy_plugin):
    heavy_marker = fake_dists.root / f"{lazy_plugin.heavy}.imported"

    listing = fake_dists.run_cli("plugins", "--json")
    helped = fake_dists.run_cli("--help")

    assert listing.returncode == 0 and helped.returncode == 0, listing.stderr + helped.stderr
    assert _rows_by_name(listing.stdout)["lazy"]["components"] == {
        "executors": ["lazy-exec"],
        "step_types": ["lazy-type"],
    }
    assert not heavy_marker.exists()


# ---------------------------------------------------------------------------------------------
# blocking before import
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def blocked_plugin(fake_dists):
    return fake_dists.add("myplugin", MUST_NOT_IMPORT)


def _assert_blocked_and_never_imported(pm, dist) -> None:
    record = pm.records[dist.name]
    assert record.status == "blocked"
    assert record.distribution == dist.distribution
    assert record.version == dist.version
    assert pm.get_plugin(dist.name) is None
    assert dist.module not in sys.modules
    assert not dist.marker.exists()


def _assert_still_works(pm) -> None:
    pipe = Pipeline("still-works", plugin_manager=pm)
    pipe.add_step("one", lambda: 1)
    assert pipe.run_sync().ok


def test_an_unblocked_plugin_of_this_kind_is_imported(blocked_plugin):
    """The control experiment: without blocking, the probe plugin is imported (and fails)."""
    pm = get_plugin_manager()

    assert pm.records["myplugin"].status == "failed"
    assert blocked_plugin.marker.exists()


def test_disabled_by_entry_point_name_is_never_imported(blocked_plugin):
    pm = get_plugin_manager(disabled=["myplugin"])

    _assert_blocked_and_never_imported(pm, blocked_plugin)
    assert pm.is_blocked("myplugin")  # pluggy's block: nothing registers under the name
    _assert_still_works(pm)


def test_disabled_by_distribution_name_is_never_imported(blocked_plugin):
    pm = get_plugin_manager(disabled=["pipectl-myplugin"])

    _assert_blocked_and_never_imported(pm, blocked_plugin)
    _assert_still_works(pm)


def test_disable_env_var_blocks_several_plugins(fake_dists, blocked_plugin, monkeypatch):
    other = fake_dists.add("other", MUST_NOT_IMPORT)
    kept = fake_dists.add("kept", MYPLUGIN)
    monkeypatch.setenv("PIPECTL_DISABLE_PLUGINS", "other, myplugin")

    pm = get_plugin_manager()

    _assert_blocked_and_never_imported(pm, blocked_plugin)
    _assert_blocked_and_never_imported(pm, other)
    assert pm.records["kept"].status == "loaded"
    assert kept.module in sys.modules


def test_disable_env_var_adds_to_disabled_argument(fake_dists, blocked_plugin, monkeypatch):
    other = fake_dists.add("other", MUST_NOT_IMPORT)
    monkeypatch.setenv("PIPECTL_DISABLE_PLUGINS", "other")

    pm = get_plugin_manager(disabled=["myplugin"])

    _assert_blocked_and_never_imported(pm, blocked_plugin)
    _assert_blocked_and_never_imported(pm, other)


def test_autoload_env_var_blocks_every_installed_plugin(fake_dists, blocked_plugin, monkeypatch):
    other = fake_dists.add("other", MUST_NOT_IMPORT)
    monkeypatch.setenv("PIPECTL_DISABLE_PLUGIN_AUTOLOAD", "1")

    pm = get_plugin_manager()

    _assert_blocked_and_never_imported(pm, blocked_plugin)
    _assert_blocked_and_never_imported(pm, other)
    assert "PIPECTL_DISABLE_PLUGIN_AUTOLOAD" in pm.records["myplugin"].error
    assert all(pm.records[name].status == "loaded" for name in BUILTINS)
    _assert_still_works(pm)


def test_autoload_env_var_zero_means_autoload(myplugin, monkeypatch):
    monkeypatch.setenv("PIPECTL_DISABLE_PLUGIN_AUTOLOAD", "0")

    assert get_plugin_manager().records["myplugin"].status == "loaded"


def test_autoload_false_argument_blocks_installed_plugins(blocked_plugin):
    pm = get_plugin_manager(autoload=False)

    _assert_blocked_and_never_imported(pm, blocked_plugin)


def test_plugin_manager_fixture_does_not_import_installed_plugins(blocked_plugin, plugin_manager):
    assert blocked_plugin.module not in sys.modules
    assert plugin_manager.get_plugin("myplugin") is None


def test_cli_p_no_name_blocks_before_import(fake_dists, blocked_plugin):
    proc = fake_dists.run_cli("-p", "no:myplugin", "plugins", "--json", "--all")

    assert proc.returncode == 0, proc.stderr
    rows = _rows_by_name(proc.stdout)
    assert rows["myplugin"]["status"] == "blocked"
    assert rows["myplugin"]["hooks"] == []
    assert BUILTINS <= set(rows)
    assert not blocked_plugin.marker.exists()


def test_cli_p_no_distribution_name_blocks_before_import(fake_dists, blocked_plugin):
    proc = fake_dists.run_cli("-p", "no:pipectl-myplugin", "plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    assert _rows_by_name(proc.stdout)["myplugin"]["status"] == "blocked"
    assert not blocked_plugin.marker.exists()


def test_cli_p_no_name_attached_form(fake_dists, blocked_plugin):
    proc = fake_dists.run_cli("-pno:myplugin", "plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    assert _rows_by_name(proc.stdout)["myplugin"]["status"] == "blocked"
    assert not blocked_plugin.marker.exists()


def test_cli_disable_env_var_blocks_before_import(fake_dists, blocked_plugin):
    proc = fake_dists.run_cli("plugins", "--json", PIPECTL_DISABLE_PLUGINS="myplugin")

    assert proc.returncode == 0, proc.stderr
    assert _rows_by_name(proc.stdout)["myplugin"]["status"] == "blocked"
    assert not blocked_plugin.marker.exists()


def test_cli_autoload_env_var_blocks_before_import(fake_dists, blocked_plugin):
    proc = fake_dists.run_cli("plugins", "--json", PIPECTL_DISABLE_PLUGIN_AUTOLOAD="1")

    assert proc.returncode == 0, proc.stderr
    assert _rows_by_name(proc.stdout)["myplugin"]["status"] == "blocked"
    assert not blocked_plugin.marker.exists()


def test_disabling_an_essential_builtin_is_an_error():
    from pipectl.plugins import ESSENTIAL_PLUGINS

    assert ESSENTIAL_PLUGINS == {"local", "python", "core-commands"}
    for name in ESSENTIAL_PLUGINS:
        with pytest.raises(PluginError, match=f"'{name}' is built in and cannot be disabled"):
            get_plugin_manager(disabled=[name])


def test_a_builtin_component_plugin_can_be_disabled():
    pm = get_plugin_manager(disabled=["sqlite"])
    assert pm.records["sqlite"].status == "blocked"
    assert "sqlite" not in pm.registries.outputs
    assert "jsonl" in pm.registries.outputs  # the other built-ins stay


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-p", "no:local", "plugins"], {}),
        (["-p", "no:python", "plugins", "--json"], {}),
        (["plugins"], {"PIPECTL_DISABLE_PLUGINS": "core-commands"}),
    ],
    ids=["p-no-local", "p-no-python", "env-core-commands"],
)
def test_cli_disabling_an_essential_builtin_exits_2_without_traceback(fake_dists, args, env):
    proc = fake_dists.run_cli(*args, **env)

    assert proc.returncode == 2
    assert "cannot be disabled" in proc.stderr
    assert proc.stderr.startswith("pipectl: error:")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------
# the registration hooks (datasette's meta-test: one test_hook_<name> per hook)
# ---------------------------------------------------------------------------------------------


def test_hook_pipectl_register_step_types(myplugin):
    pm = get_plugin_manager()
    component = pm.registries.step_types.get("myplugin-type")

    assert component.plugin == "myplugin"
    run = component.factory(StepSpec("s", step_type="myplugin-type", options={"greeting": "hi"}))
    assert run(params={"who": "you"}) == "hi, you"


def test_hook_pipectl_register_executors(fake_dists):
    """An executor from a plugin runs every attempt, middleware included, and is started and shut
    down around the run."""
    dist = fake_dists.add(
        "remote",
        """
        from pipectl import hookimpl

        CALLS = []


        class InlineExecutor:
            def __init__(self, tag="inline"):
                self.tag = tag

            async def start(self, run, config, max_concurrent):
                CALLS.append(("start", self.tag, run.pipeline_id))

            async def execute(self, invocation):
                from pipectl.executors import call_through_middleware

                CALLS.append(("execute", invocation.step.name, invocation.attempt))
                return await call_through_middleware(invocation, self._call)

            async def _call(self, invocation):
                if invocation.is_async:
                    return await invocation.func(**invocation.kwargs)
                return invocation.func(**invocation.kwargs)

            async def shutdown(self):
                CALLS.append(("shutdown", self.tag))


        @hookimpl
        def pipectl_register_executors(register):
            register("inline", InlineExecutor)
        """,
    )
    pm = get_plugin_manager()
    pipe = Pipeline("on-inline", plugin_manager=pm, executor="inline")

    @pipe.step("a")
    async def a():
        return 2

    @pipe.step("b", depends_on=["a"])
    def b(a):
        return a * 10

    run = pipe.run_sync(executor_options={"tag": "t1"})

    assert run.ok, run.errors
    assert run.steps["b"].output == 20
    calls = dist.loaded_module().CALLS
    assert calls == [
        ("start", "t1", "on-inline"),
        ("execute", "a", 1),
        ("execute", "b", 1),
        ("shutdown", "t1"),
    ]
    assert pm.registries.provided_by("remote") == {"executors": ["inline"]}


def test_hook_pipectl_register_outputs(fake_dists):
    fake_dists.add(
        "outs",
        """
        from pipectl import hookimpl


        class MemoryOutput:
            def __init__(self, **options):
                self.options = options
                self.rows = []


        @hookimpl
        def pipectl_register_outputs(register):
            register("memory", MemoryOutput)
        """,
    )
    pm = get_plugin_manager()

    component = pm.registries.outputs.get("memory")
    assert component.plugin == "outs"
    output = pm.registries.outputs.create("memory", table="t")
    assert type(output).__name__ == "MemoryOutput"
    assert output.options == {"table": "t"}
    assert pm.registries.outputs.by_plugin("outs") == ["memory"]
    rows = {row["name"]: row for row in pm.describe()}
    assert rows["outs"]["components"] == {"outputs": ["memory"]}


def test_hook_pipectl_register_trackers(fake_dists):
    fake_dists.add(
        "trk",
        """
        from pipectl import hookimpl


        class ListTracker:
            def __init__(self, url):
                self.url = url


        @hookimpl
        def pipectl_register_trackers(register):
            register("memory", ListTracker)
        """,
    )
    pm = get_plugin_manager()

    assert pm.registries.trackers.get("memory").plugin == "trk"
    tracker = pm.registries.trackers.create("memory", "memory://runs")
    assert tracker.url == "memory://runs"
    assert pm.registries.provided_by("trk") == {"trackers": ["memory"]}


def test_hook_pipectl_register_extractors(fake_dists):
    fake_dists.add(
        "ext",
        """
        from pipectl import hookimpl


        def make_range(**options):
            return list(range(options.get("n", 3)))


        @hookimpl
        def pipectl_register_extractors(register):
            register("range", make_range)
            register("empty", lambda **options: [])
        """,
    )
    pm = get_plugin_manager()

    assert sorted(set(pm.registries.extractors.names()) - BUILTIN_EXTRACTORS) == ["empty", "range"]
    assert pm.registries.extractors.create("range", n=2) == [0, 1]
    assert pm.registries.provided_by("ext") == {"extractors": ["empty", "range"]}

"""The plugin's registration and its environment defaults (no cluster needed)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from pipectl_dask.plugin import make_dask_executor, options_from_env


def test_entry_point_names_the_plugin_module():
    (ep,) = [e for e in entry_points(group="pipectl") if e.name == "dask"]
    assert ep.value == "pipectl_dask.plugin"


def test_registered_as_dask(plugin_manager, register_plugin):
    import pipectl_dask.plugin as plugin

    record = register_plugin(plugin, name="dask")
    assert record.status == "loaded" or str(record.status).endswith("loaded")
    assert "dask" in plugin_manager.registries.executors


def test_environment_gives_defaults():
    env = {"PIPECTL_DASK_SCHEDULER": "tcp://h:8786", "PIPECTL_DASK_LOCAL_WORKERS": "3"}
    assert options_from_env({}, env) == {"scheduler": "tcp://h:8786"}
    assert options_from_env({}, {"PIPECTL_DASK_LOCAL_WORKERS": "3"}) == {"local_workers": 3}
    # explicit options win over the environment
    assert options_from_env({"local_workers": 2}, env) == {"local_workers": 2}
    with pytest.raises(ValueError, match="PIPECTL_DASK_LOCAL_WORKERS"):
        options_from_env({}, {"PIPECTL_DASK_LOCAL_WORKERS": "many"})


def test_factory_reads_the_environment(monkeypatch):
    monkeypatch.setenv("PIPECTL_DASK_SCHEDULER", "tcp://h:8786")
    executor = make_dask_executor(timeout=3)
    assert executor.scheduler == "tcp://h:8786" and executor.timeout == 3


def test_bad_options_are_refused():
    from pipectl_dask.executor import DaskExecutor

    with pytest.raises(ValueError, match="fetch"):
        DaskExecutor(fetch="some")
    with pytest.raises(ValueError, match="not both"):
        DaskExecutor(scheduler="tcp://h:8786", local_workers=2)
    with pytest.raises(ValueError, match="submit_interval=0: expected seconds"):
        DaskExecutor(submit_interval=0)

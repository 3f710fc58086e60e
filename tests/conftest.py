"""Shared fixtures of the kernel's tests (the plugin-author kit, pipectl.testing, is loaded by
pytest through its pytest11 entry point)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the user's plugin switches."""
    for name in (
        "PIPECTL_DISABLE_PLUGINS",
        "PIPECTL_DISABLE_PLUGIN_AUTOLOAD",
        "PIPECTL_STRICT_PLUGINS",
    ):
        monkeypatch.delenv(name, raising=False)


# -- the executor the kernel's behaviour tests run on ------------------------------------------
#
# Tests taking the ``executor`` fixture run on ``local``. A plugin package runs them on its own
# executor by setting PIPECTL_TEST_EXECUTOR (the executor's name), PIPECTL_TEST_EXECUTOR_PLUGIN
# (the name of the entry point, group ``pipectl``, that registers it; default: the executor's
# name) and PIPECTL_TEST_EXECUTOR_OPTIONS (JSON, given to it on every run): then only those
# tests are collected (pipectl-dask does so on a LocalCluster, tests/test_dask_kernel_tests.py
# there). Executors are otherwise checked by pipectl.testing.check_executor_contract.

EXECUTOR = os.environ.get("PIPECTL_TEST_EXECUTOR", "local")


def pytest_collection_modifyitems(config, items):
    if EXECUTOR == "local":
        return
    keep = [item for item in items if "executor" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture(params=[EXECUTOR])
def executor(request, plugin_manager, monkeypatch):
    """Run every pipeline of the test on this executor (a pipeline that names another executor
    keeps it). The value is the executor's name."""
    if request.param == "local":
        return "local"
    import json
    from importlib.metadata import entry_points

    from pipectl.pipeline import Pipeline

    plugin_name = os.environ.get("PIPECTL_TEST_EXECUTOR_PLUGIN", request.param)
    if plugin_manager.get_plugin(plugin_name) is None:
        (entry,) = entry_points(group="pipectl", name=plugin_name)
        plugin_manager.add_plugin(entry.load(), plugin_name)
    options = json.loads(os.environ.get("PIPECTL_TEST_EXECUTOR_OPTIONS", "{}"))
    original = Pipeline.run

    async def run_on(self, *args, executor=None, executor_options=None, **kwargs):
        if executor is None and self.spec.executor == "local":
            executor, executor_options = request.param, {**options, **(executor_options or {})}
        return await original(
            self, *args, executor=executor, executor_options=executor_options, **kwargs
        )

    monkeypatch.setattr(Pipeline, "run", run_on)
    return request.param

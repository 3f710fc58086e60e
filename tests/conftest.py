"""Shared fixtures of the kernel's tests (the plugin-author kit, pipectl.testing, is loaded by
pytest through its pytest11 entry point)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the user's plugin switches."""
    for name in ("PIPECTL_DISABLE_PLUGINS", "PIPECTL_DISABLE_PLUGIN_AUTOLOAD",
                 "PIPECTL_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)


# -- the executors the kernel's behaviour tests run on ------------------------------------------


@pytest.fixture(scope="session")
def dask_cluster():
    """A real dask LocalCluster of 2 worker processes (so every task and output is pickled),
    shared by the tests parametrized over executors; skipped where pipectl-dask is missing."""
    distributed = pytest.importorskip(
        "distributed", reason="pipectl-dask (dask.distributed) is not installed")
    pytest.importorskip("pipectl_dask", reason="pipectl-dask is not installed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=4,
                                  dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture(params=["local", "dask"])
def executor(request, plugin_manager, monkeypatch):
    """Run every pipeline of the test on this executor: ``local``, or ``dask`` on the shared
    :func:`dask_cluster` (a pipeline that names another executor keeps it). The value is the
    executor's name."""
    if request.param == "local":
        return "local"
    cluster = request.getfixturevalue("dask_cluster")
    import pipectl_dask.plugin
    from pipectl.pipeline import Pipeline

    if plugin_manager.get_plugin("dask") is None:
        plugin_manager.add_plugin(pipectl_dask.plugin, "dask")
    # fetch="all": after the run, every output is a value in run.steps, as with local
    options = {"scheduler": cluster.scheduler_address, "announce": False, "fetch": "all"}
    original = Pipeline.run

    async def run_on_dask(self, *args, executor=None, executor_options=None, **kwargs):
        if executor is None and self.spec.executor == "local":
            executor, executor_options = "dask", {**options, **(executor_options or {})}
        return await original(self, *args, executor=executor,
                              executor_options=executor_options, **kwargs)

    monkeypatch.setattr(Pipeline, "run", run_on_dask)
    return "dask"

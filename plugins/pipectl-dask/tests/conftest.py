"""Fixtures of the pipectl-dask tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of 2 worker processes (1 thread each), one per test module."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture
def pm(plugin_manager, register_plugin):
    """The test kit's plugin manager with this plugin registered (autoload is off there)."""
    import pipectl_dask.plugin

    register_plugin(pipectl_dask.plugin, name="dask")
    return plugin_manager

"""The dask executor against pipectl's executor contract (``pipectl.testing``), on a real
LocalCluster of worker processes."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed")

from pipectl.testing import check_executor_contract

pytestmark = pytest.mark.slow


def test_dask_executor_meets_the_executor_contract(pm, cluster, tmp_path):
    # fetch="all": every output is a value in run.steps after the run, as the contract reads it
    check_executor_contract(
        "dask",
        plugin_manager=pm,
        workdir=tmp_path,
        options={"scheduler": cluster.scheduler_address, "fetch": "all", "announce": False},
    )

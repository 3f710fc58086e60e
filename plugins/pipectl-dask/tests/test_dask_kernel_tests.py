"""pipectl's own behaviour tests that take the ``executor`` fixture (retries, timeouts,
fail_fast, scheduling, inputs, conditions, middleware, hooks...), run on the dask executor
against a real LocalCluster: the kernel runs them on ``local`` alone and never imports
pipectl_dask (its tests/conftest.py reads PIPECTL_TEST_EXECUTOR*). Skipped outside a source
checkout of pipectl, where its tests/ folder is not there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]  # plugins/pipectl-dask/tests/ -> the checkout


@pytest.mark.skipif(
    not (ROOT / "tests" / "conftest.py").is_file(),
    reason="not in a source checkout of pipectl (no kernel tests)",
)
def test_kernel_executor_tests_pass_on_dask():
    # 4 threads a worker: some tests keep 3 steps running at once
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=4, dashboard_address=":0"
    ) as cluster:
        # fetch="all": after the run, every output is a value in run.steps, as with local
        options = {"scheduler": cluster.scheduler_address, "announce": False, "fetch": "all"}
        env = {
            **os.environ,
            "PIPECTL_TEST_EXECUTOR": "dask",
            "PIPECTL_TEST_EXECUTOR_PLUGIN": "dask",
            "PIPECTL_TEST_EXECUTOR_OPTIONS": json.dumps(options),
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests",
                "-q",
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, f"kernel tests on dask failed:\n{tail}\n{proc.stderr[-3000:]}"
    assert " passed" in tail and "deselected" in tail, tail

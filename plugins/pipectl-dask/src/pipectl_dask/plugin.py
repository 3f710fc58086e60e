"""The ``dask`` executor's registration; dask itself is imported only when a run uses it.

Options come from ``executor_options`` (``Pipeline.run(executor="dask",
executor_options={...})``, ``pipectl run --dask-scheduler ADDRESS``, ``--dask-local N`` or
``--executor-option KEY=VALUE``); the environment gives defaults: ``PIPECTL_DASK_SCHEDULER``
(an address, ``tcp://host:8786``) and ``PIPECTL_DASK_LOCAL_WORKERS`` (a number: start a local
cluster of that many processes).
"""

from __future__ import annotations

import os
from typing import Any

from pipectl import hookimpl

ENV_SCHEDULER = "PIPECTL_DASK_SCHEDULER"
ENV_LOCAL_WORKERS = "PIPECTL_DASK_LOCAL_WORKERS"


def options_from_env(options: dict[str, Any], environ: Any = None) -> dict[str, Any]:
    """``options`` with the environment's defaults for what they leave out."""
    environ = os.environ if environ is None else environ
    merged = dict(options)
    if "scheduler" not in merged and "local_workers" not in merged:
        address = environ.get(ENV_SCHEDULER, "").strip()
        workers = environ.get(ENV_LOCAL_WORKERS, "").strip()
        if address:
            merged["scheduler"] = address
        elif workers:
            try:
                merged["local_workers"] = int(workers)
            except ValueError:
                raise ValueError(
                    f"{ENV_LOCAL_WORKERS}={workers!r}: expected a number of worker processes"
                ) from None
    return merged


def make_dask_executor(**options: Any) -> Any:
    from pipectl_dask.executor import DaskExecutor

    return DaskExecutor(**options_from_env(options))


@hookimpl
def pipectl_addoption(parser: Any) -> None:
    """``pipectl run`` options of the dask executor (each implies ``--executor dask``)."""
    parser.add_option(
        "--dask-scheduler",
        executor="dask",
        key="scheduler",
        metavar="ADDRESS",
        help="Run the steps on the dask cluster of this scheduler (tcp://host:8786).",
    )
    parser.add_option(
        "--dask-local",
        executor="dask",
        key="local_workers",
        type=int,
        metavar="N",
        help="Run the steps on a local dask cluster of N worker processes.",
    )


@hookimpl
def pipectl_register_executors(register: Any) -> None:
    register("dask", make_dask_executor)

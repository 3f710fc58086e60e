"""Run pipectl pipelines on a dask.distributed cluster (the ``dask`` executor)."""

__version__ = "0.1.0"

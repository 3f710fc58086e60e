"""pipectl-postgres: PostgreSQL for pipectl data steps.

The ``postgres`` output bulk-loads records with ``COPY`` (append, atomic replace, or upsert on
a key), one transaction per attempt; the ``postgres`` extractor streams a query or a table
through a server-side cursor, optionally incrementally. The plugin module is
:mod:`pipectl_postgres.plugin`; the options are documented in :mod:`pipectl_postgres.output`,
:mod:`pipectl_postgres.extractor` and the README.
"""

__version__ = "0.1.0"

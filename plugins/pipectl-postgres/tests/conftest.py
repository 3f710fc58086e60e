"""Fixtures of the pipectl-postgres tests.

Tests that need a server take ``pg_dsn`` (or a fixture built on it): they run against the
PostgreSQL server named by the environment variable ``PIPECTL_TEST_POSTGRES_DSN`` and are
skipped, with that reason, when it is not set. Each one works in a schema of its own with a
random name (``schema``), dropped at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pipectl.data import DataContext
from psycopg import sql

from pipectl_postgres import plugin

DSN_VARIABLE = "PIPECTL_TEST_POSTGRES_DSN"


def data_context() -> DataContext:
    """A context like the one the data-step runner hands to ``open`` and ``batches``."""
    return DataContext("load", {}, "fail", None, None)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The DSN of the test server."""
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(
            f"{DSN_VARIABLE} is not set: set it to the DSN of a PostgreSQL server "
            "(postgresql://user@host:5432/dbname) to run the tests that need one"
        )
    return dsn


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to set up and check the database with."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(pg: psycopg.Connection[Any]) -> Iterator[str]:
    """A new schema with a random name, dropped with everything in it after the test."""
    name = f"pipectl_test_{secrets.token_hex(6)}"
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    pg.execute("SET lock_timeout = '10s'")  # a connection left open fails the test, not hangs
    pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def registries(plugin_manager: Any, register_plugin: Callable[..., Any]) -> Any:
    """The registries of a plugin manager with this plugin registered as ``postgres``."""
    record = register_plugin(plugin, "postgres")
    assert record.status == "loaded", record.error
    return plugin_manager.registries


@pytest.fixture
def make_output(registries: Any, pg_dsn: str, schema: str) -> Callable[..., Any]:
    """``make_output(table="t", **options)``: a postgres output into the test's schema."""

    def make(table: str = "t", **options: Any) -> Any:
        options.setdefault("dsn", pg_dsn)
        options.setdefault("schema", schema)
        return registries.outputs.create("postgres", table=table, **options)

    return make


@pytest.fixture
def make_extractor(registries: Any, pg_dsn: str) -> Callable[..., Any]:
    """``make_extractor(**options)``: a postgres extractor on the test server."""

    def make(**options: Any) -> Any:
        options.setdefault("dsn", pg_dsn)
        return registries.extractors.create("postgres", **options)

    return make


@pytest.fixture
def ctx() -> DataContext:
    """A data-step context for ``open(ctx)`` and ``batches(ctx)``."""
    return data_context()


@pytest.fixture
def load() -> Callable[..., None]:
    """``load(output, *batches)``: one attempt as the runner makes it (abort on failure)."""

    def run(output: Any, *batches: list[dict[str, Any]]) -> None:
        output.open(data_context())
        try:
            for batch in batches:
                output.write(batch)
            output.commit()
        except BaseException:
            output.abort()
            raise
        finally:
            output.close()

    return run


@pytest.fixture
def rows(pg: psycopg.Connection[Any], schema: str) -> Callable[..., list[tuple[Any, ...]]]:
    """``rows(table, order_by=None)``: every row of a table of the test's schema."""

    def fetch(table: str, order_by: str | None = None) -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
        if order_by:
            query = sql.SQL("{} ORDER BY {}").format(query, sql.Identifier(order_by))
        return pg.execute(query).fetchall()

    return fetch


@pytest.fixture
def columns(pg: psycopg.Connection[Any], schema: str) -> Callable[[str], list[tuple[str, str]]]:
    """``columns(table)``: its (name, type) pairs in order, types as ``format_type`` spells them."""

    def fetch(table: str) -> list[tuple[str, str]]:
        return pg.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (sql.Identifier(schema, table).as_string(pg),),
        ).fetchall()

    return fetch

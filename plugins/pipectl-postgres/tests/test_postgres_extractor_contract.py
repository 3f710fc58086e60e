"""The ``postgres`` extractor against pipectl's extractor contract (``pipectl.testing``), on a
real server (``PIPECTL_TEST_POSTGRES_DSN``, see conftest.py): a table, a query, incremental."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipectl.testing import check_extractor_contract
from psycopg import sql

START = datetime(2026, 1, 1, tzinfo=UTC)


def expected(first, last):
    return [
        {"id": i, "v": f"v{i}", "updated_at": START + timedelta(hours=i)}
        for i in range(first, last + 1)
    ]


def make_events(pg, schema):
    table = sql.Identifier(schema, "events")
    pg.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text, updated_at timestamptz)").format(
            table
        )
    )
    pg.execute(
        sql.SQL(
            "INSERT INTO {} SELECT g, 'v' || g, %s + g * interval '1 hour'"
            " FROM generate_series(1, 25) g"
        ).format(table),
        (START,),
    )
    return table


def test_postgres_table_extractor_meets_the_extractor_contract(make_extractor, pg, schema):
    make_events(pg, schema)
    check_extractor_contract(
        lambda **options: make_extractor(table="events", schema=schema, **options), expected(1, 25)
    )


def test_postgres_query_extractor_meets_the_extractor_contract(make_extractor, pg, schema):
    make_events(pg, schema)
    check_extractor_contract(
        lambda **options: make_extractor(
            query=f"SELECT * FROM {schema}.events WHERE id <= %(top)s",
            params={"top": 10},
            **options,
        ),
        expected(1, 10),
    )


def test_incremental_postgres_extractor_meets_the_extractor_contract(make_extractor, pg, schema):
    table = make_events(pg, schema)

    def append():
        pg.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, 'v' || g, %s + g * interval '1 hour'"
                " FROM generate_series(26, 28) g"
            ).format(table),
            (START,),
        )
        return expected(26, 28)

    check_extractor_contract(
        lambda **options: make_extractor(
            table="events", schema=schema, incremental={"column": "updated_at"}, **options
        ),
        expected(1, 25),
        append=append,
    )

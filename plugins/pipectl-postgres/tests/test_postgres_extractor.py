"""The ``postgres`` extractor, used directly as the data-step runner uses it, on a real server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def events(pg, schema):
    """``schema.events``: 25 rows, ``updated_at`` one hour apart from ``START`` + 1 h."""
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


def ids(batches):
    return [r["id"] for batch in batches for r in batch]


def test_streams_a_big_table_in_batches_through_a_server_side_cursor(
    make_extractor, ctx, pg, schema
):
    pg.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT g AS id, md5(g::text) AS name"
            " FROM generate_series(1, 50000) g"
        ).format(sql.Identifier(schema, "big"))
    )
    extractor = make_extractor(table="big", schema=schema, batch_size=20_000)
    batches = extractor.batches(ctx)
    first = next(batches)
    # the rest is still on the server, behind a cursor: one FETCH per batch
    fetching = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
        " 'pipectl-postgres' AND state = 'idle in transaction'"
        " AND query = 'FETCH FORWARD 20000 FROM \"pipectl_postgres\"'"
    ).fetchone()
    assert fetching[0] >= 1
    rest = list(batches)
    assert [len(b) for b in [first, *rest]] == [20_000, 20_000, 10_000]
    assert sorted(ids([first, *rest])) == list(range(1, 50_001))
    assert first[0] == {"id": first[0]["id"], "name": first[0]["name"]}
    assert extractor.state is None  # not incremental


def test_batch_size_defaults_to_ten_thousand(make_extractor, ctx):
    extractor = make_extractor(query="SELECT g AS id FROM generate_series(1, 12345) g")
    assert [len(b) for b in extractor.batches(ctx)] == [10_000, 2_345]


def test_query_params_are_sent_apart_never_formatted(make_extractor, ctx, pg, schema):
    victims = sql.Identifier(schema, "victims")
    pg.execute(sql.SQL("CREATE TABLE {} (name text)").format(victims))
    pg.execute(
        sql.SQL("INSERT INTO {} VALUES (%s), ('b')").format(victims),
        ("x'); DROP TABLE victims; --",),
    )
    extractor = make_extractor(
        query=sql.SQL("SELECT name FROM {} WHERE name = %(name)s OR name LIKE %(pattern)s;")
        .format(victims)
        .as_string(pg),
        params={"name": "x'); DROP TABLE victims; --", "pattern": "%z%"},
    )
    assert list(extractor.batches(ctx)) == [[{"name": "x'); DROP TABLE victims; --"}]]
    assert pg.execute(sql.SQL("SELECT count(*) FROM {}").format(victims)).fetchone() == (2,)


def test_a_table_with_chosen_columns_and_odd_names(make_extractor, ctx, pg, schema):
    name = 'x" ; drop table y; --'
    pg.execute(
        sql.SQL("CREATE TABLE {} ({} int, b text, c text)").format(
            sql.Identifier(schema, name), sql.Identifier("we ird")
        )
    )
    pg.execute(sql.SQL("INSERT INTO {} VALUES (1, 'b', 'c')").format(sql.Identifier(schema, name)))
    extractor = make_extractor(table=name, schema=schema, columns=["we ird", "c"])
    assert list(extractor.batches(ctx)) == [[{"we ird": 1, "c": "c"}]]
    assert extractor.describe().endswith(f"table {schema}.{name}")


def test_values_stay_python_objects(make_extractor, ctx):
    extractor = make_extractor(
        query="SELECT 1.50::numeric AS n,"
        " '2026-01-02 03:04:05+00'::timestamptz AS at,"
        " '2026-01-02'::date AS day, '{\"a\": [1]}'::jsonb AS doc,"
        " '\\x00ff'::bytea AS raw, ARRAY[1, 2] AS arr,"
        " '12345678-1234-5678-1234-567812345678'::uuid AS uid,"
        " NULL::text AS nothing"
    )
    assert list(extractor.batches(ctx)) == [
        [
            {
                "n": Decimal("1.50"),
                "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                "day": date(2026, 1, 2),
                "doc": {"a": [1]},
                "raw": b"\x00\xff",
                "arr": [1, 2],
                "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
                "nothing": None,
            }
        ]
    ]


def test_incremental_table_reads_only_new_and_updated_rows_across_runs(
    make_extractor, ctx, pg, schema, events
):
    options = {
        "table": "events",
        "schema": schema,
        "batch_size": 10,
        "incremental": {"column": "updated_at", "initial": "2026-01-01T20:00:00+00:00"},
    }
    first = make_extractor(**options)
    assert first.state == {"cursor": "2026-01-01T20:00:00+00:00"}  # before the run: initial
    batches = list(first.batches(ctx))
    assert ids(batches) == list(range(21, 26))  # after the initial cursor, in its order
    state = first.state
    assert state == {"cursor": (START + timedelta(hours=25)).isoformat()}
    assert json.loads(json.dumps(state)) == state

    pg.execute(
        sql.SQL("UPDATE {} SET v = 'changed', updated_at = %s WHERE id IN (3, 7)").format(events),
        (START + timedelta(hours=30),),
    )
    pg.execute(
        sql.SQL("INSERT INTO {} VALUES (26, 'new', %s)").format(events),
        (START + timedelta(hours=31),),
    )
    second = make_extractor(**options)
    second.set_state(state)
    rows = [r for batch in second.batches(ctx) for r in batch]
    assert [(r["id"], r["v"]) for r in rows] == [(3, "changed"), (7, "changed"), (26, "new")]
    assert second.state == {"cursor": (START + timedelta(hours=31)).isoformat()}

    third = make_extractor(**options)
    third.set_state(second.state)
    assert list(third.batches(ctx)) == []
    assert third.state == second.state  # nothing new: the cursor stays


def test_incremental_query_is_wrapped_and_keeps_its_params(make_extractor, ctx, events):
    query = sql.SQL("SELECT id, updated_at FROM {} WHERE id %% 2 = %(parity)s").format(events)
    extractor = make_extractor(
        query=query.as_string(None), params={"parity": 1}, incremental={"column": "updated_at"}
    )  # no initial: all rows
    assert ids(extractor.batches(ctx)) == list(range(1, 26, 2))
    state = extractor.state
    assert state == {"cursor": (START + timedelta(hours=25)).isoformat()}
    again = make_extractor(
        query=query.as_string(None), params={"parity": 1}, incremental={"column": "updated_at"}
    )
    again.set_state({"cursor": (START + timedelta(hours=20)).isoformat()})
    assert ids(again.batches(ctx)) == [21, 23, 25]


def test_an_abandoned_extraction_closes_its_transaction(make_extractor, ctx, pg, events):
    batches = make_extractor(
        query=sql.SQL("SELECT * FROM {}").format(events).as_string(None), batch_size=5
    ).batches(ctx)
    next(batches)
    batches.close()  # as when every output failed and the runner stops reading
    pg.execute("SET lock_timeout = '2s'")
    pg.execute(sql.SQL("DROP TABLE {}").format(events))  # no lock left behind


def test_bad_options_are_clear_errors(registries, monkeypatch):
    def make(**options):
        options.setdefault("dsn", "postgresql://u@h/db")
        return registries.extractors.create("postgres", **options)

    cases = [
        (
            {"querry": "SELECT 1"},
            r"postgres extractor: unknown option 'querry'; did you mean 'query'\?",
        ),
        ({}, "give one of query \\(SQL text\\) or table"),
        ({"query": "SELECT 1", "table": "t"}, "give one of query"),
        ({"query": " ; "}, "query must be SQL text"),
        ({"query": "SELECT 1", "schema": "s"}, "schema and columns go with table"),
        ({"table": "t", "params": {"a": 1}}, "params go with query"),
        ({"table": "t", "columns": []}, "columns must be a non-empty list"),
        ({"table": "t", "batch_size": 0}, "batch_size must be a positive integer"),
        ({"table": "t", "batch_size": True}, "batch_size must be a positive integer"),
        ({"table": "t", "incremental": {"colum": "x"}}, r"unknown key\(s\) \['colum'\]"),
        ({"table": "t", "incremental": {"initial": 1}}, "incremental needs column"),
        (
            {"table": "t", "columns": ["a"], "incremental": {"column": "b"}},
            "incremental column 'b' is not in columns",
        ),
        (
            {"query": "SELECT 1", "params": {"pipectl_cursor": 1}, "incremental": {"column": "a"}},
            "'pipectl_cursor' is the incremental cursor's placeholder",
        ),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            make(**options)
    extractor = make(table="t", incremental={"column": "a"})
    with pytest.raises(ValueError, match="state must be"):
        extractor.set_state({"position": 3})
    described = make(dsn="postgresql://u:s3cr3t@h/db", query="SELECT " + "x, " * 40 + "y")
    text = "SELECT " + "x, " * 40 + "y"
    assert described.describe() == f"postgres u@h:5432/db query {text[:57] + '...'!r}"


def test_the_incremental_column_must_be_in_the_result(make_extractor, ctx):
    extractor = make_extractor(
        query="SELECT 1 AS id, now() AS at", incremental={"column": "updated_at"}
    )
    with pytest.raises(psycopg.errors.UndefinedColumn, match='"updated_at" does not exist'):
        list(extractor.batches(ctx))

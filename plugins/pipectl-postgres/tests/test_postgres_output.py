"""The ``postgres`` output, used directly as the data-step runner uses it, on a real server."""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
from pipectl.data import DataContext
from psycopg import sql

CTX = DataContext("load", {}, "fail", None, None)


def test_guarantee_follows_the_mode(registries):
    def make(**options):
        return registries.outputs.create(
            "postgres", dsn="postgresql://u@h/db", table="t", **options
        )

    assert make().mode == "append" and make().guarantee == "transactional"
    assert make(mode="replace").guarantee == "transactional"
    assert make(key="id").mode == "upsert"  # key alone means upsert, as for the sqlite output
    assert make(key="id").guarantee == "idempotent"
    assert make(key=["a", "b"], mode="append").guarantee == "transactional"


def test_the_password_is_never_shown(registries, monkeypatch):
    out = registries.outputs.create(
        "postgres", table="t", schema="s", dsn="postgresql://loader:s3cr3t@db.example:6543/sales"
    )
    assert out.describe() == "postgres loader@db.example:6543/sales table s.t"
    monkeypatch.setenv("SALES_DSN", "host=db.example user=loader password=s3cr3t dbname=sales")
    out = registries.outputs.create("postgres", table="t", dsn_env="SALES_DSN")
    assert out.describe() == "postgres loader@db.example:5432/sales table t"
    with pytest.raises(ValueError, match="not a valid PostgreSQL connection string") as info:
        registries.outputs.create("postgres", table="t", dsn="host=x password='s3cr3t")
    assert "s3cr3t" not in str(info.value)


def test_cannot_connect_names_host_port_and_database_not_the_password(registries):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = registries.outputs.create(
        "postgres", table="t", dsn=f"postgresql://loader:s3cr3t@127.0.0.1:{port}/sales"
    )
    with pytest.raises(ConnectionError) as info:
        out.open(CTX)
    message = str(info.value)
    assert message.startswith(f"postgres output: cannot connect to loader@127.0.0.1:{port}/sales:")
    assert "Connection refused" in message
    assert "s3cr3t" not in message and info.value.__cause__ is None
    out.close()


# -- creating the table ------------------------------------------------------------------------


def test_creates_the_table_from_columns_with_the_key_as_primary_key(
    make_output, load, rows, columns, pg, schema
):
    cols = {
        "id": "bigint",
        "name": "varchar(20)",
        "price": "numeric(10, 2)",
        "tags": "text[]",
        "at": "timestamp(3) with time zone",
    }
    load(make_output(columns=cols, key="id"), [{"id": 1, "name": "a", "ignored": 1}, {"id": 2}])
    assert columns("t") == [
        ("id", "bigint"),
        ("name", "character varying(20)"),
        ("price", "numeric(10,2)"),
        ("tags", "text[]"),
        ("at", "timestamp(3) with time zone"),
    ]
    assert rows("t", "id") == [(1, "a", None, None, None), (2, None, None, None, None)]
    pk = pg.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'p'",
        (f"{schema}.t",),
    ).fetchall()
    assert pk == [("PRIMARY KEY (id)",)]


def test_creates_the_table_from_the_first_batch_with_inferred_types(
    make_output, load, rows, columns
):
    at = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    first = [
        {"i": 1, "f": None, "s": "x", "nothing": None},
        {
            "i": 2,
            "f": 2.5,
            "b": True,
            "raw": b"\x00\xff",
            "doc": {"a": [1, 2]},
            "items": [1, "x"],
            "n": Decimal("1.10"),
            "at": at,
            "local": datetime(2026, 1, 2, 3, 4),
            "day": date(2026, 1, 2),
            "uid": uid,
        },
    ]
    load(make_output(), first, [{"i": 3, "s": "y", "later": "ignored", "doc": '{"text": 1}'}])
    assert columns("t") == [
        ("i", "bigint"),
        ("f", "double precision"),
        ("s", "text"),
        ("nothing", "text"),
        ("b", "boolean"),
        ("raw", "bytea"),
        ("doc", "jsonb"),
        ("items", "jsonb"),
        ("n", "numeric"),
        ("at", "timestamp with time zone"),
        ("local", "timestamp without time zone"),
        ("day", "date"),
        ("uid", "uuid"),
    ]
    assert rows("t", "i") == [
        (1, None, "x", None, None, None, None, None, None, None, None, None, None),
        (
            2,
            2.5,
            None,
            None,
            True,
            b"\x00\xff",
            {"a": [1, 2]},
            [1, "x"],
            Decimal("1.10"),
            at,
            datetime(2026, 1, 2, 3, 4),
            date(2026, 1, 2),
            uid,
        ),
        (3, None, "y", None, None, None, {"text": 1}, None, None, None, None, None, None),
    ]


def test_without_schema_the_table_goes_to_the_current_schema(
    make_output, load, rows, pg_dsn, schema
):
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, options=f"-csearch_path={schema}")
    out = make_output(dsn=dsn, schema=None)
    assert out.describe().endswith(" table t")
    load(out, [{"a": 1}])
    assert rows("t") == [(1,)]


def test_a_missing_table_is_an_error_with_create_false(make_output, load):
    with pytest.raises(
        ValueError,
        match=r"table pipectl_test_\w+\.t does not exist \(and "
        r"create is false\)",
    ):
        load(make_output(create=False), [{"a": 1}])


# -- modes -------------------------------------------------------------------------------------


def test_append_adds_rows_run_after_run(make_output, load, rows):
    load(make_output(), [{"a": 1, "b": "x"}], [{"a": 2}])
    load(make_output(), [{"a": 3, "b": "z", "extra": 0}])
    assert rows("t", "a") == [(1, "x"), (2, None), (3, "z")]


def test_an_existing_table_keeps_defaults_of_columns_not_written(
    make_output, load, rows, pg, schema
):
    pg.execute(
        sql.SQL("CREATE TABLE {} (a int, b text, c text DEFAULT 'dflt')").format(
            sql.Identifier(schema, "t")
        )
    )
    load(make_output(), [{"a": 1, "zzz": 0}])  # every column written: c is NULL
    load(make_output(columns={"a": "int"}), [{"a": 2, "b": "ignored"}])  # only a
    assert rows("t", "a") == [(1, None, None), (2, None, "dflt")]


def test_columns_missing_from_an_existing_table_are_an_error_at_open(make_output, load):
    load(make_output(columns={"a": "int"}))
    out = make_output(columns={"a": "int", "b": "text", "c": "text"})
    with pytest.raises(
        ValueError,
        match=r"table pipectl_test_\w+\.t has no column\(s\) "
        r"\['b', 'c'\] \(its columns: \['a'\]\)",
    ):
        out.open(CTX)
    out.close()
    load(make_output(), [{"a": 1}])  # the failed open left no lock behind


def test_upsert_twice_the_last_record_of_each_key_wins(make_output, load, rows):
    load(
        make_output(key="id"),
        [{"id": 1, "v": "a", "n": 1}, {"id": 2, "v": "b", "n": 2}, {"id": 1, "v": "c", "n": 3}],
        [{"id": 2, "v": "d", "n": 4}, {"id": 3, "v": "e", "n": 5}, {"id": 3, "v": "f", "n": 6}],
    )
    assert rows("t", "id") == [(1, "c", 3), (2, "d", 4), (3, "f", 6)]
    load(
        make_output(key="id"),
        [{"id": 3, "v": "g", "n": 7}, {"id": 4, "v": "h", "n": 8}],
        [{"id": 4, "v": "i", "n": 9}],
    )
    assert rows("t", "id") == [(1, "c", 3), (2, "d", 4), (3, "g", 7), (4, "i", 9)]


def test_upsert_with_a_composite_key_or_only_key_columns(make_output, load, rows):
    cols = {"a": "int", "b": "text", "v": "double precision"}
    load(
        make_output(columns=cols, key=["a", "b"]),
        [{"a": 1, "b": "x", "v": 1.0}, {"a": 1, "b": "y", "v": 2.0}, {"a": 1, "b": "x", "v": 3.0}],
    )
    assert rows("t", "b") == [(1, "x", 3.0), (1, "y", 2.0)]
    load(make_output(table="k", key="a"), [{"a": 1}, {"a": 1}])
    load(make_output(table="k", key="a"), [{"a": 1}, {"a": 2}])  # nothing to update: DO NOTHING
    assert rows("k", "a") == [(1,), (2,)]


def test_upsert_into_an_existing_table_needs_a_unique_key(make_output, load, rows, pg, schema):
    load(make_output(columns={"id": "int", "v": "text"}), [{"id": 1, "v": "a"}])
    out = make_output(key="id")
    with pytest.raises(ValueError, match="no primary key or unique index on exactly"):
        out.open(CTX)
    out.close()
    pg.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (id)").format(sql.Identifier(schema, "t")))
    load(make_output(key="id"), [{"id": 1, "v": "b"}, {"id": 2, "v": "c"}])
    assert rows("t", "id") == [(1, "b"), (2, "c")]


def test_a_null_key_fails_the_load_and_changes_nothing(make_output, load, rows):
    load(make_output(key="id"), [{"id": 1, "v": "a"}])
    with pytest.raises(psycopg.errors.NotNullViolation):
        load(make_output(key="id"), [{"id": 2, "v": "b"}, {"id": None, "v": "c"}])
    assert rows("t", "id") == [(1, "a")]


def test_replace_swaps_the_rows_atomically(make_output, load, rows, pg_dsn, schema):
    load(make_output(), [{"a": i} for i in range(3)])
    table = sql.Identifier(schema, "t")
    with psycopg.connect(pg_dsn) as reader:  # a long transaction that read the old rows
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (3,)
        out = make_output(mode="replace")
        out.open(CTX)
        out.write([{"a": 10}, {"a": 11}])
        out.write([{"a": 12}])
        assert rows("t", "a") == [(0,), (1,), (2,)]  # the old rows until commit
        out.commit()
        out.close()
        assert rows("t", "a") == [(10,), (11,), (12,)]  # then exactly the new ones
        # MVCC-safe: the reader's snapshot still has the old rows, not an empty table
        old = reader.execute(sql.SQL("SELECT a FROM {} ORDER BY a").format(table)).fetchall()
        assert old == [(0,), (1,), (2,)]
    out = make_output(mode="replace")
    out.open(CTX)
    out.write([{"a": 99}])
    out.abort()
    out.close()
    assert rows("t", "a") == [(10,), (11,), (12,)]
    load(make_output(mode="replace"))  # no record at all: the table is emptied
    assert rows("t") == []


@pytest.mark.parametrize("mode", ["append", "replace", "upsert"])
def test_a_failure_mid_copy_leaves_the_table_exactly_as_it_was(make_output, load, rows, mode):
    cols = {"id": "bigint", "name": "text", "qty": "int"}
    load(
        make_output(columns=cols, key="id", mode="upsert"),
        [{"id": i, "name": f"n{i}", "qty": i} for i in range(100)],
    )
    before = rows("t", "id")
    first = 50 if mode == "upsert" else 100  # upsert: existing keys too; append: new ones
    good = [
        [{"id": i, "name": f"new{i}", "qty": 0} for i in range(n, n + 50)]
        for n in (first, first + 50)
    ]
    bad = [{"id": 300, "name": "x", "qty": 1}, {"id": 301, "name": "y", "qty": "many"}]
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="many"):
        load(make_output(key="id", mode=mode), *good, bad)
    assert rows("t", "id") == before


def test_abort_drops_a_table_the_attempt_created(make_output, rows, pg, schema):
    out = make_output()
    out.open(CTX)
    out.write([{"a": 1}])
    out.abort()
    out.close()
    assert pg.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
    ).fetchone() == (0,)


def test_close_is_safe_in_any_state_and_the_object_serves_a_new_attempt(make_output, load, rows):
    out = make_output()
    out.close()
    out.abort()
    out.open(CTX)
    out.write([{"a": 1}])
    out.close()  # without commit: rolled back
    out.close()
    load(out, [{"a": 2}])
    out.abort()  # after commit and close: nothing to undo
    assert rows("t") == [(2,)]


def test_calls_can_come_from_different_threads(make_output, rows):
    out = make_output()
    for call in (lambda: out.open(CTX), lambda: out.write([{"a": 1}]), out.commit, out.close):
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    assert rows("t") == [(1,)]


def test_write_before_open_is_an_error(registries):
    out = registries.outputs.create("postgres", dsn="postgresql://u@h/db", table="t")
    with pytest.raises(RuntimeError, match=r"write\(\) before open\(\)"):
        out.write([{"a": 1}])


# -- identifiers and types ---------------------------------------------------------------------

HOSTILE = ["orders; DROP TABLE victims; --", 'x" ; drop table y; --', 'my "odd" table', "select"]


def test_hostile_table_and_column_names_are_quoted_never_executed(
    make_output, load, rows, pg, schema
):
    pg.execute(
        sql.SQL("CREATE TABLE {} (v int); INSERT INTO {} VALUES (1)").format(
            sql.Identifier(schema, "victims"), sql.Identifier(schema, "victims")
        )
    )
    column = 'v"); DROP TABLE victims; --'
    for name in HOSTILE:
        load(make_output(table=name), [{column: 1, "select": "s"}])
        load(make_output(table=name, key=column, mode="replace"), [{column: 2, "select": "t"}])
        load(
            make_output(table=name + "-upsert", key=column),
            [{column: 3, "select": "u"}, {column: 3, "select": "w"}],
        )
    tables = pg.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    assert sorted(t for (t,) in tables) == sorted(
        ["victims", *HOSTILE, *(n + "-upsert" for n in HOSTILE)]
    )
    assert rows("victims") == [(1,)]
    for name in HOSTILE:
        assert rows(name) == [(2, "t")]
        assert rows(name + "-upsert") == [(3, "w")]


def test_sql_types_cannot_inject(registries):
    def make(sql_type):
        return registries.outputs.create(
            "postgres", dsn="postgresql://u@h/db", table="t", columns={"a": sql_type}
        )

    for bad in [
        "text); DROP TABLE t; --",
        "text DEFAULT 'x'",
        "int -- c",
        "int, b int",
        "",
        "int; drop",
        'text COLLATE "C"',
        3,
    ]:
        with pytest.raises(ValueError, match="is not an SQL type name"):
            make(bad)
    for good in [
        "bigint",
        "VARCHAR(20)",
        "double precision",
        "numeric(10, 2)",
        "text[]",
        "int[][]",
        "timestamp(3) with time zone",
        "bigint NOT NULL",
        "public.mood",
    ]:
        make(good)


# -- options -----------------------------------------------------------------------------------


def test_bad_options_are_clear_errors(registries, monkeypatch):
    def make(**options):
        options.setdefault("dsn", "postgresql://u@h/db")
        return registries.outputs.create("postgres", **options)

    cases = [
        (
            {"table": "t", "tabel": "t"},
            "postgres output: unknown option 'tabel'; did you mean 'table'?",
        ),
        ({"table": "t", "colums": {"a": "int"}}, "did you mean 'columns'?"),
        (
            {"table": "t", "mode": "merge"},
            "mode must be one of append, replace, upsert, got 'merge'",
        ),
        ({"table": "t", "mode": "upsert"}, "mode 'upsert' needs key"),
        (
            {"table": "t", "columns": {"a": "int"}, "key": "b"},
            r"key column\(s\) \['b'\] are not in columns \['a'\]",
        ),
        ({"table": "t", "key": []}, "key must name at least one column"),
        ({"table": "t", "key": ["a", "a"]}, "key names a column twice"),
        ({"table": "t", "columns": {}}, "columns must be a non-empty mapping"),
        ({"table": ""}, "table must be a non-empty string"),
        ({"table": "t", "dsn_env": "X"}, "give one of dsn .* or dsn_env"),
        ({"table": "t", "dsn": None}, "give one of dsn .* or dsn_env"),
        (
            {"table": "t", "dsn": None, "dsn_env": "PIPECTL_UNSET_DSN"},
            r"environment variable 'PIPECTL_UNSET_DSN' \(dsn_env\) is not set",
        ),
    ]
    monkeypatch.delenv("PIPECTL_UNSET_DSN", raising=False)
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            make(**options)
    with pytest.raises(TypeError, match="create must be true or false"):
        make(table="t", create="no")


def test_key_columns_must_be_written(make_output, load):
    out = make_output(key="b")
    out.open(CTX)
    with pytest.raises(ValueError, match=r"key column\(s\) \['b'\] are not in the records"):
        out.write([{"a": 1}])
    out.abort()
    out.close()
    load(make_output(columns={"a": "int"}))
    out = make_output(key="b", mode="append")
    with pytest.raises(ValueError, match=r"key column\(s\) \['b'\] are not written to table"):
        out.open(CTX)
    out.close()

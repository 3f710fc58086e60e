"""The built-in ``sqlite`` output (``pipectl.components.sqlite``), used directly."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from pipectl.plugins import get_plugin_manager


@pytest.fixture
def make(tmp_path):
    pm = get_plugin_manager(autoload=False, entry_points=())
    assert pm.records["sqlite"].status == "loaded"
    db = str(tmp_path / "db" / "out.db")

    def make(table="t", **options):
        options.setdefault("path", db)
        return pm.registries.outputs.create("sqlite", table=table, **options)

    make.db = db
    return make


class FakeCtx:
    params: dict = {}

    def bad_record(self, raw, reason, position):  # pragma: no cover - outputs never call it
        raise AssertionError("an output has no bad records")


def run(out, *batches):
    out.open(FakeCtx())
    try:
        for batch in batches:
            out.write(batch)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        out.close()


def query(db, sql, *args):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def schema(db, table):
    return [
        (r[1], r[2], r[3], r[5]) for r in query(db, "SELECT * FROM pragma_table_info(?)", table)
    ]


def tables(db):
    """The tables of ``db`` but pipectl's table of load markers."""
    return sorted(
        r[0]
        for r in query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")
        if r[0] != "_pipectl_loads"
    )


# ---------------------------------------------------------------------------------------------


def test_registered_and_described(make):
    out = make(table="orders")
    assert out.describe() == f"sqlite {make.db} table orders"
    assert out.guarantee == "transactional"
    assert make(key="id").guarantee == "idempotent"


def test_creates_the_table_from_columns(make):
    out = make(columns={"id": "INTEGER", "name": "TEXT", "price": "NUMERIC(10, 2)"})
    out.open(FakeCtx())
    out.commit()
    out.close()
    assert schema(make.db, "t") == [
        ("id", "INTEGER", 0, 0),
        ("name", "TEXT", 0, 0),
        ("price", "NUMERIC(10, 2)", 0, 0),
    ]
    run(
        make(columns={"id": "INTEGER", "name": "TEXT"}),
        [{"id": 1, "name": "a", "ignored": 1}, {"id": 2}],
    )
    assert query(make.db, "SELECT * FROM t ORDER BY id") == [(1, "a", None), (2, None, None)]


def test_creates_the_table_from_the_first_batch_with_inferred_types(make):
    run(
        make(),
        [{"i": 1, "f": None, "s": "x"}, {"i": 2, "f": 2.5, "b": True, "raw": b"\x00"}],
        [{"i": 3, "s": "y", "later": "ignored"}],
    )
    assert schema(make.db, "t") == [
        ("i", "INTEGER", 0, 0),
        ("f", "REAL", 0, 0),
        ("s", "TEXT", 0, 0),
        ("b", "INTEGER", 0, 0),
        ("raw", "BLOB", 0, 0),
    ]
    assert query(make.db, "SELECT * FROM t ORDER BY i") == [
        (1, None, "x", None, None),
        (2, 2.5, None, 1, b"\x00"),
        (3, None, "y", None, None),
    ]


def test_wal_journal(make):
    run(make(), [{"a": 1}])
    assert query(make.db, "PRAGMA journal_mode") == [("wal",)]


def test_append_adds_rows_run_after_run(make):
    run(make(), [{"a": 1}], [{"a": 2}])
    run(make(), [{"a": 3}])
    assert query(make.db, "SELECT a FROM t ORDER BY a") == [(1,), (2,), (3,)]


def test_existing_table_missing_keys_are_null_and_columns_select(make):
    os.makedirs(os.path.dirname(make.db))
    conn = sqlite3.connect(make.db)
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c TEXT DEFAULT 'dflt')")
    conn.close()
    run(make(), [{"a": 1, "zzz": 0}])  # all columns written: c is NULL
    run(make(columns={"a": "INTEGER"}), [{"a": 2, "b": "ignored"}])  # only a: c keeps its default
    assert query(make.db, "SELECT * FROM t ORDER BY a") == [(1, None, None), (2, None, "dflt")]


def test_columns_not_in_an_existing_table_are_an_error_at_open(make):
    run(make(columns={"a": "INTEGER"}), [])
    out = make(columns={"a": "INTEGER", "b": "TEXT"})
    with pytest.raises(ValueError, match="has no column"):
        out.open(FakeCtx())
    out.close()
    run(make(), [{"a": 1}])  # the failed open left no lock behind


def test_replace_deletes_the_old_rows_in_the_same_transaction(make):
    run(make(), [{"a": 1}, {"a": 2}])
    out = make(mode="replace")
    out.open(FakeCtx())
    out.write([{"a": 3}])
    # another reader still sees the old rows until commit
    assert query(make.db, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]
    out.commit()
    out.close()
    assert query(make.db, "SELECT a FROM t") == [(3,)]


def test_replace_aborted_keeps_the_old_rows(make):
    run(make(), [{"a": 1}])
    out = make(mode="replace")
    out.open(FakeCtx())
    out.write([{"a": 3}])
    out.abort()
    out.close()
    assert query(make.db, "SELECT a FROM t") == [(1,)]


def test_upsert_same_key_twice_keeps_one_row_with_the_last_values(make):
    run(
        make(key="id"),
        [{"id": 1, "v": "a", "n": 1}, {"id": 2, "v": "b", "n": 2}, {"id": 1, "v": "c", "n": 3}],
        [{"id": 2, "v": "d", "n": 4}],
    )
    run(make(key="id"), [{"id": 1, "v": "e", "n": 5}])
    assert query(make.db, "SELECT * FROM t ORDER BY id") == [(1, "e", 5), (2, "d", 4)]
    assert schema(make.db, "t")[0] == ("id", "INTEGER", 1, 0)  # NOT NULL
    assert query(make.db, 'SELECT "unique" FROM pragma_index_list(?)', "t") == [(1,)]


def test_upsert_with_a_composite_key_and_only_key_columns(make):
    cols = {"a": "INTEGER", "b": "TEXT", "v": "REAL"}
    run(
        make(columns=cols, key=["a", "b"]),
        [{"a": 1, "b": "x", "v": 1.0}, {"a": 1, "b": "y", "v": 2.0}, {"a": 1, "b": "x", "v": 3.0}],
    )
    assert query(make.db, "SELECT * FROM t ORDER BY b") == [(1, "x", 3.0), (1, "y", 2.0)]
    run(make(table="k", key="a"), [{"a": 1}, {"a": 1}])  # nothing to update: DO NOTHING
    assert query(make.db, "SELECT * FROM k") == [(1,)]


def test_upsert_on_an_existing_table_needs_a_unique_key(make):
    run(make(columns={"id": "INTEGER", "v": "TEXT"}), [{"id": 1, "v": "a"}])
    out = make(key="id")
    with pytest.raises(ValueError, match="no primary key or unique index"):
        out.open(FakeCtx())
    out.close()
    conn = sqlite3.connect(make.db)
    conn.execute('CREATE UNIQUE INDEX "t_id" ON t (id)')
    conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    conn.close()
    run(make(key="id"), [{"id": 1, "v": "b"}])
    run(make(table="r", key="id"), [{"id": 7, "v": "x"}], [{"id": 7, "v": "y"}])
    assert query(make.db, "SELECT * FROM t") == [(1, "b")]
    assert query(make.db, "SELECT * FROM r") == [(7, "y")]


def test_a_null_key_fails_the_write(make):
    out = make(key="id")
    out.open(FakeCtx())
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        out.write([{"id": 1}, {"v": 2, "id": None}])
    out.abort()
    out.close()


def test_key_must_be_among_the_columns(make):
    with pytest.raises(ValueError, match="not in columns"):
        make(columns={"a": "INTEGER"}, key="b")
    out = make(key="b")
    out.open(FakeCtx())
    with pytest.raises(ValueError, match="not in the records"):
        out.write([{"a": 1}])
    out.abort()
    out.close()


def test_abort_leaves_no_rows_and_no_new_table(make):
    out = make()
    out.open(FakeCtx())
    out.write([{"a": 1}])
    out.abort()
    out.close()
    assert tables(make.db) == []


def test_abort_leaves_a_preexisting_table_untouched(make):
    run(make(), [{"a": 1}, {"a": 2}])
    out = make()
    out.open(FakeCtx())
    out.write([{"a": 3}])
    with pytest.raises(sqlite3.Error):
        out.write([{"a": {"not": "bindable"}}])
    out.abort()
    out.close()
    assert query(make.db, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]


def test_close_is_safe_in_any_state(make):
    out = make()
    out.close()
    out.abort()
    out.open(FakeCtx())
    out.write([{"a": 1}])
    out.close()  # without commit: rolled back
    out.close()
    assert tables(make.db) == []
    run(out, [{"a": 2}])  # the same object serves a new attempt
    out.abort()  # after commit: nothing to undo
    out.close()
    assert query(make.db, "SELECT a FROM t") == [(2,)]


def test_calls_can_come_from_different_threads(make):
    out = make()
    for step in (lambda: out.open(FakeCtx()), lambda: out.write([{"a": 1}]), out.commit, out.close):
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    assert query(make.db, "SELECT a FROM t") == [(1,)]


def test_write_before_open_is_an_error(make):
    with pytest.raises(RuntimeError, match="before open"):
        make().write([{"a": 1}])


def test_bad_options(make):
    with pytest.raises(ValueError, match="mode"):
        make(mode="upsert")
    with pytest.raises(ValueError, match="identifier"):
        make(table="")
    with pytest.raises(ValueError, match="columns"):
        make(columns={})


# -- identifiers -----------------------------------------------------------------------------

MALICIOUS = 'x"; DROP TABLE t; --'


def test_odd_identifiers_are_quoted(make):
    run(make(), [{"a": 1}])
    names = ['my "odd" table', "with space", MALICIOUS, "select"]
    for name in names:
        run(make(table=name), [{"col with space": 1, 'q"uote': "v", MALICIOUS: 2, "from": 3}])
        out = make(table=name, key="col with space")  # existing table, no unique key
        with pytest.raises(ValueError, match="unique"):
            out.open(FakeCtx())
        out.close()
    assert tables(make.db) == sorted(["t", *names])
    assert query(make.db, "SELECT a FROM t") == [(1,)]  # untouched
    for name in names:
        assert [c for c, *_ in schema(make.db, name)] == [
            "col with space",
            'q"uote',
            MALICIOUS,
            "from",
        ]
        quoted = '"' + name.replace('"', '""') + '"'
        assert query(make.db, f"SELECT * FROM {quoted}") == [(1, "v", 2, 3)]


def test_malicious_names_in_columns_and_keys_are_quoted(make):
    run(make(), [{"a": 1}])
    cols = {MALICIOUS: "TEXT", 'k"); DROP TABLE t; --': "INTEGER"}
    out = make(table=MALICIOUS, columns=cols, key='k"); DROP TABLE t; --', mode="replace")
    run(
        out,
        [{MALICIOUS: "v1", 'k"); DROP TABLE t; --': 1}],
        [{MALICIOUS: "v2", 'k"); DROP TABLE t; --': 1}],
    )
    assert tables(make.db) == sorted(["t", MALICIOUS])
    assert query(make.db, "SELECT a FROM t") == [(1,)]
    assert query(make.db, 'SELECT * FROM "x""; DROP TABLE t; --"') == [("v2", 1)]


def test_sql_types_cannot_inject(make):
    for bad in ["TEXT); DROP TABLE t; --", "TEXT DEFAULT 'x'", "INT -- c", 3]:
        with pytest.raises(ValueError, match="not an SQL type name"):
            make(columns={"a": bad})
    for good in [
        "",
        "INTEGER",
        "VARCHAR(20)",
        "DOUBLE PRECISION",
        "NUMERIC(10, 2)",
        "INTEGER NOT NULL",
    ]:
        make(columns={"a": good})

"""The postgres output passes pipectl's exactly-once output contract (``pipectl.testing``)."""

from __future__ import annotations

import psycopg
import pytest
from pipectl.testing import check_output_contract
from psycopg import sql


@pytest.fixture
def read_t(pg, schema):
    """``read_t()``: the records in table ``t`` of the test's schema (none before it exists)."""

    def read() -> list[dict]:
        try:
            with pg.transaction():
                rows = pg.execute(
                    sql.SQL("SELECT id, name FROM {}").format(sql.Identifier(schema, "t"))
                ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        return [{"id": i, "name": n} for i, n in rows]

    return read


@pytest.mark.parametrize(
    "options", [{}, {"key": "id"}, {"mode": "replace"}], ids=["append", "upsert", "replace"]
)
def test_the_postgres_output_keeps_the_contract(make_output, read_t, options):
    check_output_contract(lambda: make_output("t", **options), read_t)


def test_the_markers_live_beside_the_table(make_output, read_t, pg, schema):
    check_output_contract(lambda: make_output("t"), read_t)
    markers = pg.execute(
        sql.SQL(
            "SELECT pipeline, run_id, step, output, records, state, "
            "committed_by FROM {} ORDER BY seq"
        ).format(sql.Identifier(schema, "_pipectl_loads"))
    ).fetchall()
    assert markers == [("contract", "run-1", "contract", "out", 25, {"cursor": 25}, "run-1")]

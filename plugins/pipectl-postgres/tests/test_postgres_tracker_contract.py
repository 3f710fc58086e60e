"""The ``postgresql`` tracker passes pipectl's tracker contract (``pipectl.testing``), and is
pipectl's SQL tracker with a dialect of its own: nothing of ``SQLTracker`` is overridden."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from pipectl.testing import check_tracker_contract
from pipectl.tracking import PrunableTracker, ResumableTracker, SQLTracker, open_tracker
from psycopg.conninfo import conninfo_to_dict

from pipectl_postgres.tracker import PostgresDialect, PostgresTracker


@pytest.fixture
def url(pg_dsn: str, schema: str) -> str:
    """The tracker URL of the test's schema on the test server."""
    dsn = pg_dsn
    if "://" not in dsn:  # key/value settings: the same as the parameters of a URL
        dsn = "postgresql://?" + urlencode(conninfo_to_dict(dsn))
    return dsn + ("&" if "?" in dsn else "?") + urlencode({"schema": schema})


def test_the_postgresql_tracker_keeps_the_contract(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    check_tracker_contract(lambda: PostgresTracker(url))


def test_it_differs_from_the_sqlite_tracker_by_its_dialect_alone(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries
) -> None:
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    overridden = {
        name
        for name, value in vars(PostgresTracker).items()
        if callable(value) and name != "__init__"
    }
    assert not overridden & set(vars(SQLTracker)), overridden
    tracker = open_tracker(url, registries)
    try:
        assert isinstance(tracker, PostgresTracker)
        assert isinstance(tracker, ResumableTracker) and isinstance(tracker, PrunableTracker)
        assert isinstance(tracker.dialect, PostgresDialect)
        assert tracker.dialect.placeholder == "%s"
        assert "password" not in tracker.display
    finally:
        tracker.close()

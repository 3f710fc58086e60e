"""The tables of the SQL trackers and their migrations.

The tables keep the names of the seed design ia_modules (``pipeline_executions``,
``step_executions``) so that its users' queries keep working, plus ``extractor_state`` (the
incremental cursors of data steps between runs), ``resume_claims`` (who resumes a run),
``step_logs`` (what each attempt of a step logged and printed) and ``pipectl_schema`` (the schema version, moved on by :data:`MIGRATIONS`). The SQL is written once
for SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from pipectl.tracking.dialect import SQLDialect, dialect_sql
from pipectl.tracking.errors import TrackerError

__all__ = [
    "LOG_COLUMNS",
    "MIGRATIONS",
    "RUN_COLUMNS",
    "STATE_COLUMNS",
    "STEP_COLUMNS",
    "TABLES",
    "migrate_schema",
]

#: Each migration moves the schema from version ``n - 1`` to ``n`` (its index + 1). Column types
#: read the same in SQLite and PostgreSQL. Never edit a released migration: append one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE pipeline_executions (
            execution_id TEXT PRIMARY KEY,
            pipeline_name TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            completed_at TEXT,
            execution_time_ms DOUBLE PRECISION,
            parameters TEXT,
            records_processed BIGINT NOT NULL DEFAULT 0,
            error_message TEXT,
            resumed_from TEXT,
            parent_execution_id TEXT,
            host TEXT,
            pid BIGINT,
            executor TEXT,
            pipeline_file TEXT,
            graph TEXT,
            metadata TEXT
        )""",
        "CREATE INDEX ix_pipeline_executions_started ON pipeline_executions (started_at)",
        """CREATE INDEX ix_pipeline_executions_pipeline
            ON pipeline_executions (pipeline_name, started_at)""",
        """CREATE TABLE step_executions (
            execution_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            step_name TEXT NOT NULL,
            step_type TEXT,
            status TEXT NOT NULL,
            started_at TEXT,
            completed_at TEXT,
            execution_time_ms DOUBLE PRECISION,
            retry_count BIGINT DEFAULT 0,
            error_message TEXT,
            traceback TEXT,
            input_data TEXT,
            output_data TEXT,
            records BIGINT,
            step_order BIGINT,
            metadata TEXT,
            PRIMARY KEY (execution_id, step_id)
        )""",
        """CREATE TABLE extractor_state (
            pipeline_name TEXT NOT NULL,
            step_id TEXT NOT NULL,
            state TEXT NOT NULL,
            execution_id TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (pipeline_name, step_id)
        )""",
    ],
    [  # 2: who resumes a run (SQLTracker.claim_resume): one resumer per run
        """CREATE TABLE resume_claims (
            execution_id TEXT PRIMARY KEY,
            claimed_by TEXT NOT NULL,
            host TEXT,
            pid BIGINT,
            claimed_at TEXT NOT NULL
        )""",
    ],
    [  # 3: step logs (pipectl.step_logs), and the indexes of a web UI's reads (reads.page_runs)
        """CREATE TABLE step_logs (
            execution_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            logged_at TEXT NOT NULL,
            stream TEXT NOT NULL,
            level TEXT,
            message TEXT NOT NULL,
            PRIMARY KEY (execution_id, step_id, attempt, seq)
        )""",
        """CREATE INDEX ix_pipeline_executions_page
            ON pipeline_executions (started_at, execution_id)""",
        """CREATE INDEX ix_pipeline_executions_status
            ON pipeline_executions (status, started_at, execution_id)""",
        """CREATE INDEX ix_pipeline_executions_parent
            ON pipeline_executions (parent_execution_id)""",
        """CREATE INDEX ix_pipeline_executions_resumed
            ON pipeline_executions (resumed_from)""",
    ],
]

RUN_COLUMNS = (
    "execution_id",
    "pipeline_name",
    "status",
    "started_at",
    "completed_at",
    "execution_time_ms",
    "parameters",
    "records_processed",
    "error_message",
    "resumed_from",
    "parent_execution_id",
    "host",
    "pid",
    "executor",
    "pipeline_file",
    "graph",
    "metadata",
)
STEP_COLUMNS = (
    "execution_id",
    "step_id",
    "step_name",
    "step_type",
    "status",
    "started_at",
    "completed_at",
    "execution_time_ms",
    "retry_count",
    "error_message",
    "traceback",
    "input_data",
    "output_data",
    "records",
    "step_order",
    "metadata",
)
STATE_COLUMNS = ("pipeline_name", "step_id", "state", "execution_id", "updated_at")
LOG_COLUMNS = (
    "execution_id",
    "step_id",
    "attempt",
    "seq",
    "logged_at",
    "stream",
    "level",
    "message",
)

TABLES = {
    "pipeline_executions": RUN_COLUMNS,
    "step_executions": STEP_COLUMNS,
    "extractor_state": STATE_COLUMNS,
    "step_logs": LOG_COLUMNS,
}
"""Each table's columns, in the order of the rows the trackers write."""


def migrate_schema(conn: Any, dialect: SQLDialect, display: str) -> int:
    """Create or upgrade the tables on ``conn`` in one transaction (see
    :meth:`SQLDialect.migration`); returns the schema version. A read-only database is only
    checked: its schema must be the current one. ``display`` names the tracker in errors."""
    if dialect.read_only:  # readable if its schema is the current one
        try:
            cur = conn.cursor()
            cur.execute("SELECT version FROM pipectl_schema")
            version = cur.fetchone()[0]
        except Exception:  # noqa: BLE001 - no such table, no row: not a current schema
            version = None
        if version != len(MIGRATIONS):
            raise TrackerError(
                f"tracker {display} is read-only and its schema is "
                f"{'missing' if version is None else f'version {version}'}, "
                f"not {len(MIGRATIONS)}: make it writable once to upgrade it"
            )
        return len(MIGRATIONS)
    dialect.begin_write(conn)
    cur = conn.cursor()
    try:
        with dialect.migration(conn):
            cur.execute("CREATE TABLE IF NOT EXISTS pipectl_schema (version BIGINT NOT NULL)")
            cur.execute("SELECT version FROM pipectl_schema")
            row = cur.fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise TrackerError(
                    f"tracker {display}: its schema is version "
                    f"{version}, newer than this pipectl knows "
                    f"({len(MIGRATIONS)}): upgrade pipectl"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    cur.execute(statement)
            if row is None:
                cur.execute(
                    dialect_sql(dialect, "INSERT INTO pipectl_schema (version) VALUES (?)"),
                    (len(MIGRATIONS),),
                )
            elif version < len(MIGRATIONS):
                cur.execute(
                    dialect_sql(dialect, "UPDATE pipectl_schema SET version = ?"),
                    (len(MIGRATIONS),),
                )
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return len(MIGRATIONS)

"""``connections:`` in pipeline files: named, typed connections (sqlite, postgres, directory,
http) that components name with ``connection: NAME``; every mistake a user can make reported
with file:line, the field and a hint; their secrets (passwords, a DSN's password, tokens,
header values) in none of what pipectl prints, logs, records or writes back."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

import pytest
from plugin_fixtures.fakedist import fake_dists  # noqa: F401 - fixture

from pipectl import Pipeline
from pipectl.files import PipelineFileError, read_pipeline, read_pipelines

PIPECTL = [sys.executable, "-m", "pipectl"]
PASSWORD = "pw-9c1e77a3d2f04b5e"
TOKEN = "tok-4f6a1b8e2c9d7035"
ENV = {"PG_PASSWORD": PASSWORD, "API_TOKEN": TOKEN}


def write(root: Path, text: str, name: str = "p.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


def orders_csv(root: Path) -> None:
    folder = root / "data" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orders.csv").write_text("id,item\n1,apple\n2,pear\n3,fig\n")


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
def pg_target():
    """(the server's fields, a fresh schema) of the test PostgreSQL server; the schema and
    everything in it dropped afterwards. Skipped without PIPECTL_TEST_POSTGRES_DSN."""
    dsn = os.environ.get("PIPECTL_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip(
            "PIPECTL_TEST_POSTGRES_DSN is not set: set it to a PostgreSQL server's DSN "
            "(postgresql://postgres@127.0.0.1:5432/test) to run the postgres connection test"
        )
    psycopg = pytest.importorskip("psycopg")
    parts = urllib.parse.urlsplit(dsn)
    fields = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "database": parts.path.lstrip("/") or "postgres",
        "user": parts.username or "postgres",
    }
    schema = f"pipectl_conn_{secrets.token_hex(5)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield fields, schema, dsn
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


E2E = """\
name: orders
story: story.html
connections:
  warehouse:
    type: postgres
    host: {host}
    port: {port}
    database: {database}
    user: {user}
    password: ${{env.PG_PASSWORD}}   # trust auth ignores it: here to be masked
  local_db: {{type: sqlite, path: out/orders.db}}
  raw: {{type: directory, path: data/raw}}
  api: {{type: http, base_url: "https://api.example.com/v1", headers: {{Authorization: "Bearer ${{env.API_TOKEN}}"}}}}
steps:
  - name: load
    extract: {{type: csv, connection: raw, path: orders.csv, types: {{id: int}}}}
    load:
      - {{type: sqlite, connection: local_db, table: orders}}
      - {{type: postgres, connection: warehouse, schema: {schema}, table: orders}}
  - name: peek
    depends_on: [load]
    run: steps:peek
"""

STEPS = """\
import os


def peek(ctx):
    # what a careless step does: logs the password and returns it (never stored in clear)
    password = os.environ["PG_PASSWORD"]
    ctx.logger.info("peeking", password=password, header="Bearer " + os.environ["API_TOKEN"])
    return {"dsn": "postgresql://postgres:" + password + "@db/test"}
"""


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args],
        cwd=root,
        env={**os.environ, **ENV, "PIPECTL_HOME": str(root / ".pipectl")},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_one_step_loads_sqlite_and_postgres_through_connections_and_no_secret_leaks(
    tmp_path, pg_target
):
    import psycopg

    fields, schema, dsn = pg_target
    orders_csv(tmp_path)
    write(tmp_path, E2E.format(schema=schema, **fields))
    (tmp_path / "steps.py").write_text(STEPS)

    ran = cli(tmp_path, "run", "p.yaml", "--no-progress", "--log-format", "json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with sqlite3.connect(tmp_path / "out" / "orders.db") as db:
        assert db.execute("SELECT id, item FROM orders ORDER BY id").fetchall() == [
            (1, "apple"),
            (2, "pear"),
            (3, "fig"),
        ]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT id, item FROM "{schema}".orders ORDER BY id').fetchall()
    assert rows == [(1, "apple"), (2, "pear"), (3, "fig")]
    assert "peeking" in ran.stderr  # the log line is there, its secrets masked
    shown = cli(tmp_path, "runs", "show", "latest", "--json")
    assert shown.returncode == 0, shown.stderr
    story = cli(tmp_path, "story", "latest", "--format", "html")
    graph = cli(tmp_path, "graph", "p.yaml")
    validated = cli(tmp_path, "validate", "p.yaml")
    assert (tmp_path / "story.html").exists() and list((tmp_path / ".pipectl").rglob("*.db"))
    written = {
        str(p.relative_to(tmp_path)): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name not in ("p.yaml", "steps.py", "orders.csv")
    }
    outputs = {
        "run": ran.stdout + ran.stderr,
        "runs show": shown.stdout + shown.stderr,
        "story": story.stdout + story.stderr,
        "graph": graph.stdout + graph.stderr,
        "validate": validated.stdout + validated.stderr,
    }
    for secret in (PASSWORD, TOKEN):
        for name, blob in written.items():
            assert secret.encode() not in blob, name
        for name, text in outputs.items():
            assert secret not in text, name
    assert "postgresql://postgres:***@db/test" in shown.stdout  # a DSN shows *** for it


@pytest.mark.slow
def test_validate_names_an_unknown_connection_with_its_line_and_a_hint(tmp_path):
    write(
        tmp_path,
        """\
        name: orders
        connections:
          warehouse: {type: postgres, host: db, database: test, password: "${env.PG_PASSWORD}"}
        steps:
          - name: load
            extract: {type: jsonl, path: in.jsonl}
            load:
              - {type: postgres, table: t,
                 connection: warehose}
        """,
    )
    proc = cli(tmp_path, "validate", "p.yaml")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "pipectl: error: p.yaml:9: steps.load.load[0].connection: no connection named "
        "'warehose'; did you mean 'warehouse'? (declared: warehouse)"
    )
    ran = cli(tmp_path, "run", "p.yaml")
    assert ran.returncode == 2 and ran.stderr == proc.stderr
    assert not (tmp_path / ".pipectl").exists()


@pytest.mark.slow
def test_validate_lists_every_problem_of_the_connections_at_once(tmp_path):
    write(
        tmp_path,
        """\
        name: orders
        connections:
          wh: {type: postgress, host: db}
          pg: {type: postgres, database: test, password: "${env.PG_PASSWORD}"}
          bad: "postgresql://u:${env.PG_PASSWORD}@db/test"
        steps:
          - {name: s, extract: {type: jsonl, path: in.jsonl}, load: [{type: jsonl, path: o.jsonl}]}
        """,
    )
    proc = cli(tmp_path, "validate", "p.yaml")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("pipectl: error: p.yaml:3: connections.wh.type: unknown connection")
    assert "did you mean 'postgres'?" in lines[0]
    assert lines[1].startswith("pipectl: error: p.yaml:4: connections.pg.host: is required")
    assert lines[2].startswith("pipectl: error: p.yaml:5: connections.bad: a connection is a")
    assert lines[-1] == "pipectl: 3 problems in p.yaml"
    assert PASSWORD not in proc.stderr and "Traceback" not in proc.stderr


# -- directory, sqlite, http ------------------------------------------------------------------


def test_a_directory_connection_joins_the_csv_extractors_path(tmp_path):
    orders_csv(tmp_path)
    write(
        tmp_path,
        """\
        name: orders
        connections:
          raw: {type: directory, path: data/raw}
          out: {type: directory, path: out}
        steps:
          - name: copy
            extract: {type: csv, connection: raw, path: orders.csv}
            load: [{type: jsonl, connection: out, path: orders.jsonl}]
        """,
    )
    pipe = Pipeline.from_yaml(tmp_path / "p.yaml")
    step = pipe.steps["copy"]
    assert step.options["extract"] == {
        "type": "csv",
        "path": str(tmp_path / "data" / "raw" / "orders.csv"),
    }
    run = pipe.run_sync(tracker="none")
    assert run.status.value == "success", run.errors
    lines = (tmp_path / "out" / "orders.jsonl").read_text().splitlines()
    assert [json.loads(line)["item"] for line in lines] == ["apple", "pear", "fig"]


def test_a_sqlite_connection_gives_the_path_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "in.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    write(
        tmp_path / "sub",
        """\
        name: orders
        connections:
          db: {type: sqlite, path: out/o.db}
        steps:
          - name: load
            extract: {type: jsonl, path: in.jsonl}
            load: [{type: sqlite, connection: db, table: t}]
        """,
    )
    run = Pipeline.from_yaml(tmp_path / "sub" / "p.yaml").run_sync(tracker="none")
    assert run.status.value == "success", run.errors
    with sqlite3.connect(tmp_path / "sub" / "out" / "o.db") as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_an_http_connection_joins_the_url_and_merges_headers(tmp_path):
    write(
        tmp_path,
        """\
        name: api
        connections:
          api:
            type: http
            base_url: "https://api.example.com/v1/"
            headers: {Authorization: "Bearer ${env.API_TOKEN}", X-Team: data}
          other: {type: http, base_url: "https://other.example.com", token: "${env.API_TOKEN}"}
        steps:
          - name: fetch
            extract: {type: http, connection: api, url: /orders, headers: {X-Team: ops}}
            load: [{type: jsonl, path: o.jsonl}]
          - name: root
            extract: {type: http, connection: other}
            load: [{type: jsonl, path: o2.jsonl}]
        """,
    )
    loaded = read_pipeline(tmp_path / "p.yaml", env=ENV)
    steps = {s.name: s for s in loaded.spec.steps}
    assert steps["fetch"].options["extract"] == {
        "type": "http",
        "url": "https://api.example.com/v1/orders",
        "headers": {"Authorization": f"Bearer {TOKEN}", "X-Team": "ops"},
    }
    assert steps["root"].options["extract"] == {
        "type": "http",
        "url": "https://other.example.com",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
    }
    assert TOKEN in loaded.origin.secrets and f"Bearer {TOKEN}" in loaded.origin.secrets


def test_a_file_of_several_pipelines_shares_its_connections(tmp_path):
    orders_csv(tmp_path)
    write(
        tmp_path,
        """\
        connections:
          raw: {type: directory, path: data/raw}
          db: {type: sqlite, path: out.db}
        pipelines:
          - name: first
            steps:
              - {name: a, extract: {type: csv, connection: raw, path: orders.csv},
                 load: [{type: sqlite, connection: db, table: first}]}
          - name: second
            depends_on: [first]
            steps:
              - {name: b, extract: {type: csv, connection: raw, path: orders.csv},
                 load: [{type: sqlite, connection: db, table: second}]}
        """,
    )
    pipelines, _ = read_pipelines(tmp_path / "p.yaml")
    for name, table in (("first", "first"), ("second", "second")):
        (step,) = pipelines[name].spec.steps
        assert step.options["load"] == [
            {"type": "sqlite", "table": table, "path": str(tmp_path / "out.db")}
        ]


# -- secrets ------------------------------------------------------------------------------


PG_FILE = """\
name: orders
connections:
  warehouse:
    type: postgres
    host: db.example.com
    database: test
    user: loader
    password: "${env.PG_PASSWORD}"
steps:
  - name: load
    extract: {type: jsonl, path: in.jsonl}
    load: [{type: postgres, connection: warehouse, table: orders}]
"""


def test_the_dsn_holds_the_password_but_nothing_written_back_does(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", PASSWORD)
    write(tmp_path, PG_FILE)
    pipe = Pipeline.from_yaml(tmp_path / "p.yaml")
    (output,) = pipe.steps["load"].options["load"]
    assert output["dsn"] == f"postgresql://loader:{PASSWORD}@db.example.com/test"
    assert PASSWORD in pipe.file_secrets
    text = pipe.to_yaml()
    assert PASSWORD not in text
    assert "postgresql://loader:${env.PG_PASSWORD}@db.example.com/test" in text
    fingerprints = pipe.fingerprints()
    monkeypatch.setenv("PG_PASSWORD", "another-password")  # a new password: same definition
    assert Pipeline.from_yaml(tmp_path / "p.yaml").fingerprints() == fingerprints


def test_a_password_that_needs_quoting_is_masked_as_written_in_the_dsn(tmp_path):
    write(tmp_path, PG_FILE)
    odd = "p@ss/w:rd%1"
    loaded = read_pipeline(tmp_path / "p.yaml", env={"PG_PASSWORD": odd})
    (output,) = loaded.spec.steps[0].options["load"]
    quoted = urllib.parse.quote(odd, safe="")
    assert output["dsn"] == f"postgresql://loader:{quoted}@db.example.com/test"
    assert odd in loaded.origin.secrets and quoted in loaded.origin.secrets


def test_a_dsn_connection_masks_its_password():
    from pipectl.components.connections import PostgresConnection, dsn_password

    given = f"postgresql://loader:{PASSWORD}@db:5432/test?sslmode=require"
    connection = PostgresConnection(dsn=given)
    assert connection.secrets() == (PASSWORD,)
    assert connection.describe() == "postgresql://loader:***@db:5432/test?sslmode=require"
    assert dsn_password(f"host=db dbname=test password='{PASSWORD}'") == PASSWORD
    assert dsn_password("host=db dbname=test") is None


def test_the_run_masks_connection_secrets_like_secret_params(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", PASSWORD)
    (tmp_path / "steps.py").write_text(
        "import os\n\ndef leak():\n    raise ValueError('refused ' + os.environ['PG_PASSWORD'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write(
        tmp_path,
        """\
        name: leaky
        connections:
          warehouse: {type: postgres, host: db, database: test, password: "${env.PG_PASSWORD}"}
        steps:
          - {name: leak, run: steps:leak}
        """,
    )
    run = Pipeline.from_yaml(tmp_path / "p.yaml").run_sync(tracker="none")
    assert run.status.value == "failed"
    assert PASSWORD not in repr(run.errors) and "refused ***" in run.errors[0]
    assert PASSWORD not in (run.steps["leak"].traceback or "")


# -- every mistake ----------------------------------------------------------------------------


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> PipelineFileError:
    write(tmp_path, text)
    with pytest.raises(PipelineFileError) as caught:
        read_pipelines(tmp_path / "p.yaml", env={**ENV, **(env or {})})
    return caught.value


STEP = """\
steps:
  - name: s
    extract: {type: jsonl, path: in.jsonl}
    load: [{type: jsonl, path: o.jsonl}]
"""


BAD_DECLARATIONS = [
    (  # a typo'd type
        "connections:\n  wh: {type: postgress, host: db, database: d}\n",
        2,
        "connections.wh.type",
        "unknown connection type 'postgress'; did you mean 'postgres'? (known: directory, "
        "http, postgres, sqlite)",
    ),
    (  # no type
        "connections:\n  wh: {host: db}\n",
        2,
        "connections.wh.type",
        "a connection needs a type (one of directory, http, postgres, sqlite)",
    ),
    (  # missing host
        "connections:\n  wh:\n    type: postgres\n    database: d\n",
        2,
        "connections.wh.host",
        "is required (or give a whole 'dsn'); give it: host: <a string>",
    ),
    (  # a connection given as a string (a DSN): its text is never shown
        'connections:\n  wh: "postgresql://u:${env.PG_PASSWORD}@db/d"\n',
        2,
        "connections.wh",
        "a connection is a mapping with its type and fields, got a string",
    ),
    (  # connections given as a list
        "connections:\n  - {type: sqlite, path: x.db}\n",
        1,
        "connections",
        "expected a mapping of connection names, got a list",
    ),
    (  # an unknown field
        "connections:\n  db: {type: sqlite, path: x.db,\n       pth: y.db}\n",
        3,
        "connections.db.pth",
        "unknown field of a sqlite connection; did you mean 'path'? (fields: path)",
    ),
    (  # a wrong type: a secret's value is not shown
        "connections:\n  wh: {type: postgres, host: db, database: d,\n       password: 123456789}\n",
        3,
        "connections.wh.password",
        "expected a string, got a number",
    ),
    (  # a wrong type
        "connections:\n  wh: {type: postgres, host: [db], database: d}\n",
        2,
        "connections.wh.host",
        "expected a string, got a list",
    ),
    (  # an unset variable
        "connections:\n  wh:\n    type: postgres\n    host: db\n    database: d\n"
        '    password: "${env.NO_SUCH_PASSWORD}"\n',
        6,
        "connections.wh.password",
        "${env.NO_SUCH_PASSWORD} is not set; set it, or give a default",
    ),
    (  # dsn and the fields
        "connections:\n  wh: {type: postgres, dsn: 'postgresql://db/d', host: db}\n",
        2,
        "connections.wh.host",
        "give 'dsn' or the fields",
    ),
    (  # a port that is no port
        "connections:\n  wh: {type: postgres, host: db, database: d, port: http}\n",
        2,
        "connections.wh.port",
        "expected a port number, got 'http'",
    ),
    (  # an http base_url that is not http
        "connections:\n  api: {type: http, base_url: 'ftp://example.com'}\n",
        2,
        "connections.api.base_url",
        "expected an http:// or https:// URL",
    ),
    (  # credentials in a base_url
        "connections:\n  api: {type: http, base_url: 'https://u:${env.PG_PASSWORD}@x.com'}\n",
        2,
        "connections.api.base_url",
        "must not hold credentials",
    ),
    (  # a name that is not a word
        "connections:\n  my db: {type: sqlite, path: x.db}\n",
        2,
        "connections",
        "a connection's name is a word",
    ),
]


@pytest.mark.parametrize(("declared", "line", "field", "message"), BAD_DECLARATIONS)
def test_a_bad_declaration_is_reported_with_line_field_and_hint(
    tmp_path, declared, line, field, message
):
    error = _error(tmp_path, "name: x\n" + declared + STEP)
    assert (error.line, error.field) == (line + 1, field), str(error)
    assert message in error.message, str(error)
    assert PASSWORD not in str(error)


BAD_REFERENCES = [
    (  # an unknown name
        "{type: sqlite, connection: lcoal_db, table: t}",
        "connection",
        "no connection named 'lcoal_db'; did you mean 'local_db'? (declared: warehouse, "
        "local_db, raw)",
    ),
    (  # a connection given inline instead of by name
        "{type: sqlite, connection: {type: sqlite, path: x.db}, table: t}",
        "connection",
        "expected the name of a connection, got a mapping",
    ),
    (  # both connection and the option it gives
        "{type: sqlite, connection: local_db, path: other.db, table: t}",
        "path",
        "'connection' and 'path' are both given: the sqlite connection 'local_db' gives the "
        "sqlite output its path; drop one of them",
    ),
    (
        "{type: postgres, connection: warehouse, dsn_env: PG_DSN, table: t}",
        "dsn_env",
        "'connection' and 'dsn_env' are both given",
    ),
    (  # a connection of another type
        "{type: sqlite, connection: warehouse, table: t}",
        "connection",
        "connection 'warehouse' (line 3) is a postgres connection, for postgres components, "
        "not the sqlite output",
    ),
    (  # a directory for a component without a path
        "{type: postgres, connection: raw, table: t}",
        "connection",
        "connection 'raw' is a directory connection, which gives a component its path; the "
        "postgres output has no such option",
    ),
    (  # an absolute path under a directory
        "{type: jsonl, connection: raw, path: /tmp/o.jsonl}",
        "connection",
        "path '/tmp/o.jsonl' is not relative",
    ),
]

REFERENCING = """\
name: x
connections:
  warehouse: {{type: postgres, host: db, database: d, password: "${{env.PG_PASSWORD}}"}}
  local_db: {{type: sqlite, path: out.db}}
  raw: {{type: directory, path: raw}}
steps:
  - name: s
    extract: {{type: jsonl, path: in.jsonl}}
    load:
      - {component}
"""


@pytest.mark.parametrize(("component", "field", "message"), BAD_REFERENCES)
def test_a_bad_reference_is_reported_at_its_line(tmp_path, component, field, message):
    error = _error(tmp_path, REFERENCING.format(component=component))
    assert (error.line, error.field) == (10, f"steps.s.load[0].{field}"), str(error)
    assert message in error.message, str(error)
    assert PASSWORD not in str(error)


def test_a_file_without_connections_says_where_to_declare_them(tmp_path):
    error = _error(
        tmp_path,
        "name: x\nsteps:\n  - name: s\n    extract: {type: csv, connection: raw, path: a.csv}\n"
        "    load: [{type: jsonl, path: o.jsonl}]\n",
    )
    assert (error.line, error.field) == (4, "steps.s.extract.connection")
    assert "the file declares no connections (declare it at the top" in error.message


def test_connections_under_one_of_several_pipelines_are_refused(tmp_path):
    error = _error(
        tmp_path,
        "pipelines:\n  - name: a\n    connections: {db: {type: sqlite, path: x.db}}\n"
        "    steps: [{name: s, run: 'os:getcwd'}]\n",
    )
    assert (error.line, error.field) == (3, "pipelines[0].connections")
    assert "connections go at the top of a file with several pipelines" in error.message


def test_a_reference_from_a_pipeline_of_a_file_without_top_connections(tmp_path):
    error = _error(
        tmp_path,
        "pipelines:\n  - name: a\n    steps:\n      - {name: s, extract: {type: csv, "
        "connection: raw, path: a.csv}, load: [{type: jsonl, path: o.jsonl}]}\n",
    )
    assert (error.line, error.field) == (4, "pipelines[0].steps.s.extract.connection")


def test_several_bad_references_are_all_reported(tmp_path):
    error = _error(
        tmp_path,
        REFERENCING.format(component="{type: sqlite, connection: nope, table: t}")
        + "      - {type: jsonl, connection: nada, path: o.jsonl}\n",
    )
    assert [(e.line, e.field) for e in error.errors] == [
        (10, "steps.s.load[0].connection"),
        (11, "steps.s.load[1].connection"),
    ]
    assert "(and 1 more problems)" in str(error)


def test_a_file_without_connections_does_not_import_them(tmp_path):
    write(tmp_path, "name: x\n" + STEP)
    code = (
        "import sys\nfrom pipectl.files import read_pipelines\n"
        f"read_pipelines({str(tmp_path / 'p.yaml')!r})\n"
        "print([m for m in sys.modules if 'connections' in m])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # only the built-in plugin that registers the types, which imports none of them
    assert proc.stdout.strip() == "['pipectl.builtins.connections']"


SCRATCH_PLUGIN = '''
import os

from pipectl import hookimpl
from pipectl.connections import Connection
from pipectl.options import FilePath


class ScratchConnection(Connection):
    """A scratch area: gives a jsonl output its file, named after the connection's label."""

    serves = ("jsonl",)
    replaces = ("path",)
    secret_fields = ("token",)

    def __init__(self, *, root: FilePath, label: str, token: str = ""):
        self.root, self.label, self.token = root, label, token

    def options(self, component):
        return {"path": os.path.join(self.root, f"{self.label}-{self.token}.jsonl")}


@hookimpl
def pipectl_register_connection_types(register):
    register("scratch", ScratchConnection, options=ScratchConnection)
'''

SCRATCH_FILE = """\
name: scratched
connections:
  area: {type: scratch, root: out, label: orders, token: "${env.SCRATCH_TOKEN}"}
steps:
  - name: load
    extract: {type: csv, path: data/raw/orders.csv}
    load:
      - {type: jsonl, connection: area}
"""


@pytest.mark.slow
def test_hook_pipectl_register_connection_types(fake_dists, tmp_path):
    """A connection type an installed plugin registers: declared in a file, checked like the
    built-in ones, its component's options given, its secret field masked."""
    fake_dists.add("scratch", SCRATCH_PLUGIN)
    orders_csv(tmp_path)
    path = write(tmp_path, SCRATCH_FILE)
    token = "scr-7d1f0a9b3c"
    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    done = fake_dists.run_cli(
        "run", str(path), "--no-progress", "--tracker", tracker, SCRATCH_TOKEN=token
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = tmp_path / "out" / f"orders-{token}.jsonl"
    assert [json.loads(line)["item"] for line in written.read_text().splitlines()] == [
        "apple",
        "pear",
        "fig",
    ]
    assert token not in done.stdout + done.stderr
    assert token.encode() not in (tmp_path / "runs.db").read_bytes()

    listed = fake_dists.run_cli("plugins", "--json")
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["scratch"]["components"] == {"connection_types": ["scratch"]}

    path.write_text(SCRATCH_FILE.replace("label: orders", "lable: orders"))
    bad = fake_dists.run_cli("validate", str(path), SCRATCH_TOKEN=token)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"{path}:3" in bad.stderr and "lable" in bad.stderr and "label" in bad.stderr

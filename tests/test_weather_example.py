"""examples/weather runs as its README says (its own API server, SQLite, JSON Lines and, with
PIPECTL_TEST_POSTGRES_DSN set, PostgreSQL), and a run streaming that API into PostgreSQL,
killed with SIGKILL in the middle, resumes to every record exactly once."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "weather"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]
DSN_VARIABLE = "PIPECTL_TEST_POSTGRES_DSN"

HAS_HTTP = importlib.util.find_spec("pipectl_http") is not None
HAS_POSTGRES = importlib.util.find_spec("pipectl_postgres") is not None
needs_http = pytest.mark.skipif(
    not HAS_HTTP,
    reason="pipectl-http is not installed (pip "
    "install -e plugins/pipectl-http): the example's data step "
    "uses its http extractor",
)


def _needs_postgres() -> str:
    """The test server's DSN, or a skip saying what is missing."""
    if not HAS_POSTGRES:
        pytest.skip("pipectl-postgres is not installed (pip install -e plugins/pipectl-postgres)")
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(
            f"{DSN_VARIABLE} is not set: set it to the DSN of a PostgreSQL server "
            "(postgresql://user@host:5432/dbname) to run the PostgreSQL part"
        )
    return dsn


def _load_api() -> ModuleType:
    """The example's API module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "weather_api_of_the_example", EXAMPLE / "weather_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


weather_api = _load_api()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_example(tmp_path: Path) -> Path:
    """The example in ``tmp_path/examples/weather``; without pipectl-postgres, minus the step
    that names its output (the file could not load otherwise)."""
    target = tmp_path / "examples" / "weather"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("output", "__pycache__"))
    if not HAS_POSTGRES:
        pipeline = target / "pipeline.yaml"
        text = pipeline.read_text()
        pipeline.write_text(text[: text.index("  - name: load_postgres")])
    return target


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment with ``changes`` (None: removed)."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_example(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, "run", "examples/weather/pipeline.yaml", *args, "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def status_of(stdout: str, step: str) -> str:
    """The status column of ``step`` in the table ``pipectl run`` prints."""
    for line in stdout.splitlines():
        if line.split()[:1] == [step]:
            return line.split()[1]
    raise AssertionError(f"no row for {step!r} in:\n{stdout}")


def expected(locations: list[str], days: int = 7) -> list[dict[str, Any]]:
    return weather_api.WeatherApi(days=days).readings(locations)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sqlite_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM readings")]


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    keyed = {(r["location"], r["observed_at"]): r for r in rows}
    assert len(keyed) == len(rows), "a reading is there twice"
    return keyed


def get_json(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- the API alone ----------------------------------------------------------------------------


def test_the_example_api_pages_cursors_filters_and_keys():
    server = weather_api.start_in_thread(days=2, api_key="k")
    try:
        base = f"{server.url}/v1/readings"
        assert get_json(f"{server.url}/v1/health")[0] == 200  # no key needed
        status, body = get_json(f"{base}?location=NYC")
        assert status == 401 and "X-API-Key" in body["error"]
        everything = expected(["NYC", "SF"], days=2)
        status, first = get_json(f"{base}?location=NYC&location=SF&page=1&page_size=20", "k")
        assert status == 200 and first["meta"] == {
            "page": 1,
            "page_size": 20,
            "total": 96,
            "next_cursor": "r20",
        }
        assert first["data"] == everything[:20]
        paged, cursor = [], None
        while True:  # cursor pagination, comma-separated locations
            query = "location=NYC,SF&page_size=25" + (f"&cursor={cursor}" if cursor else "")
            body = get_json(f"{base}?{query}", "k")[1]
            paged += body["data"]
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                break
        assert paged == everything
        since = everything[49]["updated_at"]
        newer = get_json(f"{base}?location=NYC&location=SF&since={since}&page_size=500", "k")[1]
        assert newer["data"] == [r for r in everything if r["updated_at"] > since]
        assert newer["data"] and newer["meta"]["total"] == len(newer["data"])
        status, body = get_json(f"{base}?location=XYZ", "k")
        assert status == 400 and "NYC" in body["error"]
        assert len({(r["location"], r["observed_at"]) for r in everything}) == 2 * 2 * 24
    finally:
        server.stop()


# -- the example, as its README runs it ------------------------------------------------------


def test_the_json_schema_accepts_the_weather_example():
    import jsonschema
    import yaml

    from pipectl.cli.schema_command import schema_text

    jsonschema.validate(
        yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text()), json.loads(schema_text())
    )


@pytest.mark.slow
@needs_http
def test_weather_example_starts_its_api_loads_sqlite_and_jsonl_and_skips_postgres(tmp_path):
    example = copy_example(tmp_path)
    port = free_port()
    env = environment(**{DSN_VARIABLE: None, "WEATHER_API_KEY": None})
    proc = run_example(tmp_path, "-p", f"api=http://127.0.0.1:{port}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = "examples/weather/output"
    assert (
        f"load_readings -> sqlite {out}/weather.sqlite table readings: 336 records" in proc.stdout
    )
    assert f"load_readings -> jsonl {out}/readings.jsonl: 336 records" in proc.stdout
    assert "weather_api_started days=7" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    if HAS_POSTGRES:
        assert status_of(proc.stdout, "load_postgres") == "skipped"
        assert "postgres_not_configured" in proc.stderr
    assert "of 'weather_api': success" in proc.stdout

    want = by_key(expected(["NYC", "SF"]))
    assert len(want) == 2 * 7 * 24
    assert by_key(jsonl(example / "output" / "readings.jsonl")) == want
    assert by_key(sqlite_rows(example / "output" / "weather.sqlite")) == want

    # again, with a location more: upserted on (location, observed_at), nothing twice
    proc = run_example(
        tmp_path, "-p", f"api=http://127.0.0.1:{port}", "-p", "locations=NYC,SF,LON", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load_readings -> sqlite" in proc.stdout and "504 records" in proc.stdout
    want = by_key(expected(["NYC", "SF", "LON"]))
    assert by_key(sqlite_rows(example / "output" / "weather.sqlite")) == want
    assert by_key(jsonl(example / "output" / "readings.jsonl")) == want


@pytest.mark.slow
@needs_http
def test_weather_example_uses_an_api_already_running_and_its_key(tmp_path):
    copy_example(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "examples/weather/weather_api.py",
            "--port",
            str(port),
            "--days",
            "2",
            "--api-key",
            "s3cret-key",
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get_json(f"http://127.0.0.1:{port}/v1/health")[1]["key_required"]:
                    break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.05)
        api = f"http://127.0.0.1:{port}"
        env = environment(**{DSN_VARIABLE: None, "WEATHER_API_KEY": "s3cret-key"})
        proc = run_example(tmp_path, "-p", f"api={api}", "-p", "locations=TYO,SYD", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "weather_api_found" in proc.stderr and "weather_api_started" not in proc.stderr
        assert "table readings: 96 records" in proc.stdout  # 2 days x 24 h x 2 locations
        rows = sqlite_rows(tmp_path / "examples" / "weather" / "output" / "weather.sqlite")
        assert by_key(rows) == by_key(expected(["TYO", "SYD"], days=2))

        env["WEATHER_API_KEY"] = "wrong-key"
        proc = run_example(tmp_path, "-p", f"api={api}", env=env)
        assert proc.returncode == 1
        assert "HTTP 401 Unauthorized (check the credentials (auth))" in proc.stdout
        assert "wrong-key" not in proc.stdout + proc.stderr  # the secret is never shown
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(DSN, a new schema with a random name), the schema dropped after the test."""
    dsn = _needs_postgres()
    import psycopg
    from psycopg import sql

    name = f"pipectl_weather_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield dsn, name
    finally:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute("SET lock_timeout = '10s'")  # a connection left open fails, not hangs
            pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def pg_rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as pg:
        return pg.execute(query).fetchall()


@pytest.mark.slow
@needs_http
def test_weather_example_upserts_postgres_when_the_dsn_is_set(tmp_path, pg_schema):
    dsn, schema = pg_schema
    copy_example(tmp_path)
    port = free_port()
    env = environment(**{DSN_VARIABLE: dsn, "WEATHER_API_KEY": None})
    args = ("-p", f"api=http://127.0.0.1:{port}", "-p", f"postgres_schema={schema}")
    for _ in range(2):  # the second run upserts the same readings: nothing twice
        proc = run_example(tmp_path, *args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert status_of(proc.stdout, "load_postgres") == "success"
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith("load_postgres -> ")]
        assert line.startswith("load_postgres -> postgres ")  # user@host:port/dbname
        assert line.endswith(f" table {schema}.weather_readings: 336 records")
        assert dsn not in proc.stdout + proc.stderr  # it stays in the environment

    rows = pg_rows(
        dsn,
        f"SELECT location, to_char(observed_at AT TIME ZONE 'UTC', "
        f'\'YYYY-MM-DD"T"HH24:MI:SS"Z"\'), temperature_c, humidity_pct '
        f"FROM {schema}.weather_readings",
    )
    want = expected(["NYC", "SF"])
    assert len(rows) == len(want) == 336
    assert {r[:2] for r in rows} == {(w["location"], w["observed_at"]) for w in want}
    assert sorted(rows) == sorted(
        (w["location"], w["observed_at"], w["temperature_c"], w["humidity_pct"]) for w in want
    )
    types = dict(
        pg_rows(
            dsn,
            f"SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND "
            f"table_name = 'weather_readings'",
        )
    )
    assert types["observed_at"] == "timestamp with time zone"
    assert types["humidity_pct"] == "integer"


# -- HTTP API -> PostgreSQL, killed and resumed ------------------------------------------------

RESUME_STEPS = '''
    from pathlib import Path


    def prepare():
        """Counts its executions: a resume must not run it again."""
        path = Path("prepare-runs.txt")
        path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
        return "ready"
'''

RESUME_PIPELINE = """
    name: http_to_postgres
    params:
      api: {type: str, default: "API"}
      schema: {type: str, default: "SCHEMA"}
    steps:
      - {name: prepare, run: "resume_steps:prepare"}
      - name: load
        depends_on: [prepare]
        extract:
          type: http
          url: "${params.api}/v1/readings"
          params: {location: [NYC, SF]}
          records_path: data
          paginate: page
          page_size_param: page_size
          page_size: 20
        load:
          - type: postgres
            dsn_env: PIPECTL_TEST_POSTGRES_DSN
            schema: "${params.schema}"
            table: readings
            mode: append                 # no key: a record written twice would show
            columns: {location: text, observed_at: text, temperature_c: double precision}
"""


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


@pytest.mark.slow
@needs_http
def test_http_to_postgres_killed_mid_run_and_resumed_has_every_record_once(tmp_path, pg_schema):
    dsn, schema = pg_schema
    home = tmp_path / "home"
    env = environment(**{DSN_VARIABLE: dsn, "PIPECTL_HOME": str(home)})
    write(tmp_path / "resume_steps.py", RESUME_STEPS)
    # 30 days x 24 h x 2 locations = 1,440 readings: 72 pages of 20, 40 ms each (~3 s)
    server = weather_api.start_in_thread(days=30, delay=0.04)
    # the values are defaults, not -p: a required param fails `--resume` at load time
    write(
        tmp_path / "pipeline.yaml",
        RESUME_PIPELINE.replace('"API"', f'"{server.url}"').replace('"SCHEMA"', f'"{schema}"'),
    )
    try:
        want = {(r["location"], r["observed_at"]) for r in server.api.readings(["NYC", "SF"])}
        assert len(want) == 1440
        victim = subprocess.Popen(
            [*PIPECTL, "run", "pipeline.yaml", "--no-progress"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while server.api.requests < 15:  # well into the stream, far from its end
            assert victim.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run did not start streaming"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        served = server.api.requests
        assert served < 60, f"{served} pages served before the kill: the run was nearly done"

        def pipectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*PIPECTL, *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        listed = json.loads(pipectl("runs", "list", "--json").stdout)
        assert [r["status"] for r in listed] == ["interrupted"]
        # the output created the table and copied pages in a transaction that never committed
        assert pg_rows(dsn, f"SELECT to_regclass('{schema}.readings')") == [(None,)]

        resumed = pipectl("run", "pipeline.yaml", "--resume", "latest", "--no-progress")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert status_of(resumed.stdout, "prepare") == "success"
        assert "(resumed)" in resumed.stdout  # prepare's output came from the killed run
        assert (tmp_path / "prepare-runs.txt").read_text() == "1"  # not run again
        assert f"table {schema}.readings: 1,440 records" in resumed.stdout
    finally:
        server.stop()

    rows = pg_rows(dsn, f"SELECT location, observed_at FROM {schema}.readings")
    assert len(rows) == 1440  # append mode: a record written twice would make more
    assert set(rows) == want
    shown = json.loads(
        subprocess.run(
            [*PIPECTL, "runs", "show", "latest", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    )
    assert shown["status"] == "success" and shown["resumed_from"] == listed[0]["execution_id"]

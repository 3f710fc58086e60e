"""Plugin distributions in a fresh virtual environment: the kernel alone, then pipectl-postgres
``pip install``-ed beside it, then the skeletons of ``pipectl new plugin`` installed and their
own tests run there.

pipectl and the plugin are copied out of the repository first (without virtualenvs and build
leftovers), so that pip builds them elsewhere and writes nothing into the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".venv*",
    ".git",
    "*.egg-info",
    "__pycache__",
    "build",
    "dist",
    ".pytest_cache",
    ".hypothesis",
    ".pipectl",
    "*.pyc",
)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPECTL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _run(args: list, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with pipectl from this repository, and nothing else."""
    base = tmp_path_factory.mktemp("distributions")
    _run([sys.executable, "-m", "venv", base / "venv"], cwd=base)
    source = base / "src" / "pipectl"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "plugins",
            "tests",
            "benchmarks",
            "examples",
            ".venv*",
            ".git",
            "*.egg-info",
            "__pycache__",
            "build",
            "dist",
            ".pytest_cache",
            ".hypothesis",
            ".pipectl",
            "*.pyc",
        ),
    )
    _run([base / "venv" / "bin" / "python", "-m", "pip", "install", "-q", source], cwd=base)
    return base


def plugins(base: Path, *args: str) -> dict[str, dict]:
    proc = _run([base / "venv" / "bin" / "pipectl", "plugins", "--json", *args], cwd=base)
    return {row["name"]: row for row in json.loads(proc.stdout)}


def test_the_kernel_alone_then_pipectl_postgres_installed_beside_it(venv):
    base = venv
    alone = plugins(base, "--all")
    components = {
        kind: names
        for row in alone.values()
        for kind, names in row["components"].items()
        if kind != "connection_types"  # the kernel's connection types name postgres and http
    }
    assert not any("postgres" in n or "http" in n for names in components.values() for n in names)
    assert set(plugins(base)) == set()  # no plugin but the built-ins

    source = base / "src" / "pipectl-postgres"
    shutil.copytree(REPO_ROOT / "plugins" / "pipectl-postgres", source, ignore=IGNORED)
    _run([base / "venv" / "bin" / "python", "-m", "pip", "install", "-q", source], cwd=base)

    rows = plugins(base)
    assert set(rows) == {"postgres"}
    row = rows["postgres"]
    assert row["status"] == "loaded", row["error"]
    assert (row["distribution"], row["version"]) == ("pipectl-postgres", "0.1.0")
    assert "postgres" in row["components"]["extractors"]
    assert "postgres" in row["components"]["outputs"]
    listing = _run([base / "venv" / "bin" / "pipectl", "plugins"], cwd=base).stdout
    assert "postgres  (pipectl-postgres 0.1.0)  loaded" in listing

    dsn = os.environ.get("PIPECTL_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip(
            "PIPECTL_TEST_POSTGRES_DSN is not set: the pipeline using the plugin "
            "needs the PostgreSQL server (.ci/run sets it)"
        )
    schema = f"dist_{uuid.uuid4().hex[:10]}"
    (base / "orders.csv").write_text("id,amount\n1,2.5\n2,4.0\n3,7.25\n")
    (base / "pipeline.yaml").write_text(
        "name: to_postgres\nsteps:\n  - name: load\n"
        "    extract: {type: csv, path: orders.csv, types: {id: int, amount: float}}\n"
        f"    load: [{{type: postgres, dsn_env: PG_DSN, schema: {schema}, table: orders,"
        " key: id}]\n"
    )
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        proc = _run(
            [base / "venv" / "bin" / "pipectl", "run", "pipeline.yaml", "--no-progress"],
            cwd=base,
            PG_DSN=dsn,
        )
        assert "of 'to_postgres': success" in proc.stdout
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(f'SELECT id, amount FROM "{schema}".orders ORDER BY id').fetchall()
        assert rows == [(1, 2.5), (2, 4.0), (3, 7.25)]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("kind", ["extractor", "output", "tracker", "listener"])
def test_pipectl_new_plugin_installs_lists_and_passes_its_own_test(venv, kind):
    base = venv
    python = base / "venv" / "bin" / "python"
    folder = base / "new" / kind
    folder.parent.mkdir(exist_ok=True)
    made = _run(
        [
            base / "venv" / "bin" / "pipectl",
            "new",
            "plugin",
            f"demo-{kind}",
            "--kind",
            kind,
            "-o",
            folder,
        ],
        cwd=base,
    )
    assert (
        f"wrote pipectl-demo-{kind} ({kind} 'demo-{kind}', module pipectl_demo_{kind})"
        in made.stdout
    )
    _run([python, "-m", "pip", "install", "-q", "-e", f"{folder}[test]"], cwd=base)

    rows = plugins(base)
    row = rows[f"demo-{kind}"]
    assert row["status"] == "loaded", row["error"]
    assert (row["distribution"], row["version"]) == (f"pipectl-demo-{kind}", "0.1.0")
    expected = {
        "extractor": {"extractors": [f"demo-{kind}"]},
        "output": {"outputs": [f"demo-{kind}"]},
        "tracker": {"trackers": [f"demo-{kind}"]},
        "listener": {},
    }[kind]
    assert row["components"] == expected
    if kind == "listener":
        assert row["hooks"] == ["pipectl_run_finish", "pipectl_step_finish"]

    tested = _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", folder / "tests"], cwd=folder
    )
    # the output and tracker skeletons also run pipectl.testing's contract against themselves
    assert f"{2 if kind in ('output', 'tracker') else 1} passed" in tested.stdout

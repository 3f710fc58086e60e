"""End to end: ``pip install`` pipectl and a plugin package into a fresh virtual environment, then
list the plugin with the installed ``pipectl`` console script and run a pipeline that uses it.

The sources of pipectl are this repository (found from this file's location), copied to a
temporary directory without virtualenvs and build leftovers first, so that pip's in-tree build
writes nothing into the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pipectl-hello"
version = "0.2.0"
description = "A pipectl plugin used by pipectl's own tests."
requires-python = ">=3.11"
dependencies = ["pipectl"]

[project.entry-points.pipectl]
hello = "pipectl_hello.plugin"

[tool.setuptools]
packages = ["pipectl_hello"]
"""

PLUGIN_MODULE = """
import click

from pipectl import hookimpl

EVENTS = []


def _make_greet(step):
    greeting = step.options.get("greeting", "hello")

    def greet(params):
        return f"{greeting}, {params['who']}"

    return greet


@hookimpl
def pipectl_register_step_types(register):
    register("hello-greet", _make_greet)


@hookimpl
def pipectl_run_start(run):
    EVENTS.append(["run_start", run.pipeline_id])


@hookimpl
def pipectl_run_finish(run):
    EVENTS.append(["run_finish", run.pipeline_id, run.status.value])


@hookimpl
def pipectl_register_commands(cli):
    @cli.command()
    def hello():
        \"\"\"Say hello from the installed plugin.\"\"\"
        click.echo("hello from pipectl-hello")
"""

PIPELINE_SCRIPT = """
import json

import pipectl
import pipectl_hello.plugin as plugin
from pipectl import Pipeline

pipe = Pipeline("hello-pipeline")
pipe.add_step("greet", step_type="hello-greet", options={"greeting": "bonjour"})


@pipe.step("shout", depends_on=["greet"])
def shout(greet):
    return greet.upper()


run = pipe.run_sync(params={"who": "venv"})
print(json.dumps({
    "status": run.status.value,
    "outputs": run.outputs(),
    "errors": run.errors,
    "events": plugin.EVENTS,
    "pipectl_file": pipectl.__file__,
}))
"""

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


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPECTL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with pipectl (from this repository) and pipectl-hello pip-installed."""
    base = tmp_path_factory.mktemp("pip-install")
    venv_dir = base / "venv"
    _run([sys.executable, "-m", "venv", venv_dir], cwd=base)
    python = venv_dir / "bin" / "python"

    source = base / "pipectl-src"
    shutil.copytree(REPO_ROOT, source, ignore=IGNORED)
    _run([python, "-m", "pip", "install", source], cwd=base)

    plugin = base / "pipectl-hello"
    (plugin / "pipectl_hello").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (plugin / "pipectl_hello" / "__init__.py").write_text("")
    (plugin / "pipectl_hello" / "plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    _run([python, "-m", "pip", "install", plugin], cwd=base)
    return venv_dir


def test_installed_plugin_is_listed_as_loaded(venv):
    proc = _run([venv / "bin" / "pipectl", "plugins", "--json"], cwd=venv)

    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {"hello"}  # a fresh venv: no other plugin, built-ins only with --all
    hello = rows["hello"]
    assert hello["status"] == "loaded", hello["error"]
    assert hello["distribution"] == "pipectl-hello"
    assert hello["version"] == "0.2.0"
    assert hello["module"] == "pipectl_hello.plugin"
    assert hello["components"] == {"step_types": ["hello-greet"]}
    assert hello["hooks"] == [
        "pipectl_register_commands",
        "pipectl_register_step_types",
        "pipectl_run_finish",
        "pipectl_run_start",
    ]
    assert hello["source"].startswith(str(venv))  # the installed copy, not the source tree


def test_installed_plugin_listed_with_builtins(venv):
    proc = _run([venv / "bin" / "pipectl", "plugins", "--all"], cwd=venv)

    assert "hello  (pipectl-hello 0.2.0)  loaded" in proc.stdout
    assert "local  (pipectl 0.1.0)  loaded" in proc.stdout


def test_pipeline_uses_the_installed_step_type_and_hooks(venv):
    proc = _run([venv / "bin" / "python", "-c", PIPELINE_SCRIPT], cwd=venv)

    result = json.loads(proc.stdout)
    assert result["status"] == "success", result["errors"]
    assert result["outputs"] == {"greet": "bonjour, venv", "shout": "BONJOUR, VENV"}
    assert result["events"] == [
        ["run_start", "hello-pipeline"],
        ["run_finish", "hello-pipeline", "success"],
    ]
    assert result["pipectl_file"].startswith(str(venv))  # not the repository's editable copy


def test_installed_plugin_command_runs(venv):
    proc = _run([venv / "bin" / "pipectl", "hello"], cwd=venv)

    assert proc.stdout == "hello from pipectl-hello\n"


def test_installed_plugin_can_be_blocked(venv):
    proc = _run([venv / "bin" / "pipectl", "-p", "no:pipectl-hello", "plugins", "--json"], cwd=venv)

    (row,) = json.loads(proc.stdout)
    assert row["name"] == "hello"
    assert row["status"] == "blocked"
    assert row["components"] == {}

"""pipectl-http as an installed plugin: its entry point, a cheap plugin module, and pipeline files
run by the pipectl command line with the extractor found through the entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipectl_http
from pipectl_http import plugin

SECRET = "cli-s3cret-4e1b"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def _env(**extra: str) -> dict[str, str]:
    """This environment without the user's pipectl switches (which could disable plugins)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPECTL_")}
    env.update(extra)
    return env


def _pipectl(*args: str, cwd: object = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args], capture_output=True, text=True, timeout=60, env=_env(**env), cwd=cwd
    )


def test_importing_the_plugin_module_does_not_import_httpx():
    code = (
        "import sys, pipectl_http.plugin; "
        "print([m for m in ('httpx', 'httpcore', 'pipectl_http.extractor') "
        "if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env()
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_plugin_registers_the_http_extractor(plugin_manager, register_plugin, run_cli):
    record = register_plugin(plugin, "http")

    assert record.status == "loaded", record.error
    extractor = plugin_manager.registries.extractors.create("http", url="https://host/path")
    assert extractor.describe() == "http GET https://host/path"
    rows = {row["name"]: row for row in json.loads(run_cli("plugins", "--json").output)}
    assert rows["http"]["components"] == {"extractors": ["http"]}


def test_pipectl_plugins_lists_the_installed_distribution():
    proc = _pipectl("plugins", "--json")

    assert proc.returncode == 0, proc.stderr
    row = {row["name"]: row for row in json.loads(proc.stdout)}["http"]
    assert row["status"] == "loaded", row["error"]
    assert row["distribution"] == "pipectl-http"
    assert row["version"] == version("pipectl-http") == pipectl_http.__version__
    assert row["module"] == "pipectl_http.plugin"
    assert row["components"] == {"extractors": ["http"]}


def _pipeline_file(tmp_path: Path, extract: dict[str, Any]) -> tuple[Path, Path]:
    """A pipeline file of one data step, ``extract`` into a JSON Lines file."""
    out = tmp_path / "out" / "items.jsonl"
    file = tmp_path / "items.yaml"
    pipeline = {
        "name": "items",
        "steps": [
            {"name": "load", "extract": extract, "load": [{"type": "jsonl", "path": str(out)}]}
        ],
    }
    file.write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    return file, out


@pytest.mark.slow
def test_a_pipeline_file_runs_the_http_extractor(api, tmp_path):
    api.require_headers = {"Authorization": f"Bearer {SECRET}"}
    api.fail_every = 5
    file, out = _pipeline_file(
        tmp_path,
        {
            "type": "http",
            "url": api.url("/pages"),
            "paginate": "page",
            "records_path": "data",
            "page_size_param": "per_page",
            "page_size": 20,
            "concurrency": 2,
            "retry_delay": 0.01,
            "auth": {"type": "bearer", "token_env": "ITEMS_API_TOKEN"},
        },
    )
    assert "extract:\n    type: http\n" in file.read_text(encoding="utf-8")

    proc = _pipectl("run", str(file), "-v", cwd=tmp_path, ITEMS_API_TOKEN=SECRET)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert ids == list(range(len(api.records)))
    assert api.failed > 0 and "http_retry" in proc.stderr
    assert re.search(r"plugins: .*\bhttp-0\.1\.0", proc.stderr)
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_failing_request_fails_the_run_with_the_url_and_status(api, tmp_path):
    file, out = _pipeline_file(tmp_path, {"type": "http", "url": api.url("/status/404")})

    proc = _pipectl("run", str(file), cwd=tmp_path)

    assert proc.returncode == 1
    assert f"HttpExtractorError: http GET {api.url('/status/404')}: HTTP 404" in proc.stdout
    assert not out.exists()
    assert len(api.requests) == 1

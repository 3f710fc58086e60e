"""``pipectl ui``: the command, its refusals, its token, and what ``pipectl --help`` imports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipectl_ui import plugin
from pipectl_ui.command import check_bind
from pipectl_ui.security import COOKIE, is_loopback

from pipectl_ui_testkit import serve


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")


def test_a_non_loopback_bind_needs_a_token():
    assert check_bind("127.0.0.1", None) is None
    assert check_bind("0.0.0.0", "a-token") is None
    assert "not a loopback address" in check_bind("0.0.0.0", None)
    assert "empty" in check_bind("0.0.0.0", "  ")


def test_the_command_refuses_a_non_loopback_bind_without_a_token(register_plugin, run_cli):
    register_plugin(plugin, name="ui")
    result = run_cli("ui", "--host", "0.0.0.0", "--port", "0", env={"PIPECTL_UI_TOKEN": ""})
    assert result.exit_code == 2
    assert "pipectl: error: --host 0.0.0.0 is not a loopback address" in result.output
    assert "PIPECTL_UI_TOKEN" in result.output and "Traceback" not in result.output


def test_the_command_is_listed_and_has_help(register_plugin, run_cli):
    register_plugin(plugin, name="ui")
    assert "ui " in run_cli("--help").output
    text = run_cli("ui", "--help").output
    for option in ("--host", "--port", "--tracker", "--token", "PIPECTL_UI_TOKEN"):
        assert option in text


def test_the_command_with_no_tracker_says_so(register_plugin, run_cli, tmp_path):
    register_plugin(plugin, name="ui")
    missing = tmp_path / "none.db"
    result = run_cli("ui", "--port", "0", "--tracker", f"sqlite:///{missing}")
    assert result.exit_code == 2 and "no runs recorded" in result.output


@pytest.mark.slow
def test_with_a_token_every_request_carries_it(filled):
    token = "t0ken-with;odd chars"
    with serve(filled["url"], token=token) as ui:
        bare = httpx.get(ui.url + "/api/runs", timeout=10)
        assert bare.status_code == 401 and bare.json()["error"]["status"] == 401
        assert httpx.get(ui.url + "/", timeout=10).status_code == 401
        assert httpx.get(ui.url + "/static/ui.js", timeout=10).status_code == 401
        wrong = httpx.get(ui.url + "/api/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bearer = httpx.get(ui.url + "/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and bearer.json()["runs"]
        # ?token= once: a cookie (HttpOnly, SameSite=Strict) and the URL without the token
        once = httpx.get(ui.url + "/", params={"token": token, "status": "failed"}, timeout=10)
        assert once.status_code == 303
        assert once.headers["location"] == "/?status=failed"
        cookie = once.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        with httpx.Client(base_url=ui.url, timeout=10) as client:
            client.cookies.set(COOKIE, once.cookies[COOKIE])
            assert client.get("/").status_code == 200
            assert client.get(f"/runs/{filled['ok']}").status_code == 200
        assert httpx.get(ui.url + "/", params={"token": "wrong"}).status_code == 401
        # with a token, any Host is fine (the token is the protection)
        other = httpx.get(
            ui.url + "/api/runs",
            headers={"Authorization": f"Bearer {token}", "Host": "ui.example.org"},
        )
        assert other.status_code == 200


def _pipectl() -> str:
    return str(Path(sys.executable).with_name("pipectl"))


@pytest.mark.slow
def test_pipectl_ui_serves_on_a_free_port_and_prints_it(filled, tmp_path):
    env = {**os.environ, "PIPECTL_HOME": str(tmp_path)}
    env.pop("PIPECTL_UI_TOKEN", None)
    process = subprocess.Popen(
        [_pipectl(), "ui", "--port", "0", "--tracker", filled["url"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("pipectl ui: serving "), line + process.stderr.read()
        url = line.rsplit(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(url + "api/runs", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert answer.status_code == 200 and len(answer.json()["runs"]) == 2
    finally:
        process.terminate()
        process.communicate(timeout=20)


@pytest.mark.slow
def test_pipectl_ui_refuses_0000_without_a_token_in_a_real_process(filled):
    env = {k: v for k, v in os.environ.items() if k != "PIPECTL_UI_TOKEN"}
    proc = subprocess.run(
        [_pipectl(), "ui", "--host", "0.0.0.0", "--tracker", filled["url"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "--token" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_help_imports_neither_the_server_nor_the_command():
    code = (
        "import sys\n"
        "from pipectl.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('starlette', 'uvicorn', 'jinja2', 'pipectl_ui.command', 'pipectl_ui.app')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert " ui " in proc.stdout  # listed
    assert proc.stderr.strip().splitlines()[-1] == "[]"

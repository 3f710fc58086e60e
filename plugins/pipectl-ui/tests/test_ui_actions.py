"""Actions (``pipectl ui --allow-actions``): re-run, resume and cancel, through the real server
(uvicorn on a free 127.0.0.1 port), real ``pipectl run`` subprocesses and a real SQLite
tracker; the CSRF check; no actions without ``--allow-actions``; a run with secret params is
not re-run. And a real browser (Debian's chromium) clicking "Re-run"."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipectl_ui.actions import Actions, _param_text
from pipectl_ui.security import CSRF_COOKIE, Csrf, cross_site

from pipectl_ui_testkit import serve

PIPECTL = [sys.executable, "-m", "pipectl.cli"]
TIMEOUT = 120
SECRET_DEFAULT = "d3fault-s3cret-Xq"

STEPS = '''
import asyncio
import time
from pathlib import Path

HERE = Path(__file__).parent


def show(n, label, items):
    print(f"n={n} label={label} items={items}", flush=True)
    return n


def flaky():
    """Fails the first time (no marker file yet), succeeds after."""
    marker = HERE / "flaky.marker"
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("the first attempt fails")
    return 1


async def hold():
    """Waits while the file "hold" exists (a cancel ends the wait)."""
    deadline = time.monotonic() + 120
    while (HERE / "hold").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return 2
'''

FILES = {
    "plain.yaml": """
        name: plain
        params:
          n: {type: int, default: 1}
          label: {type: str, default: "x"}
          items: {type: list, default: []}
          conf: {type: json, default: {}}
          ratio: {type: float, default: 0.5}
          flag: {type: bool, default: false}
        steps:
          - name: show
            run: "steps_for_ui:show"
            inputs: {n: params.n, label: params.label, items: params.items}
        """,
    "flaky.yaml": """
        name: flaky
        steps:
          - {name: first, run: "steps_for_ui:flaky"}
          - {name: second, run: "steps_for_ui:flaky", depends_on: [first]}
        """,
    "waits.yaml": """
        name: waits
        steps:
          - {name: hold, run: "steps_for_ui:hold"}
        """,
    "secret.yaml": f"""
        name: with_secret
        params:
          token: {{type: str, default: "{SECRET_DEFAULT}", secret: true}}
          n: {{type: int, default: 1}}
        steps:
          - name: show
            run: "steps_for_ui:show"
            inputs: {{n: params.n, label: params.n, items: params.n}}
        """,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project folder with pipeline files and the tracker's URL (created by a first run)."""
    root = tmp_path_factory.mktemp("ui-actions")
    (root / "steps_for_ui.py").write_text(STEPS, encoding="utf-8")
    for name, text in FILES.items():
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    url = f"sqlite:///{root / 'tracker.db'}"
    return {"root": root, "url": url, "logs": root / "ui-logs"}


def _cli(project: dict[str, Any], *args: str, check: int | None = 0) -> str:
    """``pipectl run`` in the project, as a user runs it; the id of the run it recorded."""
    proc = subprocess.run(
        [*PIPECTL, "run", *args, "--tracker", project["url"], "--no-progress"],
        cwd=project["root"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    found = re.findall(r"run ([0-9a-f]{32}) of", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return found[-1]


@pytest.fixture(scope="module")
def acting(project: dict[str, Any]) -> Iterator[Any]:
    """The UI with ``--allow-actions`` over the project's tracker (``.actions``: its
    :class:`Actions`)."""
    _cli(project, "plain.yaml")  # the tracker exists before the UI opens it
    actions = Actions(project["url"], workdir=project["root"], log_dir=project["logs"])
    with serve(project["url"], actions=actions) as server:
        server.actions = actions
        yield server


@pytest.fixture(scope="module")
def reading(project: dict[str, Any], acting: Any) -> Iterator[Any]:
    """The UI without ``--allow-actions`` over the same tracker."""
    with serve(project["url"]) as server:
        yield server


def _client(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


def _token(client: httpx.Client, path: str) -> str:
    """The CSRF token of the forms of the page at ``path`` (the client keeps the cookie)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, "no action form on " + path
    return found.group(1)


def _run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


def _until(client: httpx.Client, run_id: str, done: Any, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = _run(client, run_id)
        if done(record):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.05)


def _finished(client: httpx.Client, run_id: str) -> dict[str, Any]:
    return _until(client, run_id, lambda r: r["status"] != "running")


def _new_run(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/runs/([0-9a-f]{32})", answer.headers["location"])
    assert found, answer.headers["location"]
    return found.group(1)


def _run_count(client: httpx.Client) -> int:
    return len(client.get("/api/runs", params={"limit": 500}).json()["runs"])


# -- small parts ---------------------------------------------------------------------------------


def test_params_are_given_back_as_their_declarations_read_them():
    assert _param_text("a b=c", {"type": "str"}) == "a b=c"
    assert _param_text("[1]", {"type": "str"}) == "[1]"
    assert _param_text("text", {"type": "json"}) == '"text"'
    assert _param_text(3, {"type": "int"}) == "3"
    assert _param_text(True, {"type": "bool"}) == "true"
    assert _param_text([1, "a,b"], {"type": "list"}) == '[1, "a,b"]'
    assert _param_text({"k": None}, None) == '{"k": null}'


def test_csrf_tokens_are_of_a_session_and_of_a_server():
    csrf, other = Csrf(), Csrf()
    session = csrf.new_session()
    token = csrf.token(session)
    assert csrf.check(session, token)
    assert not csrf.check(session, other.token(session))  # another server's (or restarted)
    assert not csrf.check(csrf.new_session(), token)  # another browser's
    assert not csrf.check(session, "") and not csrf.check(None, token)
    assert not csrf.check("short", csrf.token("short"))
    assert "HttpOnly" in Csrf.cookie(session) and "SameSite=Strict" in Csrf.cookie(session)


def test_a_form_sent_by_another_site_is_refused():
    host = "127.0.0.1:8765"
    assert cross_site({"host": host}) is None
    assert cross_site({"host": host, "origin": f"http://{host}"}) is None
    assert cross_site({"host": host, "sec-fetch-site": "same-origin"}) is None
    assert cross_site({"host": host, "origin": "http://evil.example"})
    assert cross_site({"host": host, "origin": "null"})
    assert cross_site({"host": host, "sec-fetch-site": "cross-site"})
    assert cross_site({"host": host, "sec-fetch-site": "same-site"})
    assert cross_site({"host": host, "sec-fetch-site": "none"})
    # what Chromium sends with a form of a page served with Referrer-Policy: no-referrer
    assert cross_site({"host": host, "origin": "null", "sec-fetch-site": "same-origin"}) is None
    assert cross_site({"host": host, "origin": f"http://{host}", "sec-fetch-site": "cross-site"})


# -- the actions ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rerun_makes_a_new_run_of_the_same_pipeline_with_the_same_params(acting, project):
    old = _cli(
        project,
        "plain.yaml",
        "-p",
        "n=7",
        "-p",
        "label=a <b> & c=d",
        "-p",
        "items=[1, 2]",
        "-p",
        'conf={"k": ["v", null]}',
        "-p",
        "ratio=0.25",
        "-p",
        "flag=yes",
    )
    with _client(acting) as client:
        token = _token(client, f"/runs/{old}")
        page = client.get(f"/runs/{old}").text
        assert f'action="/actions/runs/{old}/rerun"' in page and ">Re-run</button>" in page
        assert "/resume" not in page and "/cancel" not in page  # a succeeded run, not running
        before = _run_count(client)
        answer = client.post(f"/actions/runs/{old}/rerun", data={"csrf": token})
        new = _new_run(answer)
        assert new != old
        record = _finished(client, new)
        first = _run(client, old)
        assert record["status"] == "success" and record["pipeline"] == "plain"
        assert record["params"] == first["params"]
        assert record["params"]["label"] == "a <b> & c=d" and record["params"]["flag"] is True
        assert record["pipeline_file"] == first["pipeline_file"] == "plain.yaml"
        assert _run_count(client) == before + 1
        listed = client.get("/api/runs", params={"pipeline": "plain"}).json()["runs"]
        assert listed[0]["execution_id"] == new
        # the run's output went to a log file, not to the UI's terminal
        (started,) = [s for s in acting.actions._started.values() if s.run_id == new]
        assert started.log.parent == project["logs"]
        text = started.log.read_text()
        assert f"run {new} of 'plain': success" in text and "n=7" in text
        assert "--tracker" in text.splitlines()[0]
        # the pipeline page re-runs its latest run, with its params
        page = client.get("/pipelines/plain").text
        assert f'action="/actions/runs/{new}/rerun"' in page
        again = _new_run(client.post(f"/actions/runs/{new}/rerun", data={"csrf": token}))
        assert _finished(client, again)["params"] == first["params"]


@pytest.mark.slow
def test_a_resume_of_a_failed_run_succeeds_and_is_linked_to_it(acting, project):
    (project["root"] / "flaky.marker").unlink(missing_ok=True)
    failed = _cli(project, "flaky.yaml", check=1)
    with _client(acting) as client:
        assert _run(client, failed)["status"] == "failed"
        token = _token(client, f"/runs/{failed}")
        assert f'action="/actions/runs/{failed}/resume"' in client.get(f"/runs/{failed}").text
        new = _new_run(client.post(f"/actions/runs/{failed}/resume", data={"csrf": token}))
        record = _finished(client, new)
        assert record["status"] == "success", record
        assert record["resumed_from"] == failed
        assert [s["status"] for s in record["steps"]] == ["success", "success"]
        related = _run(client, failed)["related"]
        assert [r["execution_id"] for r in related["resumes"]] == [new]
        # a run that succeeded is not resumed
        refused = client.post(f"/actions/runs/{new}/resume", data={"csrf": token})
        assert refused.status_code == 409 and "only a failed" in refused.text


@pytest.mark.slow
def test_a_cancel_ends_a_ui_started_run_cancelled_and_its_process(acting, project):
    hold = project["root"] / "hold"
    hold.unlink(missing_ok=True)
    old = _cli(project, "waits.yaml")  # nothing held: it ends at once
    outsider = None
    hold.write_text("hold")
    try:
        with _client(acting) as client:
            token = _token(client, f"/runs/{old}")
            new = _new_run(client.post(f"/actions/runs/{old}/rerun", data={"csrf": token}))
            _until(client, new, lambda r: r["steps"] and r["steps"][0]["status"] == "running")
            (started,) = [s for s in acting.actions._started.values() if s.run_id == new]
            assert started.running()
            page = client.get(f"/runs/{new}").text
            assert f'action="/actions/runs/{new}/cancel"' in page
            assert f"process {started.pid}" in page  # started from this UI
            answer = client.post(f"/actions/runs/{new}/cancel", data={"csrf": token})
            assert answer.status_code == 303 and answer.headers["location"] == f"/runs/{new}"
            record = _finished(client, new)
            assert record["status"] == "cancelled", record
            assert started.process.wait(timeout=30) == 130  # pipectl run's exit on Ctrl-C
            with pytest.raises(ProcessLookupError):
                os.kill(started.pid, 0)  # gone (and reaped)
            assert "/cancel" not in client.get(f"/runs/{new}").text
            # a run the UI did not start is not cancelled from it
            outsider = subprocess.Popen(
                [*PIPECTL, "run", "waits.yaml", "--tracker", project["url"]],
                cwd=project["root"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            rows: list[dict[str, Any]] = []
            deadline = time.monotonic() + TIMEOUT
            while not rows:
                assert time.monotonic() < deadline
                runs = client.get("/api/runs", params={"status": "running"}).json()["runs"]
                rows = [r for r in runs if r["pid"] == outsider.pid]
                time.sleep(0.05)
            theirs = rows[0]["execution_id"]
            page = client.get(f"/runs/{theirs}").text
            assert f'action="/actions/runs/{theirs}/cancel"' not in page
            assert "was not started by this pipectl ui" in page
            refused = client.post(f"/actions/runs/{theirs}/cancel", data={"csrf": token})
            assert refused.status_code == 409
            assert "not started by this pipectl ui" in refused.text
            time.sleep(0.3)
            assert outsider.poll() is None and _run(client, theirs)["status"] == "running"
    finally:
        hold.unlink(missing_ok=True)
        if outsider is not None:
            outsider.wait(timeout=TIMEOUT)


@pytest.mark.slow
def test_a_post_without_a_valid_csrf_token_is_refused_and_starts_nothing(acting, project):
    old = _cli(project, "plain.yaml")
    with _client(acting) as client:
        token = _token(client, f"/runs/{old}")
        before, started = _run_count(client), len(acting.actions._started)
        logs = set(project["logs"].glob("*.log")) if project["logs"].exists() else set()
        url = f"/actions/runs/{old}/rerun"
        attempts = [
            client.post(url),  # no token
            client.post(url, data={"csrf": ""}),
            client.post(url, data={"csrf": "0" * 64}),  # a wrong one
            client.post(url, data={"csrf": Csrf().token("x" * 43)}),  # of another server
            # the right token, sent by another site
            client.post(url, data={"csrf": token}, headers={"Origin": "http://evil.example"}),
            client.post(url, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}),
        ]
        # the right token without the browser's session cookie (a forged form)
        with _client(acting) as stranger:
            attempts.append(stranger.post(url, data={"csrf": token}))
            stranger.cookies.set(CSRF_COOKIE, "y" * 43)
            attempts.append(stranger.post(url, data={"csrf": token}))
        for cancel in ("resume", "cancel"):
            attempts.append(client.post(f"/actions/runs/{old}/{cancel}", data={"csrf": "bad"}))
        for answer in attempts:
            assert answer.status_code == 403, answer.text
        assert "CSRF" in attempts[0].text and "Origin" in attempts[4].text
        time.sleep(0.3)
        assert _run_count(client) == before
        assert len(acting.actions._started) == started
        assert (set(project["logs"].glob("*.log")) if project["logs"].exists() else set()) == logs
        # the same form with the token goes through
        assert _new_run(client.post(url, data={"csrf": token}))


@pytest.mark.slow
def test_with_a_token_an_action_needs_the_token_and_the_csrf_token(acting, project):
    """A server that a token guards (one bound to another address): the token rules apply
    to actions too, and the CSRF check as well."""
    secret = "t0ken-for-actions"
    actions = Actions(project["url"], workdir=project["root"], log_dir=project["logs"])
    with serve(project["url"], token=secret, actions=actions) as server, _client(server) as client:
        bare = client.get("/api/runs", params={"pipeline": "plain", "limit": 1})
        assert bare.status_code == 401
        client.headers["Authorization"] = f"Bearer {secret}"
        run_id = client.get("/api/runs", params={"pipeline": "plain", "limit": 1}).json()
        run_id = run_id["runs"][0]["execution_id"]
        token = _token(client, f"/runs/{run_id}")
        del client.headers["Authorization"]
        url = f"/actions/runs/{run_id}/rerun"
        assert client.post(url, data={"csrf": token}).status_code == 401  # no token
        client.headers["Authorization"] = f"Bearer {secret}"
        assert client.post(url).status_code == 403  # the token, but no CSRF token
        assert client.post(url, data={"csrf": "0" * 64}).status_code == 403
        assert actions.running() == [] and actions._started == {}
        new = _new_run(client.post(url, data={"csrf": token}))  # both: it is made
        assert _finished(client, new)["status"] == "success"


@pytest.mark.slow
def test_without_allow_actions_there_are_no_buttons_and_the_routes_are_refused(reading, project):
    old = _cli(project, "plain.yaml")
    (project["root"] / "flaky.marker").unlink(missing_ok=True)
    failed = _cli(project, "flaky.yaml", check=1)
    with _client(reading) as client:
        for path in (f"/runs/{old}", f"/runs/{failed}", "/pipelines/plain", "/"):
            page = client.get(path)
            assert page.status_code == 200
            assert "<form" not in page.text.replace('<form class="filters" method="get"', "")
            assert 'method="post"' not in page.text and "csrf" not in page.text
            assert CSRF_COOKIE not in page.headers.get("set-cookie", "")
            assert "read-only" in page.text
        before = _run_count(client)
        for kind, run_id in (("rerun", old), ("resume", failed), ("cancel", old)):
            answer = client.post(f"/actions/runs/{run_id}/{kind}", data={"csrf": "x"})
            assert answer.status_code == 403 and "--allow-actions" in answer.text
        time.sleep(0.3)
        assert _run_count(client) == before


@pytest.mark.slow
def test_a_run_with_a_secret_param_is_not_rerun_from_the_ui(acting, project):
    old = _cli(project, "secret.yaml", "-p", "n=2")
    with _client(acting) as client:
        page = client.get(f"/runs/{old}")
        assert f'action="/actions/runs/{old}/rerun"' not in page.text
        assert "cannot be re-run from the UI" in page.text and "secret params (token)" in page.text
        assert "pipectl run secret.yaml with_secret -p token=…" in page.text
        assert SECRET_DEFAULT not in page.text
        token = _token(client, "/pipelines/plain")  # this run's page offers no form
        before, started = _run_count(client), len(acting.actions._started)
        answer = client.post(f"/actions/runs/{old}/rerun", data={"csrf": token})
        assert answer.status_code == 409
        assert "secret params (token)" in answer.text and SECRET_DEFAULT not in answer.text
        time.sleep(0.3)
        assert _run_count(client) == before and len(acting.actions._started) == started


@pytest.mark.slow
def test_a_run_that_cannot_start_shows_why(acting, project, tmp_path):
    """A file that no longer loads: the started pipectl run exits 2 before recording a run,
    and the answer says so, with its output."""
    broken = project["root"] / "broken.yaml"
    broken.write_text(textwrap.dedent(FILES["plain.yaml"]), encoding="utf-8")
    old = _cli(project, "broken.yaml")
    broken.write_text("name: plain\nsteps: [{name: a, run: 'steps_for_ui:nope'}]\n")
    try:
        with _client(acting) as client:
            token = _token(client, f"/runs/{old}")
            answer = client.post(f"/actions/runs/{old}/rerun", data={"csrf": token})
            assert answer.status_code == 502, answer.text
            assert "exited with status 2 before it recorded a run" in answer.text
            assert "pipectl: error:" in answer.text
    finally:
        broken.unlink()


# -- in a browser --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scripts", [True, False], ids=["scripts", "no-scripts"])
def test_clicking_rerun_in_a_browser_shows_the_new_run(acting, project, chromium, scripts):
    old = _cli(project, "plain.yaml", "-p", "n=41")
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900}, java_script_enabled=scripts
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(acting.url + f"/runs/{old}")
        page.click("#actions button:has-text('Re-run')")  # a plain HTML form: no script needed
        page.wait_for_url(re.compile(r"/runs/[0-9a-f]{32}$"))
        new = page.url.rsplit("/", 1)[1]
        assert new != old
        assert page.locator("#run-header h1 a").inner_text() == "plain"
        selector = f'#run-header [data-run-status="{new}"]'
        if scripts:  # the new run's page follows it live
            page.wait_for_function(
                f"() => document.querySelector('{selector}').textContent === 'success'",
                timeout=30_000,
            )
        else:
            deadline = time.monotonic() + 30
            while page.locator(selector).inner_text() != "success":
                assert time.monotonic() < deadline
                page.wait_for_timeout(100)
                page.reload()
        assert page.locator(selector).inner_text() == "success"
        with _client(acting) as client:
            assert _run(client, new)["params"]["n"] == 41
        assert problems == []  # nothing refused by the Content-Security-Policy
    finally:
        context.close()


# -- the command ---------------------------------------------------------------------------------


def test_the_command_has_allow_actions(register_plugin, run_cli):
    from pipectl_ui import plugin

    register_plugin(plugin, name="ui")
    text = run_cli("ui", "--help").output
    assert "--allow-actions" in text


@pytest.mark.slow
def test_pipectl_ui_allow_actions_in_a_real_process(project, acting):
    old = _cli(project, "plain.yaml", "-p", "n=5")
    env = {k: v for k, v in os.environ.items() if k != "PIPECTL_UI_TOKEN"}
    process = subprocess.Popen(
        [*PIPECTL, "ui", "--port", "0", "--tracker", project["url"], "--allow-actions"],
        cwd=project["root"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("pipectl ui: serving "), first + process.stderr.read()
        second = process.stdout.readline()
        assert second.startswith("pipectl ui: actions on"), second
        log_dir = Path(second.split("write their output to ", 1)[1].split(";", 1)[0])
        url = first.rsplit(" at ", 1)[1].strip().rstrip("/")
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    token = _token(client, f"/runs/{old}")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            new = _new_run(client.post(f"/actions/runs/{old}/rerun", data={"csrf": token}))
            record = _finished(client, new)
            assert record["status"] == "success" and record["params"]["n"] == 5
        assert any(new in p.read_text() for p in log_dir.glob("*-rerun-*.log"))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()

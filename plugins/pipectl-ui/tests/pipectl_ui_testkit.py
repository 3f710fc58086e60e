"""What pipectl-ui's tests share: a real SQLite tracker filled by real runs, the real server
(uvicorn, on a free 127.0.0.1 port, in a thread), and a pipeline that runs in a subprocess and
waits at a step until the test creates a file."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SECRET = "s3cr3t-Zq7-never-shown"
HOSTILE = "<script>alert('x')</script>"
HOSTILE_STEP = "load <img src=x onerror=alert(1)>"
HOSTILE_ERROR = "bad <b>value</b> & <script>steal()</script>"


def fill_tracker(url: str) -> dict[str, Any]:
    """Runs of real pipelines into the tracker at ``url``: ``ok`` (succeeds), ``failed`` (a step
    with an HTML name fails with an HTML message), each with a secret param that a step prints,
    logs and returns, and a param holding HTML. Returns their run ids and the steps."""
    import logging

    from pipectl import Pipeline

    def build(name: str, fail: bool) -> Pipeline:
        pipe = Pipeline(name)
        pipe.param("token", SECRET, secret=True)
        pipe.param("label", HOSTILE)

        @pipe.step("extract")
        def extract(params):
            print(f"extracting with {params['token']}", flush=True)
            logging.getLogger("pipectl_ui_test").warning("token is %s", params["token"])
            return [1, 2, 3]

        @pipe.step("transform", depends_on=["extract"])
        def transform(extract, params):
            return {"rows": [x * 2 for x in extract], "echo": params["token"]}

        @pipe.step(HOSTILE_STEP, depends_on=["transform"])
        def load(transform):
            if fail:
                raise ValueError(HOSTILE_ERROR)
            return len(transform["rows"])

        return pipe

    ok = build("orders", fail=False).run_sync(tracker=url)
    failed = build(f"orders {HOSTILE}", fail=True).run_sync(tracker=url)
    assert ok.ok and not failed.ok
    return {
        "ok": ok.run_id,
        "failed": failed.run_id,
        "failed_pipeline": f"orders {HOSTILE}",
        "steps": ["extract", "transform", HOSTILE_STEP],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The UI's app served by uvicorn in a thread, on a free 127.0.0.1 port."""

    def __init__(self, tracker: Any, **options: Any) -> None:
        import uvicorn

        from pipectl_ui.app import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(tracker, **options)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the UI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@contextmanager
def serve(url: str, **options: Any) -> Iterator[Server]:
    """The UI over the tracker at ``url`` (opened as ``pipectl ui`` opens it)."""
    from pipectl.plugins import get_plugin_manager
    from pipectl.tracking import open_tracker

    tracker = open_tracker(url, get_plugin_manager().registries)
    try:
        with Server(tracker, **options) as server:
            yield server
    finally:
        tracker.close()


WAITING_PIPELINE = textwrap.dedent(
    """
    import sys, time, pathlib
    from pipectl import Pipeline

    tracker, flag = sys.argv[1], pathlib.Path(sys.argv[2])
    pipe = Pipeline("waits-for-a-file")

    @pipe.step("first")
    def first():
        return 1

    @pipe.step("wait", depends_on=["first"])
    def wait(first):
        deadline = time.monotonic() + 120
        while not flag.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never created the file")
            time.sleep(0.02)
        return 2

    @pipe.step("after", depends_on=["wait"])
    def after(wait):
        time.sleep(float(sys.argv[3]))
        return 3

    run = pipe.run_sync(tracker=tracker)
    sys.exit(0 if run.ok else 1)
    """
)


class WaitingRun:
    """A pipeline running in a subprocess, its step ``wait`` waiting until :meth:`release`
    creates a file; its run id once the tracker has it."""

    def __init__(self, tmp: Path, tracker_url: str, after_seconds: float = 1.5) -> None:
        self.flag = tmp / "release-the-step"
        script = tmp / "waiting_pipeline.py"
        script.write_text(WAITING_PIPELINE, encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, str(script), tracker_url, str(self.flag), str(after_seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.tracker_url = tracker_url
        self.released_at: float | None = None

    def run_id(self, tracker: Any, timeout: float = 60) -> str:
        """The run's id, once its step ``wait`` is recorded as running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = tracker.list_runs(pipeline="waits-for-a-file", status="running", limit=1)
            if rows:
                record = tracker.get_run(rows[0]["execution_id"])
                steps = {s["step_id"]: s["status"] for s in record["steps"]}
                if steps.get("wait") == "running":
                    return str(rows[0]["execution_id"])
            if self.process.poll() is not None:
                raise RuntimeError(f"the pipeline ended early: {self.process.communicate()}")
            time.sleep(0.05)
        raise TimeoutError("the waiting run never showed up in the tracker")

    def release(self) -> float:
        """Let the step finish; the moment (``time.monotonic()``) the file was created."""
        self.flag.write_text("go", encoding="utf-8")
        self.released_at = time.monotonic()
        return self.released_at

    def finish(self, timeout: float = 60) -> int:
        if not self.flag.exists():
            self.release()
        try:
            self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        return int(self.process.returncode)


def step_turns_to_success_live(page: Any, url: str, run_id: str, waiting: Any) -> float:
    """Open the page of ``waiting``'s run (its step ``wait`` running), release the step, and
    return how many seconds after that the open page showed it succeeded (at most 2: the
    issue's limit), then wait for the run's status to turn to success; all without a reload
    and without a console error."""
    page.goto(url + f"/runs/{run_id}")
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    wait_node = page.locator("#dag g.node", has=page.locator("text.label", has_text="wait"))
    assert "s-running" in wait_node.get_attribute("class")
    assert page.locator(f'#run-header [data-run-status="{run_id}"]').inner_text() == "running"
    page.wait_for_timeout(500)  # the page is listening
    released = waiting.release()
    page.wait_for_function(
        "() => { const n = [...document.querySelectorAll('#dag g.node')].find("
        "g => g.querySelector('text.label').textContent === 'wait');"
        " return n && n.classList.contains('s-success'); }",
        timeout=2000,
        polling=20,
    )
    took = time.monotonic() - released
    assert took < 2.0, took
    page.wait_for_function(
        f"() => document.querySelector('#run-header [data-run-status=\"{run_id}\"]')"
        ".textContent === 'success'",
        timeout=10_000,
    )
    assert page.evaluate("window.loadedOnce") is True
    assert page.problems == []
    return took

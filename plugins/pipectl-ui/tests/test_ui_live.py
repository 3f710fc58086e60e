"""Live updates: the events of a run that goes on, while a pipeline runs in a subprocess and
waits at a step until the test creates a file."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from pipectl_ui_testkit import WaitingRun, serve

pytestmark = pytest.mark.slow


def events(answer: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(name, data) of each event of a server-sent event stream, as it comes."""
    name, data = "message", []
    for line in answer.iter_lines():
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_the_events_send_an_update_as_the_run_progresses(tmp_path):
    url = f"sqlite:///{tmp_path / 'pipectl.db'}"
    waiting = WaitingRun(tmp_path, url, after_seconds=0.5)
    try:
        with serve(url) as ui:
            run_id = waiting.run_id(ui.server.config.app.state.reads.tracker)
            stream_url = f"{ui.url}/api/runs/{run_id}/events"
            with httpx.stream("GET", stream_url, timeout=30) as answer:
                assert answer.status_code == 200
                received = events(answer)
                name, first = next(received)
                assert name == "state" and first["status"] == "running"
                steps = {s["name"]: s["status"] for s in first["steps"]}
                assert steps["first"] == "success" and steps["wait"] == "running"
                released = waiting.release()
                seen, took = [], None
                for name, data in received:
                    seen.append((name, data))
                    if name == "state":
                        steps = {s["name"]: s["status"] for s in data["steps"]}
                        if took is None and steps.get("wait") == "success":
                            took = time.monotonic() - released
                    if name == "end":
                        break
            assert took is not None and took < 2.0, took
            print(f"the event said success {took:.3f} s after the step was released")
            assert seen[-1][0] == "end" and seen[-1][1]["status"] == "success"
            last_state = [d for n, d in seen if n == "state"][-1]
            assert last_state["finished"] and {s["status"] for s in last_state["steps"]} == {
                "success"
            }
    finally:
        assert waiting.finish() == 0

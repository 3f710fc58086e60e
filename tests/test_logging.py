"""structlog events: one per step transition, with run id, step, attempt and duration."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from pipectl import Pipeline, configure_logging
from pipectl import log as pipectl_log


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    yield stream
    pipectl_log.reset_logging()


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_events_for_every_step_transition(plugin_manager, log_stream):
    pipe = Pipeline("logged", plugin_manager=plugin_manager)
    calls = {"n": 0}

    @pipe.step("flaky", retries=1, retry_delay=0, retry_jitter=0)
    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reset by peer")
        return 1

    @pipe.step("after", depends_on=["flaky"])
    async def after(flaky):
        return flaky + 1

    run = pipe.run_sync()
    events = _events(log_stream)
    names = [e["event"] for e in events]

    assert names[0] == "run_started" and names[-1] == "run_finished"
    flaky_events = [
        e for e in events if e.get("step") == "flaky" and e["event"].startswith("step_")
    ]
    assert [e["event"] for e in flaky_events] == [
        "step_started",
        "step_retry",
        "step_started",
        "step_finished",
    ]
    assert [e.get("attempt") for e in flaky_events[:3]] == [1, 1, 2]
    assert flaky_events[1]["error"] == "ConnectionError: reset by peer"
    finished = flaky_events[-1]
    assert finished["status"] == "success" and finished["attempts"] == 2
    assert isinstance(finished["duration_ms"], float)
    assert all(
        e["run_id"] == run.run_id for e in events if e["event"].startswith(("step_", "run_"))
    )
    assert all(e["level"] in ("info", "warning") and "timestamp" in e for e in events)


def test_step_logger_and_plugin_lines_carry_run_and_step(plugin_manager, log_stream):
    pipe = Pipeline("ctxlog", plugin_manager=plugin_manager)

    @pipe.step("a")
    def a(ctx):
        ctx.logger.info("from_ctx_logger", rows=3)
        pipectl_log.get_logger().info("from_module_logger")  # what a plugin would do
        return 1

    @pipe.step("b")
    async def b(ctx):
        pipectl_log.get_logger().info("from_async_step")

    run = pipe.run_sync()
    by_event = {e["event"]: e for e in _events(log_stream)}
    assert by_event["from_ctx_logger"]["step"] == "a" and by_event["from_ctx_logger"]["rows"] == 3
    for event, step in (
        ("from_ctx_logger", "a"),
        ("from_module_logger", "a"),
        ("from_async_step", "b"),
    ):
        assert by_event[event]["run_id"] == run.run_id
        assert by_event[event]["step"] == step


def test_library_default_is_quiet_below_warning(plugin_manager, capsys):
    pipectl_log.reset_logging()
    assert not structlog.is_configured()
    pipe = Pipeline("quiet", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    assert pipe.run_sync().ok
    captured = capsys.readouterr()
    assert "step_finished" not in captured.out + captured.err


def test_console_format_is_one_line_per_event(plugin_manager):
    stream = io.StringIO()
    configure_logging("info", fmt="console", stream=stream)
    try:
        pipe = Pipeline("console", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1)
        run = pipe.run_sync()
    finally:
        pipectl_log.reset_logging()
    lines = stream.getvalue().splitlines()
    assert any(
        "step_finished" in line and f"run_id={run.run_id}" in line and "step=a" in line
        for line in lines
    )
    assert len(lines) == 4  # run_started, step_started, step_finished, run_finished


def test_unknown_log_format_is_rejected():
    with pytest.raises(ValueError, match="use console or json"):
        configure_logging("info", fmt="yaml")


def test_library_default_does_not_print_retries(plugin_manager, capsys):
    pipectl_log.reset_logging()
    pipe = Pipeline("quiet-retry", plugin_manager=plugin_manager)
    calls = []

    @pipe.step("flaky", retries=1, retry_delay=0, retry_jitter=0)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")

    assert pipe.run_sync().ok
    captured = capsys.readouterr()
    assert "step_retry" not in captured.out + captured.err

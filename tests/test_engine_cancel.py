"""Cancellation: Ctrl-C (SIGINT) ends a run as ``cancelled`` cleanly; cancelling the task that
awaits ``pipe.run()`` raises RunCancelled carrying the cancelled run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import pipectl
from pipectl import Pipeline, RunStatus, StepStatus

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    import time

    from pipectl import Pipeline, get_plugin_manager

    mode = sys.argv[1]
    pipe = Pipeline("sigint", plugin_manager=get_plugin_manager(autoload=False))

    @pipe.step
    def quick():
        return 1

    if mode == "async":
        @pipe.step(depends_on=["quick"])
        async def sleeper(quick):
            print("started", flush=True)
            await asyncio.sleep(60)
    else:
        @pipe.step(depends_on=["quick"])
        def sleeper(quick):
            print("started", flush=True)
            time.sleep(60)

    @pipe.step(depends_on=["sleeper"])
    def after(sleeper):
        print("after ran", flush=True)

    run = pipe.run_sync()
    print("status", run.status, flush=True)
    for name, result in run.steps.items():
        print("step", name, result.status, flush=True)
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_sigint_ends_the_run_as_cancelled_without_traceback(tmp_path, mode):
    script = tmp_path / "sigint_pipeline.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        # wait until the long step is running (readline blocks; bounded by the kill below)
        timer = threading.Timer(20, proc.kill)
        timer.start()
        try:
            first = proc.stdout.readline()
        finally:
            timer.cancel()
        assert first.strip() == "started", (first, proc.stderr.read() if proc.poll() else "")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    lines = out.splitlines()
    assert "status cancelled" in lines
    assert "step quick success" in lines
    assert "step sleeper cancelled" in lines
    assert "step after cancelled" in lines
    assert "after ran" not in out


def test_cancelling_the_awaiting_task_raises_run_cancelled(plugin_manager, hook_recorder):
    pipe = Pipeline("cancel", plugin_manager=plugin_manager)
    events: list[str] = []
    ready: dict[str, object] = {}
    release = threading.Event()

    @pipe.step
    def done_first():
        return "done"

    @pipe.step(depends_on=["done_first"])
    async def long_async(done_first):
        ready["async"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("long_async saw the cancellation")
            raise

    @pipe.step(depends_on=["done_first"])
    def long_sync(done_first):
        ready["sync"].set()
        release.wait(5)

    @pipe.step(depends_on=["long_async"])
    def downstream(long_async):
        events.append("downstream ran")

    async def main():
        ready["async"] = asyncio.Event()
        ready["sync"] = threading.Event()
        task = asyncio.create_task(pipe.run(params={"x": 1}))
        await asyncio.wait_for(ready["async"].wait(), 5)
        for _ in range(500):
            if ready["sync"].is_set():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(pipectl.RunCancelled) as info:
            await task
        return info.value

    try:
        cancelled = asyncio.run(main())
    finally:
        release.set()
    assert isinstance(cancelled, asyncio.CancelledError)
    run = cancelled.run
    assert run.status is RunStatus.CANCELLED
    assert run.pipeline_id in str(cancelled) and run.run_id in str(cancelled)
    assert {n: r.status for n, r in run.steps.items()} == {
        "done_first": StepStatus.SUCCESS,
        "long_async": StepStatus.CANCELLED,
        "long_sync": StepStatus.CANCELLED,
        "downstream": StepStatus.CANCELLED,
    }
    assert run.steps["done_first"].output == "done"
    assert run.steps["long_async"].attempts == 1
    assert run.steps["downstream"].attempts == 0
    assert events == ["long_async saw the cancellation"]
    assert run.end_time is not None
    assert hook_recorder.names()[-1] == "pipectl_run_finish"
    assert len(hook_recorder.calls_for("step_finish")) == 4


def test_run_sync_returns_the_cancelled_run_on_sigint_in_process(plugin_manager):
    """Ctrl-C in the same process: asyncio.run's SIGINT handler cancels run_sync's main task,
    and run_sync returns the cancelled run instead of raising."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    pipe = Pipeline("cancel", plugin_manager=plugin_manager)

    @pipe.step
    async def interrupt_me():
        signal.raise_signal(signal.SIGINT)
        await asyncio.sleep(30)

    @pipe.step(depends_on=["interrupt_me"])
    def after(interrupt_me):
        pass

    run = pipe.run_sync()
    assert run.status is RunStatus.CANCELLED
    assert run.steps["interrupt_me"].status is StepStatus.CANCELLED
    assert run.steps["after"].status is StepStatus.CANCELLED
    # the handler is put back: a later Ctrl-C is a plain KeyboardInterrupt again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_cancellation_while_cleaning_up_still_ends_the_run(plugin_manager):
    pipe = Pipeline("cancel", plugin_manager=plugin_manager)
    started: dict[str, asyncio.Event] = {}

    @pipe.step
    async def slow_cleanup():
        started["step"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            started["cleaning"].set()
            await asyncio.sleep(0.05)  # cleaning up takes a moment
            raise

    @pipe.step(depends_on=["slow_cleanup"])
    def after(slow_cleanup):
        pass

    async def main():
        started["step"] = asyncio.Event()
        started["cleaning"] = asyncio.Event()
        task = asyncio.create_task(pipe.run())
        await asyncio.wait_for(started["step"].wait(), 5)
        task.cancel()
        await asyncio.wait_for(started["cleaning"].wait(), 5)
        task.cancel()  # a second Ctrl-C
        with pytest.raises(pipectl.RunCancelled) as info:
            await task
        return info.value.run

    run = asyncio.run(main())
    assert run.status is RunStatus.CANCELLED
    assert all(r.status is StepStatus.CANCELLED for r in run.steps.values())


def test_a_step_raising_cancelled_error_itself_fails_only_that_step(plugin_manager):
    pipe = Pipeline("cancel", plugin_manager=plugin_manager)

    @pipe.step
    async def raises_cancelled():
        raise asyncio.CancelledError()

    @pipe.step
    async def fine():
        await asyncio.sleep(0.01)
        return "fine"

    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert run.steps["raises_cancelled"].status is StepStatus.FAILED
    assert "CancelledError" in run.steps["raises_cancelled"].error
    assert run.steps["fine"].output == "fine"

"""What ``pipectl run`` shows: a live display and a coloured table on a terminal (recorded in a
pseudo-terminal), plain lines in a pipe, and the pieces behind them."""

from __future__ import annotations

import io
import os
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipectl import Pipeline, StepStatus
from pipectl.cli import progress
from pipectl.model import PipelineRun, StepResult, StepSpec

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")
LIVE_LINE = r"^\W*{name}\s+attempt \d+/\d+\s+\d"  # spinner, step, attempt, elapsed

STEPS = """\
import time
from pathlib import Path


def warm():
    time.sleep(0.3)
    return 1


def long():
    time.sleep(1.5)
    return 2


def flaky():
    marker = Path(__file__).with_name("flaky.marker")
    time.sleep(0.4)
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError("first attempt fails")
    return 3


def _parse(row):
    raise ValueError(f"bad row {row}")


def broken():
    time.sleep(0.5)
    return _parse(17)
"""

PIPELINE = """\
name: demo
steps:
  - name: warm
    run: steps_progress:warm
  - name: long
    run: steps_progress:long
  - name: flaky
    run: steps_progress:flaky
    retries: 1
    retry_delay: 0.1
  - name: broken
    run: steps_progress:broken
  - name: after_broken
    run: steps_progress:warm
    depends_on: [broken]
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A pipeline file whose steps sleep a little; ``flaky`` fails once, ``broken`` fails."""
    (tmp_path / "steps_progress.py").write_text(STEPS, encoding="utf-8")
    path = tmp_path / "demo.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


def _raise_line() -> int:
    return STEPS.splitlines().index('    raise ValueError(f"bad row {row}")') + 1


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM", "CI")
    }
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _in_terminal(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120.0
) -> tuple[int, str]:
    """Run ``python -m pipectl.cli ARGS`` with stdin, stdout and stderr on a 120x40 pseudo-
    terminal; everything it wrote (until EOF) and its exit code. POSIX only."""
    fcntl = pytest.importorskip("fcntl")
    termios = pytest.importorskip("termios")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipectl.cli", *args],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None and not select.select([master], [], [], 0.5)[0]:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            pytest.fail(f"pipectl did not finish in {timeout} s")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def _plain(raw: str) -> str:
    """The text without escape sequences, carriage returns as line ends."""
    return ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")


def _summary_rows(text: str) -> dict[str, list[str]]:
    """The final table's rows by step name, split on runs of spaces (the last table only)."""
    headers = list(re.finditer(r"^step\s+status\s+duration\s+attempts", text, re.MULTILINE))
    assert headers, text
    table = text[headers[-1].start() :]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())  # columns: 2+ spaces; "1.24 s" is one cell
        rows[cells[0]] = cells[1:]
    return rows


# ---------------------------------------------------------------------------------------------
# A terminal session, recorded in a pseudo-terminal
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_on_a_terminal_shows_live_progress_and_a_summary_table(demo):
    code, raw = _in_terminal(["run", demo.name], cwd=demo.parent, env=_env())
    text = _plain(raw)
    assert code == 1, text
    assert "\x1b[" in raw  # a terminal: colours and cursor movement
    # while `long` ran, a live line showed it with its attempt and its elapsed time
    assert re.search(LIVE_LINE.format(name="long"), text, re.MULTILINE), text
    assert re.search(r"^demo\s+\d+/5 done", text, re.MULTILINE), text  # the header line
    assert "step_started" not in text  # the live display replaces the info events
    # the summary table lists every step with its status and attempts
    rows = _summary_rows(text)
    assert set(rows) == {"warm", "long", "flaky", "broken", "after_broken"}, text
    assert rows["warm"][0] == rows["long"][0] == rows["flaky"][0] == "success"
    assert rows["flaky"][2] == "2"  # status, duration, attempts
    assert rows["broken"][0] == "failed" and rows["broken"][2] == "1"
    assert rows["after_broken"][:2] == ["skipped", "0"]
    assert "ValueError: bad row 17" in " ".join(rows["broken"])
    # the failure: which step, which attempt, the exception, where the user's code raised it
    assert "broken failed on attempt 1 of 1: ValueError: bad row 17" in text
    assert f"at steps_progress.py:{_raise_line()}, in _parse" in text
    assert re.search(r"^run \w+ of 'demo': failed in [\d.]+ s$", text, re.MULTILINE), text


@pytest.mark.slow
def test_no_live_display_and_no_escape_codes_in_a_pipe(demo):
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "run", demo.name],
        cwd=demo.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr
    assert not re.search(r"attempt \d+/\d+", proc.stdout + proc.stderr)  # no live lines
    assert "step_started" in proc.stderr and "step_finished" in proc.stderr  # one per event
    assert proc.stdout.splitlines()[0].split() == [
        "step",
        "status",
        "duration",
        "attempts",
        "records",
        "output",
        "/",
        "error",
    ]
    assert re.search(r"^flaky\s+success\s+[\d.]+ ms\s+2\b", proc.stdout, re.MULTILINE), proc.stdout
    assert "broken failed on attempt 1 of 1: ValueError: bad row 17" in proc.stdout
    assert f"  at steps_progress.py:{_raise_line()}, in _parse" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, extra_env",
    [
        (["--no-progress"], {}),
        ([], {"TERM": "dumb"}),
        (["--log-format", "json"], {}),
        (["-q"], {}),
    ],
    ids=["--no-progress", "TERM=dumb", "json", "-q"],
)
def test_no_live_display_on_a_terminal_when_told_or_unable(demo, args, extra_env):
    code, raw = _in_terminal(["run", demo.name, *args], cwd=demo.parent, env=_env(**extra_env))
    text = _plain(raw)
    assert code == 1, text
    assert not re.search(r"attempt \d+/\d+\s+\d", text), text  # no running-step lines
    assert "\x1b[?25l" not in raw  # the cursor was never hidden for a live display
    assert "broken failed on attempt 1 of 1: ValueError: bad row 17" in text
    if "-q" in args:  # only the failures and the final line
        assert "step_started" not in text and "success" not in text
        assert re.search(r"of 'demo': failed in", text)


@pytest.mark.slow
def test_progress_option_forces_the_display_into_a_pipe_and_no_color_keeps_it_plain(demo):
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "run", demo.name, "--progress"],
        cwd=demo.parent,
        env=_env(NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"attempt \d+/\d+", _plain(proc.stderr))  # the live display, on stderr
    assert "\x1b[?25l" in proc.stderr  # it hid the cursor, as on a terminal
    colours = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")
    assert not colours.search(proc.stdout + proc.stderr)  # NO_COLOR: no colour codes
    assert "broken failed on attempt 1 of 1" in _plain(proc.stdout)  # the table, on stdout


def test_help_does_not_import_rich():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipectl.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rich" not in proc.stderr.lower()


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "option, log_format, quiet, term, streams, expected",
    [
        (None, "console", False, "xterm", "tty", True),
        (None, "console", False, "xterm", "pipe", False),
        (None, "console", False, "xterm", "tty+pipe", False),  # stderr redirected: no display
        (True, "console", False, "xterm", "pipe", True),
        (False, "console", False, "xterm", "tty", False),
        (None, "console", False, "dumb", "tty", False),
        (True, "console", False, "dumb", "tty", False),
        (True, "json", False, "xterm", "tty", False),
        (True, "console", True, "xterm", "tty", False),
    ],
)
def test_progress_enabled(option, log_format, quiet, term, streams, expected):
    kinds = {
        "tty": (_Terminal(), _Terminal()),
        "pipe": (io.StringIO(), io.StringIO()),
        "tty+pipe": (_Terminal(), io.StringIO()),
    }
    assert (
        progress.progress_enabled(
            option,
            log_format=log_format,
            quiet=quiet,
            environ={"TERM": term},
            streams=kinds[streams],
        )
        is expected
    )


def test_user_location_is_the_deepest_frame_of_the_users_code(tmp_path, monkeypatch):
    import json

    library = json.__file__
    monkeypatch.chdir(tmp_path)
    trace = (
        "Traceback (most recent call last):\n"
        f'  File "{tmp_path / "steps.py"}", line 12, in load\n    return parse(row)\n'
        f'  File "{tmp_path / "lib" / "parse.py"}", line 3, in parse\n    return json.loads(r)\n'
        f'  File "{library}", line 346, in loads\n    return _default_decoder.decode(s)\n'
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
    )
    result = StepResult(
        "load", StepStatus.FAILED, error="JSONDecodeError: ...", attempts=2, traceback=trace
    )
    where = progress.user_location(result)
    assert where == progress.Location(os.path.join("lib", "parse.py"), 3, "parse")
    assert str(where) == f"{os.path.join('lib', 'parse.py')}:3, in parse"
    no_frames = StepResult(
        "slow",
        StepStatus.FAILED,
        error="StepTimeout: ...",
        attempts=1,
        traceback="Traceback (most recent call last):\nStepTimeout: ...\n",
    )
    assert progress.user_location(no_frames) is None
    assert progress.user_location(StepResult("x", StepStatus.SKIPPED)) is None


def test_failure_details_and_final_line(plugin_manager):
    pipe = Pipeline("fails", plugin_manager=plugin_manager)

    def explode():
        raise KeyError("customer_id")

    pipe.add_step("ok", lambda: 1)
    pipe.add_step("explode", explode, retries=1, retry_delay=0, retry_jitter=0)
    run = pipe.run_sync()
    (detail,) = progress.failure_details(run, pipe.steps)
    assert detail.headline() == "explode failed on attempt 2 of 2: KeyError: 'customer_id'"
    assert detail.location is not None and detail.location.function == "explode"
    assert detail.location.file.endswith("test_cli_progress.py")
    assert re.fullmatch(r"run \w+ of 'fails': failed in \d+(\.\d+)? m?s", progress.final_line(run))


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.0042, "4.2 ms"),
        (0.123, "123 ms"),
        (1.2345, "1.23 s"),
        (12.34, "12.34 s"),
        (65, "1m 05s"),
        (3 * 3600 + 125, "3h 02m"),
    ],
)
def test_one_duration_format_everywhere(seconds, text):
    from pipectl.story import _duration

    assert progress.format_seconds(seconds) == text
    assert progress.format_duration(seconds * 1000) == text == _duration(seconds * 1000)


def _console(height: int = 40):
    from rich.console import Console

    return Console(
        file=io.StringIO(),
        width=100,
        height=height,
        force_terminal=True,
        color_system=None,
        legacy_windows=False,
    )


def _text_of(console, renderable) -> str:
    console.print(renderable)
    return console.file.getvalue()


def test_live_area_of_ten_thousand_running_steps_shows_twenty(plugin_manager):
    display = progress.LiveProgress("big", total=10_000, console=_console())
    run = PipelineRun("r1", "big")
    display.pipectl_run_start(run)
    specs = [StepSpec(f"s{i}", retries=3) for i in range(10_000)]
    for spec in specs:
        display.pipectl_step_start(run, spec, 1)
    for spec in specs[:100]:
        display.pipectl_step_finish(
            run, spec, StepResult(spec.name, StepStatus.SUCCESS, attempts=1, records=2)
        )
    display.pipectl_step_retry(run, specs[100], 1, ValueError("secret 123"), 30.0)
    display.pipectl_step_start(run, specs[101], 2)
    text = _text_of(display.console, display.render())
    lines = text.splitlines()
    assert re.match(r"big\s+100/10000 done\s+9900 running\s+200 records", lines[0]), text
    assert len(lines) == 1 + 20 + 1, text
    assert re.search(r"s100\s+retry 2/4 in \d", lines[1]) and "secret" not in text
    assert re.search(r"s101\s+attempt 2/4\s+\d", lines[2]), text
    assert lines[-1].strip() == "... and 9,880 more running"
    short = progress.LiveProgress("big", total=1, console=_console(height=8))
    short.pipectl_run_start(run)
    for spec in specs[:50]:
        short.pipectl_step_start(run, spec, 1)
    assert len(_text_of(short.console, short.render()).splitlines()) == 1 + 4 + 1


def test_listener_ignores_a_sub_pipeline_run(plugin_manager):
    display = progress.LiveProgress("parent", total=1, console=_console())
    parent, child = PipelineRun("p", "parent"), PipelineRun("c", "child")
    display.pipectl_run_start(parent)
    display.pipectl_run_start(child)
    display.pipectl_step_start(child, StepSpec("inner"), 1)
    display.pipectl_step_finish(
        child, StepSpec("inner"), StepResult("inner", StepStatus.FAILED, attempts=1)
    )
    display.pipectl_step_start(parent, StepSpec("outer"), 1)
    text = _text_of(display.console, display.render())
    assert "outer" in text and "inner" not in text and "0/1 done" in text


@pytest.mark.slow
def test_live_progress_is_a_listener_of_the_run(plugin_manager):
    pipe = Pipeline("listened", plugin_manager=plugin_manager)

    def slow():
        time.sleep(0.3)
        return 1

    pipe.add_step("first", slow)
    pipe.add_step("second", lambda first: 1 / 0, inputs={"first": "first"})
    pipe.add_step("third", lambda: 3, depends_on=["second"])
    console = _console()
    with progress.LiveProgress(pipe.name, total=3, console=console) as display:
        run = pipe.run_sync(listeners=[display])
        # a run listener: never on the plugin manager, where another run would reach it
        assert plugin_manager.get_plugin(progress.PLUGIN_NAME) is None
        assert display not in plugin_manager.get_plugins()
    out = _plain(console.file.getvalue())
    assert re.search(r"^✓ first\s+(\d+ ms|\d\.\d\d s)$", out, re.MULTILINE), out
    assert re.search(
        r"^✗ second failed on attempt 1 of 1: ZeroDivisionError: division by zero"
        r"\s+\(.*test_cli_progress\.py:\d+, in <lambda>\)",
        out,
        re.MULTILINE,
    ), out
    assert "third" not in out  # skipped steps only count
    assert run.status.value == "failed"


def test_summary_table_of_a_large_run_lists_failures_first_and_counts_the_rest():
    run = PipelineRun("r", "wide")
    for i in range(150):
        status = StepStatus.FAILED if i in (7, 140) else StepStatus.SUCCESS
        error = "RuntimeError: " + "x" * 300 if status is StepStatus.FAILED else None
        run.steps[f"step{i}"] = StepResult(
            f"step{i}", status, error=error, attempts=1, duration_ms=12.0
        )
    console = _console()
    progress.print_rich_summary(run, {}, console=console)
    out = console.file.getvalue()
    assert all(len(line) <= 100 for line in out.splitlines())  # the error is cut to fit
    assert "step140" in out and "step7 " in out and "step99 " not in out
    assert "50 more steps not listed: 50 success" in out
    assert "step140 failed on attempt 1 of 1: RuntimeError:" in out

"""What capturing step logs costs: 10,000-step runs with the SQLite tracker, step logs
captured (the default with a tracker) against the same runs with ``capture_logs=False`` and
against runs without a tracker, in the same process, rounds interleaved.

Part 1, no-op steps (they log nothing; each attempt still gets its ``step_started`` event
line, written to ``step_logs`` by the tracker's writer): tracking per step with capture on
and off, each over the untracked run, and what capture adds. Target: tracking with capture
within 50 µs per step.

Each part also runs the untracked pipeline with a listener asking for step logs (capture
without a tracker): the engine's share of capturing alone, without the tracker's noise.

Part 2, steps that print one line each (to a sink standing in for the terminal): the same
three runs, and a hand-written baseline in the same process: a loop printing the same
10,000 lines to the same sink, each from a context with a step-log buffer set (what the
``sys.stdout`` proxy does per write, without the engine).

A run without a tracker captures nothing: the attempt runner is chosen once per run
(``AttemptRunner.attempts`` directly), and no stream or handler is installed, so the
untracked column is the engine's own cost.

The last columns give the same two differences in CPU time of the process (all its threads),
which other processes disturb less than the wall clock.

``run()`` returns only once everything is committed (it flushes), so the time measured
includes all of the writing. Overhead per step = (median of the runs - median untracked) /
steps.

Run:  .venv/bin/python benchmarks/log_capture.py [--rounds 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench as B

TARGET_US = 50.0
STEPS = 10_000


class _Sink:
    """A text stream that keeps nothing (the terminal, without its cost)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def printing(**kw: Any) -> None:
    """A sync step printing one line."""
    print("a line of the step's own output, like a progress message")


async def aprinting(**kw: Any) -> None:
    """An async step printing one line."""
    print("a line of the step's own output, like a progress message")


class _AsksForLogs:
    """A run listener that asks for step logs and listens to nothing: capture without a
    tracker, the engine's share of the cost alone."""

    wants_step_logs = True


CPU: dict[str, list[float]] = {}
"""The process's CPU time (every thread: the engine's, the steps', the tracker's writer) of each
timed run, by variant: steadier than the wall clock on a machine other processes keep busy."""


async def timed(
    pipe: Any, pm: Any, tracker: Any, capture: bool, listeners: Any = (), variant: str = ""
) -> float:
    c0, t0 = time.process_time(), time.perf_counter()
    run = await pipe.run(
        plugin_manager=pm, tracker=tracker, capture_logs=capture, listeners=listeners
    )
    elapsed = time.perf_counter() - t0
    CPU.setdefault(variant, []).append(time.process_time() - c0)
    assert run.ok, run.errors
    return elapsed


def hand_written(lines: int) -> float:
    """``lines`` prints to the sink through the step-log proxy, each from a context holding
    an attempt's buffer: the capture's work per line without the engine."""
    import contextvars

    from pipectl import step_logs

    def one() -> None:
        step_logs.StepCapture().begin(1)
        print("a line of the step's own output, like a progress message")

    step_logs.install()
    try:
        t0 = time.perf_counter()
        for _ in range(lines):
            contextvars.copy_context().run(one)
        return time.perf_counter() - t0
    finally:
        step_logs.uninstall()


def measure(rounds: int, db: Path, quiet_steps: bool) -> list[list[Any]]:
    from pipectl.tracking import SqliteTracker

    pm = B.builtins_only_pm()
    tracker = SqliteTracker(f"sqlite:///{db}")
    tracker.migrate()
    rows = []
    kinds = (
        (("async", B.noop), ("sync", B.noop_sync))
        if quiet_steps
        else (("async", aprinting), ("sync", printing))
    )
    for kind, fn in kinds:
        pipe = B.build_pipeline(B.SHAPES["layered"](STEPS), fn)
        none: list[float] = []
        asks: list[float] = []
        off: list[float] = []
        on: list[float] = []

        async def main() -> None:
            await timed(pipe, pm, "none", True)  # plan once, warm everything up
            await timed(pipe, pm, tracker, True)
            CPU.clear()
            for _ in range(rounds):
                none.append(await timed(pipe, pm, "none", True, variant="none"))
                asks.append(await timed(pipe, pm, "none", True, [_AsksForLogs()], "asks"))
                off.append(await timed(pipe, pm, tracker, False, variant="off"))
                on.append(await timed(pipe, pm, tracker, True, variant="on"))

        asyncio.run(main())
        m_none, m_asks, m_off, m_on = (statistics.median(x) for x in (none, asks, off, on))
        tracked = (m_off - m_none) / STEPS * 1e6
        captured = (m_on - m_none) / STEPS * 1e6
        cpu = {k: statistics.median(v) for k, v in CPU.items()}
        rows.append(
            [
                kind,
                m_none * 1e3,
                (m_asks - m_none) / STEPS * 1e6,
                m_off * 1e3,
                m_on * 1e3,
                tracked,
                captured,
                captured - tracked,
                (cpu["off"] - cpu["none"]) / STEPS * 1e6,
                (cpu["on"] - cpu["none"]) / STEPS * 1e6,
                ("yes" if captured <= TARGET_US else "NO") if quiet_steps else "-",
            ]
        )
        print(
            B.table(
                [
                    "kind",
                    "untracked ms",
                    "capture alone µs/step",
                    "tracked ms",
                    "tracked+logs ms",
                    "tracking µs/step",
                    "with logs µs/step",
                    "logs µs/step",
                    "CPU tracking",
                    "CPU with logs",
                    "quiet ≤ 50 µs",
                ],
                rows[-1:],
            ),
            flush=True,
            file=sys.__stdout__,  # also while part 2 sends the steps' prints to a sink
        )
    tracker.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    print(B.describe_source())
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"\n== No-op steps ({STEPS:,}, layered), SQLite tracker, step logs on vs off vs "
            f"untracked, medians of {args.rounds} interleaved rounds =="
        )
        quiet = measure(args.rounds, Path(tmp) / "quiet" / "pipectl.db", True)
        print(f"\n== Steps printing one line each ({STEPS:,}, layered), same runs ==")
        with contextlib.redirect_stdout(_Sink()):  # type: ignore[type-var]
            base = statistics.median(hand_written(STEPS) for _ in range(args.rounds))
            loud = measure(args.rounds, Path(tmp) / "loud" / "pipectl.db", False)
        print(
            B.table(
                ["hand-written baseline", "ms", "µs/line"],
                [["10,000 captured prints, no engine", base * 1e3, base / STEPS * 1e6]],
            )
        )
    B.write_json(
        args.json,
        {
            "benchmark": "log_capture",
            "target_us": TARGET_US,
            "no_op_steps": quiet,
            "printing_steps": loud,
            "hand_written_ms": base * 1e3,
        },
    )


if __name__ == "__main__":
    main()

"""Where the engine's time per step goes: a profile of ``pipe.run()`` on no-op steps.

Profiles a few runs (a cold first run of a new Pipeline, then warm repeat runs) of one shape and
kind with cProfile (default; the event loop thread only) or pyinstrument (``--pyinstrument``,
if installed; statistical, lower distortion) and prints the functions with the most own time,
and the pipectl functions with the most cumulative time, per step.

Run:  .venv/bin/python benchmarks/profile_engine.py --shape chain --kind sync [--pyinstrument]
cProfile inflates every Python call, so read the figures as shares, not as absolute costs;
engine_overhead.py gives the real costs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
from typing import Any

import _bench as B


async def runs(pipe: Any, pm: Any, count: int, cold: bool) -> None:
    for i in range(count):
        p = B.fresh_copy(pipe) if cold and i == 0 else pipe
        run = await p.run(plugin_manager=pm)
        assert run.ok, run.errors[:3]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="chain", choices=list(B.SHAPES))
    p.add_argument("--kind", default="async", choices=["async", "sync"])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3, help="runs profiled (the first one cold)")
    p.add_argument("--warm-only", action="store_true", help="profile repeat runs only")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--pyinstrument", action="store_true")
    p.add_argument(
        "--yappi",
        choices=["cpu", "wall"],
        help="profile every thread (the sync lane's workers too) with yappi",
    )
    p.add_argument("--output", metavar="PATH", help="save the raw profile (.prof or .html)")
    args = p.parse_args(argv)

    pm = B.builtins_only_pm()
    fn = B.noop if args.kind == "async" else B.noop_sync
    pipe = B.build_pipeline(B.SHAPES[args.shape](args.steps), fn)
    print(B.describe_source())
    print(
        f"profiling {args.runs} run(s) of {args.shape}-{args.steps} {args.kind}"
        f"{' (warm only)' if args.warm_only else ' (first one cold)'}\n"
    )

    async def go() -> None:
        if args.warm_only:
            await runs(pipe, pm, 1, cold=False)  # plans and warms up, unprofiled
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
            await runs(pipe, pm, args.runs, cold=not args.warm_only)
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
            if args.output:
                with open(args.output, "w", encoding="utf-8") as f:
                    f.write(profiler.output_html())
            return
        if args.yappi:
            import yappi

            yappi.set_clock_type(args.yappi)
            yappi.start(builtins=True, profile_threads=True)
            await runs(pipe, pm, args.runs, cold=not args.warm_only)
            yappi.stop()
            report_yappi(yappi, args.runs * args.steps, args.top)
            return
        prof = cProfile.Profile()
        prof.enable()
        await runs(pipe, pm, args.runs, cold=not args.warm_only)
        prof.disable()
        if args.output:
            prof.dump_stats(args.output)
        report(prof, args.runs * args.steps, args.top)

    asyncio.run(go())


def _short(filename: str) -> str:
    if "/pipectl/" in filename:
        return "pipectl/" + filename.split("/pipectl/", 1)[1]
    return filename.split("/site-packages/")[-1].split("/lib/python3")[-1]


def report_yappi(yappi: Any, steps: int, top: int) -> None:
    stats = yappi.get_func_stats()
    entries = [(f"{_short(f.module)}:{f.lineno}:{f.name}", f.ncall, f.tsub, f.ttot) for f in stats]
    threads = yappi.get_thread_stats()
    total = sum(e[2] for e in entries)
    print(
        f"yappi, {yappi.get_clock_type()} clock, {len(threads)} threads; total own time "
        f"{total * 1e3:.0f} ms = {total / steps * 1e6:.1f} us/step (profiler-inflated)\n"
    )
    _tables(entries, steps, top, total, ", all threads")
    print("\n== threads ==")
    print(
        B.table(
            ["thread", "cpu/wall ms", "contexts"],
            [
                [t.name, t.ttot * 1e3, t.sched_count]
                for t in sorted(threads, key=lambda t: -t.ttot)[:8]
            ],
        )
    )


def report(prof: cProfile.Profile, steps: int, top: int) -> None:
    stats = pstats.Stats(prof, stream=io.StringIO())
    entries = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.split("/site-packages/")[-1].split("/lib/python3")[-1]
        if "/pipectl/" in filename:
            short = "pipectl/" + filename.split("/pipectl/", 1)[1]
        entries.append((f"{short}:{line}:{func}", nc, tt, ct))
    total = sum(e[2] for e in entries)
    print(
        f"total profiled own time {total * 1e3:.0f} ms = {total / steps * 1e6:.1f} us/step "
        f"(cProfile-inflated)\n"
    )
    _tables(entries, steps, top, total, "")


def _tables(entries: list, steps: int, top: int, total: float, scope: str) -> None:
    """The two tables every profile prints: top own time, and pipectl's cumulative time."""
    print(f"== top {top} by own time{scope} ==")
    rows = [
        [name, calls / steps, tt / steps * 1e6, tt / total * 100]
        for name, calls, tt, ct in sorted(entries, key=lambda e: -e[2])[:top]
    ]
    print(B.table(["function", "calls/step", "own us/step", "% own"], rows))
    print(f"\n== pipectl functions by cumulative time{scope} ==")
    rows = [
        [name, calls / steps, ct / steps * 1e6, tt / steps * 1e6]
        for name, calls, tt, ct in sorted(entries, key=lambda e: -e[3])
        if name.startswith("pipectl/")
    ][:top]
    print(B.table(["function", "calls/step", "cum us/step", "own us/step"], rows))


if __name__ == "__main__":
    main()

"""What lifecycle hooks and step middleware cost.

Part 1 (micro, like pluggy's ``testing/benchmark.py``): one ``pipectl_step_start`` call through
the engine's facade (:class:`pipectl.hooks.Hooks`, built once per run; it calls through pluggy's
hook execution, each listener isolated) with 0, 1 and 5 no-op listener plugins registered,
against a hand-written dispatcher ``notify(run=..., step=..., attempt=...)`` that calls the same
listener functions (unwrapped) in a ``for`` loop, and pluggy's own
``pm.hook.pipectl_step_start(...)``.

Part 2 (in the engine): the extra time per step of a 10,000-step chain when one listener plugin
(``pipectl_step_start`` + ``pipectl_step_finish``, both no-ops) and/or one ``pipectl_wrap_step``
plugin (an async middleware that returns ``await call_next()``) is registered, or the same
listener is given to each run (``run(listeners=[...])``), against the same chain with the
built-in plugins only, interleaved in the same process.

Run:  .venv/bin/python benchmarks/hook_dispatch.py [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Callable
from typing import Any

import _bench as B

from pipectl import hookimpl


class Listener:
    """A plugin with no-op ``step_start`` / ``step_finish`` listeners."""

    @hookimpl
    def pipectl_step_start(self, run, step, attempt):
        pass

    @hookimpl
    def pipectl_step_finish(self, run, step, result):
        pass


class Middleware:
    """A plugin whose ``pipectl_wrap_step`` returns a pass-through async middleware."""

    @hookimpl
    def pipectl_wrap_step(self, step, context):
        async def middleware(call_next, attempt):
            return await call_next()

        return middleware


def pm_with(listeners: int = 0, middleware: int = 0) -> Any:
    pm = B.builtins_only_pm()
    for i in range(listeners):
        record = pm.add_plugin(Listener(), f"listener-{i}")
        assert record.status == "loaded", record
    for i in range(middleware):
        record = pm.add_plugin(Middleware(), f"middleware-{i}")
        assert record.status == "loaded", record
    return pm


# -- part 1 ----------------------------------------------------------------------------------


def best_per_call(stmt: Callable[[], Any], number: int, repeats: int) -> dict[str, float]:
    times = timeit.repeat(stmt, number=number, repeat=repeats)
    times.sort()
    return {"best_ns": times[0] / number * 1e9, "median_ns": times[len(times) // 2] / number * 1e9}


def micro(counts: list[int], number: int, repeats: int) -> list[dict[str, Any]]:
    from pipectl.hooks import Hooks
    from pipectl.model import PipelineRun, StepSpec

    run = PipelineRun(run_id="r", pipeline_id="p")
    step = StepSpec(name="s", func=B.noop)
    out = []
    for n in counts:
        pm = pm_with(listeners=n)
        hooks = Hooks(pm)
        listeners = [
            getattr(impl.function, "__wrapped__", impl.function)  # not isolated
            for impl in pm.hook.pipectl_step_start.get_hookimpls()
        ]
        assert len(listeners) == n

        def notify(*, run: Any, step: Any, attempt: int, _fns=tuple(listeners)) -> None:
            for f in _fns:
                f(run, step, attempt)

        cases = {
            "facade": lambda: hooks.step_start(run=run, step=step, attempt=1),
            "plain": lambda: notify(run=run, step=step, attempt=1),
            "pluggy": lambda: pm.hook.pipectl_step_start(run=run, step=step, attempt=1),
        }
        res = {"listeners": n}
        for _ in range(2):  # the interpreter settles on the second round
            res.update({k: best_per_call(f, number, repeats) for k, f in cases.items()})
        out.append(res)
    return out


# -- part 2 ----------------------------------------------------------------------------------


async def in_engine(steps: int, repeats: int, kinds: list[str]) -> list[dict[str, Any]]:
    configs = {
        "builtins": pm_with(),
        "+1 listener": pm_with(listeners=1),
        "+1 middleware": pm_with(middleware=1),
        "+both": pm_with(listeners=1, middleware=1),
        "+1 run listener": pm_with(),
    }
    out = []
    for kind in kinds:
        fn = B.noop if kind == "async" else B.noop_sync
        pipe = B.build_pipeline(B.chain(steps), fn)

        def runner(pm: Any, run_listeners: bool = False) -> Callable[[], Any]:
            async def go() -> None:
                listeners = [Listener()] if run_listeners else []
                run = await pipe.run(plugin_manager=pm, listeners=listeners)
                if not run.ok:  # pragma: no cover
                    raise SystemExit(f"run ended {run.status}: {run.errors[:3]}")

            return go

        variants = {k: runner(pm, k == "+1 run listener") for k, pm in configs.items()}
        for v in variants.values():
            await v()  # warm-up
        times = await B.time_variants(variants, repeats)
        stats = {k: B.summary(t) for k, t in times.items()}
        base = stats["builtins"]
        out.append(
            {
                "kind": kind,
                "steps": steps,
                "seconds": times,
                "us_per_step": {
                    k: {s: B.per(v[s], steps) for s in ("best", "median")} for k, v in stats.items()
                },
                "extra_us_per_step": {
                    k: {s: B.per(v[s] - base[s], steps) for s in ("best", "median")}
                    for k, v in stats.items()
                    if k != "builtins"
                },
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=200_000, help="calls per timing (part 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10_000, help="chain length (part 2)")
    p.add_argument("--kinds", nargs="+", default=["async", "sync"], choices=["async", "sync"])
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)

    micro_results = micro([0, 1, 5], args.number, args.repeats)
    rows = []
    for r in micro_results:
        plain = r["plain"]["best_ns"]
        rows.append(
            [
                r["listeners"],
                r["facade"]["best_ns"],
                r["facade"]["median_ns"],
                plain,
                r["pluggy"]["best_ns"],
                r["facade"]["best_ns"] / plain,
                r["pluggy"]["best_ns"] / plain,
            ]
        )
    print(
        f"== One pipectl_step_start call, ns (best / median of {args.repeats} x "
        f"{args.number:,} calls) =="
    )
    print(
        B.table(
            [
                "listeners",
                "facade best",
                "facade median",
                "plain call",
                "pluggy",
                "facade/plain",
                "pluggy/plain",
            ],
            rows,
        )
    )

    engine_results = asyncio.run(in_engine(args.steps, args.repeats, args.kinds))
    rows = []
    for r in engine_results:
        for k, v in r["us_per_step"].items():
            extra = r["extra_us_per_step"].get(k)
            rows.append(
                [
                    r["kind"],
                    k,
                    v["best"],
                    v["median"],
                    extra["best"] if extra else float("nan"),
                    extra["median"] if extra else float("nan"),
                ]
            )
    print(
        f"\n== {args.steps:,}-step chain with plugins, us/step (best / median of {args.repeats}) =="
    )
    print(
        B.table(["kind", "plugins", "us/step best", "median", "extra best", "extra median"], rows)
    )
    B.write_json(
        args.json, {"benchmark": "hook_dispatch", "micro": micro_results, "engine": engine_results}
    )


if __name__ == "__main__":
    main()

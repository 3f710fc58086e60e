"""1,000 independent steps that each sleep 10 ms, under max_concurrent=100.

The ideal is 1,000 / 100 x 10 ms = 100 ms. pipectl (``await pipe.run()`` of a pipeline with
``max_concurrent=100``, built-in plugins only) is timed against hand-written asyncio in the same
process, interleaved, three ways:

``cold``  the first run of a new ``Pipeline`` object (it plans: validates the graph, binds the
          functions), what a script or ``pipectl run`` pays: the one run it makes. The target.
``built`` ``cold`` plus building the pipeline (1,000 ``add_step`` calls) inside the timing.
``warm``  a repeat run of the same object (the plan is cached).

Baselines:

async steps (``await asyncio.sleep(0.01)``)
  baseline ``semaphore``: ``asyncio.Semaphore(100)`` + ``asyncio.gather`` of 1,000 coroutines.
sync steps (``time.sleep(0.01)``)
  baseline ``pool100``: a ``ThreadPoolExecutor(100)`` created for the run, 1,000
  ``loop.run_in_executor`` calls gathered (the pool's 100 threads bound the concurrency).
  reference ``to_thread``: ``asyncio.Semaphore(100)`` + ``asyncio.to_thread``: the loop's default
  executor, ``min(32, cpus + 4)`` threads (6 on 2 cores), is then what bounds the run.

Target: pipectl ``cold`` within 1.05x of the baseline, for both kinds.

Run:  .venv/bin/python benchmarks/sleep_bound.py [--repeats 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _bench as B

STEPS = 1000
SLEEP = 0.010
LIMIT = 100
TARGET_RATIO = 1.05
PIPECTL = ("cold", "built", "warm")


async def sleeper(**kw: Any) -> None:
    await asyncio.sleep(SLEEP)


def sleeper_sync(**kw: Any) -> None:
    time.sleep(SLEEP)


def variants(kind: str, pm: Any, steps: int, limit: int) -> dict[str, Any]:
    shape = B.independent(steps)
    fn = sleeper if kind == "async" else sleeper_sync
    pipe = B.build_pipeline(shape, fn, max_concurrent=limit)

    async def run(p: Any) -> None:
        result = await p.run(plugin_manager=pm)
        if not result.ok:  # pragma: no cover
            raise SystemExit(f"pipectl run ended {result.status}: {result.errors[:3]}")

    async def cold(p: Any) -> None:
        await run(p)

    async def built() -> None:
        await run(B.build_pipeline(shape, fn, max_concurrent=limit))

    async def warm() -> None:
        await run(pipe)

    pipectl = {
        "cold": B.Variant(cold, setup=lambda: B.fresh_copy(pipe)),
        "built": built,
        "warm": warm,
    }

    if kind == "async":

        async def semaphore() -> None:
            sem = asyncio.Semaphore(limit)

            async def one() -> None:
                async with sem:
                    await sleeper()

            await asyncio.gather(*(one() for _ in range(steps)))

        return {**pipectl, "semaphore": semaphore}

    async def pool100() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(limit) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, sleeper_sync) for _ in range(steps)))

    async def to_thread() -> None:
        sem = asyncio.Semaphore(limit)

        async def one() -> None:
            async with sem:
                await asyncio.to_thread(sleeper_sync)

        await asyncio.gather(*(one() for _ in range(steps)))

    return {**pipectl, "pool100": pool100, "to_thread": to_thread}


PRIMARY = {"async": "semaphore", "sync": "pool100"}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    pm = B.builtins_only_pm()
    ideal = args.steps / args.limit * SLEEP
    results = []
    for kind in args.kinds:
        v = variants(kind, pm, args.steps, args.limit)
        if kind == "sync" and not args.with_default_pool:
            v.pop("to_thread")
        await v["cold"].once()  # warm-up (imports, thread pool)
        await v["warm"]()
        times = await B.time_variants(v, args.repeats)
        results.append(
            {
                "kind": kind,
                "primary_baseline": PRIMARY[kind],
                "seconds": times,
                "summary": {k: B.summary(t) for k, t in times.items()},
            }
        )
    rows = []
    for r in results:
        s, prim = r["summary"], r["primary_baseline"]
        bases = [k for k in s if k not in PIPECTL]
        # ratio[pipectl variant][baseline] = {"best": ..., "median": ...}
        r["ratio"] = {
            p: {k: {stat: s[p][stat] / s[k][stat] for stat in ("best", "median")} for k in bases}
            for p in PIPECTL
        }
        for p in PIPECTL:
            ratio = r["ratio"][p][prim]
            target = "yes" if ratio["median"] <= TARGET_RATIO else "NO"
            rows.append(
                [
                    r["kind"],
                    p,
                    s[p]["best"] * 1e3,
                    s[p]["median"] * 1e3,
                    prim,
                    s[prim]["best"] * 1e3,
                    s[prim]["median"] * 1e3,
                    ratio["best"],
                    ratio["median"],
                    target if p == "cold" else f"({target})",
                ]
            )
        for key in bases:
            if key != prim:
                rows.append(
                    [
                        r["kind"],
                        "cold",
                        float("nan"),
                        float("nan"),
                        f"({key})",
                        s[key]["best"] * 1e3,
                        s[key]["median"] * 1e3,
                        r["ratio"]["cold"][key]["best"],
                        r["ratio"]["cold"][key]["median"],
                        "",
                    ]
                )
    print(
        f"{args.steps} steps x {SLEEP * 1e3:g} ms sleep, max_concurrent={args.limit}, "
        f"ideal {ideal * 1e3:.0f} ms, {args.repeats} repeats, {os.cpu_count()} cpus"
    )
    print(B.describe_source())
    print(
        "cold = first run of a new Pipeline (the target); built = cold + building it "
        "(add_step x steps); warm = a repeat run"
    )
    print(
        B.table(
            [
                "kind",
                "pipectl",
                "best ms",
                "median ms",
                "baseline",
                "base best ms",
                "median ms",
                "ratio best",
                "ratio median",
                f"<= {TARGET_RATIO}x",
            ],
            rows,
        )
    )
    return {
        "steps": args.steps,
        "sleep_s": SLEEP,
        "max_concurrent": args.limit,
        "ideal_s": ideal,
        "target_ratio": TARGET_RATIO,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--limit", type=int, default=LIMIT, help="max_concurrent")
    p.add_argument("--kinds", nargs="+", default=["async", "sync"], choices=["async", "sync"])
    p.add_argument(
        "--with-default-pool",
        action="store_true",
        help="also time the asyncio.to_thread reference (about 1.7 s a run on 2 cores)",
    )
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    payload = asyncio.run(amain(args))
    B.write_json(args.json, {"benchmark": "sleep_bound", **payload})


if __name__ == "__main__":
    main()

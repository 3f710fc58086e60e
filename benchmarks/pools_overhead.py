"""What resource pools cost per step: the same run of independent no-op steps timed without
pools (the baseline, in the same process and loop, interleaved), with pools declared that no
step uses, and with every step in a pool of ample size (``pools: {db: N}``, ``pool: db``).

Overhead per step = (variant time - baseline time) / steps, on the medians. Target (issue 19,
point 3): at most 2 us per step.

Run:  .venv/bin/python benchmarks/pools_overhead.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import _bench as B

TARGET_US = 2.0


def build(n: int, fn: Any, variant: str) -> Any:
    from pipectl import Pipeline

    pools = {"db": n + 1} if variant != "baseline" else None
    pipe = Pipeline(f"pools-{variant}", pools=pools)
    for i in range(n):
        if variant == "in_pool":
            pipe.add_step(f"s{i}", fn, pool="db")
        else:
            pipe.add_step(f"s{i}", fn)
    return pipe


async def measure(n: int, repeats: int, kind: str) -> dict[str, Any]:
    pm = B.builtins_only_pm()
    fn = B.noop if kind == "async" else B.noop_sync
    pipes = {v: build(n, fn, v) for v in ("baseline", "declared", "in_pool")}
    for pipe in pipes.values():  # warm: plans cached, functions probed
        _check(await pipe.run(plugin_manager=pm))

    def runner(pipe: Any) -> Any:
        async def run() -> None:
            _check(await pipe.run(plugin_manager=pm))

        return run

    times = await B.time_variants({v: runner(p) for v, p in pipes.items()}, repeats)
    base = statistics.median(times["baseline"])
    out: dict[str, Any] = {"steps": n, "kind": kind}
    for v, samples in times.items():
        med = statistics.median(samples)
        out[v] = {"median_s": med, "per_step_us": B.per(med, n)}
        if v != "baseline":
            out[v]["overhead_us"] = B.per(med - base, n)
    return out


def _check(run: Any) -> None:
    if not run.ok:  # pragma: no cover - a benchmark of a broken run means nothing
        raise SystemExit(f"run ended {run.status}: {run.errors[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.steps
    repeats = 5 if args.quick else 15

    async def all_kinds() -> list[dict[str, Any]]:
        return [await measure(n, repeats, kind) for kind in ("async", "sync")]

    results = asyncio.run(all_kinds())
    rows = []
    worst = 0.0
    for r in results:
        for v in ("declared", "in_pool"):
            worst = max(worst, r[v]["overhead_us"])
            rows.append(
                [
                    r["kind"],
                    v,
                    r["steps"],
                    f"{r['baseline']['per_step_us']:.2f}",
                    f"{r[v]['per_step_us']:.2f}",
                    f"{r[v]['overhead_us']:+.2f}",
                ]
            )
    print(B.describe_source())
    print(
        B.table(
            ["steps", "variant", "n", "baseline us/step", "variant us/step", "overhead us/step"],
            rows,
        )
    )
    verdict = "OK" if worst <= TARGET_US else "OVER"
    print(f"worst overhead {worst:+.2f} us/step (target <= {TARGET_US} us): {verdict}")
    B.write_json(args.json, {"results": results, "target_us": TARGET_US, **B.environment()})


if __name__ == "__main__":
    main()

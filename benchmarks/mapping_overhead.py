"""What dynamic mapping costs per item: one step mapped over a list of N items (``map: x``,
N instances ``fan[i]`` at run time) against N ordinary independent no-op steps, timed in the
same process and loop, interleaved (as pools_overhead.py and engine_overhead.py do).

Both pipelines are planned before timing (warm runs, plans cached): the ordinary one's N steps
are planned once, while the mapped one makes its N items at every run (item specs, binders,
nodes), which is part of what an item costs. The mapped pipeline has one more step, the one
returning the list (a list comprehension of N ints, counted in the items' cost).

Overhead per item = (mapped time - ordinary time) / N, on the medians. Target (issue 19,
point 2): at most 20 us per item over an ordinary independent step.

Run:  .venv/bin/python benchmarks/mapping_overhead.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import _bench as B

TARGET_US = 20.0


async def item(x: Any) -> None:
    """An async no-op item (its parameter receives the item)."""
    return None


def item_sync(x: Any) -> None:
    """A sync no-op item."""
    return None


def build(n: int, kind: str, variant: str) -> Any:
    from pipectl import Pipeline

    pipe = Pipeline(f"mapping-{variant}")
    if variant == "ordinary":
        fn = B.noop if kind == "async" else B.noop_sync
        for i in range(n):
            pipe.add_step(f"s{i}", fn)
    else:
        pipe.add_step("items", lambda: list(range(n)))
        pipe.add_step("fan", item if kind == "async" else item_sync, inputs={"x": "items"}, map="x")
    return pipe


async def measure(n: int, repeats: int, kind: str) -> dict[str, Any]:
    pm = B.builtins_only_pm()
    pipes = {v: build(n, kind, v) for v in ("ordinary", "mapped")}
    for pipe in pipes.values():  # warm: plans cached, functions probed
        _check(await pipe.run(plugin_manager=pm), n)

    def runner(pipe: Any) -> Any:
        async def run() -> None:
            _check(await pipe.run(plugin_manager=pm), n)

        return run

    times = await B.time_variants({v: runner(p) for v, p in pipes.items()}, repeats)
    base = statistics.median(times["ordinary"])
    out: dict[str, Any] = {"items": n, "kind": kind}
    for v, samples in times.items():
        med = statistics.median(samples)
        out[v] = {"median_s": med, "per_step_us": B.per(med, n)}
    out["overhead_us"] = B.per(statistics.median(times["mapped"]) - base, n)
    return out


def _check(run: Any, n: int) -> None:
    if not run.ok:  # pragma: no cover - a benchmark of a broken run means nothing
        raise SystemExit(f"run ended {run.status}: {run.errors[:3]}")
    fan = run.steps.get("fan")
    if fan is not None and len(fan.output) != n:  # pragma: no cover
        raise SystemExit(f"the mapped step made {len(fan.output)} items, not {n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.items
    repeats = 5 if args.quick else 15

    async def all_kinds() -> list[dict[str, Any]]:
        return [await measure(n, repeats, kind) for kind in ("async", "sync")]

    results = asyncio.run(all_kinds())
    rows = []
    worst = 0.0
    for r in results:
        worst = max(worst, r["overhead_us"])
        rows.append(
            [
                r["kind"],
                r["items"],
                f"{r['ordinary']['per_step_us']:.2f}",
                f"{r['mapped']['per_step_us']:.2f}",
                f"{r['overhead_us']:+.2f}",
            ]
        )
    print(B.describe_source())
    print(
        B.table(
            ["steps", "n", "ordinary us/step", "mapped us/item", "overhead us/item"],
            rows,
        )
    )
    verdict = "OK" if worst <= TARGET_US else "OVER"
    print(f"worst overhead {worst:+.2f} us/item (target <= {TARGET_US} us): {verdict}")
    B.write_json(args.json, {"results": results, "target_us": TARGET_US, **B.environment()})


if __name__ == "__main__":
    main()

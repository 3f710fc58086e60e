"""What step caching costs per step, with the SQLite tracker: the same tracked run of N steps
(each given the same 100-number list by one upstream step; ``store_output=False``, so that
the tracker's own copy of each output for resume, a file per step, does not drown the
figures), timed in the same process and loop, interleaved:

- ``tracked``: the steps without a cache policy (the baseline: they are called);
- ``hit``: the steps with ``cache=True`` and every output in the cache (none is called: the
  cost is the lookup: key, file read, HMAC check, unpickle);
- ``miss``: the steps with ``cache=True`` and ``refresh`` naming them all (each is called,
  its key made and its output stored: the first run's cost).

Cost per step = (variant time - baseline time) / N, on the medians; a hit also saves the call
of the (no-op) step, which is within the noise. Target (issue 19): a cache lookup costs at
most 200 us per step with the SQLite tracker.

Run:  .venv/bin/python benchmarks/cache_lookup.py [--quick] [--steps N] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import _bench as B

TARGET_US = 200.0


def source() -> list[int]:
    return list(range(100))


def step(source: list[int]) -> int:
    return len(source)


def build(n: int, cached: bool, name: str) -> Any:
    from pipectl import Pipeline

    pipe = Pipeline(name)
    pipe.add_step("source", source)
    for i in range(n):
        pipe.add_step(f"s{i}", step, depends_on="source", cache=cached, store_output=False)
    return pipe


async def measure(n: int, repeats: int, folder: Path) -> dict[str, Any]:
    pm = B.builtins_only_pm()
    names = [f"s{i}" for i in range(n)]
    pipes = {
        "tracked": (build(n, False, "plain"), {}),
        "hit": (build(n, True, "cached"), {}),
        "miss": (build(n, True, "refreshed"), {"refresh": names}),
    }
    trackers = {v: f"sqlite:///{folder / v}.db" for v in pipes}
    for v, (pipe, options) in pipes.items():  # warm: plans made, the cache filled
        _check(await pipe.run(plugin_manager=pm, tracker=trackers[v], **options), v, n)
    hit_run = await pipes["hit"][0].run(plugin_manager=pm, tracker=trackers["hit"])
    hits = sum(1 for r in hit_run.steps.values() if r.cached_from is not None)
    if hits != n:  # pragma: no cover - the benchmark must time hits
        raise SystemExit(f"expected {n} cache hits, got {hits}")

    def runner(v: str) -> Any:
        pipe, options = pipes[v]

        async def run() -> None:
            _check(await pipe.run(plugin_manager=pm, tracker=trackers[v], **options), v, n)

        return run

    times = await B.time_variants({v: runner(v) for v in pipes}, repeats)
    base = statistics.median(times["tracked"])
    out: dict[str, Any] = {"steps": n}
    for v, samples in times.items():
        med = statistics.median(samples)
        out[v] = {"median_s": med, "per_step_us": B.per(med, n)}
        if v != "tracked":
            out[v]["cost_us"] = B.per(med - base, n)
    return out


def _check(run: Any, variant: str, n: int) -> None:
    if not run.ok:  # pragma: no cover - a benchmark of a broken run means nothing
        raise SystemExit(f"{variant}: run ended {run.status}: {run.errors[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = 300 if args.quick else args.steps
    repeats = 3 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="pipectl-cache-bench-") as folder:
        os.environ["PIPECTL_HOME"] = str(Path(folder) / "home")  # the store's key goes there
        result = asyncio.run(measure(n, repeats, Path(folder)))
    rows = [
        [v, n, f"{result[v]['per_step_us']:.1f}", f"{result[v].get('cost_us', 0.0):+.1f}"]
        for v in ("tracked", "hit", "miss")
    ]
    print(B.describe_source())
    print(B.table(["variant", "steps", "us/step", "over tracked, us/step"], rows))
    lookup = result["hit"]["cost_us"]
    verdict = "OK" if lookup <= TARGET_US else "OVER"
    print(f"cache lookup (hit) {lookup:+.1f} us/step (target <= {TARGET_US:.0f} us): {verdict}")
    B.write_json(args.json, {"result": result, "target_us": TARGET_US, **B.environment()})


if __name__ == "__main__":
    main()

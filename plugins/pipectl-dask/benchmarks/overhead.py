"""Per-step overhead of the dask executor against raw ``client.submit``, same cluster, same run.

    python plugins/pipectl-dask/benchmarks/overhead.py [--steps 1000] [--repeat 3]

Both sides use an asynchronous client on one LocalCluster(2 worker processes, 1 thread each)
and run the same no-op functions; in a chain each task gets its upstream's future (the data
moves worker to worker). Raw submits the whole graph at once (its best case); pipectl submits a
step when the engine sees its dependencies done, and its time includes connecting its client.
For the chain, a third column: raw dask driven the way an orchestrator drives it, each task
submitted once the driver saw its upstream finish (``await`` then ``submit``), which is the
round trip pipectl's engine makes by design. Prints ms per step and the ratios (best of
``--repeat``).
"""

from __future__ import annotations

import argparse
import asyncio
import time


def noop(x=None):
    return 1


def build(n: int, chain: bool):
    from pipectl import Pipeline

    pipe = Pipeline(f"overhead-{'chain' if chain else 'independent'}")
    for i in range(n):
        if chain and i:
            pipe.add_step(f"s{i}", noop, inputs={"x": f"s{i - 1}"})
        else:
            pipe.add_step(f"s{i}", noop)
    return pipe


async def raw(client, n: int, chain: bool) -> float:
    from distributed import wait

    t0 = time.perf_counter()
    futures = []
    prev = None
    for i in range(n):
        if chain and prev is not None:
            prev = client.submit(noop, prev, pure=False, key=f"raw-{chain}-{i}-{t0}")
        else:
            prev = client.submit(noop, pure=False, key=f"raw-{chain}-{i}-{t0}")
        futures.append(prev)
    await wait(futures)
    elapsed = time.perf_counter() - t0
    await client.cancel(futures)
    del futures, prev
    return elapsed


async def raw_stepwise(client, n: int) -> float:
    """A chain submitted one task at a time, each after the driver saw its upstream finish."""
    from distributed import wait

    t0 = time.perf_counter()
    futures = []
    prev = None
    for i in range(n):
        if prev is None:
            prev = client.submit(noop, pure=False, key=f"step-{i}-{t0}")
        else:
            prev = client.submit(noop, prev, pure=False, key=f"step-{i}-{t0}")
        await wait(prev)
        futures.append(prev)
    elapsed = time.perf_counter() - t0
    await client.cancel(futures)
    del futures, prev
    return elapsed


async def piped(address: str, n: int, chain: bool) -> float:
    pipe = build(n, chain)
    t0 = time.perf_counter()
    run = await pipe.run(executor="dask", executor_options={"scheduler": address, "fetch": "none"})
    elapsed = time.perf_counter() - t0
    assert run.status.value == "success", run.errors[:3]
    return elapsed


async def main(steps: int, repeat: int) -> None:
    from distributed import Client, LocalCluster

    async with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            asynchronous=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        await raw(client, 50, False)  # warm up both paths
        await piped(cluster.scheduler_address, 50, True)
        print(f"{steps} no-op steps, LocalCluster(2 processes), best of {repeat}")
        print(
            f"{'shape':<12} {'raw ms/step':>12} {'pipectl ms/step':>16} {'ratio':>7}"
            f" {'raw stepwise':>13} {'ratio':>7}"
        )
        for chain in (False, True):
            r = min([await raw(client, steps, chain) for _ in range(repeat)])
            p = min([await piped(cluster.scheduler_address, steps, chain) for _ in range(repeat)])
            shape = "chain" if chain else "independent"
            line = f"{shape:<12} {r / steps * 1000:>12.3f} {p / steps * 1000:>16.3f} {p / r:>6.2f}x"
            if chain:
                w = min([await raw_stepwise(client, steps) for _ in range(repeat)])
                line += f" {w / steps * 1000:>13.3f} {p / w:>6.2f}x"
            print(line)


if __name__ == "__main__":
    import sys

    # the scheduler runs in this process; releasing a 1,000-deep chain of raw futures recurses
    # through it deeper than Python's default limit
    sys.setrecursionlimit(20_000)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.repeat))

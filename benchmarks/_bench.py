"""Shared helpers of the benchmarks: graph shapes, pipeline building, timing, tables, JSON.

Not a benchmark itself. The scripts next to it import it (``python benchmarks/<script>.py`` puts
this folder on ``sys.path``).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

# -- step functions --------------------------------------------------------------------------


async def noop(**kw: Any) -> None:
    """An async no-op step; ``**kw`` receives the upstream outputs."""
    return None


def noop_sync(**kw: Any) -> None:
    """A sync no-op step; ``**kw`` receives the upstream outputs."""
    return None


# -- shapes ----------------------------------------------------------------------------------

LAYER_WIDTH = 100
FAN_IN = 3


class Shape:
    """A DAG as step names and, per step, the indices of its dependencies (all lower)."""

    def __init__(self, kind: str, names: list[str], deps: list[tuple[int, ...]]):
        self.kind = kind
        self.names = names
        self.deps = deps

    @property
    def steps(self) -> int:
        return len(self.names)

    @property
    def edges(self) -> int:
        return sum(len(d) for d in self.deps)

    def label(self) -> str:
        return f"{self.kind}-{self.steps}"


def chain(n: int) -> Shape:
    names = [f"s{i}" for i in range(n)]
    return Shape("chain", names, [()] + [(i - 1,) for i in range(1, n)])


def independent(n: int) -> Shape:
    return Shape("independent", [f"s{i}" for i in range(n)], [()] * n)


def layered(n: int, width: int = LAYER_WIDTH, fan_in: int = FAN_IN, seed: int = 42) -> Shape:
    """``n // width`` layers of ``width`` steps; each step after the first layer depends on
    ``fan_in`` distinct steps of the layer before (fixed seed, so every run has the same DAG)."""
    rng = random.Random(seed)
    layers = max(n // width, 1)
    names: list[str] = []
    deps: list[tuple[int, ...]] = []
    for layer in range(layers):
        for j in range(width):
            names.append(f"l{layer}_{j}")
            if layer == 0:
                deps.append(())
            else:
                base = (layer - 1) * width
                deps.append(tuple(sorted(base + k for k in rng.sample(range(width), fan_in))))
    return Shape("layered", names, deps)


SHAPES = {"chain": chain, "independent": independent, "layered": layered}


# -- building pipelines ----------------------------------------------------------------------


def build_pipeline(
    shape: Shape, fn: Callable[..., Any], *, name: str = "bench", max_concurrent: int | None = None
) -> Any:
    """A :class:`pipectl.Pipeline` of ``shape`` whose every step calls ``fn``."""
    from pipectl import Pipeline

    pipe = Pipeline(name, max_concurrent=max_concurrent)
    names = shape.names
    for name_, deps in zip(names, shape.deps):
        pipe.add_step(name_, fn, depends_on=[names[d] for d in deps])
    return pipe


def fresh_copy(pipe: Any) -> Any:
    """A new :class:`pipectl.Pipeline` with the same steps and nothing cached: its first run
    plans (validates, orders, binds) like the one run of a script does."""
    from pipectl import Pipeline

    new = Pipeline(pipe.name, max_concurrent=pipe.spec.max_concurrent)
    for step in pipe.spec.steps:
        new.add(step)
    return new


def builtins_only_pm() -> Any:
    """A plugin manager with the built-in plugins only (no entry points)."""
    from pipectl.plugins import get_plugin_manager

    return get_plugin_manager(autoload=False)


# -- timing ----------------------------------------------------------------------------------


class Variant:
    """A timed coroutine function, with an optional untimed ``setup`` whose result it gets."""

    def __init__(self, run: Callable[..., Awaitable[Any]], setup: Callable[[], Any] | None = None):
        self.run = run
        self.setup = setup

    async def once(self) -> float:
        arg = self.setup() if self.setup is not None else None
        gc.collect()
        t0 = time.perf_counter()
        if self.setup is not None:
            await self.run(arg)
        else:
            await self.run()
        elapsed = time.perf_counter() - t0
        del arg
        return elapsed


async def time_variants(variants: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Run every variant ``repeats`` times, interleaved (A B C A B C ...), in the running loop.

    A variant is a :class:`Variant` or a coroutine function. Interleaving keeps the comparison
    fair when the shared machine's speed drifts. A full collection runs before every timed call,
    outside the timing; the collector stays enabled during it, as a user has it (unless the
    script was given ``--gc-off``).
    """
    vs = {k: v if isinstance(v, Variant) else Variant(v) for k, v in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in vs}
    order = list(vs)
    for r in range(repeats):
        # rotate the order so no variant always runs first (or right after the slowest)
        for key in order[r % len(order) :] + order[: r % len(order)]:
            times[key].append(await vs[key].once())
    return times


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "best": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
        "n": len(samples),
    }


def per(value: float, count: int) -> float:
    """Seconds over ``count`` things, in microseconds."""
    return value / count * 1e6 if count else float("nan")


# -- output ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}" if abs(v) < 10_000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def source_state() -> dict[str, Any]:
    """Which pipectl was measured: its path, the git commit, whether the sources differ from
    it, and a hash of the sources (so figures can be tied to a tree that was not committed)."""
    import hashlib
    import subprocess
    from pathlib import Path

    import pipectl

    pkg = Path(pipectl.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        digest.update(str(f.relative_to(pkg)).encode())
        digest.update(f.read_bytes())
    state: dict[str, Any] = {"path": str(pkg), "sources_sha256": digest.hexdigest()[:12]}
    try:

        def git(*a: str) -> str:
            return subprocess.run(
                ["git", *a], cwd=pkg, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        state["commit"] = git("rev-parse", "--short", "HEAD")
        state["modified"] = [
            line[3:] for line in git("status", "--porcelain", "--", ".").splitlines()
        ]
    except Exception:  # noqa: BLE001 - not a git checkout: the hash still tells
        pass
    return state


def describe_source() -> str:
    s = source_state()
    dirty = f", {len(s['modified'])} files modified" if s.get("modified") else ""
    return f"pipectl at {s['path']} (commit {s.get('commit', '?')}{dirty}, sources {s['sources_sha256']})"


def environment() -> dict[str, Any]:
    import pipectl

    try:
        import structlog

        structlog_configured = structlog.is_configured()
    except ImportError:  # pragma: no cover
        structlog_configured = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pipectl": pipectl.__version__,
        "structlog_configured": structlog_configured,
        "gc_enabled": gc.isenabled(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv,
        "source": source_state(),
    }


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    payload = {"environment": environment(), **payload}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    print(f"\nwrote {path}")


def insert_rows(
    db: Any, runs: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]]
) -> None:
    """Insert run and step rows (dicts by column; missing columns NULL) straight into the
    SQLite tracker file ``db``, whose tables a real run created: many runs, quickly."""
    import sqlite3

    from pipectl.tracking import RUN_COLUMNS, STEP_COLUMNS

    with sqlite3.connect(db) as conn:
        for table, columns, rows in (
            ("pipeline_executions", RUN_COLUMNS, runs),
            ("step_executions", STEP_COLUMNS, steps),
        ):
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                f"({', '.join('?' * len(columns))})",
                [tuple(row.get(c) for c in columns) for row in rows],
            )
    conn.close()

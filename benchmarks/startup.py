"""What ``import pipectl`` and ``pipectl --help`` cost over a bare interpreter start.

Part 1 times whole processes from outside, in pairs (A B A B ...: the pairing keeps the
difference meaningful when the shared machine's speed drifts):

  ``python -c "import pipectl"``  against  ``python -c pass``
  ``pipectl --help``              against  ``python -c pass``
  ``pipectl plugins``             against  ``python -c pass``
  ``pipectl validate`` of a generated file of 1,000 steps (a chain of ``module:function``
  steps), against ``python -c pass``

and reports the median wall time of each and the difference of the medians (target: at most
150 ms over the bare start for the first three, under 0.5 s in all for the validation), plus the
median of the pairwise differences. The plugins measured are those installed beside the
interpreter: install every package under plugins/ (the README's test command does) to measure
start-up as a user with all of them has it; the first line lists them.

Part 2 runs ``python -X importtime`` on both and lists the modules that cost most (median over a
few runs), leaving out what a bare ``python -c pass`` imports too.

Run:  .venv/bin/python benchmarks/startup.py [--runs 20] [--json results.json]
The interpreter measured is the one running this script (use the project's virtualenv), and
the ``pipectl`` console script next to it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench as B

TARGET_MS = 150.0
VALIDATE_TARGET_MS = 500.0


def thousand_step_file(directory: Path, steps: int = 1000) -> Path:
    """A pipeline file of ``steps`` chained Python steps, and the module they call."""
    (directory / "bench_steps_1k.py").write_text("def step():\n    return 1\n")
    lines = ["name: bench_validate", "steps:"]
    for i in range(steps):
        lines.append(f"  - name: s{i}")
        lines.append("    run: bench_steps_1k:step")
        if i:
            lines.append(f"    depends_on: [s{i - 1}]")
    path = directory / "pipeline_1000.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return elapsed


def paired(a: list[str], b: list[str], runs: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        wall(a)
        wall(b)
    ta, tb = [], []
    for _ in range(runs):
        ta.append(wall(a))
        tb.append(wall(b))
    diffs = [x - y for x, y in zip(ta, tb)]
    return {
        "a": a, "b": b, "a_s": ta, "b_s": tb,
        "a_median_ms": statistics.median(ta) * 1e3, "b_median_ms": statistics.median(tb) * 1e3,
        "a_min_ms": min(ta) * 1e3, "b_min_ms": min(tb) * 1e3,
        "diff_of_medians_ms": (statistics.median(ta) - statistics.median(tb)) * 1e3,
        "median_of_diffs_ms": statistics.median(diffs) * 1e3,
    }


_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime(cmd: list[str], runs: int) -> dict[str, dict[str, float]]:
    """Median self and cumulative microseconds per module, and its nesting depth."""
    samples: dict[str, list[tuple[int, int, int]]] = {}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for _ in range(runs):
        proc = subprocess.run(cmd[:1] + ["-X", "importtime"] + cmd[1:], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env)
        for m in _LINE.finditer(proc.stderr):
            self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
            samples.setdefault(name, []).append((self_us, cum_us, (indent - 1) // 2))
    return {name: {"self_us": statistics.median(s[0] for s in v),
                   "cumulative_us": statistics.median(s[1] for s in v), "depth": v[0][2]}
            for name, v in samples.items()}


def top_modules(mods: dict[str, dict[str, float]], bare: set[str], n: int) -> list[list[Any]]:
    extra = {k: v for k, v in mods.items() if k not in bare}
    by_self = sorted(extra.items(), key=lambda kv: -kv[1]["self_us"])[:n]
    return [[name, v["self_us"] / 1e3, v["cumulative_us"] / 1e3, v["depth"]]
            for name, v in by_self]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="timed pairs per comparison")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--importtime-runs", type=int, default=5)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)

    py = sys.executable
    script = str(Path(py).with_name("pipectl"))
    bare = [py, "-c", "pass"]
    import tempfile
    from importlib.metadata import entry_points

    workdir = Path(tempfile.mkdtemp(prefix="pipectl-startup-"))
    big = thousand_step_file(workdir)
    commands = {
        "import pipectl": [py, "-c", "import pipectl"],
        "pipectl --help": [script, "--help"],
        "pipectl plugins": [script, "plugins"],
        "pipectl validate (1,000 steps)": [script, "validate", str(big)],
    }
    installed = sorted(f"{ep.name} ({ep.dist.name if ep.dist else '?'})"
                       for ep in entry_points(group="pipectl")
                       if not ep.value.startswith("pipectl."))
    print(B.describe_source())
    print(f"python {py}, {args.runs} pairs after {args.warmup} warm-up pairs")
    print(f"plugins installed beside it: {', '.join(installed) or 'none'}\n")
    results = {}
    rows = []
    for label, cmd in commands.items():
        r = paired(cmd, bare, args.runs, args.warmup)
        results[label] = r
        validate = label.startswith("pipectl validate")
        ok = (r["a_median_ms"] <= VALIDATE_TARGET_MS if validate
              else r["diff_of_medians_ms"] <= TARGET_MS)
        rows.append([label, r["a_median_ms"], r["b_median_ms"], r["diff_of_medians_ms"],
                     r["median_of_diffs_ms"], r["a_min_ms"] - r["b_min_ms"],
                     ("< 500 ms in all: " if validate else f"<= {TARGET_MS:g} ms over: ")
                     + ("yes" if ok else "NO")])
    print("== Wall time over a bare `python -c pass`, ms ==")
    print(B.table(["command", "median", "bare median", "diff of medians", "median of diffs",
                   "diff of mins", "target"], rows))

    bare_mods = set(importtime(bare, 1))
    imports = {
        "import pipectl": importtime(commands["import pipectl"], args.importtime_runs),
        # the console script is a Python file: run it under -X importtime
        "pipectl --help": importtime([py, script, "--help"], args.importtime_runs),
    }
    for label, mods in imports.items():
        extra = [v for k, v in mods.items() if k not in bare_mods]
        total = sum(v["self_us"] for v in extra) / 1e3
        print(f"\n== -X importtime: {label}: {len(extra)} modules beyond a bare start, "
              f"{total:.1f} ms self time in all; top {args.top} by self time ==")
        print(B.table(["module", "self ms", "cumulative ms", "depth"],
                      top_modules(mods, bare_mods, args.top)))
        shallow = sorted(((k, v) for k, v in mods.items()
                          if k not in bare_mods and v["depth"] <= 1),
                         key=lambda kv: -kv[1]["cumulative_us"])[:args.top]
        print("-- top-level imports (depth 0-1) by cumulative time --")
        print(B.table(["module", "cumulative ms", "depth"],
                      [[k, v["cumulative_us"] / 1e3, v["depth"]] for k, v in shallow]))
    B.write_json(args.json, {"benchmark": "startup", "target_ms": TARGET_MS, "wall": results,
                             "importtime": imports, "bare_modules": sorted(bare_mods)})


if __name__ == "__main__":
    main()

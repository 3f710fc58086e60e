"""What ``import pipectl`` and ``pipectl --help`` cost over a bare interpreter start.

Part 1 times whole processes from outside, in pairs (A B A B ...: the pairing keeps the
difference meaningful when the shared machine's speed drifts):

  ``python -c "import pipectl"``  against  ``python -c pass``
  ``pipectl --help``              against  ``python -c pass``
  ``pipectl plugins``             against  ``python -c pass``
  ``pipectl validate`` of a generated file of 1,000 steps (``module:function`` steps in a
  chain with fan-ins, ``inputs``, ``when`` and retries, and data steps with CSV, JSON Lines and
  SQLite components), against ``python -c pass``

and reports the median wall time of each and the difference of the medians against the
targets of issue 15 (``import pipectl`` at most 15 ms over the bare start, ``--help`` 80 ms,
``validate`` 150 ms; ``plugins`` 150 ms), plus the median of the pairwise differences. The
plugins measured are those installed beside the interpreter: install every package under
plugins/ (the README's test command does) to measure start-up as a user with all of them has
it; the first line lists them.

Part 2 runs ``python -X importtime`` on both and lists the modules that cost most (median over a
few runs), leaving out what a bare ``python -c pass`` imports too. ``-X importtime`` does not
see modules imported through ``importlib.import_module`` (the built-in plugins, the installed
plugins' modules, a lazy command): the modules ``--help`` loads are listed from
``sys.modules`` too.

Part 3 (when the ``importlib_metadata`` backport is installed) times pipectl's entry-point
discovery in a whole process through the standard library's ``importlib.metadata`` against the
backport, in pairs: the scan ``--help`` makes (``entry_points(group="pipectl")``) and the scan
with each plugin's distribution name and version (what ``--version`` and ``pipectl plugins``
read).

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

#: at most this many ms over a bare ``python -c pass`` (issue 15)
TARGETS_MS = {
    "import pipectl": 15.0,
    "pipectl --help": 80.0,
    "pipectl plugins": 150.0,
    "pipectl validate (1,000 steps)": 150.0,
}

#: pipectl's discovery (plugins.get_plugin_manager) with either library; {lib}: the module
DISCOVERY = {
    "scan": (
        "from {lib} import entry_points\n"
        'eps = sorted(entry_points(group="pipectl"), key=lambda e: e.name)\n'
        "dists = [ep.dist for ep in eps]\n"
    ),
    "scan + name, version": (
        "from {lib} import entry_points\n"
        'eps = sorted(entry_points(group="pipectl"), key=lambda e: e.name)\n'
        "meta = [ep.dist.metadata for ep in eps]\n"
        'names = [(m["Name"], m["Version"]) for m in meta]\n'
    ),
}


def thousand_step_file(directory: Path, steps: int = 1000) -> Path:
    """A pipeline file of ``steps`` steps as a real one is written: ``module:function`` steps
    in a chain with a fan-in every tenth step, some with ``inputs``, a ``when`` or retries, and
    one step in ten a data step (CSV into JSON Lines and an SQLite table, JSON Lines into
    CSV) with its paths from a param; and the module the steps call."""
    (directory / "bench_steps_1k.py").write_text("def step(x=None):\n    return 1\n")
    lines = [
        "name: bench_validate",
        "description: a 1,000-step file for the start-up benchmark",
        "params:",
        "  out: {type: path, default: out}",
        "  limit: {type: int, default: 10}",
        "  mode: {type: str, default: full}",
        "steps:",
    ]
    for i in range(steps):
        lines += [f"  - name: s{i}", f"    description: step number {i}"]
        deps = [f"s{i - 1}"] if i else []
        if i >= 10 and i % 10 == 0:
            deps += [f"s{i - j}" for j in (3, 5, 7)]  # fan-in
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        if i % 20 == 7:
            lines += [
                '    extract: {type: csv, path: "${params.out}/in_%d.csv"}' % i,
                "    load:",
                '      - {type: jsonl, path: "${params.out}/out_%d.jsonl"}' % i,
                '      - {type: sqlite, path: "${params.out}/db.sqlite", table: t%d, '
                "key: [id]}" % i,
            ]
        elif i % 20 == 13:
            lines += [
                '    extract: {type: jsonl, path: "${params.out}/out_%d.jsonl"}' % (i - 6),
                "    load:",
                '      - {type: csv, path: "${params.out}/c_%d.csv"}' % i,
            ]
        else:
            lines.append("    run: bench_steps_1k:step")
            if i % 5 == 0:
                lines.append("    inputs: {x: params.limit}")
        if i % 25 == 4:
            lines.append("    when: params.mode == 'full'")
        if i % 30 == 2:
            lines += ["    retries: 2", "    retry_delay: 1"]
    path = directory / "pipeline_1000.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    ratios = [x / y for x, y in zip(ta, tb)]
    return {
        "a": a,
        "b": b,
        "a_s": ta,
        "b_s": tb,
        "a_median_ms": statistics.median(ta) * 1e3,
        "b_median_ms": statistics.median(tb) * 1e3,
        "a_min_ms": min(ta) * 1e3,
        "b_min_ms": min(tb) * 1e3,
        "diff_of_medians_ms": (statistics.median(ta) - statistics.median(tb)) * 1e3,
        "median_of_diffs_ms": statistics.median(diffs) * 1e3,
        "median_ratio": statistics.median(ratios),
    }


_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime(cmd: list[str], runs: int) -> dict[str, dict[str, float]]:
    """Median self and cumulative microseconds per module, and its nesting depth."""
    samples: dict[str, list[tuple[int, int, int]]] = {}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for _ in range(runs):
        proc = subprocess.run(
            cmd[:1] + ["-X", "importtime"] + cmd[1:],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for m in _LINE.finditer(proc.stderr):
            self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
            samples.setdefault(name, []).append((self_us, cum_us, (indent - 1) // 2))
    return {
        name: {
            "self_us": statistics.median(s[0] for s in v),
            "cumulative_us": statistics.median(s[1] for s in v),
            "depth": v[0][2],
        }
        for name, v in samples.items()
    }


def loaded_by_help(py: str) -> list[str]:
    """The modules ``pipectl --help`` loads beyond a bare start, pipectl's and plugins' first
    (seen in ``sys.modules``, so those imported through ``importlib`` too)."""
    code = (
        "import sys\nbefore = set(sys.modules)\nfrom pipectl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(set(sys.modules) - before)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [py, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    names = proc.stderr.split()
    return sorted(names, key=lambda n: (not n.startswith("pipectl"), n))


def top_modules(mods: dict[str, dict[str, float]], bare: set[str], n: int) -> list[list[Any]]:
    extra = {k: v for k, v in mods.items() if k not in bare}
    by_self = sorted(extra.items(), key=lambda kv: -kv[1]["self_us"])[:n]
    return [[name, v["self_us"] / 1e3, v["cumulative_us"] / 1e3, v["depth"]] for name, v in by_self]


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
    installed = sorted(
        f"{ep.name} ({ep.dist.name if ep.dist else '?'})"
        for ep in entry_points(group="pipectl")
        if not ep.value.startswith("pipectl.")
    )
    print(B.describe_source())
    print(f"python {py}, {args.runs} pairs after {args.warmup} warm-up pairs")
    print(f"plugins installed beside it: {', '.join(installed) or 'none'}\n")
    results = {}
    rows = []
    for label, cmd in commands.items():
        r = paired(cmd, bare, args.runs, args.warmup)
        results[label] = r
        target = TARGETS_MS[label]
        ok = r["diff_of_medians_ms"] <= target
        rows.append(
            [
                label,
                r["a_median_ms"],
                r["b_median_ms"],
                r["diff_of_medians_ms"],
                r["median_of_diffs_ms"],
                r["a_min_ms"] - r["b_min_ms"],
                f"<= {target:g} ms over: " + ("yes" if ok else "NO"),
            ]
        )
    print("== Wall time over a bare `python -c pass`, ms ==")
    print(
        B.table(
            [
                "command",
                "median",
                "bare median",
                "diff of medians",
                "median of diffs",
                "diff of mins",
                "target",
            ],
            rows,
        )
    )

    bare_mods = set(importtime(bare, 1))
    imports = {
        "import pipectl": importtime(commands["import pipectl"], args.importtime_runs),
        # the console script is a Python file: run it under -X importtime
        "pipectl --help": importtime([py, script, "--help"], args.importtime_runs),
    }
    for label, mods in imports.items():
        extra = [v for k, v in mods.items() if k not in bare_mods]
        total = sum(v["self_us"] for v in extra) / 1e3
        print(
            f"\n== -X importtime: {label}: {len(extra)} modules beyond a bare start, "
            f"{total:.1f} ms self time in all; top {args.top} by self time =="
        )
        print(
            B.table(
                ["module", "self ms", "cumulative ms", "depth"],
                top_modules(mods, bare_mods, args.top),
            )
        )
        shallow = sorted(
            ((k, v) for k, v in mods.items() if k not in bare_mods and v["depth"] <= 1),
            key=lambda kv: -kv[1]["cumulative_us"],
        )[: args.top]
        print("-- top-level imports (depth 0-1) by cumulative time --")
        print(
            B.table(
                ["module", "cumulative ms", "depth"],
                [[k, v["cumulative_us"] / 1e3, v["depth"]] for k, v in shallow],
            )
        )
    loaded = loaded_by_help(py)
    print(
        f"\n-- pipectl --help loads {len(loaded)} modules beyond a bare start; pipectl's and "
        "the plugins': --"
    )
    print(" ".join(n for n in loaded if n.startswith("pipectl")))

    discovery: dict[str, Any] = {}
    try:
        import importlib_metadata  # noqa: F401
    except ImportError:
        print("\n(importlib_metadata, the backport, is not installed: no Part 3)")
    else:
        rows = []
        for label, code in DISCOVERY.items():
            std = [py, "-c", code.format(lib="importlib.metadata")]
            backport = [py, "-c", code.format(lib="importlib_metadata")]
            r = paired(backport, std, args.runs, args.warmup)
            s_bare = paired(std, bare, args.runs, args.warmup)
            discovery[label] = {"backport_vs_stdlib": r, "stdlib_vs_bare": s_bare}
            rows.append(
                [
                    label,
                    s_bare["diff_of_medians_ms"],
                    s_bare["diff_of_medians_ms"] + r["diff_of_medians_ms"],
                    r["median_ratio"],
                ]
            )
        print(
            "\n== Entry-point discovery in a whole process, ms over a bare start "
            "(backport: paired with the standard library) =="
        )
        print(
            B.table(
                [
                    "discovery",
                    "importlib.metadata",
                    "importlib_metadata",
                    "backport / stdlib (median of pairs)",
                ],
                rows,
            )
        )
    B.write_json(
        args.json,
        {
            "benchmark": "startup",
            "targets_ms": TARGETS_MS,
            "wall": results,
            "importtime": imports,
            "bare_modules": sorted(bare_mods),
            "loaded_by_help": loaded,
            "discovery": discovery,
        },
    )


if __name__ == "__main__":
    main()

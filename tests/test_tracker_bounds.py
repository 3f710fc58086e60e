"""What the tracker records is bounded in size, and in the work of making it, whatever a run's
params, outputs and errors are: a structure of shared references that expands to 10^12 items,
a 50 MB string, a list nested 100,000 deep, a cyclic dict, an object whose repr is 20 MB or
raises, an int of 84,510 digits. The run ends, every row is written, each field within its
documented size (pipectl.tracking: SUMMARY_CHARS, PARAMS_CHARS, TEXT_CHARS)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipectl import Pipeline
from pipectl.tracking import PARAMS_CHARS, SUMMARY_CHARS, TEXT_CHARS, SqliteTracker

HOSTILE = """
import json, sys, time
from pipectl import Pipeline


def laughs():
    a = [[]]
    for _ in range(40):
        a = [a, a]
    return a  # 2^40 leaves: json.dumps (or repr) of it does not end


def deep():
    a = []
    for _ in range(100_000):
        a = [a]
    return a


def cyclic():
    d = {"name": "loop"}
    d["self"] = d
    d["items"] = [d, [d]]
    return d


class HugeRepr:
    def __repr__(self):
        return "r" * 20_000_000


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def fail_with_a_huge_message():
    raise ValueError("e" * 10_000_000)


values = {"laughs": laughs(), "big": "x" * 50_000_000, "deep": deep(), "cyclic": cyclic(),
          "huge_repr": HugeRepr(), "bad_repr": BadRepr(), "big_int": 7 ** 100_000}
pipe = Pipeline("hostile")
for name, value in values.items():
    pipe.add_step(name, lambda value=value: value)  # each value an output too
pipe.add_step("everything", lambda **outputs: len(outputs), depends_on=list(values))
pipe.add_step("fails", fail_with_a_huge_message, depends_on=["everything"])
start = time.perf_counter()
run = pipe.run_sync(params={**values, "small": 7, "day": "2026-11-23"},
                    tracker=f"sqlite:///{sys.argv[1]}")
print(json.dumps({"seconds": time.perf_counter() - start, "run_id": run.run_id,
                  "status": run.status.value, "everything": run.steps["everything"].output}))
"""
NAMES = ["laughs", "big", "deep", "cyclic", "huge_repr", "bad_repr", "big_int"]


@pytest.mark.slow
def test_a_run_with_hostile_params_outputs_and_errors_ends_with_bounded_rows(tmp_path):
    """In a process of its own, killed if it hangs (a hang in C code, json's, cannot be
    interrupted from within)."""
    db = tmp_path / "runs.db"
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE, str(db)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(proc.stdout)
    print(f"whole run, tracked: {ran['seconds'] * 1000:.0f} ms")
    assert ran["seconds"] < 10  # only to catch a near-hang: the benchmark measures the cost
    assert ran["status"] == "failed" and ran["everything"] == len(NAMES)

    conn = sqlite3.connect(db)
    ((params, error, metadata),) = conn.execute(
        "SELECT parameters, error_message, metadata FROM pipeline_executions"
    ).fetchall()
    assert len(params) <= PARAMS_CHARS and len(error) <= SUMMARY_CHARS
    assert len(metadata) <= TEXT_CHARS + SUMMARY_CHARS
    steps = conn.execute(
        "SELECT step_id, input_data, output_data, error_message, traceback, "
        "metadata FROM step_executions"
    ).fetchall()
    assert sorted(s[0] for s in steps) == sorted([*NAMES, "everything", "fails"])
    for step, inputs, output, message, trace, meta in steps:
        assert len(inputs or "") <= SUMMARY_CHARS and len(output or "") <= SUMMARY_CHARS, step
        assert len(message or "") <= TEXT_CHARS and len(trace or "") <= TEXT_CHARS, step
        assert len(meta) <= TEXT_CHARS + SUMMARY_CHARS, step

    record = SqliteTracker(f"sqlite:///{db}").get_run(ran["run_id"])
    recorded = record["params"]
    assert recorded["small"] == 7 and recorded["day"] == "2026-11-23"  # as they were
    assert recorded["big"]["truncated"] is True and recorded["big"]["length"] == 50_000_000
    assert recorded["big"]["preview"].startswith("xxxx")
    for name in ("laughs", "deep", "cyclic", "huge_repr", "big_int"):
        assert recorded[name]["truncated"] is True, name
    assert recorded["bad_repr"] == "<BadRepr: repr failed: RuntimeError>"
    summaries = {s["step_id"]: s for s in record["steps"]}
    assert summaries["big"]["output_summary"]["length"] == 50_000_000
    assert summaries["laughs"]["output_summary"]["truncated"] is True
    assert summaries["cyclic"]["output_summary"]["self"]["truncated"] is True
    assert "<cycle>" in summaries["cyclic"]["output_summary"]["self"]["preview"]
    assert set(summaries["everything"]["input_summary"]) == set(NAMES)
    failed = summaries["fails"]
    assert failed["error_message"].startswith("ValueError: eeee")
    assert "chars cut" in failed["error_message"] and "chars cut" in failed["traceback"]
    assert "fail_with_a_huge_message" in failed["traceback"]


def fail_with_a_long_message() -> None:
    raise ValueError("e" * 100_000)


@pytest.mark.slow
def test_many_and_long_errors_of_a_run_are_recorded_bounded(plugin_manager, tmp_path):
    pipe = Pipeline("errors", plugin_manager=plugin_manager)
    for i in range(300):
        pipe.add_step(f"s{i}", fail_with_a_long_message)
    run = pipe.run_sync(tracker=f"sqlite:///{tmp_path / 'runs.db'}", fail_fast=False)
    assert run.status.value == "failed" and len(run.errors) == 300

    record = SqliteTracker(f"sqlite:///{tmp_path / 'runs.db'}").get_run(run.run_id)
    assert len(record["error"]) <= SUMMARY_CHARS
    errors = record["errors"]
    assert sum(map(len, errors)) <= TEXT_CHARS + 100 and errors[-1].endswith("more")
    assert all(e.startswith("step 's") for e in errors[:-1])


@pytest.mark.slow
def test_a_param_too_big_to_record_is_not_taken_by_a_resume(tmp_path):
    """The record holds a cut summary of it, not its value: a resume says so and takes the
    param from the file again (or from -p), never the summary."""
    (tmp_path / "big_steps.py").write_text(
        textwrap.dedent("""
        from pathlib import Path

        def use(params):
            if not Path("fixed").exists():
                raise RuntimeError("not yet")
            return len(params["text"])
    """)
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: big
        params:
          text: {type: str, default: short}
          day: {type: str, default: monday}
        steps:
          - {name: use, run: "big_steps:use"}
    """)
    )
    env = {**os.environ, "PIPECTL_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipectl.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = cli(
        "run", "pipeline.yaml", "-p", f"text={'x' * 100_000}", "-p", "day=friday", "--no-progress"
    )
    assert first.returncode == 1, first.stderr
    recorded = json.loads(cli("runs", "show", "latest", "--json").stdout)["params"]
    assert recorded["day"] == "friday" and recorded["text"]["truncated"] is True
    (tmp_path / "fixed").write_text("")

    again = cli("run", "pipeline.yaml", "--resume", "latest", "--no-progress")

    assert again.returncode == 0, again.stderr
    assert "param(s) 'text'" in again.stderr and "give them again with -p" in again.stderr
    record = json.loads(cli("runs", "show", "latest", "--json").stdout)
    assert record["params"] == {"text": "short", "day": "friday"}
    assert record["steps"][0]["output_summary"] == len("short")

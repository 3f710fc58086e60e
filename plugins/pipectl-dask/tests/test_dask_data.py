"""Data steps, worker resources, plugins missing on the workers, resume and rollback: the dask
executor on real clusters of worker processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from pipectl import Pipeline, hookimpl  # noqa: E402
from pipectl.data import DataStepResult  # noqa: E402

from pipectl_dask.executor import (  # noqa: E402
    PluginMissingOnWorkers,
    ResourcesUnavailable,
)

# the step functions and transforms below travel to the workers by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


def on(cluster, **extra):
    return {
        "executor": "dask",
        "executor_options": {"scheduler": cluster.scheduler_address, "announce": False, **extra},
    }


def write_csv(path: Path, rows: int, start: int = 0) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "value"])
        for i in range(start, start + rows):
            writer.writerow([i, i * 10])
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- several data steps, each whole on one worker, at the same time -----------------------------


def meet_the_other_step(batch, ctx):
    """A transform that waits (once per step) until the other data step is streaming too:
    with one thread per worker, that can only happen on two workers at once."""
    marks = Path(ctx.params["marks"])
    (marks / ctx.step).touch()
    deadline = time.monotonic() + 20
    while len(list(marks.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"{ctx.step}: the other data step never ran at the same time")
        time.sleep(0.01)
    return [{**r, "pid": os.getpid()} for r in batch]


def test_data_steps_run_whole_on_workers_several_at_once(pm, cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    pipe = Pipeline("two_loads", plugin_manager=pm)
    pipe.params["marks"] = str(marks)
    for name in ("left", "right"):
        source = write_csv(tmp_path / f"{name}.csv", 5_000)
        pipe.data_step(
            name,
            extractor={"type": "csv", "path": str(source)},
            transforms=[{"function": meet_the_other_step, "per": "batch"}],
            outputs=[{"type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}],
        )
    run = pipe.run_sync(**on(cluster))
    assert run.status.value == "success", run.errors
    pids = {}
    for name in ("left", "right"):
        result = run.steps[name].output
        assert isinstance(result, DataStepResult)  # the report came back to the driver
        assert [o.written for o in result.outputs.values()] == [5_000]
        rows = read_jsonl(tmp_path / f"{name}.jsonl")
        # each record once, in order
        assert [r["id"] for r in rows] == [str(i) for i in range(5_000)]
        pids[name] = {r["pid"] for r in rows}
        assert len(pids[name]) == 1  # the whole stream on one worker
    assert pids["left"] != pids["right"]  # two workers, at the same time
    assert os.getpid() not in pids["left"] | pids["right"]


class CreateTheDirectoryOnRetry:
    """A listener (in the driver) that turns the file standing where the failing output's
    directory should be into that directory, once the step has failed a first time."""

    def __init__(self, directory: Path):
        self.directory = directory

    @hookimpl
    def pipectl_step_retry(self, run, step, attempt, error, delay):
        self.directory.unlink()
        self.directory.mkdir()


def test_a_retried_data_step_skips_the_output_its_failed_attempt_committed(
    pm, register_plugin, cluster, tmp_path
):
    """Attempt 1 commits the SQLite output and fails on the JSONL one (its directory is
    a file); attempt 2, on a worker, knows from the run state what committed and writes only
    the JSONL output: every record exactly once in each."""
    source = write_csv(tmp_path / "in.csv", 2_000)
    later = tmp_path / "later"
    later.write_text("a file where the output's directory should be", encoding="utf-8")
    register_plugin(CreateTheDirectoryOnRetry(later), name="mkdir-on-retry")
    pipe = Pipeline("retry_load", plugin_manager=pm)
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(source)},
        outputs=[
            {"type": "sqlite", "path": str(tmp_path / "db.sqlite"), "table": "t"},
            {"type": "jsonl", "path": str(later / "out.jsonl")},
        ],
        retries=1,
        retry_delay=0.01,
    )
    run = pipe.run_sync(**on(cluster))
    assert run.status.value == "success", run.errors
    assert run.steps["load"].attempts == 2
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite") as con:
        ids = [r[0] for r in con.execute("SELECT id FROM t ORDER BY rowid")]
    # committed once, by attempt 1 only
    assert [str(i) for i in ids] == [str(i) for i in range(2_000)]
    assert [r["id"] for r in read_jsonl(later / "out.jsonl")] == [str(i) for i in range(2_000)]
    report = run.steps["load"].output
    statuses = {name: out.status for name, out in report.outputs.items()}
    assert sorted(statuses.values()) == ["committed", "skipped"], statuses


# -- plugins missing on the workers ------------------------------------------------------------


class DriverOnlyExtractor:
    """A plugin registered in this process only: the workers have never heard of it."""

    @hookimpl
    def pipectl_register_extractors(self, register):
        register("driver_only", lambda **options: iter([[{"a": 1}]]))


def test_a_component_whose_plugin_the_workers_lack_is_a_clear_error(
    pm, register_plugin, cluster, tmp_path
):
    register_plugin(DriverOnlyExtractor(), name="driver-only")
    pipe = Pipeline("lacking", plugin_manager=pm)
    pipe.data_step(
        "load",
        extractor={"type": "driver_only"},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
    )
    run = pipe.run_sync(**on(cluster))
    result = run.steps["load"]
    assert run.status.value == "failed" and result.attempts == 1
    assert isinstance(result.exception, PluginMissingOnWorkers)
    assert "step 'load' uses the extractor 'driver_only' of plugin 'driver-only'" in result.error
    assert "installed here but not on dask worker tcp://127.0.0.1:" in result.error
    assert "on every worker" in result.error
    assert not (tmp_path / "out.jsonl").exists()


PLUGIN = """
from pipectl import hookimpl


def shout(params):
    return params["word"].upper()


def make_shout(step):
    return shout


@hookimpl
def pipectl_register_step_types(register):
    register("shout", make_shout)
"""


def test_a_plugin_distribution_installed_in_the_driver_only_is_named(cluster, tmp_path):
    """A real distribution (dist-info, entry point) on the driver's path only: the step type
    it registers cannot be unpickled on the workers, and the run says which distribution
    to install there."""
    site = tmp_path / "site"
    (site / "pipectl_shout").mkdir(parents=True)
    (site / "pipectl_shout" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "pipectl_shout-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pipectl-shout\nVersion: 0.3.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[pipectl]\nshout = pipectl_shout\n", encoding="utf-8")
    (info / "top_level.txt").write_text("pipectl_shout\n", encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        name: loud
        params:
          word: {type: str, default: hello}
        steps:
          - name: say
            type: shout
    """),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPECTL_DASK_")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipectl.cli",
            "run",
            "pipeline.yaml",
            "--no-progress",
            "--tracker",
            "none",
            "--dask-scheduler",
            cluster.scheduler_address,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "step 'say'" in out and "pipectl-shout==0.3.0" in out, out
    assert (
        "install the same on the scheduler and every worker" in out
        or "install pipectl-shout==0.3.0 on the scheduler and every worker" in out
    ), out
    assert "Traceback" not in proc.stderr
    local = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipectl.cli",
            "run",
            "pipeline.yaml",
            "--no-progress",
            "--tracker",
            "none",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert local.returncode == 0, local.stdout + local.stderr  # the plugin itself works


# -- worker resources ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_cluster():
    """Two worker processes, one of which offers a GPU (and 4 GB of declared memory)."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {
        "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1, "memory": 4e9}}},
        "cpu": {"cls": Nanny, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        yield cluster


def where_am_i():
    from distributed import get_worker

    return get_worker().name


def test_resources_send_steps_to_the_workers_that_have_them(pm, gpu_cluster, tmp_path):
    pipe = Pipeline("gpu", plugin_manager=pm)
    for i in range(4):
        pipe.add_step(f"train{i}", where_am_i, resources={"GPU": 1})
    pipe.add_step("big", where_am_i, resources={"memory": "2GB"})
    run = pipe.run_sync(**on(gpu_cluster))
    assert run.status.value == "success", run.errors
    assert {run.steps[f"train{i}"].output for i in range(4)} == {"gpu"}
    assert run.steps["big"].output == "gpu"
    # the same from a pipeline file
    (tmp_path / "steps.py").write_text("", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(f"""\
        name: gpu_file
        steps:
          - name: train
            run: {__name__}:where_am_i
            resources: {{GPU: 1, memory: 1GiB}}
    """),
        encoding="utf-8",
    )
    from_file = Pipeline.from_yaml(tmp_path / "p.yaml", plugin_manager=pm)
    assert from_file.steps["train"].resources == {"GPU": 1, "memory": 2**30}
    run = from_file.run_sync(**on(gpu_cluster))
    assert run.status.value == "success", run.errors
    assert run.steps["train"].output == "gpu"


def test_resources_no_worker_has_fail_the_step_with_what_the_cluster_offers(pm, gpu_cluster):
    pipe = Pipeline("greedy", plugin_manager=pm)
    pipe.add_step("train", where_am_i, resources={"GPU": 2})
    started = time.monotonic()
    run = pipe.run_sync(**on(gpu_cluster))
    assert time.monotonic() - started < 30  # an error, not a task waiting forever
    result = run.steps["train"]
    assert result.status.value == "failed"
    assert isinstance(result.exception, ResourcesUnavailable)
    assert "step 'train' asks for resources GPU=2, which no worker" in result.error
    assert "GPU=1, memory=4e+09" in result.error


# -- resume and rollback -------------------------------------------------------------------------


def numbers():
    return list(range(10))


def fails_once(numbers, params):
    flag = Path(params["flag"])
    if not flag.exists():
        flag.touch()
        raise RuntimeError("the first run fails here")
    return sum(numbers)


def test_resume_on_dask_runs_only_what_the_failed_run_did_not_finish(pm, cluster, tmp_path):
    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    source = write_csv(tmp_path / "in.csv", 500)

    def build():
        pipe = Pipeline("resumable", plugin_manager=pm)
        pipe.params["flag"] = str(tmp_path / "flag")
        pipe.data_step(
            "load",
            extractor={"type": "csv", "path": str(source)},
            outputs=[{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}],
        )
        pipe.add_step("numbers", numbers)
        pipe.add_step("total", fails_once, depends_on=["numbers", "load"])
        return pipe

    first = build().run_sync(tracker=tracker, **on(cluster))
    assert first.status.value == "failed"
    second = build().run_sync(tracker=tracker, resume="latest", **on(cluster))
    assert second.status.value == "success", second.errors
    assert second.steps["total"].output == 45 and second.steps["total"].attempts == 1
    # "numbers" fed "total" on the cluster: its worker wrote it to the tracker's result store,
    # so the resume takes it from there instead of running it again
    assert second.steps["numbers"].resumed_from == first.run_id
    assert second.steps["numbers"].attempts == 0
    # the data step's report came back to the driver and was stored: not run again, so every
    # record is in the output once
    assert second.steps["load"].resumed_from == first.run_id
    assert second.steps["load"].attempts == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [str(i) for i in range(500)]


def undo(output, params):
    with open(params["log"], "a", encoding="utf-8") as f:
        f.write(f"undo {output}\n")


def made(params):
    return "made"


def also_made(made):
    return "also " + made


def breaks(also_made):
    raise RuntimeError("broken")


def test_rollback_on_dask_undoes_in_reverse_order(pm, cluster, tmp_path):
    log = tmp_path / "undo.log"
    pipe = Pipeline("undoable", plugin_manager=pm)
    pipe.params["log"] = str(log)
    pipe.add_step("made", made, rollback=undo)
    pipe.add_step("also_made", also_made, depends_on=["made"], rollback=undo)
    pipe.add_step("breaks", breaks, depends_on=["also_made"])
    run = pipe.run_sync(rollback=True, **on(cluster))
    assert run.status.value == "rolled_back", run.errors
    assert log.read_text(encoding="utf-8").splitlines() == ["undo also made", "undo made"]
    assert run.steps["made"].status.value == "rolled_back"
    assert run.steps["also_made"].status.value == "rolled_back"


# -- a step that cannot travel ------------------------------------------------------------------


def test_a_step_holding_something_unpicklable_says_what_and_where(pm, cluster):
    import threading

    lock = threading.Lock()
    pipe = Pipeline("locked", plugin_manager=pm)

    @pipe.step
    def guarded():
        with lock:
            return 1

    run = pipe.run_sync(**on(cluster))
    result = run.steps["guarded"]
    assert result.status.value == "failed"
    assert result.error.startswith("UnpicklableTask: step 'guarded' cannot go to a dask worker")
    assert "cannot pickle '_thread.lock' object" in result.error
    assert "create such objects inside the step" in result.error

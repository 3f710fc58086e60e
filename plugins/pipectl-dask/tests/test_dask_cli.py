"""``pipectl run --dask-scheduler`` / ``--dask-local``: real subprocesses, a real cluster.

The pipeline's own ``steps.py`` lies next to the file and is not installed: the executor sends
its code to the workers by value, so the cluster started by this test (whose workers never had
the file's directory on their path) runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pipectl.tracking import ResultStore

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

STEPS = """
import os


def numbers(params):
    return list(range(params["n"]))


def squares(numbers):
    return {"sum": sum(x * x for x in numbers), "pid": os.getpid()}
"""

PIPELINE = """
name: squares
params:
  n: {type: int, default: 10}
steps:
  - name: numbers
    run: steps:numbers
  - name: squares
    run: steps:squares
    depends_on: [numbers]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text(STEPS, encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    return tmp_path


def pipectl(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPECTL_DASK_")}
    return subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_run(cwd: Path) -> dict:
    proc = pipectl("runs", "show", "latest", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_run_on_a_scheduler_by_address(project, cluster):
    proc = pipectl(
        "run",
        "pipeline.yaml",
        "--executor",
        "dask",
        "--dask-scheduler",
        cluster.scheduler_address,
        "-p",
        "n=100",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"dask: scheduler {cluster.scheduler_address}, dashboard: http" in proc.stderr
    run = last_run(project)
    assert run["status"] == "success"
    assert {s["step_name"]: s["status"] for s in run["steps"]} == {
        "numbers": "success",
        "squares": "success",
    }
    numbers = next(s for s in run["steps"] if s["step_name"] == "numbers")
    assert "type=list on the cluster" in numbers["output_summary"]  # consumed on the cluster
    # it stayed on the cluster; its worker wrote it to the tracker's result store (for resume)
    assert numbers["metadata"].get("output_stored")
    home = Path(os.environ["PIPECTL_HOME"])  # each test's own (the repository's conftest.py)
    stored = list((home / "results" / run["run_id"]).glob("numbers-*.pickle"))
    assert len(stored) == 1  # and authenticated with the key of the home, which it travelled with
    assert ResultStore(home / "results").get(run["run_id"], "numbers") == (True, list(range(100)))
    squares = next(s for s in run["steps"] if s["step_name"] == "squares")
    assert squares["metadata"].get("output_stored")  # the run's result: a value, stored


def test_dask_local_starts_its_own_cluster_and_implies_the_executor(project):
    proc = pipectl("run", "pipeline.yaml", "--dask-local", "2", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dask: local cluster tcp://127.0.0.1:" in proc.stderr
    assert "dashboard: http" in proc.stderr
    assert last_run(project)["executor"] == "dask"


def test_run_help_lists_the_plugin_options(project):
    proc = pipectl("run", "--help", cwd=project)
    assert proc.returncode == 0
    assert "--dask-scheduler ADDRESS" in proc.stdout and "--dask-local N" in proc.stdout
    assert "--executor-option KEY=VALUE" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--dask-scheduler", "tcp://127.0.0.1:9", "--executor-option", "timeout=1"],
            "executor 'dask': cannot start: cannot reach the dask scheduler at tcp://127.0.0.1:9 "
            "within 1 s",
        ),
        (
            ["--executor", "local", "--dask-local", "2"],
            "--dask-local is an option of executor 'dask', not of --executor local",
        ),
        (["--dask-local", "two"], "'two' is not a valid integer"),
        (
            ["--executor", "dask", "--executor-option", "fetch=some"],
            "executor 'dask': bad options {'fetch': 'some'}: fetch='some': expected one of leaves",
        ),
        (
            ["--executor", "local", "--executor-option", "gpus=2"],
            "executor 'local': bad options {'gpus': 2}",
        ),
        (
            ["--executor", "dask", "--executor-option", "timeout"],
            "--executor-option 'timeout': expected KEY=VALUE",
        ),
    ],
)
def test_bad_executor_options_exit_2_without_a_traceback(project, args, message):
    proc = pipectl("run", "pipeline.yaml", *args, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    runs = pipectl("runs", "list", "--json", cwd=project)
    assert json.loads(runs.stdout or "[]") == [], "a run that never started was recorded"


def test_the_executor_option_of_the_file_executor(project, cluster):
    text = PIPELINE.replace("name: squares\n", "name: squares\nexecutor: dask\n", 1)
    (project / "pipeline.yaml").write_text(text, encoding="utf-8")
    proc = pipectl(
        "run",
        "pipeline.yaml",
        "--executor-option",
        f"scheduler={cluster.scheduler_address}",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"dask: scheduler {cluster.scheduler_address}" in proc.stderr


def test_step_code_travels_to_workers_that_never_saw_it(project, cluster):
    """The cluster's workers were started before the project existed: steps.py cannot be on
    their path; it runs there all the same, in another process."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from pipectl import Pipeline
        pipe = Pipeline.from_yaml({str(project / "pipeline.yaml")!r})
        run = pipe.run_sync(executor="dask",
                            executor_options={{"scheduler": {cluster.scheduler_address!r},
                                               "announce": False}})
        out = run.steps["squares"].output  # a final step: its value, fetched at the end
        import os
        print(run.status.value, out["sum"], out["pid"] != os.getpid())
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["success", "285", "True"]


REPO_ROOT = Path(__file__).resolve().parents[3]


def test_the_quick_start_pipeline_file_on_a_dask_cluster(tmp_path):
    """The README's YAML quick start (a data step with transforms from the example's own
    module, SQLite and JSON Lines outputs, dead letters; then a Python step) run with
    ``pipectl run ... --dask-local 2``: the same records as on ``local``. (Its paths are
    relative: workers read them from their own working directory, which a local cluster's
    workers share with the driver.)"""
    import shutil
    import sqlite3

    example = tmp_path / "examples" / "quickstart"
    shutil.copytree(
        REPO_ROOT / "examples" / "quickstart",
        example,
        ignore=shutil.ignore_patterns("output", "__pycache__"),
    )
    proc = pipectl(
        "run",
        "examples/quickstart/pipeline.yaml",
        "--no-progress",
        "--dask-local",
        "2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = example / "output"
    assert (
        "load_orders -> sqlite examples/quickstart/output/orders.sqlite table orders: "
        "114 records" in proc.stdout
    ), proc.stdout
    assert "6 bad records set aside" in proc.stdout
    with sqlite3.connect(out / "orders.sqlite") as db:
        ids = sorted(r[0] for r in db.execute("SELECT order_id FROM orders"))
    lines = [json.loads(line) for line in (out / "orders.jsonl").read_text().splitlines()]
    assert len(ids) == len(lines) == 114 and ids == sorted(o["order_id"] for o in lines)
    assert len((out / "rejected_orders.jsonl").read_text().splitlines()) == 6
    run = last_run(tmp_path)
    assert run["status"] == "success" and run["executor"] == "dask"


def test_sub_pipelines_use_the_parents_local_cluster(tmp_path):
    """A sub-pipeline step runs in the driver; its child run's steps go to the cluster the
    parent started with --dask-local, not to a second one."""
    (tmp_path / "steps.py").write_text(
        textwrap.dedent("""
        import os


        def total(params):
            from distributed import get_worker

            with open("schedulers.txt", "a", encoding="utf-8") as f:  # the run's directory
                f.write(get_worker().scheduler.address + "\\n")
            return {"total": sum(params["numbers"]), "pid": os.getpid()}
    """),
        encoding="utf-8",
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        params:
          numbers: {type: list, default: [1, 2]}
        pipelines:
          - name: sum
            steps:
              - name: total
                run: steps:total
          - name: main
            steps:
              - name: small
                pipeline: sum
              - name: big
                pipeline: sum
                params: {numbers: [10, 20, 30]}
    """),
        encoding="utf-8",
    )
    proc = pipectl(
        "run", "pipeline.yaml", "main", "--no-progress", "--dask-local", "2", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("dask: local cluster tcp://") == 1, proc.stderr
    address = proc.stderr.split("dask: local cluster ", 1)[1].split(",", 1)[0]
    # both children's steps ran on workers of that one cluster
    schedulers = (tmp_path / "schedulers.txt").read_text(encoding="utf-8").splitlines()
    assert schedulers == [address, address]
    runs = json.loads(pipectl("runs", "list", "--json", cwd=tmp_path).stdout)
    assert sorted(r["pipeline_name"] for r in runs) == ["main", "sum", "sum"], runs
    assert all(r["status"] == "success" for r in runs)
    assert last_run(tmp_path)["executor"] == "dask"


def test_a_step_with_store_output_false_is_not_stored_by_its_worker(project, cluster):
    text = (project / "pipeline.yaml").read_text(encoding="utf-8")
    (project / "pipeline.yaml").write_text(
        text.replace(
            "    run: steps:numbers\n", "    run: steps:numbers\n    store_output: false\n"
        ),
        encoding="utf-8",
    )
    proc = pipectl(
        "run",
        "pipeline.yaml",
        "--executor",
        "dask",
        "--dask-scheduler",
        cluster.scheduler_address,
        "--no-progress",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = last_run(project)
    steps = {s["step_name"]: s for s in run["steps"]}
    assert not steps["numbers"]["metadata"].get("output_stored")
    assert steps["squares"]["metadata"].get("output_stored")
    home = Path(os.environ["PIPECTL_HOME"])
    folder = home / "results" / run["run_id"]
    stored = sorted(p.name.rsplit("-", 1)[0] for p in folder.iterdir())
    assert stored == ["squares"]  # numbers stayed on the cluster, written nowhere

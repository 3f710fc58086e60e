"""pipectl.compat.odibi: the seed design "Odibi" runs its own code and YAML on pipectl.

The document's two code blocks are copied below as they are written there; they have no import
lines, so the only change is the import added before them. They run on a real project
(tests/odibi/config.yaml, its transforms, bronze CSV files) copied into a temporary working
folder. The tests after them check what the document says: layers, cycle detection, error
propagation (its four points), results, stories, and the clear errors of a bad config.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from pipectl.compat.odibi import (  # noqa: E402
    ConfigError,
    DependencyError,
    NodeResult,
    Pipeline,
    PipelineManager,
    PipelineResults,
    load_config_from_file,
    transform,
)

PROJECT = Path(__file__).parent / "odibi"
IMPORTS = "from pipectl.compat.odibi import Pipeline, PipelineManager\n"

# -- the document's blocks, as written ----------------------------------------------------------

PIPELINE_BLOCK = """
pipeline = Pipeline(pipeline_config, engine="pandas")
results = pipeline.run()
"""

MANAGER_BLOCK = """
manager = PipelineManager.from_yaml("config.yaml")
results = manager.run(['bronze_to_silver', 'silver_to_gold'])
"""

CUSTOMERS = "customer_id,name\n1, ada lovelace \n2,grace hopper\n2,grace hopper\n3,alan turing\n"
ORDERS = "order_id,customer_id,amount\n10,1,12.5\n11,1,7.5\n12,2,-3.0\n13,2,20.0\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The project in a temporary working folder, with its bronze CSV files."""
    for name in ("config.yaml", "transforms.py", "transforms_odibi.py"):
        shutil.copy(PROJECT / name, tmp_path / name)
    (tmp_path / "data" / "bronze").mkdir(parents=True)
    (tmp_path / "data" / "bronze" / "customers.csv").write_text(CUSTOMERS)
    (tmp_path / "data" / "bronze" / "orders.csv").write_text(ORDERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run_block(block, **namespace):
    exec(compile(IMPORTS + block, "<seed 002>", "exec"), namespace)
    return namespace


def check_silver(root):
    customers = pd.read_csv(root / "data" / "silver" / "customers.csv")
    assert customers.to_dict("records") == [
        {"customer_id": 1, "name": "Ada Lovelace"},
        {"customer_id": 2, "name": "Grace Hopper"},
        {"customer_id": 3, "name": "Alan Turing"},
    ]
    orders = pd.read_csv(root / "data" / "silver" / "orders.csv")
    assert orders["order_id"].tolist() == [10, 11, 13]  # the negative amount filtered out


@pytest.mark.slow
def test_the_manager_block_runs_bronze_to_silver_to_gold(project):
    ns = run_block(MANAGER_BLOCK)
    results = ns["results"]
    assert list(results) == ["bronze_to_silver", "silver_to_gold"]
    assert all(isinstance(r, PipelineResults) for r in results.values())
    silver = results["bronze_to_silver"]
    assert silver.completed == ["raw_customers", "raw_orders", "clean_customers", "clean_orders"]
    assert silver.failed == [] and silver.skipped == []
    check_silver(project)
    gold = json.loads((project / "data" / "gold" / "customer_revenue.json").read_text())
    assert gold == [
        {"customer_id": 1, "name": "Ada Lovelace", "revenue": 20.0},
        {"customer_id": 2, "name": "Grace Hopper", "revenue": 20.0},
        {"customer_id": 3, "name": "Alan Turing", "revenue": 0.0},
    ]
    assert results["silver_to_gold"].completed == ["customers", "customer_orders"]
    # the story of each run, where story: says (the connection's base_path / path)
    for name, result in results.items():
        story = Path(result.story_path)
        assert story.is_file() and story.suffix == ".html"
        assert story.is_relative_to(Path("data/stories") / name)
        assert name in story.read_text()


@pytest.mark.slow
def test_the_pipeline_block_runs_one_pipeline_of_the_project(project):
    pipeline_config = load_config_from_file("config.yaml").pipelines[0]
    ns = run_block(PIPELINE_BLOCK, pipeline_config=pipeline_config)
    results = ns["results"]
    assert results.pipeline_name == "bronze_to_silver"
    assert results.completed == ["raw_customers", "raw_orders", "clean_customers", "clean_orders"]
    check_silver(project)
    node = results.get_node_result("clean_customers")
    assert isinstance(node, NodeResult)
    assert node.success and node.error is None and node.duration >= 0
    assert (node.rows_processed, node.rows_written) == (3, 3)
    assert results.get_node_result("raw_orders").rows_read == 4
    assert results.duration > 0 and results.start_time < results.end_time
    assert results.to_dict()["node_count"] == 4
    assert results.debug_summary() == ""
    assert Path(results.story_path).is_file()
    # the DataFrames of the run, registered by node name (Odibi's Context)
    pipeline = ns["pipeline"]
    assert set(pipeline.context.list_names()) == set(results.completed)
    assert len(pipeline.context.get("clean_orders")) == 3


@pytest.mark.slow
def test_run_one_name_returns_its_results_and_no_name_runs_all(project):
    manager = PipelineManager.from_yaml("config.yaml")
    assert manager.list_pipelines() == ["bronze_to_silver", "silver_to_gold"]
    one = manager.run("bronze_to_silver")
    assert isinstance(one, PipelineResults) and one.pipeline_name == "bronze_to_silver"
    every = manager.run()
    assert list(every) == ["bronze_to_silver", "silver_to_gold"]
    with pytest.raises(ValueError, match="'gold' not found. Available: bronze_to_silver"):
        manager.run(["gold"])


# -- layers, failures, cycles ---------------------------------------------------------------------


def frame(name):
    return pd.DataFrame({"source": [name]})


@transform("odibi_test_make")
def make(context, current, label):
    return frame(label)


@transform("odibi_test_join")
def join(context, current, other):
    return pd.concat([current, context.get(other)], ignore_index=True)


def fail(context, current):
    raise ValueError("bad orders")


STEPS = {"steps": [{"operation": "drop_duplicates"}]}
LAYERED = {
    "pipeline": "customer_orders",
    "nodes": [
        {
            "name": "raw_customers",
            "transformer": "odibi_test_make",
            "params": {"label": "customers"},
        },
        {"name": "raw_orders", "transformer": "odibi_test_make", "params": {"label": "orders"}},
        {"name": "clean_customers", "depends_on": ["raw_customers"], "transform": STEPS},
        {"name": "clean_orders", "depends_on": ["raw_orders"], "transform": STEPS},
        {
            "name": "customer_orders",
            "depends_on": ["clean_customers", "clean_orders"],
            "transformer": "odibi_test_join",
            "params": {"other": "clean_orders"},
        },
    ],
}


def layered(**changes):
    nodes = [dict(n) for n in LAYERED["nodes"]]
    for node in nodes:
        node.update(changes.get(node["name"], {}))
    return {"pipeline": LAYERED["pipeline"], "nodes": nodes}


def test_the_documents_layers():
    pipeline = Pipeline(layered(), engine="pandas", generate_story=False)
    assert pipeline.get_execution_layers() == [
        ["raw_customers", "raw_orders"],
        ["clean_customers", "clean_orders"],
        ["customer_orders"],
    ]


def test_dataframes_flow_by_node_name():
    results = Pipeline(layered(), generate_story=False).run(parallel=True)
    assert results.failed == [] and len(results.completed) == 5
    out = results.get_node_result("customer_orders").step.output
    assert out["source"].tolist() == ["customers", "orders"]


def test_a_failed_node_skips_its_downstream_nodes_and_independent_ones_continue():
    failing = {"clean_orders": {"transformer": f"{__name__}:fail"}}
    results = Pipeline(layered(**failing), generate_story=False).run()
    # 1. the node is marked failed
    assert results.failed == ["clean_orders"]
    error = results.node_results["clean_orders"].error
    assert isinstance(error, ValueError) and str(error) == "bad orders"
    # 2. the nodes downstream of it are skipped
    assert results.skipped == ["customer_orders"]
    skipped = results.node_results["customer_orders"]
    assert not skipped.success
    assert skipped.metadata["skipped"] and skipped.metadata["reason"] == "dependency_failed"
    # 3. independent nodes ran
    assert results.completed == ["raw_customers", "raw_orders", "clean_customers"]
    # 4. the results hold every node's status
    assert set(results.node_results) == {n["name"] for n in LAYERED["nodes"]}
    assert "clean_orders: bad orders" in results.debug_summary()


def test_on_error_ignore_lets_the_downstream_nodes_run():
    changes = {"raw_orders": {"transformer": f"{__name__}:fail", "on_error": "ignore"}}
    results = Pipeline(layered(**changes), generate_story=False).run()
    assert results.failed[0] == "raw_orders"
    assert "clean_orders" not in results.skipped  # it ran (on nothing) instead of being skipped


def test_fail_fast_stops_the_run():
    failing = {"raw_customers": {"transformer": f"{__name__}:fail"}}
    results = Pipeline(layered(**failing), generate_story=False).run(on_error="fail_fast")
    assert results.failed == ["raw_customers"] and results.completed == []
    assert results.skipped == ["raw_orders", "clean_customers", "clean_orders", "customer_orders"]
    assert results.node_results["raw_orders"].metadata["reason"] == "run_stopped"


def test_a_disabled_node_and_its_downstream_nodes_are_skipped():
    results = Pipeline(layered(raw_orders={"enabled": False}), generate_story=False).run()
    assert results.completed == ["raw_customers", "clean_customers"]
    reasons = {n: results.node_results[n].metadata["reason"] for n in results.skipped}
    assert reasons == {
        "raw_orders": "disabled",
        "clean_orders": "dependency_disabled",
        "customer_orders": "dependency_disabled",
    }


def test_a_cycle_is_refused_with_its_path():
    cyclic = layered(raw_customers={"depends_on": ["customer_orders"]})
    with pytest.raises(DependencyError) as caught:
        Pipeline(cyclic, generate_story=False)
    message = str(caught.value)
    assert "pipeline 'customer_orders'" in message and "circular dependency" in message
    assert caught.value.cycle == [
        "raw_customers",
        "clean_customers",
        "customer_orders",
        "raw_customers",
    ]


def test_an_unknown_dependency_is_refused_with_the_nearest_name():
    with pytest.raises(DependencyError, match="node 'clean_orders' depends on 'raw_order'.*"):
        Pipeline(layered(clean_orders={"depends_on": ["raw_order"]}))
    with pytest.raises(DependencyError, match="did you mean 'raw_orders'"):
        Pipeline(layered(clean_orders={"depends_on": ["raw_order"]}))


# -- bad configs ----------------------------------------------------------------------------------


def write_project(root, body):
    path = root / "config.yaml"
    path.write_text(textwrap.dedent(body))
    return path


PROJECT_HEAD = """\
project: p
engine: pandas
connections:
  local: {type: local, base_path: ./data}
"""


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            "{name: n, dependson: [a], read: {connection: local, format: csv, path: a.csv}}",
            r"pipeline 'etl': node 'n': unknown field 'dependson' \(did you mean 'depends_on'\?\)",
        ),
        (
            "{name: n, read: {connection: lake, format: csv, path: a.csv}}",
            r"node 'n': read: connection 'lake' is not one of the connections \(local\)",
        ),
        (
            "{name: n, read: {connection: local, format: csv, path: a.csv}, "
            "transform: {steps: ['SELECT * FROM df']}}",
            "node 'n': transform step 1: a plain string step is SQL; SQL needs a SQL engine",
        ),
        (
            "{name: n, read: {connection: local, format: csv, path: a.csv}, "
            "transform: {steps: [{sql: 'SELECT 1'}]}}",
            r"Odibi's 'sql' is not supported by pipectl.compat.odibi; SQL needs a SQL engine.*"
            r"function: module:function",
        ),
        (
            "{name: n, read: {connection: local, format: sql, table: t}}",
            "read: Odibi's 'table' is not supported",
        ),
        (
            "{name: n, read: {connection: local, format: delta, path: t}}",
            r"format 'delta' is not supported \(supported: csv, json, parquet\)",
        ),
        (
            "{name: n, read: {connection: local, format: csv, path: a.csv}, "
            "write: {connection: local, format: csv, path: b.csv, mode: upsert}}",
            "write: mode 'upsert' is not supported",
        ),
        (
            "{name: n, read: {connection: local, format: csv, path: a.csv}, "
            "transform: {steps: [{function: nowhere_registered}]}}",
            "no transform function named 'nowhere_registered'.*register it with @transform",
        ),
    ],
)
def test_a_bad_node_is_refused_naming_the_place_and_the_fix(tmp_path, node, message):
    path = write_project(
        tmp_path, PROJECT_HEAD + f"pipelines:\n  - pipeline: etl\n    nodes: [{node}]\n"
    )
    with pytest.raises(ConfigError, match=message) as caught:
        PipelineManager.from_yaml(path)
    assert str(path) in str(caught.value)


def test_a_missing_story_connection_and_an_unknown_project_field_are_refused(tmp_path):
    path = write_project(
        tmp_path,
        PROJECT_HEAD + "story: {connection: s3, path: s}\npipelines: [{pipeline: a, nodes: []}]\n",
    )
    with pytest.raises(ConfigError, match="story: connection 's3' is not one of connections"):
        PipelineManager.from_yaml(path)
    path = write_project(tmp_path, PROJECT_HEAD + "alerts: []\n")
    with pytest.raises(ConfigError, match="Odibi's 'alerts' is not supported"):
        PipelineManager.from_yaml(path)


def test_another_engine_is_refused_listing_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"engine 'spark' is not supported .*engines: pandas"):
        Pipeline(layered(), engine="spark")
    path = write_project(tmp_path, PROJECT_HEAD.replace("pandas", "spark"))
    with pytest.raises(ValueError, match=r"engine 'spark'"):
        PipelineManager.from_yaml(path)


def test_without_pandas_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'pipectl\[pandas\]'"):
        Pipeline(layered(), engine="pandas")


@pytest.mark.slow  # starts a Python process
def test_importing_the_adapter_does_not_import_pandas():
    code = "import sys, pipectl.compat.odibi; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- stories --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_story_when_auto_generate_is_false(project):
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("auto_generate: true", "auto_generate: false"))
    results = PipelineManager.from_yaml("config.yaml").run("bronze_to_silver")
    assert results.story_path is None
    assert not (project / "data" / "stories").exists()


@pytest.mark.slow
def test_a_failed_run_has_its_story_with_the_error(tmp_path):
    failing = {"clean_orders": {"transformer": f"{__name__}:fail"}}
    story_dir = tmp_path / "stories"
    results = Pipeline(layered(**failing), story_config={"output_path": story_dir}).run()
    story = Path(results.story_path)
    assert story.is_relative_to(story_dir / "customer_orders")
    assert "bad orders" in story.read_text()


@pytest.mark.slow  # 5,000 rows written twice: about 1 s
def test_a_write_is_all_or_nothing_and_a_retried_append_adds_its_rows_once(project):
    """A node's write goes to a temporary file renamed over the target: one that fails part
    way (a value the encoding cannot hold, after 5,000 rows that it can: written to disk
    before the error) leaves the file as it was, and the retry appends its rows once."""
    silver = project / "data" / "silver"
    silver.mkdir(parents=True)
    (silver / "customers.csv").write_text("customer_id,name\n0,Before\n")
    flaky = project / "flaky.txt"
    (project / "odibi_flaky.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib

            import pandas as pd

            def names(context, current):
                marker = pathlib.Path({str(flaky)!r})
                names = [f"name {{i}}" for i in range(1, 5001)]
                if not marker.exists():  # the first attempt: a name ascii cannot hold, last
                    marker.write_text("1")
                    names[-1] = "Zoë"
                return pd.DataFrame({{"customer_id": range(1, 5001), "name": names}})
            """
        )
    )
    config = project / "config.yaml"
    text = config.read_text().replace(
        "        write: {connection: local, format: csv, path: silver/customers.csv, mode: "
        "overwrite}",
        "        transformer: odibi_flaky:names\n"
        "        write: {connection: local, format: csv, path: silver/customers.csv, mode: "
        "append, options: {encoding: ascii}}",
    )
    config.write_text(text + "\nretry: {enabled: true, max_attempts: 2, backoff: constant}\n")
    results = PipelineManager.from_yaml("config.yaml").run("bronze_to_silver")
    assert results.failed == [], results.debug_summary()
    assert flaky.exists() and results.node_results["clean_customers"].step.attempts == 2
    rows = pd.read_csv(silver / "customers.csv")
    assert rows["customer_id"].tolist() == list(range(5001))  # the old row, the new ones once
    assert not [p for p in silver.iterdir() if p.name.endswith(".tmp")]

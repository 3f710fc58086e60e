"""``pipectl graph`` on files of several pipelines: each pipeline named, and an edge from each
pipeline to those that run after it, in text, Mermaid and dot. The Mermaid and dot outputs are
checked structurally (every line a known statement, subgraphs and braces balanced, every edge
between defined nodes, names escaped and read back intact); dot is also handed to Graphviz when
it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = "examples/layers/pipeline.yaml"


def graph(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pipectl", "graph", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    return proc.stdout


# -- readers of the two formats: they accept only what a valid chart of ours holds ---------------

MERMAID_ENTITIES = {"#quot;": '"', "#amp;": "&", "#lt;": "<", "#gt;": ">", "#96;": "`", "#35;": "#"}


def mermaid_label(text: str) -> str:
    assert '"' not in text and "&" not in text and "<" not in text, text
    return re.sub(r"#(quot|amp|lt|gt|96|35);", lambda m: MERMAID_ENTITIES[m.group(0)], text)


def read_mermaid(text: str) -> dict:
    """{'subgraphs': {id: title}, 'nodes': {id: (label, subgraph id)}, 'edges': [(a, b)]},
    asserting the chart's structure on the way."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "flowchart TD"
    subgraphs: dict[str, str] = {}
    nodes: dict[str, tuple[str, str | None]] = {}
    edges: list[tuple[str, str]] = []
    stack: list[str] = []
    for line in lines[1:]:
        line = line.strip()
        if m := re.fullmatch(r'subgraph (\w+)\["([^"]*)"\]', line):
            assert not stack, "subgraphs are not nested"
            assert m.group(1) not in subgraphs and m.group(1) not in nodes
            subgraphs[m.group(1)] = mermaid_label(m.group(2))
            stack.append(m.group(1))
        elif line == "end":
            assert stack, "an end without its subgraph"
            stack.pop()
        elif m := re.fullmatch(r'(\w+)\["([^"]*)"\]', line):
            assert m.group(1) not in nodes and m.group(1) not in subgraphs, line
            assert m.group(1) != "end"
            nodes[m.group(1)] = (mermaid_label(m.group(2)), stack[-1] if stack else None)
        elif m := re.fullmatch(r"(\w+) --> (\w+)", line):
            edges.append((m.group(1), m.group(2)))
        else:
            raise AssertionError(f"not a statement of ours: {line!r}")
    assert not stack, f"subgraph {stack[-1]} is not closed"
    for a, b in edges:
        for end in (a, b):
            assert end in nodes or end in subgraphs, f"edge end {end} is not defined"
    return {"subgraphs": subgraphs, "nodes": nodes, "edges": edges}


QUOTED = r'"((?:[^"\\]|\\.)*)"'


def dot_string(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def read_dot(text: str) -> dict:
    """{'title', 'clusters': {id: label}, 'nodes': {id: (label, cluster)}, 'edges':
    [(a, b, attrs)]}, asserting the digraph's structure on the way."""
    lines = text.rstrip("\n").split("\n")
    m = re.fullmatch(rf"digraph {QUOTED} {{", lines[0])
    assert m, lines[0]
    assert lines[-1] == "}"
    clusters: dict[str, str] = {}
    nodes: dict[str, tuple[str, str | None]] = {}
    edges: list[tuple[str, str, str]] = []
    cluster: str | None = None
    for line in lines[1:-1]:
        line = line.strip()
        if line in ("compound=true;", "rankdir=LR;", "node [shape=box];"):
            continue
        if c := re.fullmatch(r"subgraph (cluster_\w+) \{", line):
            assert cluster is None, "clusters are not nested"
            cluster = c.group(1)
        elif line == "}":
            assert cluster is not None, "a } without its subgraph"
            cluster = None
        elif c := re.fullmatch(rf"label={QUOTED};", line):
            assert cluster is not None
            clusters[cluster] = dot_string(c.group(1))
        elif c := re.fullmatch(rf"(\w+) \[label={QUOTED}(, shape=plaintext)?\];", line):
            assert c.group(1) not in nodes
            nodes[c.group(1)] = (dot_string(c.group(2)), cluster)
        elif c := re.fullmatch(r"(\w+) -> (\w+)(?: \[(.*)\])?;", line):
            edges.append((c.group(1), c.group(2), c.group(3) or ""))
        else:
            raise AssertionError(f"not a statement of ours: {line!r}")
    assert cluster is None, f"{cluster} is not closed"
    for a, b, _ in edges:
        assert a in nodes and b in nodes, (a, b)
    return {"title": dot_string(m.group(1)), "clusters": clusters, "nodes": nodes, "edges": edges}


def graphviz_accepts(text: str) -> None:
    """With Graphviz installed, ``dot`` lays the graph out without an error or a warning."""
    if shutil.which("dot") is None:
        return
    proc = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# -- the two-pipeline example ----------------------------------------------------------------


def test_text_names_each_pipeline_and_what_it_runs_after():
    out = graph(LAYERS)
    assert "Pipeline: bronze_to_silver\n" in out
    assert "Pipeline: silver_to_gold (after: bronze_to_silver)\n" in out
    assert out.index("bronze_to_silver") < out.index("Pipeline: silver_to_gold")
    assert "  - revenue_by_city <- [load_orders]" in out


def test_mermaid_is_one_flowchart_with_a_subgraph_per_pipeline_and_the_edge():
    out = graph(LAYERS, "--format", "mermaid")
    assert out.count("flowchart") == 1
    chart = read_mermaid(out)
    by_title = {title: sid for sid, title in chart["subgraphs"].items()}
    assert set(by_title) == {"bronze_to_silver", "silver_to_gold"}
    assert (by_title["bronze_to_silver"], by_title["silver_to_gold"]) in chart["edges"]
    steps = {label: sub for label, sub in chart["nodes"].values()}
    assert steps == {
        "clean_orders": by_title["bronze_to_silver"],
        "load_orders": by_title["silver_to_gold"],
        "revenue_by_city": by_title["silver_to_gold"],
    }
    ids = {label: nid for nid, (label, _) in chart["nodes"].items()}
    assert (ids["load_orders"], ids["revenue_by_city"]) in chart["edges"]
    assert len(chart["edges"]) == 2


def test_dot_is_one_digraph_with_a_labelled_cluster_per_pipeline_and_the_edge():
    out = graph(LAYERS, "--format", "dot")
    assert out.count("digraph") == 1 and "compound=true;" in out
    chart = read_dot(out)
    by_label = {label: cid for cid, label in chart["clusters"].items()}
    assert set(by_label) == {"bronze_to_silver", "silver_to_gold"}
    ids = {label: nid for nid, (label, _) in chart["nodes"].items()}
    # from the upstream's last step to the downstream's first, clipped at the clusters
    assert (
        ids["clean_orders"],
        ids["load_orders"],
        f"ltail={by_label['bronze_to_silver']}, lhead={by_label['silver_to_gold']}",
    ) in chart["edges"]
    assert (ids["load_orders"], ids["revenue_by_city"], "") in chart["edges"]
    graphviz_accepts(out)


# -- awkward names, several upstreams, the same step name in two pipelines, an empty one --------

AWKWARD = textwrap.dedent("""
    pipelines:
      - name: 'raw "orders" #1'
        steps:
          - {name: load, run: "steps:noop"}
          - {name: 'a -->|b| <i>c', run: "steps:noop", depends_on: [load]}
      - name: 'end'
        steps:
          - {name: 'subgraph', run: "steps:noop"}
      - name: 'semi; `tick` & {x}'
        depends_on: ['raw "orders" #1', 'end']
        steps:
          - {name: load, run: "steps:noop"}
          - {name: 'end', run: "steps:noop", depends_on: [load]}
""")
NAMES = ['raw "orders" #1', "end", "semi; `tick` & {x}"]


def awkward_project(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.yaml").write_text(AWKWARD, encoding="utf-8")
    (tmp_path / "steps.py").write_text("def noop():\n    return None\n", encoding="utf-8")
    return tmp_path


def test_mermaid_escapes_names_and_keeps_ids_unique_per_pipeline(tmp_path):
    out = graph("pipeline.yaml", "--format", "mermaid", cwd=awkward_project(tmp_path))
    chart = read_mermaid(out)  # every line a statement: no name broke out of its label
    titles = {title: sid for sid, title in chart["subgraphs"].items()}
    assert sorted(titles) == sorted(NAMES)
    labels = sorted(label for label, _ in chart["nodes"].values())
    assert labels == sorted(["load", "a -->|b| <i>c", "subgraph", "load", "end"])
    loads = [(nid, sub) for nid, (label, sub) in chart["nodes"].items() if label == "load"]
    assert len({nid for nid, _ in loads}) == 2 and len({sub for _, sub in loads}) == 2
    downstream = titles[NAMES[2]]
    assert (titles[NAMES[0]], downstream) in chart["edges"]
    assert (titles["end"], downstream) in chart["edges"]


def test_dot_escapes_names_and_draws_an_edge_from_each_upstream(tmp_path):
    out = graph("pipeline.yaml", "--format", "dot", cwd=awkward_project(tmp_path))
    chart = read_dot(out)
    assert chart["title"] == "pipeline"
    clusters = {label: cid for cid, label in chart["clusters"].items()}
    assert sorted(clusters) == sorted(NAMES)
    between = {
        (chart["nodes"][a][1], chart["nodes"][b][1]): attrs
        for a, b, attrs in chart["edges"]
        if chart["nodes"][a][1] != chart["nodes"][b][1]
    }
    down = clusters[NAMES[2]]
    assert set(between) == {(clusters[NAMES[0]], down), (clusters["end"], down)}
    for (tail, head), attrs in between.items():
        assert attrs == f"ltail={tail}, lhead={head}"
    for a, b, attrs in chart["edges"]:
        if attrs:  # from a step nothing in its pipeline depends on, to one that depends on none
            label_a, label_b = chart["nodes"][a][0], chart["nodes"][b][0]
            assert label_a in ("a -->|b| <i>c", "subgraph") and label_b == "load"
    graphviz_accepts(out)


def test_text_heading_lists_every_upstream(tmp_path):
    out = graph("pipeline.yaml", cwd=awkward_project(tmp_path))
    assert f"Pipeline: {NAMES[2]} (after: {NAMES[0]}, end)\n" in out


@pytest.mark.slow
def test_a_single_pipeline_is_named_and_stays_valid(tmp_path):
    (tmp_path / "steps.py").write_text("def noop():\n    return None\n", encoding="utf-8")
    (tmp_path / "one.yaml").write_text(
        textwrap.dedent("""
        name: solo
        steps:
          - {name: a, run: "steps:noop"}
          - {name: b, run: "steps:noop", depends_on: [a]}
    """),
        encoding="utf-8",
    )
    chart = read_mermaid(graph("one.yaml", "--format", "mermaid", cwd=tmp_path))
    assert list(chart["subgraphs"].values()) == ["solo"] and len(chart["edges"]) == 1
    out = graph("one.yaml", "--format", "dot", cwd=tmp_path)
    dot = read_dot(out)
    assert dot["title"] == "solo" and list(dot["clusters"].values()) == ["solo"]
    graphviz_accepts(out)
    assert graph("one.yaml", cwd=tmp_path).startswith("Pipeline: solo\n")

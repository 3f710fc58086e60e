"""The DAG: validation (duplicates, unknown dependencies, cycles, bindings), order, levels and
the pictures of it (text, Mermaid, dot)."""

from __future__ import annotations

import re

import pytest

from pipectl import Graph, Pipeline, PipelineValidationError, StepSpec


def noop() -> None:
    return None


def make(plugin_manager, name: str, steps: list[tuple[str, list[str]]]) -> Pipeline:
    """A pipeline of no-op steps: ``steps`` is [(name, depends_on), ...] in declaration order."""
    pipe = Pipeline(name, plugin_manager=plugin_manager)
    for step, deps in steps:
        pipe.add_step(step, noop, depends_on=deps)
    return pipe


def problems_of(pipe: Pipeline) -> list[str]:
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    err = info.value
    assert err.pipeline == pipe.name
    # the message lists every problem, one per line
    for problem in err.problems:
        assert problem in str(err)
    return err.problems


def cycle_paths(problems: list[str]) -> list[list[str]]:
    paths = []
    for p in problems:
        m = re.fullmatch(r"cycle: (.+)", p)
        if m:
            paths.append(m.group(1).split(" -> "))
    return paths


def assert_cycle(path: list[str], pipe: Pipeline, members: set[str]) -> None:
    """``path`` is a closed walk over exactly ``members``, each arrow going from a step to a
    step that depends on it (the direction data flows)."""
    assert path[0] == path[-1], path
    assert set(path) == members and len(path) == len(members) + 1, path
    steps = pipe.steps
    for upstream, downstream in zip(path, path[1:]):
        assert upstream in steps[downstream].all_dependencies, (upstream, downstream, path)


ETL = [
    ("extract", []),
    ("fetch_config", []),
    ("transform", ["extract", "fetch_config"]),
    ("load", ["transform"]),
]


# -- validation --------------------------------------------------------------------------------


def test_duplicate_step_names_are_rejected(plugin_manager):
    pipe = make(plugin_manager, "dup", [("extract", []), ("extract", []), ("load", ["extract"])])
    problems = problems_of(pipe)
    assert problems == ["duplicate step 'extract': step names must be unique"]


def test_duplicate_is_also_reported_by_graph_property_and_run(plugin_manager):
    pipe = make(plugin_manager, "dup", [("a", []), ("a", [])])
    with pytest.raises(PipelineValidationError, match="duplicate step 'a'"):
        pipe.graph  # noqa: B018 - the property builds and checks the graph
    with pytest.raises(PipelineValidationError, match="duplicate step 'a'"):
        pipe.run_sync()


def test_unknown_dependency_suggests_nearest_names(plugin_manager):
    pipe = make(
        plugin_manager,
        "etl",
        [
            ("extract", []),
            ("extract_users", []),
            ("load", ["extrct"]),
            ("report", ["zzz_nothing"]),
        ],
    )
    problems = problems_of(pipe)
    assert len(problems) == 2
    load, report = problems
    assert load.startswith("step 'load' depends on unknown step 'extrct'; did you mean 'extract'")
    assert "did you mean" not in report
    assert report == "step 'report' depends on unknown step 'zzz_nothing'"


def test_unknown_step_named_in_inputs_is_reported(plugin_manager):
    pipe = Pipeline("etl", plugin_manager=plugin_manager)
    pipe.add_step("fetch-users", noop)

    def merge(users):
        return users

    pipe.add_step("merge", merge, inputs={"users": "fetch-user"})
    (problem,) = problems_of(pipe)
    assert "unknown step 'fetch-user'" in problem
    assert "did you mean 'fetch-users'" in problem


def test_cycle_is_reported_as_its_path(plugin_manager):
    # a -> b -> c -> a (each arrow: the right-hand step depends on the left-hand one)
    pipe = make(plugin_manager, "cyc", [("a", ["c"]), ("b", ["a"]), ("c", ["b"])])
    problems = problems_of(pipe)
    assert len(problems) == 1
    (path,) = cycle_paths(problems)
    assert_cycle(path, pipe, {"a", "b", "c"})
    # the same cycle, whichever step it is shown from
    rotations = {
        " -> ".join([*r, r[0]]) for r in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])
    }
    assert problems[0].removeprefix("cycle: ") in rotations


def test_cycle_downstream_steps_are_not_reported_as_cycles(plugin_manager):
    pipe = make(
        plugin_manager,
        "cyc",
        [
            ("root", []),
            ("x", ["root", "z"]),
            ("y", ["x"]),
            ("z", ["y"]),
            ("after", ["z"]),
        ],
    )
    problems = problems_of(pipe)
    (path,) = cycle_paths(problems)
    assert len(problems) == 1
    assert_cycle(path, pipe, {"x", "y", "z"})


def test_two_independent_cycles_are_both_reported(plugin_manager):
    pipe = make(
        plugin_manager,
        "cyc",
        [
            ("a", ["b"]),
            ("b", ["a"]),
            ("ok", []),
            ("p", ["r"]),
            ("q", ["p"]),
            ("r", ["q"]),
        ],
    )
    problems = problems_of(pipe)
    paths = cycle_paths(problems)
    assert len(problems) == len(paths) == 2
    members = sorted(set(p) for p in paths)
    assert {"a", "b"} in members and {"p", "q", "r"} in members
    for path in paths:
        assert_cycle(path, pipe, set(path))


def test_self_dependency(plugin_manager):
    pipe = make(plugin_manager, "self", [("a", []), ("b", ["a", "b"])])
    assert problems_of(pipe) == ["step 'b' depends on itself"]


def test_all_problems_are_reported_together(plugin_manager):
    pipe = make(
        plugin_manager,
        "many",
        [
            ("extract", []),
            ("extract", []),
            ("transform", ["extrcat"]),
            ("load", ["load"]),
            ("report", ["nowhere"]),
        ],
    )
    problems = problems_of(pipe)
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "duplicate step 'extract'" in text
    assert "unknown step 'extrcat'; did you mean 'extract'" in text
    assert "step 'load' depends on itself" in text
    assert "unknown step 'nowhere'" in text


def test_cycle_reported_together_with_unknown_dependency(plugin_manager):
    pipe = make(
        plugin_manager,
        "both",
        [("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", ["extrct"]), ("extract", [])],
    )
    problems = problems_of(pipe)
    assert any("unknown step 'extrct'" in p for p in problems)
    assert len(cycle_paths(problems)) == 1


def test_graph_can_be_built_from_specs():
    graph = Graph("g", [StepSpec("a"), StepSpec("b", depends_on="a")])
    assert graph.topological_order() == ("a", "b")
    with pytest.raises(PipelineValidationError, match="depends on itself"):
        Graph("g", [StepSpec("a", depends_on="a")])


# -- binding -------------------------------------------------------------------------------


def test_unbindable_parameter_is_a_validation_error_naming_step_and_parameter(plugin_manager):
    pipe = Pipeline("bind", plugin_manager=plugin_manager)

    @pipe.step
    def extract():
        return 1

    @pipe.step(depends_on=["extract"])
    def transform(extract, params, ctx, mystery, optional=3):
        return extract

    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    (problem,) = info.value.problems
    assert "step 'transform'" in problem
    assert "parameter 'mystery'" in problem
    assert "'optional'" not in problem  # has a default: fine
    # nothing ran: run() raises the same before starting any step
    with pytest.raises(PipelineValidationError, match="mystery"):
        pipe.run_sync()


def test_a_step_name_as_parameter_without_dependency_is_not_bound_implicitly(plugin_manager):
    pipe = Pipeline("bind", plugin_manager=plugin_manager)
    pipe.add_step("extract", noop)

    def load(extract):
        return extract

    pipe.add_step("load", load)  # no depends_on
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    assert "step 'load'" in info.value.problems[0]
    assert "parameter 'extract'" in info.value.problems[0]


def test_every_binding_problem_is_listed(plugin_manager):
    pipe = Pipeline("bind", plugin_manager=plugin_manager)

    def one(a):
        pass

    def two(b, c):
        pass

    pipe.add_step("one", one)
    pipe.add_step("two", two)
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    problems = info.value.problems
    assert len(problems) == 3
    assert sum("step 'two'" in p for p in problems) == 2


def test_context_and_params_and_defaults_bind(plugin_manager):
    pipe = Pipeline("bind", plugin_manager=plugin_manager)

    def f(params, ctx, context, x=1, *args, **kwargs):
        pass

    pipe.add_step("f", f)
    pipe.validate()


def test_unknown_step_option_is_a_type_error_with_hint(plugin_manager):
    pipe = Pipeline("opts", plugin_manager=plugin_manager)
    with pytest.raises(TypeError, match="did you mean 'depends_on'"):
        pipe.add_step("a", noop, depend_on=["b"])


# -- order and levels ------------------------------------------------------------------------


def test_topological_order_puts_dependencies_first_and_keeps_declaration_order(plugin_manager):
    pipe = make(
        plugin_manager,
        "order",
        [
            ("load", ["transform"]),
            ("transform", ["extract", "fetch_config"]),
            ("fetch_config", []),
            ("extract", []),
            ("audit", []),
        ],
    )
    order = pipe.graph.topological_order()
    assert sorted(order) == sorted(pipe.steps)
    pos = {n: i for i, n in enumerate(order)}
    for name, spec in pipe.steps.items():
        for dep in spec.depends_on:
            assert pos[dep] < pos[name]
    # ties (the roots) keep the order they were declared in
    roots = [n for n in order if not pipe.steps[n].depends_on]
    assert roots == ["fetch_config", "extract", "audit"]


def test_levels_group_by_longest_path(plugin_manager):
    pipe = make(
        plugin_manager,
        "levels",
        [
            *ETL,
            ("audit", ["extract"]),  # level 1 (longest path: extract -> audit)
            ("publish", ["load", "extract"]),  # level 3, not 1
        ],
    )
    assert pipe.graph.levels() == [
        ["extract", "fetch_config"],
        ["transform", "audit"],
        ["load"],
        ["publish"],
    ]


def test_levels_returns_a_copy(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    levels = pipe.graph.levels()
    levels[0].append("junk")
    assert "junk" not in pipe.graph.levels()[0]


def test_graph_is_rebuilt_after_adding_a_step(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    assert len(pipe.graph) == 4
    pipe.add_step("report", noop, depends_on=["load"])
    assert len(pipe.graph) == 5
    assert pipe.graph.levels()[-1] == ["report"]


def test_empty_pipeline_runs_and_has_no_levels(plugin_manager):
    pipe = Pipeline("empty", plugin_manager=plugin_manager)
    assert pipe.graph.levels() == []
    assert pipe.graph.topological_order() == ()
    run = pipe.run_sync()
    assert run.ok and run.steps == {}


# -- pictures --------------------------------------------------------------------------------


def test_visualize_text_exact(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    assert pipe.visualize() == (
        "Pipeline: etl\n"
        "========================================\n"
        "Level 0:\n"
        "  - extract\n"
        "  - fetch_config\n"
        "Level 1:\n"
        "  - transform <- [extract, fetch_config]\n"
        "Level 2:\n"
        "  - load <- [transform]"
    )
    assert pipe.visualize("text") == pipe.visualize()


def test_visualize_mermaid_has_every_node_and_edge(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    text = pipe.visualize("mermaid")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0].startswith("flowchart")
    ids = {}
    for line in lines:
        m = re.fullmatch(r'(\w+)\["(.+)"\]', line)
        if m:
            ids[m.group(2)] = m.group(1)
    assert set(ids) == {"extract", "fetch_config", "transform", "load"}
    assert len(set(ids.values())) == 4
    edges = {tuple(line.split(" --> ")) for line in lines if "-->" in line}
    assert edges == {
        (ids["extract"], ids["transform"]),
        (ids["fetch_config"], ids["transform"]),
        (ids["transform"], ids["load"]),
    }


def test_visualize_dot_has_every_node_and_edge(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    text = pipe.visualize("dot")
    assert text.startswith('digraph "etl" {') and text.rstrip().endswith("}")
    for node in ("extract", "fetch_config", "transform", "load"):
        assert f'"{node}";' in text
    edges = set(re.findall(r'"(\w+)" -> "(\w+)";', text))
    assert edges == {("extract", "transform"), ("fetch_config", "transform"), ("transform", "load")}


def test_visualize_quotes_awkward_names(plugin_manager):
    pipe = make(plugin_manager, 'we"ird', [('fetch "users"', []), ("load-it", ['fetch "users"'])])
    dot = pipe.visualize("dot")
    assert '"fetch \\"users\\"" -> "load-it";' in dot
    mermaid = pipe.visualize("mermaid")
    assert '"fetch #quot;users#quot;"' in mermaid


def test_visualize_unknown_format(plugin_manager):
    pipe = make(plugin_manager, "etl", ETL)
    with pytest.raises(ValueError, match="unknown format"):
        pipe.visualize("png")


def test_cycle_path_starts_at_the_step_declared_first():
    from pipectl.graph import Graph
    from pipectl.model import StepSpec

    steps = [
        StepSpec("a", depends_on=["c"]),
        StepSpec("b", depends_on=["a"]),
        StepSpec("c", depends_on=["b"]),
    ]
    with pytest.raises(PipelineValidationError) as info:
        Graph("loop", steps)
    assert "cycle: a -> b -> c -> a" in str(info.value)

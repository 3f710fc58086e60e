"""Conditional steps (``when``), the trigger rules after them, and ``inputs`` references."""

from __future__ import annotations

import tempfile

import pytest
from helpers import EventLog

from pipectl import Pipeline
from pipectl.expr import ExpressionError, Scope, parse, parse_input
from pipectl.model import StepStatus

SUCCESS, SKIPPED, FAILED = StepStatus.SUCCESS, StepStatus.SKIPPED, StepStatus.FAILED


def scope(params=None, outputs=None, statuses=None):
    outputs = outputs or {}
    statuses = statuses or {name: "success" for name in outputs}
    return Scope(params or {}, outputs.__getitem__, statuses.get)


# -- the language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("params.mode == 'full'", True),
        ('params.mode != "full"', False),
        ("params.n > 2 and params.n <= 5", True),
        ("params.n < 2 or params.flag", True),
        ("not params.flag", False),
        ("params.region in ['eu', 'us']", True),
        ("params.region not in ['eu', 'us']", False),
        ("params.items[1] == 20", True),
        ("params.nested.inner['key-with-dash'] == 1.5", True),
        ("steps.check.output.score >= params.threshold", False),
        ("steps.check.output.score >= 0.3", True),
        ("steps.check.status == 'success'", True),
        ("(params.n == 1 or params.n == 4) and not (params.mode == 'x')", True),
        ("true", True),
        ("null == params.missing_value", True),
        ("-1 < 0", True),
        ("1e3 == 1000", True),
    ],
)
def test_expressions_evaluate_without_eval(text, expected):
    s = scope(
        {
            "mode": "full",
            "n": 4,
            "flag": True,
            "region": "eu",
            "items": [10, 20],
            "nested": {"inner": {"key-with-dash": 1.5}},
            "threshold": 0.5,
            "missing_value": None,
        },
        {"check": {"score": 0.4}},
    )
    assert parse(text).evaluate(s) is expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("params.", "expected a name"),
        ("__import__('os')", "a reference starts with 'params.' or 'steps.'"),
        ("params.a ==", "ends too early"),
        ("params.a = 1", "cannot read"),
        ("steps.x.result", "expected 'steps.x.output'"),
        ("params.a == 1 )", "unexpected ')'"),
        ("open('f').read()", "a reference starts with"),
        ("params.a[b]", "an index is an integer or a quoted key"),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(text, message):
    with pytest.raises(
        ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse(text)


def test_references_name_their_steps_and_params():
    e = parse("steps.a.output.x > params.t or steps.b.status == 'skipped'")
    assert e.steps == ("a", "b")
    assert e.params == ("t",)


def test_evaluation_errors_name_the_expression_part():
    s = scope({"t": 1}, {"a": {"x": 1}})
    with pytest.raises(ExpressionError, match=r"steps.a.output.y: no key 'y' \(keys: x\)"):
        parse("steps.a.output.y > 1").evaluate(s)
    with pytest.raises(ExpressionError, match="the run has no param 'nope'"):
        parse("params.nope").evaluate(s)
    with pytest.raises(ExpressionError, match="cannot compare str 'a' with int 1"):
        parse("'a' < 1").evaluate(s)
    with pytest.raises(ExpressionError, match="step 'b' did not succeed"):
        parse("steps.b.output").evaluate(scope({}, {"b": 1}, {"b": "skipped"}))


def test_alternatives_take_the_first_available():
    s = scope({}, {"high": {"d": "H"}, "low": {"d": "L"}}, {"high": "skipped", "low": "success"})
    assert parse("steps.high.output.d | steps.low.output.d").evaluate(s) == "L"
    none = scope({}, {"high": 1, "low": 2}, {"high": "skipped", "low": "failed"})
    with pytest.raises(ExpressionError, match="none of the alternatives is available"):
        parse("steps.high.output | steps.low.output").evaluate(none)


def test_inputs_are_step_names_unless_they_start_with_a_reference():
    assert parse_input("fetch orders") == "fetch orders"
    assert parse_input("steps.a.output.x").steps == ("a",)
    with pytest.raises(ExpressionError, match="an input is a reference"):
        parse_input("params.a == 1")


# -- when: in the engine -----------------------------------------------------------------------


def branching_pipeline(plugin_manager, trigger="one_success"):
    pipe = Pipeline("branches", plugin_manager=plugin_manager)
    ran = EventLog(tempfile.mkstemp(prefix="pipectl-ran-")[1])  # steps may run elsewhere

    @pipe.step("check")
    def check(params):
        ran.append("check")
        return {"score": params["score"], "data": [1, 2, 3]}

    @pipe.step(
        "high",
        when="steps.check.output.score >= params.threshold",
        inputs={"data": "steps.check.output.data"},
    )
    def high(data):
        ran.append("high")
        return {"processed": [x * 10 for x in data]}

    @pipe.step(
        "low",
        when="steps.check.output.score < params.threshold",
        inputs={"data": "steps.check.output.data"},
    )
    def low(data):
        ran.append("low")
        return {"processed": [-x for x in data]}

    @pipe.step("after_high", depends_on=["high"])
    def after_high():
        ran.append("after_high")

    @pipe.step(
        "join",
        trigger=trigger,
        inputs={"processed": "steps.high.output.processed | steps.low.output.processed"},
    )
    def join(processed):
        ran.append("join")
        return processed

    return pipe, ran


@pytest.mark.parametrize(
    "score, taken, not_taken, expected",
    [
        (0.9, "high", "low", [10, 20, 30]),
        (0.1, "low", "high", [-1, -2, -3]),
    ],
)
def test_only_the_branch_whose_condition_holds_runs(
    plugin_manager, score, taken, not_taken, expected, executor
):
    pipe, ran = branching_pipeline(plugin_manager)
    run = pipe.run_sync({"score": score, "threshold": 0.5})
    assert run.ok, run.errors
    assert run.steps[taken].status is SUCCESS
    skipped = run.steps[not_taken]
    assert skipped.status is SKIPPED
    assert skipped.reason.startswith("condition is false: steps.check.output.score")
    assert f"steps.check.output.score = {score}" in skipped.reason
    assert "params.threshold = 0.5" in skipped.reason
    assert run.steps["join"].output == expected
    assert not_taken not in ran and "join" in ran
    # an all_success step after a branch not taken is skipped too, with the same reason
    if not_taken == "high":
        assert run.steps["after_high"].status is SKIPPED
        assert run.steps["after_high"].reason == skipped.reason


def test_all_success_join_is_skipped_after_a_branch_not_taken(plugin_manager, executor):
    pipe, ran = branching_pipeline(plugin_manager, trigger="all_success")
    run = pipe.run_sync({"score": 0.9, "threshold": 0.5})
    assert run.ok  # skips after a false condition do not fail the run
    assert run.steps["join"].status is SKIPPED
    assert "join" not in ran


def test_none_failed_and_one_success_still_skip_after_a_failure(plugin_manager, executor):
    for trigger in ("none_failed", "one_success"):
        pipe = Pipeline("f", plugin_manager=plugin_manager)
        pipe.add_step("boom", lambda: 1 / 0)
        pipe.add_step("fine", lambda: 1)
        pipe.add_step("skipped_by_failure", lambda: 2, depends_on=["boom"])
        pipe.add_step("join", lambda: 3, depends_on=["fine", "skipped_by_failure"], trigger=trigger)
        run = pipe.run_sync()
        assert run.steps["join"].status is SKIPPED, trigger
        assert run.steps["join"].reason == "upstream step 'boom' failed"


def test_one_success_needs_a_success_none_failed_does_not(plugin_manager, executor):
    for trigger, status in (("one_success", SKIPPED), ("none_failed", SUCCESS)):
        pipe = Pipeline("t", plugin_manager=plugin_manager)
        pipe.add_step("a", lambda: 1, when="params.go")
        pipe.add_step("b", lambda: 2, when="params.go")
        pipe.add_step("join", lambda: "ran", depends_on=["a", "b"], trigger=trigger)
        run = pipe.run_sync({"go": False})
        assert run.ok
        assert run.steps["join"].status is status, trigger


def test_a_root_step_condition_on_params(plugin_manager, executor):
    pipe = Pipeline("roots", plugin_manager=plugin_manager)
    pipe.add_step("full", lambda: "full", when="params.mode == 'full'")
    pipe.add_step("after", lambda full: full + "!", depends_on=["full"])
    pipe.add_step("always", lambda: "always")
    run = pipe.run_sync({"mode": "incremental"})
    assert run.ok
    assert [run.steps[n].status for n in ("full", "after", "always")] == [SKIPPED, SKIPPED, SUCCESS]
    assert pipe.run_sync({"mode": "full"}).steps["after"].output == "full!"


def test_a_condition_that_cannot_be_evaluated_fails_the_step(plugin_manager, executor):
    pipe = Pipeline("bad", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: {"x": 1})
    pipe.add_step("b", lambda: 2, when="steps.a.output.y > 0")
    pipe.add_step("c", lambda: 3, depends_on=["b"])
    run = pipe.run_sync()
    assert not run.ok
    assert run.steps["b"].status is FAILED
    assert run.steps["b"].error == (
        "when: steps.a.output.y > 0: steps.a.output.y: no key 'y' (keys: x)"
    )
    assert run.steps["c"].status is SKIPPED


def test_steps_named_in_when_and_inputs_are_dependencies(plugin_manager, executor):
    pipe = Pipeline("deps", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: {"n": 1})
    pipe.add_step("b", lambda: {"n": 2})
    pipe.add_step("c", lambda n: n, when="steps.a.output.n == 1", inputs={"n": "steps.b.output.n"})
    assert set(pipe.graph.dependencies["c"]) == {"a", "b"}
    assert pipe.run_sync().steps["c"].output == 2


def test_a_bad_condition_is_refused_when_the_step_is_added(plugin_manager, executor):
    pipe = Pipeline("p", plugin_manager=plugin_manager)
    with pytest.raises(ExpressionError, match="a reference starts with"):
        pipe.add_step("x", lambda: 1, when="os.system('true')")


def test_params_references_as_inputs(plugin_manager, executor):
    pipe = Pipeline("p", plugin_manager=plugin_manager)
    pipe.add_step("greet", lambda who: f"hello {who}", inputs={"who": "params.user.name"})
    run = pipe.run_sync({"user": {"name": "ann"}})
    assert run.steps["greet"].output == "hello ann"


def test_conditions_with_async_steps_and_fail_fast(plugin_manager, executor):
    pipe = Pipeline("async", plugin_manager=plugin_manager, fail_fast=True)

    async def a():
        return {"go": True}

    async def b():
        return "b"

    pipe.add_step("a", a)
    pipe.add_step("b", b, when="steps.a.output.go")
    pipe.add_step("c", b, when="not steps.a.output.go")
    run = pipe.run_sync()
    assert run.ok
    assert run.steps["b"].status is SUCCESS and run.steps["c"].status is SKIPPED

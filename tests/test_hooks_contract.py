"""The hook contract: every hookspec is documented (docstring and docs/hooks.md, compared with
``inspect.signature``) and tested (a ``test_hook_<name>`` per hook, datasette's meta-test), and
the lifecycle hooks are called when their docstrings say."""

from __future__ import annotations

import inspect
import re
from datetime import datetime
from pathlib import Path

import pytest
from helpers import FlakyStore

from pipectl import Pipeline, RunStatus, StepStatus, hookimpl, hookspecs
from pipectl.model import PipelineRun, StepResult, StepSpec
from pipectl.plugins import LIFECYCLE_HOOKS
from pipectl.registry import KINDS

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
HOOKS_DOC = REPO_ROOT / "docs" / "hooks.md"


def _hookspecs():
    return {
        name: func
        for name, func in vars(hookspecs).items()
        if name.startswith("pipectl_") and inspect.isfunction(func)
    }


HOOKS = sorted(_hookspecs())


def _args(name: str) -> list[str]:
    return list(inspect.signature(_hookspecs()[name]).parameters)


def _doc(name: str) -> str:
    return inspect.getdoc(_hookspecs()[name]) or ""


# ---------------------------------------------------------------------------------------------
# the contract module itself
# ---------------------------------------------------------------------------------------------


def test_the_contract_has_the_hooks_of_the_design():
    assert HOOKS == sorted(
        [
            "pipectl_register_extractors",
            "pipectl_register_outputs",
            "pipectl_register_trackers",
            "pipectl_register_executors",
            "pipectl_register_step_types",
            "pipectl_register_pipeline_formats",
            "pipectl_register_connection_types",
            "pipectl_register_commands",
            "pipectl_addoption",
            "pipectl_configure",
            "pipectl_unconfigure",
            "pipectl_run_start",
            "pipectl_run_planned",
            "pipectl_run_finish",
            "pipectl_step_start",
            "pipectl_step_retry",
            "pipectl_step_finish",
            "pipectl_step_cache",
            "pipectl_output_finish",
            "pipectl_rollback_start",
            "pipectl_rollback_finish",
            "pipectl_wrap_step",
        ]
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_is_decorated(hook, plugin_manager):
    assert hasattr(_hookspecs()[hook], "pipectl_spec"), f"{hook} lacks @hookspec"
    caller = getattr(plugin_manager.hook, hook)
    assert caller.has_spec()
    assert list(caller.spec.argnames) == _args(hook)


def test_the_manager_knows_no_hook_outside_the_contract(plugin_manager):
    specced = sorted(
        name
        for name, caller in vars(plugin_manager.hook).items()
        if name.startswith("pipectl_") and caller.has_spec()
    )
    assert specced == HOOKS


def test_hooks_are_neither_firstresult_nor_historic(plugin_manager):
    for hook in HOOKS:
        opts = getattr(plugin_manager.hook, hook).spec.opts
        assert not opts.get("firstresult"), f"{hook}: firstresult needs 'Stops at first non-None'"
        assert not opts.get("historic"), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_says_when_it_is_called(hook):
    doc = _doc(hook)
    assert doc, f"{hook} has no docstring"
    first_sentence = doc.split(".")[0]
    assert first_sentence.startswith("Called "), f"{hook}: {first_sentence!r}"
    assert re.search(r"\b(when|once|before|after)\b", first_sentence), first_sentence


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_has_a_param_for_every_argument(hook):
    documented = re.findall(r"^:param (\w+):", _doc(hook), flags=re.MULTILINE)
    assert documented == _args(hook), f"{hook}: :param: lines {documented} vs {_args(hook)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_says_what_it_returns(hook):
    assert ":return:" in _doc(hook), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_says_since(hook):
    assert re.search(r"\bSince \d+\.\d+\.", _doc(hook)), hook


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_docstring_has_an_example(hook):
    doc = _doc(hook)
    assert "**Example:**" in doc, hook
    assert f"def {hook}(" in doc, f"{hook}: the example does not implement the hook"


@pytest.mark.parametrize("hook", [h for h in HOOKS if h.startswith("pipectl_register_")])
def test_registration_hooks_say_they_cannot_be_wrappers(hook):
    assert "Cannot be a wrapper." in _doc(hook)


def test_registration_hooks_table_matches_the_specs():
    register_hooks = {h for h in HOOKS if h.startswith("pipectl_register_")}
    assert set(hookspecs.REGISTRATION_HOOKS) == register_hooks - {"pipectl_register_commands"}
    assert sorted(hookspecs.REGISTRATION_HOOKS.values()) == sorted(KINDS)
    for hook, kind in hookspecs.REGISTRATION_HOOKS.items():
        assert hook == f"pipectl_register_{kind}"
        assert _args(hook) == ["register"]


def test_every_hook_is_registration_commands_startup_or_lifecycle():
    assert (
        sorted(
            [
                *hookspecs.REGISTRATION_HOOKS,
                "pipectl_register_commands",
                *hookspecs.STARTUP_HOOKS,
                *LIFECYCLE_HOOKS,
            ]
        )
        == HOOKS
    )


def test_hook_names_follow_the_grammar():
    lifecycle = re.compile(
        r"^pipectl_(run|step|output|rollback)_(start|planned|finish|retry|cache)$"
    )
    for hook in HOOKS:
        assert (
            re.match(r"^pipectl_register_[a-z_]+s$", hook)
            or lifecycle.match(hook)
            or hook
            in (
                "pipectl_wrap_step",
                "pipectl_addoption",
                "pipectl_configure",
                "pipectl_unconfigure",
            )
        ), hook


# ---------------------------------------------------------------------------------------------
# docs/hooks.md (generated by `python -m pipectl.docgen`) and the tests of every hook
# ---------------------------------------------------------------------------------------------


def _headings(markdown: str) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def test_every_hook_is_documented_in_docs_hooks_md():
    assert HOOKS_DOC.exists(), (
        f"{HOOKS_DOC.relative_to(REPO_ROOT)} is missing: generate it with python -m pipectl.docgen"
    )
    headings = _headings(HOOKS_DOC.read_text(encoding="utf-8"))
    missing = []
    for hook in HOOKS:
        signature = f"{hook}({', '.join(_args(hook))})"
        if not any(signature in heading for heading in headings):
            missing.append(signature)
    assert not missing, f"no heading in docs/hooks.md with: {missing}"


def test_docs_hooks_md_documents_no_hook_that_does_not_exist():
    if not HOOKS_DOC.exists():
        pytest.skip("docs/hooks.md is missing (test_every_hook_is_documented_in_docs_hooks_md)")
    named = set()
    for heading in _headings(HOOKS_DOC.read_text(encoding="utf-8")):
        named.update(re.findall(r"\b(pipectl_\w+)\(", heading))
    assert named <= set(HOOKS), f"docs/hooks.md documents unknown hooks: {named - set(HOOKS)}"


def _test_function_names() -> set[str]:
    names = set()
    for path in TESTS_DIR.rglob("*.py"):
        names.update(
            re.findall(
                r"^\s*(?:async\s+)?def (test_hook_\w+)\(",
                path.read_text(encoding="utf-8"),
                flags=re.MULTILINE,
            )
        )
    return names


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in _test_function_names(), (
        f"write a test named test_hook_{hook} under tests/"
    )


def test_meta_test_finds_test_functions():
    """The meta-test cannot pass vacuously: it finds this module's own test_hook_ functions."""
    names = _test_function_names()
    assert "test_hook_pipectl_run_start" in names
    assert "test_hook_pipectl_not_a_hook" not in names


# ---------------------------------------------------------------------------------------------
# the lifecycle hooks, called when their docstrings say
# ---------------------------------------------------------------------------------------------


class Snapshots:
    """Copies what a listener sees at the moment it is called (PipelineRun is mutable)."""

    def __init__(self):
        self.events = []

    @hookimpl
    def pipectl_run_start(self, run):
        self.events.append(
            (
                "run_start",
                run.status,
                dict(run.steps),
                run.start_time,
                run.end_time,
                dict(run.parameters),
                run.run_id,
            )
        )

    @hookimpl
    def pipectl_run_finish(self, run):
        self.events.append(
            (
                "run_finish",
                run.status,
                dict(run.steps),
                run.start_time,
                run.end_time,
                list(run.errors),
                run.run_id,
            )
        )


def _pipeline(pm, *, fail=False):
    pipe = Pipeline("lifecycle", plugin_manager=pm)
    attempts = []

    @pipe.step("extract", retries=2, retry_delay=0.01, retry_backoff=2.0, retry_jitter=0.0)
    async def extract():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return [1, 2]

    @pipe.step("transform", depends_on=["extract"])
    def transform(extract, params):
        if fail:
            raise ValueError("transform failed")
        return [x * params["factor"] for x in extract]

    @pipe.step("load", depends_on=["transform"])
    def load(transform):
        return len(transform)

    return pipe


def test_hook_pipectl_run_start(register_plugin, plugin_manager, hook_recorder):
    snapshots = Snapshots()
    register_plugin(snapshots, name="snapshots")

    run = _pipeline(plugin_manager).run_sync({"factor": 10}, run_id="r1")

    assert hook_recorder.names()[0] == "pipectl_run_start"
    assert hook_recorder.names().count("pipectl_run_start") == 1
    assert hook_recorder.calls[0].run is run
    name, status, steps, start_time, end_time, parameters, run_id = snapshots.events[0]
    assert name == "run_start"
    assert status is RunStatus.RUNNING
    assert steps == {}  # before any step started
    assert isinstance(start_time, datetime) and end_time is None
    assert parameters == {"factor": 10}
    assert run_id == "r1"


@pytest.mark.parametrize("fail", [False, True], ids=["success", "failed"])
def test_hook_pipectl_run_finish(register_plugin, plugin_manager, hook_recorder, fail):
    snapshots = Snapshots()
    register_plugin(snapshots, name="snapshots")

    run = _pipeline(plugin_manager, fail=fail).run_sync({"factor": 10})

    assert hook_recorder.names()[-1] == "pipectl_run_finish"
    assert hook_recorder.names().count("pipectl_run_finish") == 1
    assert isinstance(hook_recorder.calls[-1].run, PipelineRun)
    name, status, steps, start_time, end_time, errors, _ = snapshots.events[-1]
    assert name == "run_finish"
    assert status is (RunStatus.FAILED if fail else RunStatus.SUCCESS)
    assert status is run.status
    assert set(steps) == {"extract", "transform", "load"}  # after every step finished
    assert end_time is not None and end_time >= start_time
    if fail:
        assert errors == ["step 'transform' failed: ValueError: transform failed"]
        assert steps["load"].status is StepStatus.SKIPPED
    else:
        assert errors == []


def test_hook_pipectl_step_start(plugin_manager, hook_recorder):
    run = _pipeline(plugin_manager, fail=True).run_sync({"factor": 10})

    starts = [(c.step_name, c.attempt) for c in hook_recorder.calls_for("step_start")]
    # once per attempt, attempt numbers from 1; never for the skipped step
    assert starts == [("extract", 1), ("extract", 2), ("extract", 3), ("transform", 1)]
    assert all(isinstance(c.step, StepSpec) for c in hook_recorder.calls_for("step_start"))
    assert all(c.run is run for c in hook_recorder.calls_for("step_start"))
    names = hook_recorder.names()
    assert names.index("pipectl_run_start") < names.index("pipectl_step_start")


def test_hook_pipectl_step_retry(plugin_manager, hook_recorder):
    run = _pipeline(plugin_manager).run_sync({"factor": 10})

    retries = hook_recorder.calls_for("step_retry")
    assert [(c.step_name, c.attempt) for c in retries] == [("extract", 1), ("extract", 2)]
    assert [str(c.error) for c in retries] == ["attempt 1", "attempt 2"]
    assert all(isinstance(c.error, ConnectionError) for c in retries)
    assert [c.delay for c in retries] == pytest.approx([0.01, 0.02])  # backoff, no jitter
    assert all(c.run is run for c in retries)
    # after the failed attempt, before the next one starts
    order = [
        (c.name, c.kwargs.get("attempt")) for c in hook_recorder.calls if c.step_name == "extract"
    ]
    assert order == [
        ("pipectl_step_start", 1),
        ("pipectl_step_retry", 1),
        ("pipectl_step_start", 2),
        ("pipectl_step_retry", 2),
        ("pipectl_step_start", 3),
        ("pipectl_step_finish", None),
    ]


def test_hook_pipectl_step_cache(plugin_manager, hook_recorder, tmp_path):
    calls = []

    def build() -> Pipeline:
        pipe = Pipeline("cached", plugin_manager=plugin_manager)
        pipe.add_step("source", lambda: [1, 2])
        pipe.add_step(
            "total", lambda source: calls.append(1) or sum(source), cache=True, depends_on="source"
        )
        return pipe

    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    first = build().run_sync(tracker=tracker)

    def events_of(step: str) -> list[tuple[str, str | None]]:
        return [
            (c.name.removeprefix("pipectl_"), getattr(c.kwargs.get("event"), "kind", None))
            for c in hook_recorder.calls
            if c.step_name == step
        ]

    # the lookup before the first attempt, the store after it, before the step's end
    assert events_of("total") == [
        ("step_cache", "miss"),
        ("step_start", None),
        ("step_cache", "stored"),
        ("step_finish", None),
    ]
    assert events_of("source") == [("step_start", None), ("step_finish", None)]  # not cached
    stored = hook_recorder.calls_for("step_cache", "total")[-1]
    assert stored.run is first and stored.kwargs["event"].cached_from == first.run_id
    hook_recorder.clear()
    second = build().run_sync(tracker=tracker)
    # a hit: never started, its end says where its output came from
    assert events_of("total") == [("step_cache", "hit"), ("step_finish", None)]
    (hit,) = hook_recorder.calls_for("step_cache", "total")
    assert hit.kwargs["event"].key == stored.kwargs["event"].key
    assert hit.run is second
    assert hook_recorder.calls_for("step_finish", "total")[0].kwargs["result"].cached_from == (
        first.run_id
    )
    assert calls == [1]


def test_hook_pipectl_step_retry_not_called_without_retries(plugin_manager, hook_recorder):
    pipe = Pipeline("no-retry", plugin_manager=plugin_manager)

    @pipe.step("fails")
    def fails():
        raise ValueError("no retry")

    pipe.run_sync()

    assert hook_recorder.calls_for("step_retry") == []


def test_hook_pipectl_step_finish(plugin_manager, hook_recorder):
    run = _pipeline(plugin_manager, fail=True).run_sync({"factor": 10})

    finishes = hook_recorder.calls_for("step_finish")
    # exactly once per step, the skipped one included
    assert sorted(c.step_name for c in finishes) == ["extract", "load", "transform"]
    by_step = {c.step_name: c.result for c in finishes}
    assert all(isinstance(r, StepResult) for r in by_step.values())
    assert by_step["extract"].status is StepStatus.SUCCESS
    assert by_step["extract"].attempts == 3
    assert by_step["extract"].output == [1, 2]
    assert by_step["transform"].status is StepStatus.FAILED
    assert by_step["transform"].error == "ValueError: transform failed"
    assert by_step["load"].status is StepStatus.SKIPPED
    assert by_step["load"].reason == "upstream step 'transform' failed"
    assert by_step == {name: run.steps[name] for name in by_step}
    names = hook_recorder.names()
    assert max(i for i, n in enumerate(names) if n == "pipectl_step_finish") < names.index(
        "pipectl_run_finish"
    )


def test_lifecycle_order_of_a_linear_pipeline(plugin_manager, hook_recorder):
    pipe = Pipeline("linear", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda a: a + 1, depends_on=["a"])

    pipe.run_sync()

    assert [(c.name.removeprefix("pipectl_"), c.step_name) for c in hook_recorder.calls] == [
        ("run_start", None),
        ("run_planned", None),
        ("step_start", "a"),
        ("step_finish", "a"),
        ("step_start", "b"),
        ("step_finish", "b"),
        ("run_finish", None),
    ]


def test_listener_with_a_subset_of_the_arguments(register_plugin, plugin_manager):
    """A hookimpl may take fewer arguments than the spec (pluggy's opt-in arguments)."""
    seen = []

    class Plugin:
        @hookimpl
        def pipectl_step_finish(self, result):
            seen.append(result.step_name)

        @hookimpl
        def pipectl_step_start(self, attempt):
            seen.append(attempt)

    assert register_plugin(Plugin(), name="subset").status == "loaded"
    pipe = Pipeline("subset", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)

    assert pipe.run_sync().ok
    assert seen == [1, "a"]


def test_hook_reference_is_generated_from_the_hookspecs():
    """docs/hooks.md is exactly what ``python -m pipectl.docgen`` generates from hookspecs.py."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pipectl.docgen", "--check", str(HOOKS_DOC)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# the run-planned, data output and rollback events
# ---------------------------------------------------------------------------------------------


def test_hook_pipectl_run_planned(plugin_manager, hook_recorder):
    pipe = Pipeline("planned", plugin_manager=plugin_manager)
    pipe.add_step("extract", lambda: [1, 2])
    pipe.add_step("clean", lambda extract: extract, depends_on=["extract"])
    pipe.add_step("audit", lambda extract: len(extract), depends_on=["extract"])
    pipe.add_step("load", lambda clean, audit: clean, depends_on=["clean", "audit"])
    pipe.add_step("report", lambda load: "done", depends_on=["load"])
    pipe.add_step("unrelated", lambda: 0)

    run = pipe.run_sync(only=["report"], skip=["audit"])

    names = hook_recorder.names()
    assert names[:2] == ["pipectl_run_start", "pipectl_run_planned"]  # before any step
    (call,) = hook_recorder.calls_for("run_planned")
    assert call.run is run
    plan = call.plan
    # only= keeps report and what it needs; skip= drops audit and what is downstream of it
    assert plan.names == ("extract", "clean") == tuple(run.steps)
    assert all(isinstance(step, StepSpec) for step in plan.steps)
    assert plan.edges == (("extract", "clean"),)
    assert plan.left_out == ("audit", "load", "report") == tuple(run.left_out)
    assert plan.resumed == ()
    started = {c.step_name for c in hook_recorder.calls_for("step_start")}
    assert started == set(plan.names)


def test_hook_pipectl_run_planned_names_the_resumed_steps(plugin_manager, hook_recorder, tmp_path):
    tracker = f"sqlite:///{tmp_path / 'runs.db'}"
    fail = {"now": True}
    pipe = Pipeline("resumable", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)

    @pipe.step("b", depends_on=["a"])
    def b(a):
        if fail["now"]:
            raise RuntimeError("b failed")
        return a + 1

    assert pipe.run_sync(tracker=tracker).status is RunStatus.FAILED
    fail["now"] = False
    hook_recorder.clear()
    run = pipe.run_sync(tracker=tracker, resume="latest")

    assert run.ok
    (call,) = hook_recorder.calls_for("run_planned")
    assert call.plan.names == ("a", "b") and call.plan.edges == (("a", "b"),)
    assert call.plan.resumed == ("a",)
    assert [c.step_name for c in hook_recorder.calls_for("step_start")] == ["b"]


class _Numbers:
    def describe(self):
        return "numbers"

    def batches(self, ctx):
        yield [{"id": i} for i in range(5)]
        yield [{"id": i} for i in range(5, 8)]


def test_hook_pipectl_output_finish(plugin_manager, hook_recorder):
    steady, flaky = FlakyStore("steady"), FlakyStore("flaky", fail_attempts=1)
    pipe = Pipeline("outputs", plugin_manager=plugin_manager)
    pipe.data_step(
        "load", extractor=_Numbers(), outputs=[steady, flaky], retries=1, retry_delay=0.0
    )
    pipe.add_step("after", lambda load: "ok", depends_on=["load"])

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert len(steady.rows) == len(flaky.rows) == 8  # each record written once
    reports = [
        (c.attempt, c.report.name, c.report.status, c.report.written, c.report.target)
        for c in hook_recorder.calls_for("output_finish")
    ]
    assert reports == [
        (1, "steady", "committed", 8, "store steady"),
        (1, "flaky", "failed", 0, "store flaky"),
        (2, "steady", "skipped", 0, "store steady"),  # committed by attempt 1: not again
        (2, "flaky", "committed", 8, "store flaky"),
    ]
    failed = hook_recorder.calls_for("output_finish")[1].report
    assert "disk full" in failed.error
    assert all(
        c.step_name == "load" and c.run is run for c in hook_recorder.calls_for("output_finish")
    )
    # each attempt's reports come before its retry, the last ones before the step's finish
    names = [n.removeprefix("pipectl_") for n in hook_recorder.names() if n != "pipectl_step_start"]
    assert names == [
        "run_start",
        "run_planned",
        "output_finish",
        "output_finish",
        "step_retry",
        "output_finish",
        "output_finish",
        "step_finish",
        "step_finish",
        "run_finish",
    ]


def test_no_output_report_when_the_extraction_fails(plugin_manager, hook_recorder):
    """Nothing committed, nothing failed on the outputs' side: the extractor's error is the
    step's, and no output is reported (as the hookspec says)."""

    class Broken(_Numbers):
        def batches(self, ctx):
            yield [{"id": 1}]
            raise RuntimeError("source broke")

    pipe = Pipeline("outputs", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Broken(), outputs=[FlakyStore("a"), FlakyStore("b")])
    pipe.add_step("plain", lambda: 1)

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert "source broke" in run.steps["load"].error
    assert hook_recorder.calls_for("output_finish") == []


def _rollback_pipeline(pm, undone, fail_undo=()):
    pipe = Pipeline("undo", plugin_manager=pm)

    def undo(name):
        def rollback(output):
            if name in fail_undo:
                raise RuntimeError(f"cannot undo {name}")
            undone.append((name, output))

        return rollback

    pipe.add_step("a", lambda: "A", rollback=undo("a"))
    pipe.add_step("b", lambda a: a + "B", depends_on=["a"], rollback=undo("b"))
    pipe.add_step("no_undo", lambda b: b, depends_on=["b"])
    pipe.add_step("c", lambda no_undo: no_undo + "C", depends_on=["no_undo"], rollback=undo("c"))
    pipe.add_step("boom", lambda c: 1 / 0, depends_on=["c"])
    return pipe


def test_hook_pipectl_rollback_start(plugin_manager, hook_recorder):
    undone = []
    run = _rollback_pipeline(plugin_manager, undone).run_sync(rollback=True)

    assert run.status is RunStatus.ROLLED_BACK
    starts = hook_recorder.calls_for("rollback_start")
    # reverse order of completion; a step without a rollback function gets no call
    assert [c.step_name for c in starts] == ["c", "b", "a"] == [n for n, _ in undone]
    assert all(c.result.status is StepStatus.SUCCESS and c.run is run for c in starts)
    assert starts[0].result.output == "ABC"
    names = hook_recorder.names()
    # after every step finished, before the run's finish; each start before its finish
    last_step = max(i for i, n in enumerate(names) if n == "pipectl_step_finish")
    assert last_step < names.index("pipectl_rollback_start")
    assert names[-7:] == ["pipectl_rollback_start", "pipectl_rollback_finish"] * 3 + [
        "pipectl_run_finish"
    ]


def test_no_rollback_event_without_rollback(plugin_manager, hook_recorder):
    run = _rollback_pipeline(plugin_manager, []).run_sync()

    assert run.status is RunStatus.FAILED
    assert not hook_recorder.calls_for("rollback_start")
    assert not hook_recorder.calls_for("rollback_finish")


def test_hook_pipectl_rollback_finish(plugin_manager, hook_recorder):
    undone = []
    run = _rollback_pipeline(plugin_manager, undone, fail_undo={"b"}).run_sync(rollback=True)

    assert run.status is RunStatus.ROLLBACK_FAILED
    finishes = hook_recorder.calls_for("rollback_finish")
    assert [c.step_name for c in finishes] == ["c", "b", "a"]  # a failure does not stop them
    c, b, a = finishes
    assert c.error is None and c.result.status is StepStatus.ROLLED_BACK
    assert c.result.rollback["status"] == "success"
    assert isinstance(b.error, RuntimeError) and str(b.error) == "cannot undo b"
    assert b.result.status is StepStatus.SUCCESS  # not undone
    assert b.result.rollback["status"] == "failed"
    assert b.result.rollback["error"] == "RuntimeError: cannot undo b"
    assert a.error is None and a.result.status is StepStatus.ROLLED_BACK
    # the result each finish carries is the one the run ends with
    assert all(run.steps[f.step_name] is f.result for f in finishes)
    (run_finish,) = hook_recorder.calls_for("run_finish")
    assert run_finish.run.status is RunStatus.ROLLBACK_FAILED


# ---------------------------------------------------------------------------------------------
# deprecating a hook: pluggy's warn_on_impl
# ---------------------------------------------------------------------------------------------


class _DeprecatedSpecs:
    """A test-local hookspec retired the way hookspecs.py's docstring says."""

    @hookspecs.hookspec(
        warn_on_impl=DeprecationWarning(
            "pipectl_step_end is deprecated since 0.2: implement pipectl_step_finish"
        )
    )
    def pipectl_step_end(self, run, step):
        """Called when a step ended (deprecated)."""


def test_a_hookspec_marked_warn_on_impl_warns_the_plugin_implementing_it(plugin_manager):
    plugin_manager.add_hookspecs(_DeprecatedSpecs)

    class OldPlugin:
        @hookimpl
        def pipectl_step_end(self, run, step):
            pass

    class NewPlugin:
        @hookimpl
        def pipectl_step_finish(self, run, step, result):
            pass

    with pytest.warns(DeprecationWarning, match="implement pipectl_step_finish") as caught:
        record = plugin_manager.add_plugin(OldPlugin(), "old")
    assert record.status == "loaded"  # deprecated, still working
    assert any(w.filename == __file__ for w in caught)  # points at the implementation
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plugin_manager.add_plugin(NewPlugin(), "new").status == "loaded"

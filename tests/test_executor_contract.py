"""The executor contract as a plugin executor sees it: ``Invocation.driver_reads``, options from
the command line (``--executor-option``, options an executor declares) and start failures."""

from __future__ import annotations

from typing import ClassVar

import pytest

from pipectl import Pipeline, hookimpl
from pipectl.components.local_executor import LocalExecutor


class Recording(LocalExecutor):
    """The local executor, remembering which steps the engine said it reads in the driver."""

    seen: ClassVar[dict[str, bool]] = {}

    def __init__(self, **options):
        super().__init__()
        Recording.options = options

    async def execute(self, invocation):
        Recording.seen[invocation.step.name] = invocation.driver_reads
        return await super().execute(invocation)


class Failing(LocalExecutor):
    async def start(self, run, config, max_concurrent):
        raise ConnectionError("no cluster at tcp://nowhere:1")


def make_recording(**options):
    return Recording(**options)


class ExecutorPlugin:
    @hookimpl
    def pipectl_addoption(self, parser):
        parser.add_option(
            "--rec-level",
            executor="recording",
            key="level",
            type=int,
            metavar="N",
            help="How hard to record.",
        )

    @hookimpl
    def pipectl_register_executors(self, register):
        register("recording", make_recording)
        register("failing", lambda **options: Failing())


def test_driver_reads_marks_outputs_the_engine_reads(plugin_manager, register_plugin):
    register_plugin(ExecutorPlugin(), name="exec-plugin")
    Recording.seen = {}
    pipe = Pipeline("reads", plugin_manager=plugin_manager)
    pipe.add_step("check", lambda: {"score": 3})
    pipe.add_step("plain", lambda: 1)
    pipe.add_step(
        "high",
        lambda plain: plain,
        depends_on=["check", "plain"],
        when="steps.check.output.score > 2",
    )
    pipe.add_step("undoable", lambda: 2, rollback=lambda output: None)
    pipe.add_step(
        "by_ref",
        lambda value: value,
        inputs={"value": "steps.source.output"},
        depends_on=["source"],
    )
    pipe.add_step("source", lambda: 5)
    pipe.add_step(
        "status_only", lambda: 0, depends_on=["plain"], when="steps.plain.status == 'success'"
    )
    run = pipe.run_sync(executor="recording")
    assert run.status.value == "success", run.errors
    assert run.steps["by_ref"].output == 5
    assert Recording.seen == {
        "check": True,
        "plain": False,
        "high": False,
        "undoable": True,
        "source": True,
        "by_ref": False,
        "status_only": False,
    }


def test_executor_that_cannot_start_leaves_no_run_and_no_hooks(
    plugin_manager, register_plugin, hook_recorder
):
    import pytest

    from pipectl.errors import ExecutorError

    register_plugin(ExecutorPlugin(), name="exec-plugin")
    pipe = Pipeline("nostart", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    with pytest.raises(ExecutorError, match="executor 'failing': cannot start: no cluster at"):
        pipe.run_sync(executor="failing")
    assert not [c for c in hook_recorder.calls if c.name == "pipectl_run_start"]


def test_cli_options_declared_by_an_executor(run_cli, register_plugin, tmp_path, monkeypatch):
    register_plugin(ExecutorPlugin(), name="exec-plugin")
    (tmp_path / "steps_mod.py").write_text("def one():\n    return 1\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        "name: p\nsteps:\n  - name: a\n    run: steps_mod:one\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    help_text = run_cli("run", "--help").output
    assert "--rec-level N" in help_text
    assert "(implies --executor recording)" in " ".join(help_text.split())
    result = run_cli(
        "run",
        "p.yaml",
        "--rec-level",
        "3",
        "--executor-option",
        'tag="x"',
        "--executor-option",
        "sizes=[1, 2]",
        "--tracker",
        "none",
    )
    assert result.exit_code == 0, result.output
    assert Recording.options == {"level": 3, "tag": "x", "sizes": [1, 2]}
    bad = run_cli("run", "p.yaml", "--rec-level", "3", "--executor", "local")
    assert bad.exit_code == 2
    assert "--rec-level is an option of executor 'recording', not of --executor local" in bad.output
    bad = run_cli("run", "p.yaml", "--executor", "local", "--executor-option", "threads=2")
    assert bad.exit_code == 2 and "executor 'local': bad options {'threads': 2}" in bad.output
    bad = run_cli("run", "p.yaml", "--executor", "failing", "--tracker", "none")
    assert bad.exit_code == 2 and "executor 'failing': cannot start" in bad.output


# -- the reusable suite, on the kernel's own executor (plugins run it on theirs) -------------


@pytest.mark.slow
def test_local_executor_meets_the_executor_contract(plugin_manager, tmp_path):
    from pipectl.testing import check_executor_contract

    check_executor_contract("local", plugin_manager=plugin_manager, workdir=tmp_path)


@pytest.mark.slow
def test_the_executor_contract_takes_a_factory_and_catches_a_broken_executor(tmp_path):
    import pytest

    from pipectl.testing import check_executor_contract

    check_executor_contract(LocalExecutor, workdir=tmp_path / "ok")

    class Lossy(LocalExecutor):  # runs every step, loses what it returns
        async def execute(self, invocation):
            await super().execute(invocation)

    with pytest.raises(AssertionError, match="executor 'Lossy': a plain pipeline failed"):
        check_executor_contract(Lossy, workdir=tmp_path / "lossy")
